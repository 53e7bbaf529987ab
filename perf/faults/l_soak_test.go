package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// soakLength is L1's duration: FAULTS_SOAK (e.g. 30m) when set, else 90 s
// in make faults and 10 s in make test.
func soakLength(t testing.TB) time.Duration {
	if v := os.Getenv("FAULTS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("FAULTS_SOAK=%q: want a duration like 30m", v)
		}
		return d
	}
	if allRows() {
		return 90 * time.Second
	}
	return 10 * time.Second
}

// TestL1Soak: steady planned load, two tenants, every service: Generate
// (deterministic prompts from a set of 40, so mostly cache hits, and
// unique non-deterministic ones), GenerateStream, Fetch (25 pages) and
// Notify to a webhook. No call may fail, each notification must be
// delivered exactly once, and the gateway's goroutines and heap must be
// flat: back to the idle baseline after the load, no leak trend.
func TestL1Soak(t *testing.T) {
	d := soakLength(t)
	const rate = 20 // calls a second, all services together
	record(t, Row{ID: "L1",
		Did: fmt.Sprintf("%s of %d calls/s (make faults: 90 s, make test: 10 s, FAULTS_SOAK=30m for the long one) from tenants A and B in turn: 40%% Generate over 40 deterministic prompts, 20%% unique non-deterministic Generate, 10%% GenerateStream, 20%% Fetch over 25 pages, 10%% Notify to a webhook; fake Ollama 8 slots x 50 ms; 10 s deadlines; after 5 s of warm-up load and 2 s idle, the idle baseline",
			d, rate),
		MustHold: "every call OK; every notification delivered exactly once (lost 0, duplicated 0); backend calls for deterministic prompts <= prompts x tenants x TTL periods; gateway goroutines back to the idle baseline (+10) after the load; the gateway's own leak detector not suspecting; heap after <= 2x before + 32 MiB"})
	llm := newFakeLLM(t, llmOpts{Concurrency: 8, Latency: 50 * time.Millisecond})
	web := newFakeWeb(t)
	hook := newFakeHook(t)
	env := llm.env()
	for _, e := range []map[string]string{web.env(), hook.webhookEnv()} {
		for k, v := range e {
			env[k] = v
		}
	}
	g := startGateway(t, env)
	gen := vegav1.NewGenerateServiceClient(g.Conn())
	fetch := vegav1.NewFetchServiceClient(g.Conn())
	notify := vegav1.NewNotifyServiceClient(g.Conn())
	ctx := ctxFor(t, d+5*time.Minute)

	type service struct {
		tally codeTally
		lat   latencies
	}
	var (
		svc      = map[string]*service{"Generate": {}, "GenerateStream": {}, "Fetch": {}, "Notify": {}}
		mu       sync.Mutex
		notified []string
	)
	zero := 0.0
	one := func(phase string, i int) {
		key := keyA
		if i%2 == 1 {
			key = keyB
		}
		cctx, cancel := context.WithTimeout(ctxWithKey(ctx, key), 10*time.Second)
		defer cancel()
		var (
			name string
			err  error
		)
		start := time.Now()
		switch k := i % 10; {
		case k < 4:
			name = "Generate"
			_, err = gen.Generate(cctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: fmt.Sprintf("l1-det-%d", (i/10)%40),
				Options: &vegav1.SamplingOptions{Temperature: &zero}})
		case k < 6:
			name = "Generate"
			_, err = gen.Generate(cctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: fmt.Sprintf("l1-%s-%d", phase, i)})
		case k == 6:
			name = "GenerateStream"
			var s vegav1.GenerateService_GenerateStreamClient
			s, err = gen.GenerateStream(cctx, &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: fmt.Sprintf("l1-stream-%s-%d", phase, i)})
			for err == nil {
				_, err = s.Recv()
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
		case k < 9:
			name = "Fetch"
			_, err = fetch.Fetch(cctx, &vegav1.FetchRequest{Url: fmt.Sprintf("%s/page?k=%d", web.URL, (i/10)%25)})
		default:
			name = "Notify"
			text := fmt.Sprintf("l1-%s-%d", phase, i)
			_, err = notify.Notify(cctx, &vegav1.NotifyRequest{Channel: "webhook", Text: text})
			if err == nil {
				mu.Lock()
				notified = append(notified, text)
				mu.Unlock()
			}
		}
		if err != nil {
			t.Errorf("%s (%s): %v", name, phase, err)
		}
		if phase != "soak" {
			return
		}
		s := svc[name]
		if s.tally.add(err) == codes.OK {
			s.lat.add(time.Since(start))
		}
	}

	pace(ctx, rate, 5*time.Second, func(i int) { one("warm", i) })
	time.Sleep(2 * time.Second)
	before := g.Runtime(t)
	detBefore := 0
	for p := range 40 {
		detBefore += llm.callsFor(fmt.Sprintf("l1-det-%d", p))
	}

	// The soak, sampling the gateway every 5 s.
	var (
		samples  []runtimeSnap
		stop     = make(chan struct{})
		sampling sync.WaitGroup
	)
	sampling.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Second):
			}
			r := g.Runtime(t)
			mu.Lock()
			samples = append(samples, r)
			mu.Unlock()
		}
	})
	soakStart := time.Now()
	calls := pace(ctx, rate, d, func(i int) { one("soak", i) })
	took := time.Since(soakStart)
	close(stop)
	sampling.Wait()

	// Idle again: notifications drain, goroutines settle.
	deadline := time.Now().Add(30 * time.Second)
	mu.Lock()
	sent := append([]string(nil), notified...)
	mu.Unlock()
	for hook.counts().Distinct < len(sent) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	after := settleGoroutines(t, g, before.Goroutines+10, 20*time.Second)
	leaks := g.Stats(t).GetMemoryLeaks()

	lost, dup := 0, hook.counts().Duplicates
	for _, text := range sent {
		if hook.count(text) == 0 {
			lost++
		}
	}
	det := -detBefore
	for p := range 40 {
		det += llm.callsFor(fmt.Sprintf("l1-det-%d", p))
	}
	var minG, maxG int64 = -1, 0
	var maxHeap uint64
	for _, s := range samples {
		if minG < 0 || s.Goroutines < minG {
			minG = s.Goroutines
		}
		maxG = max(maxG, s.Goroutines)
		maxHeap = max(maxHeap, s.HeapBytes)
	}
	failed := 0
	for _, s := range svc {
		failed += s.tally.total() - s.tally.get(codes.OK)
	}
	if failed != 0 {
		t.Errorf("%d calls failed under the planned load", failed)
	}
	if lost != 0 || dup != 0 {
		t.Errorf("notifications: %d lost, %d duplicated of %d", lost, dup, len(sent))
	}
	periods := int(took/(300*time.Second)) + 1 // COALESCE_CACHE_TTL 300 s
	if det > 40*2*periods {
		t.Errorf("%d backend calls for 40 deterministic prompts x 2 tenants in %d cache periods", det, periods)
	}
	if after.Goroutines > before.Goroutines+10 {
		t.Errorf("goroutines: %d idle before, %d idle after the soak", before.Goroutines, after.Goroutines)
	}
	if leaks.GetSuspected() {
		t.Errorf("the gateway suspects a leak: %s", leaks.GetReason())
	}
	if after.HeapBytes > 2*before.HeapBytes+32<<20 {
		t.Errorf("heap grew from %d to %d bytes", before.HeapBytes, after.HeapBytes)
	}
	lat := ""
	for _, name := range []string{"Generate", "GenerateStream", "Fetch", "Notify"} {
		s := svc[name]
		lat += fmt.Sprintf("%s %d (%s; %s); ", name, s.tally.total(), &s.tally, &s.lat)
	}
	record(t, Row{ID: "L1", Measured: fmt.Sprintf(
		"soak: %d calls in %s: %sbackend: %d LLM calls in all, %d for the deterministic prompts during the soak (cache), %d page fetches in all (25 pages x 2 tenants, cached); notifications %d sent, %d delivered, lost %d, duplicated %d. gateway idle before: %s; under load (every 5 s, %d samples): goroutines %d-%d, heap up to %.1f MiB; idle after: %s; leak detector: suspected %t, live heap trend %+.0f KiB/min, goroutines %+.1f/min over %d samples",
		calls, took.Round(100*time.Millisecond), lat, llm.calls.Load(), det, web.hits.Load(),
		len(sent), hook.counts().Deliveries, lost, dup,
		before, len(samples), minG, maxG, float64(maxHeap)/(1<<20), after,
		leaks.GetSuspected(), leaks.GetHeapGrowthBytesPerMinute()/1024, leaks.GetGoroutineGrowthPerMinute(), leaks.GetSamples())})
}
