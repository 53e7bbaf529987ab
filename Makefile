# Vega Gateway. `make help` lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

BIN := $(abspath .tmp/bin)
export PATH := $(BIN):$(PATH)
# Tools are pinned in tools/go.mod's tool block (buf, protoc-gen-go-grpc,
# staticcheck, grpcurl, benchstat), tools/ghz/go.mod (ghz, which needs an
# older grpc-go) and go.mod (protoc-gen-go), and built into .tmp/bin.
MODULE_TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go-grpc $(BIN)/staticcheck $(BIN)/grpcurl $(BIN)/benchstat
TOOLS := $(MODULE_TOOLS) $(BIN)/protoc-gen-go $(BIN)/ghz

.PHONY: help
help: ## Describe the make targets
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-15s %s\n", $$1, $$2}'

.PHONY: run
run: ## Start the gateway on the built-in sim backend (gRPC :50051, HTTP :8080)
	go run ./cmd/server

.PHONY: build
build: ## Build the server and client into bin/
	go build -o bin/vega-server ./cmd/server
	go build -o bin/vega ./cmd/client

.PHONY: test
test: ## Run every test with the race detector (the product and the bench driver's own module)
	go test -race -count=1 -timeout 20m ./...
	cd perf/bench && go test -race -count=1 ./...

.PHONY: bench
bench: BENCH_STARTED := $(shell date +%s.%N)
bench: $(BIN)/ghz $(BIN)/benchstat ## Run the benchmark suite (Go benchmarks + ghz end to end + fleet scenarios on Redis, about 15-18 min on 2 cores) and write perf/bench/REPORT.md with plots
	cd perf/bench && go test -count=1 ./... && go run . --root ../.. --started $(BENCH_STARTED)

.PHONY: faults
faults: ## Run the fault and abuse matrix against the real binary (about 15 min on 2 cores; FAULTS_SOAK=30m for the long soak) and write perf/faults/REPORT.md
	FAULTS_ALL=1 FAULTS_REPORT=$(abspath perf/faults/REPORT.md) go test -race -count=1 -timeout $(if $(FAULTS_SOAK),60m,20m) -v ./perf/faults

.PHONY: tools
tools: $(TOOLS) ## Build the pinned tools into .tmp/bin

$(BIN)/protoc-gen-go: go.mod
	go build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

$(MODULE_TOOLS) &: tools/go.mod
	cd tools && go build -o $(BIN)/ tool
	@touch $(MODULE_TOOLS)

$(BIN)/ghz: tools/ghz/go.mod
	cd tools/ghz && go build -o $(BIN)/ghz github.com/bojand/ghz/cmd/ghz

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Regenerate gen/ from proto/
	buf generate

.PHONY: checkgenerate
checkgenerate: generate ## Fail when gen/ differs from what `make generate` produces
	@test -z "$$(git status --porcelain -- gen | tee /dev/stderr)" || { echo "gen/ is stale: run 'make generate' and commit" >&2; exit 1; }

.PHONY: lint
lint: $(BIN)/buf $(BIN)/staticcheck ## buf lint, buf format, gofmt, go vet, staticcheck
	buf lint
	buf format -d --exit-code
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/') | tee /dev/stderr)" || { echo "gofmt needed" >&2; exit 1; }
	go vet ./...
	staticcheck ./...
	cd perf/bench && go vet ./... && staticcheck ./...
