// Command fakeupstream is a small HTTP server that stands in for the
// gateway's upstreams during end-to-end benchmarks (perf-anchors sections
// 3, 4 and M2–M8). It answers like Ollama (POST /api/generate, /api/chat),
// like an OpenAI-compatible server (POST /v1/chat/completions), like a Slack
// webhook (any other POST answers "ok") and like a web site (GET/HEAD of any
// path returns a small HTML page).
//
// Its behaviour is tunable so that a benchmark knows the ground truth:
// a per-request service time (--latency), a capacity in requests per second
// enforced by a token bucket (--capacity, 429 with Retry-After beyond it), a
// cap on requests served at once (--concurrency, 503 beyond it, or a queue
// with --queue), a deterministic share of 500s (--fail-rate) and an outage
// window (--outage 10s-20s, every request gets 503).
//
// Counters and live control share the port under /_fake/:
//
//	GET  /_fake/stats   requests, by_status, new_connections (ConnState == StateNew),
//	                    active_connections, in_flight, capacity, latency_ms, ...
//	POST /_fake/reset   zero the counters
//	POST /_fake/config  change settings live, e.g. {"capacity":25,"latency_ms":100,"outage":true}
//
// It only listens on loopback addresses: this machine must send benchmark
// traffic to loopback only.
//
// Example:
//
//	go run ./cmd/fakeupstream --latency 400ms --capacity 50
//	curl -s 127.0.0.1:18080/_fake/stats
//	curl -s -XPOST 127.0.0.1:18080/_fake/config -d '{"capacity":25}'
package main
