// Package faults is the fault and abuse matrix of the gateway as one test
// suite: every row of section (b) of reliability-anchors.md that applies
// to this product — L1–L5 load, F1–F13 injected faults, I1–I14 bad input —
// is one Go test named after its ID (TestL1Soak, TestF7RedisDown, …),
// run against the real binaries.
//
// TestMain builds ./cmd/server once (with -race unless FAULTS_RACE=0; a
// data race in the gateway's log fails the row). Each row starts real gateway processes on free
// loopback ports, with loopback fakes for its backends (an Ollama-like LLM
// that queues beyond its concurrency, a web site, a Slack/webhook
// receiver), the real Redis (127.0.0.1:6379, a key prefix of its own) and
// PostgreSQL (127.0.0.1:5432, a database of its own) where the row needs
// them, and injects faults with toxiproxy's Go package in process
// (latency, bandwidth, slicer, reset_peer, timeout, limit_data, down)
// between the gateway and each backend. A row records what it did, what
// must hold and the figures it measured (calls by gRPC code, backend
// calls, notifications lost and duplicated, the gateway's goroutines and
// heap before and after, time to recover); the row held when its test
// passed. The harness's API is described at the top of harness_test.go.
//
// Running it:
//
//	go test -race -count=1 ./perf/faults      # the fast rows (also in make test)
//	make faults                               # every row, writes perf/faults/REPORT.md
//	FAULTS_SOAK=30m make faults               # the long L1 soak
//
// Rows too slow for make test call slow(t) and run only with FAULTS_ALL=1
// (make faults sets it). FAULTS_REPORT=path writes the markdown report;
// rows of the matrix that did not run are listed as such, and rows that do
// not apply to this product are declared, with the reason, in
// report_test.go. The package has test files only, apart from this doc.
package faults
