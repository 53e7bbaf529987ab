package faults

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// TestF3Upstream5xx: the backend fails every call, then half of them,
// then recovers. The breaker opens after 5 failures, refuses at once with
// UNAVAILABLE and RetryInfo, lets at most 3 probes through when half-open,
// and closes once the backend is healthy; no 5xx is cached, no call
// retried.
func TestF3Upstream5xx(t *testing.T) {
	slow(t)
	record(t, Row{ID: "F3",
		Did: "Generate against the fake Ollama answering 500 to every call: distinct calls one after another until the breaker opens, then " +
			"3 more. After the open timeout (30 s), the backend 1 s slow and failing every 2nd call (model fail-500): 12 distinct calls at " +
			"once. Then the backend healthy: a call every 500 ms until one is served.",
		MustHold: "each 500 → UNAVAILABLE; the breaker opens after 5 (backend calls = 5), then refuses at once with UNAVAILABLE + RetryInfo " +
			"without a backend call; half-open: at most 3 of the 12 reach the backend, the others UNAVAILABLE; every backend call is one " +
			"caller's call (no retries); no cache store; after recovery calls are served and the breaker closes.",
	})
	llm := newFakeLLM(t, llmOpts{})
	g := startGateway(t, merge(roomy, llm.env()))
	llm.setMode(llm5xx)

	var trip codeTally
	made := 0
	for breakerStats(g.Stats(t), "ollama").GetState() != "open" {
		if made == 20 {
			t.Fatalf("20 failing calls and the breaker is not open: %s (%s)", breakerLine(breakerStats(g.Stats(t), "ollama")), trip.String())
		}
		_, _, err := generate(ctxFor(t, 5*time.Second), g, genReq("m", fmt.Sprintf("f3-trip-%d", made)))
		made++
		if trip.add(err) != codes.Unavailable {
			t.Fatalf("a 500: %v, want UNAVAILABLE", err)
		}
	}
	tripCalls := llm.calls.Load()
	if tripCalls != 5 || made != 5 {
		t.Fatalf("the breaker opened after %d calls and %d backend calls, want 5 and 5", made, tripCalls)
	}
	var open codeTally
	var advice time.Duration
	for i := range 3 {
		_, _, err := generate(ctxFor(t, 5*time.Second), g, genReq("m", fmt.Sprintf("f3-open-%d", i)))
		if open.add(err) != codes.Unavailable || retryDelay(err) <= 0 {
			t.Fatalf("while open: %v (RetryInfo %s), want UNAVAILABLE with RetryInfo", err, retryDelay(err))
		}
		advice = retryDelay(err)
	}
	if llm.calls.Load() != tripCalls {
		t.Fatalf("calls reached the backend while the breaker was open")
	}
	openedAt := time.Now()

	// Half-open with a backend failing every 2nd call, 1 s slow: at most 3
	// probes at a time.
	llm.setMode(llmOK)
	llm.setLatency(time.Second)
	time.Sleep(advice + 200*time.Millisecond)
	waveAfter := time.Since(openedAt)
	before := llm.calls.Load()
	var probe codeTally
	concurrently(12, func(i int) {
		model := "m"
		if i%2 == 1 {
			model = "fail-500"
		}
		_, _, err := generate(ctxFor(t, 10*time.Second), g, genReq(model, fmt.Sprintf("f3-probe-%d", i)))
		probe.add(err)
	})
	probes := llm.calls.Load() - before
	if probes < 1 || probes > 3 {
		t.Fatalf("half-open let %d calls through, want 1 to 3 (%s)", probes, probe.String())
	}
	if probe.get(codes.OK)+probe.get(codes.Unavailable) != 12 {
		t.Fatalf("half-open wave: %s, want only OK and UNAVAILABLE", probe.String())
	}
	afterProbes := breakerStats(g.Stats(t), "ollama")

	// Recovery.
	llm.setLatency(0)
	healedAt := time.Now()
	var rec codeTally
	for i := 0; ; i++ {
		_, _, err := generate(ctxFor(t, 5*time.Second), g, genReq("m", fmt.Sprintf("f3-recover-%d", i)))
		if rec.add(err) == codes.OK {
			break
		}
		if time.Since(healedAt) > 2*time.Minute {
			t.Fatalf("not recovered 2 min after the backend healed: %s", rec.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	recovered := time.Since(healedAt)
	for i := range 3 { // the probes that close it
		if _, _, err := generate(ctxFor(t, 5*time.Second), g, genReq("m", fmt.Sprintf("f3-after-%d", i))); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	st := g.Stats(t)
	br := breakerStats(st, "ollama")
	if br.GetState() != "closed" {
		t.Fatalf("after recovery: %s, want closed", breakerLine(br))
	}
	if stores := st.GetCache().GetStores(); stores != int64(rec.get(codes.OK)+3+probe.get(codes.OK)) {
		t.Fatalf("cache stores %d: want only the %d served calls", stores, rec.get(codes.OK)+3+probe.get(codes.OK))
	}
	distinct, calls := llm.countPrompts()
	if distinct != calls {
		t.Fatalf("%d backend calls for %d prompts: a call was retried", calls, distinct)
	}
	record(t, Row{ID: "F3", Measured: fmt.Sprintf(
		"100%% 500: %s over %d calls, breaker open after 5 backend calls; open: %s, RetryInfo %s, 0 backend calls. Half-open wave of 12 "+
			"(%s after opening): %d reached the backend, %s; breaker then %s. Recovery: served %s after the backend healed (%s); breaker %s "+
			"(%d state changes). Backend calls %d for %d distinct prompts (no retries); cache stores %d (served calls only).",
		trip.String(), made, open.String(), advice, waveAfter.Round(100*time.Millisecond), probes, probe.String(), afterProbes.GetState(),
		recovered.Round(100*time.Millisecond), rec.String(), br.GetState(), br.GetStateChanges(), calls, distinct, st.GetCache().GetStores())})
}
