package faults

// The load rows L1–L5 (reliability-anchors.md B1). The fake LLM has a
// known capacity: a concurrency of 4 at a 200 ms service time is 20 calls
// a second, and the "planned" rate (1x) of the rows is sized against it.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

const (
	llmSlots   = 4
	llmService = 200 * time.Millisecond
	llmCap     = 20 // calls a second: llmSlots / llmService
)

// TestL2DuplicatesAtThreeTimesPlannedRate: Generate at 3x the backend's
// capacity, half the calls duplicates of a call ~50 ms earlier (still in
// flight). Coalescing must cut backend calls to at most one per distinct
// prompt; what does not fit must be refused at once and explicitly
// (RESOURCE_EXHAUSTED or UNAVAILABLE with RetryInfo), never left to run
// into the caller's deadline. First the ordinary case: 1x with the same
// duplicate ratio is served in full.
func TestL2DuplicatesAtThreeTimesPlannedRate(t *testing.T) {
	record(t, Row{ID: "L2",
		Did: fmt.Sprintf("fake Ollama with %d slots x %s (capacity %d/s, queues beyond); Generate (non-deterministic, so only coalescing can merge) with 5 s deadlines, every 2nd call repeating the prompt of a call ~50 ms earlier (still in flight); 3 s at 1x = %d/s, then 8 s at 3x = %d/s",
			llmSlots, llmService, llmCap, llmCap, 3*llmCap),
		MustHold: "1x: every call OK, backend calls = distinct prompts. 3x: no prompt reaches the backend twice (backend calls <= distinct prompts); every call ends OK or with an explicit refusal (RESOURCE_EXHAUSTED/UNAVAILABLE with RetryInfo); no DEADLINE_EXCEEDED; other codes 0"})
	llm := newFakeLLM(t, llmOpts{Concurrency: llmSlots, Latency: llmService})
	g := startGateway(t, llm.env())
	gen := vegav1.NewGenerateServiceClient(g.Conn())
	ctx := ctxFor(t, 2*time.Minute)

	type phase struct {
		tally    codeTally
		implicit atomic.Int64 // refusals without RetryInfo
		late     atomic.Int64 // refusals after more than 100 ms (at their turn, after queueing)
		okLat    latencies
		shedLat  latencies
		prompts  sync.Map
	}
	run := func(name string, rate float64, d time.Duration) *phase {
		p := &phase{}
		// The duplicate follows its original by ~50 ms: well within the
		// original's flight (the backend alone takes 200 ms).
		lag := max(int(rate/20), 1)
		pace(ctx, rate, d, func(i int) {
			src := i
			if i%2 == 1 && i >= lag {
				src = i - lag
				if src%2 == 1 {
					src--
				}
			}
			prompt := fmt.Sprintf("l2-%s-%d", name, src)
			p.prompts.Store(prompt, true)
			cctx, cancel := context.WithTimeout(ctxWithKey(ctx, keyA), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err := gen.Generate(cctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt})
			switch p.tally.add(err) {
			case codes.OK:
				p.okLat.add(time.Since(start))
			case codes.ResourceExhausted, codes.Unavailable:
				p.shedLat.add(time.Since(start))
				if time.Since(start) > 100*time.Millisecond {
					p.late.Add(1)
				}
				if !explicitRefusal(err) {
					p.implicit.Add(1)
					t.Errorf("a refusal without RetryInfo: %v", err)
				}
			}
		})
		return p
	}
	distinct := func(p *phase) int {
		n := 0
		p.prompts.Range(func(_, _ any) bool { n++; return true })
		return n
	}

	// Ordinary use: 1x with duplicates, all served.
	one := run("1x", llmCap, 3*time.Second)
	oneCalls := llm.calls.Load()
	if one.tally.get(codes.OK) != one.tally.total() {
		t.Errorf("1x: %s; every call must be served", &one.tally)
	}
	if int(oneCalls) != distinct(one) {
		t.Errorf("1x: %d backend calls for %d distinct prompts", oneCalls, distinct(one))
	}
	coalescedBefore := g.Stats(t).GetRequestCoalescing().GetCoalesced()

	start := time.Now()
	three := run("3x", 3*llmCap, 8*time.Second)
	elapsed := time.Since(start)
	st := g.Stats(t)
	backend := llm.calls.Load() - oneCalls
	ok, de := three.tally.get(codes.OK), three.tally.get(codes.DeadlineExceeded)
	shed := three.tally.get(codes.ResourceExhausted) + three.tally.get(codes.Unavailable)
	if de != 0 {
		t.Errorf("3x: %d calls ran into their deadline; excess must be refused before queueing", de)
	}
	if ok+shed != three.tally.total() {
		t.Errorf("3x: %s: codes other than OK and explicit refusals", &three.tally)
	}
	if got := llm.maxCallsWithPrefix("l2-1x-"); got > 1 {
		t.Errorf("1x: a prompt reached the backend %d times; coalescing must merge duplicates in flight", got)
	}
	if got := llm.maxCallsWithPrefix("l2-3x-"); got > 1 {
		t.Errorf("a prompt reached the backend %d times; coalescing must merge duplicates in flight", got)
	}
	if int(backend) > distinct(three) {
		t.Errorf("3x: %d backend calls for %d distinct prompts", backend, distinct(three))
	}
	if shed == 0 {
		t.Errorf("3x: nothing was refused at 1.5x the backend's capacity in distinct prompts: the row tested nothing")
	}
	if ok == 0 {
		t.Errorf("3x: nothing was served")
	}
	lim := limiterOf(t, g, "ollama")
	record(t, Row{ID: "L2", Measured: fmt.Sprintf(
		"1x: %d calls, %s, %d backend calls for %d distinct prompts. 3x: %d calls in %s, %s; DEADLINE_EXCEEDED %d; refusals without RetryInfo %d; %d distinct prompts, %d backend calls (most for one prompt: %d), %d coalesced; backend %.1f calls/s (capacity %d/s); OK latency %s; refusal latency %s (%d refused at once, %d at their turn after more than 100 ms in the queue); limiter: concurrency limit %d, shed deadline/standing/full/retry-after %d/%d/%d/%d",
		one.tally.total(), &one.tally, oneCalls, distinct(one),
		three.tally.total(), elapsed.Round(100*time.Millisecond), &three.tally, de, three.implicit.Load(), distinct(three), backend, llm.maxCallsWithPrefix("l2-3x-"),
		st.GetRequestCoalescing().GetCoalesced()-coalescedBefore, float64(backend)/elapsed.Seconds(), llmCap,
		&three.okLat, &three.shedLat, int64(shed)-three.late.Load(), three.late.Load(),
		lim.GetConcurrencyLimit(), lim.GetShedDeadline(), lim.GetShedStanding(), lim.GetShedFull(), lim.GetShedRetryAfter())})
}

// TestL3TenfoldBurstThenRecovery: 1x (half the backend's capacity) for
// 4 s, 10x for 5 s, then 1x for 10 s. The burst must be refused
// explicitly, not run into deadlines; afterwards the limiter must let 1x
// through in full again, and no breaker may be left open.
func TestL3TenfoldBurstThenRecovery(t *testing.T) {
	const base = llmCap / 2
	// make faults: 4 s, a 5 s burst, 10 s after (the last 5 s must be
	// clean); make test: 2 s, 3 s, 6 s (the last 3 s).
	lead, burstFor, tail, clean := 2*time.Second, 3*time.Second, 6*time.Second, 3*time.Second
	if allRows() {
		lead, burstFor, tail, clean = 4*time.Second, 5*time.Second, 10*time.Second, 5*time.Second
	}
	record(t, Row{ID: "L3",
		Did: fmt.Sprintf("fake Ollama %d slots x %s (capacity %d/s); Generate, distinct prompts, 5 s deadlines: %s at 1x = %d/s, %s at 10x = %d/s, %s at 1x (make test: 2 s, 3 s, 6 s)",
			llmSlots, llmService, llmCap, lead, base, burstFor, 10*base, tail),
		MustHold: fmt.Sprintf("before: every call OK. burst: every call OK or explicitly refused (RetryInfo), no DEADLINE_EXCEEDED. after: the limiter recovers: every call of the last %s OK; no breaker open at the end", clean)})
	llm := newFakeLLM(t, llmOpts{Concurrency: llmSlots, Latency: llmService})
	g := startGateway(t, llm.env())
	gen := vegav1.NewGenerateServiceClient(g.Conn())
	ctx := ctxFor(t, 2*time.Minute)

	type outcome struct {
		at   time.Duration // since the after phase began
		code codes.Code
	}
	var (
		mu       sync.Mutex
		after    []outcome
		implicit atomic.Int64
	)
	call := func(tally *codeTally, prompt string, afterStart time.Time) {
		cctx, cancel := context.WithTimeout(ctxWithKey(ctx, keyA), 5*time.Second)
		defer cancel()
		sent := time.Now()
		_, err := gen.Generate(cctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt})
		code := tally.add(err)
		if (code == codes.ResourceExhausted || code == codes.Unavailable) && !explicitRefusal(err) {
			implicit.Add(1)
		}
		if !afterStart.IsZero() {
			mu.Lock()
			after = append(after, outcome{at: sent.Sub(afterStart), code: code})
			mu.Unlock()
		}
	}
	var before, burst, post codeTally
	pace(ctx, base, lead, func(i int) { call(&before, fmt.Sprintf("l3-before-%d", i), time.Time{}) })
	limBefore := limiterOf(t, g, "ollama")

	// Sample the limiter while the burst runs.
	stopSampling := make(chan struct{})
	var minLimit atomic.Int64
	minLimit.Store(limBefore.GetConcurrencyLimit())
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if l := limiterOf(t, g, "ollama"); l != nil && l.GetConcurrencyLimit() < minLimit.Load() {
				minLimit.Store(l.GetConcurrencyLimit())
			}
		}
	})
	pace(ctx, 10*base, burstFor, func(i int) { call(&burst, fmt.Sprintf("l3-burst-%d", i), time.Time{}) })
	afterStart := time.Now()
	pace(ctx, base, tail, func(i int) { call(&post, fmt.Sprintf("l3-after-%d", i), afterStart) })
	close(stopSampling)
	sampler.Wait()
	limAfter := limiterOf(t, g, "ollama")
	open := openBreakers(t, g)

	// Recovery: the time after the burst from which every 1x call was OK.
	recovered := time.Duration(0)
	cleanFailures := 0
	for _, o := range after {
		if o.code != codes.OK && o.at+time.Second/base > recovered {
			recovered = o.at + time.Second/base
		}
		if o.at >= tail-clean && o.code != codes.OK {
			cleanFailures++
		}
	}
	if before.get(codes.OK) != before.total() {
		t.Errorf("before the burst: %s; 1x must be served in full", &before)
	}
	if n := burst.get(codes.DeadlineExceeded) + post.get(codes.DeadlineExceeded); n != 0 {
		t.Errorf("%d calls ran into their deadline; overload must be refused at once", n)
	}
	if n := burst.total() - burst.get(codes.OK) - burst.get(codes.ResourceExhausted) - burst.get(codes.Unavailable); n != 0 {
		t.Errorf("burst: %s: %d calls ended with other codes", &burst, n)
	}
	if implicit.Load() != 0 {
		t.Errorf("%d refusals without RetryInfo", implicit.Load())
	}
	if burst.get(codes.ResourceExhausted)+burst.get(codes.Unavailable) == 0 {
		t.Errorf("the 10x burst refused nothing: the row tested nothing")
	}
	if cleanFailures != 0 {
		t.Errorf("%d of the 1x calls in the last %s after the burst failed: the limiter did not recover (%s)", cleanFailures, clean, &post)
	}
	if len(open) != 0 {
		t.Errorf("breakers left open after the burst: %v", open)
	}
	record(t, Row{ID: "L3", Measured: fmt.Sprintf(
		"before: %s. burst: %d calls, %s. after: %d calls, %s; every call OK from %s after the burst on (time to recover); breakers open at the end: %d. limiter concurrency limit %d before, %d lowest during the burst, %d after; backend calls %d",
		&before, burst.total(), &burst, post.total(), &post, recovered.Round(10*time.Millisecond), len(open),
		limBefore.GetConcurrencyLimit(), minLimit.Load(), limAfter.GetConcurrencyLimit(), llm.calls.Load())})
}

// TestL5NotifyFasterThanSlackAllows: Notify at 5 messages a second to one
// Slack channel whose receiver accepts about one a second (more: 429 with
// Retry-After: 1). Every call must be accepted, Retry-After honoured (no
// attempt before it ends), the queue must drain, and each notification
// be delivered exactly once.
func TestL5NotifyFasterThanSlackAllows(t *testing.T) {
	// Draining at the receiver's pace takes about two minutes: make faults
	// only. In make test, service's TestNotifyWaitOutlivingPauseChecks
	// guards the race this row found, and cmd/server's Notify tests the
	// 429 handling.
	slow(t)
	d := 12 * time.Second
	const rate = 5
	record(t, Row{ID: "L5",
		Did: fmt.Sprintf("Notify to the slack channel at %d/s for %s (%d messages, two tenants, 10 s deadlines); the fake Slack accepts 1/s (burst 1) and answers 429 + Retry-After: 1 beyond; gateway defaults (Slack pacing 1/s, burst 3)",
			rate, d, int(d.Seconds())*rate),
		MustHold: "every Notify accepted (OK: DELIVERED or QUEUED); no attempt within Retry-After of a 429; the queue drains; every notification delivered exactly once (lost 0, duplicated 0); GetNotification says DELIVERED for each"})
	hook := newFakeHook(t)
	hook.limit(1)
	g := startGateway(t, hook.slackEnv())
	nc := vegav1.NewNotifyServiceClient(g.Conn())
	ctx := ctxFor(t, 5*time.Minute)

	var (
		tally     codeTally
		delivered atomic.Int64 // DELIVERED in the answer
		mu        sync.Mutex
		ids       = map[string]string{} // text → notification id
		owner     = map[string]string{} // text → the key that sent it (notifications are per tenant)
	)
	start := time.Now()
	n := pace(ctx, rate, d, func(i int) {
		key := keyA
		if i%2 == 1 {
			key = keyB
		}
		text := fmt.Sprintf("l5-%03d", i)
		cctx, cancel := context.WithTimeout(ctxWithKey(ctx, key), 10*time.Second)
		defer cancel()
		r, err := nc.Notify(cctx, &vegav1.NotifyRequest{Channel: "slack", Text: text})
		if tally.add(err) != codes.OK {
			t.Errorf("Notify %s: %v", text, err)
			return
		}
		if r.GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
			delivered.Add(1)
		}
		mu.Lock()
		ids[text], owner[text] = r.GetId(), key
		mu.Unlock()
	})
	sent := time.Since(start)
	// Drain: at 1/s the queue needs about n seconds.
	deadline := time.Now().Add(time.Duration(n)*time.Second*2 + 30*time.Second)
	for hook.counts().Distinct < len(ids) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	drained := time.Since(start)
	time.Sleep(2 * time.Second) // a late duplicate would land now
	c := hook.counts()

	lost := 0
	for text, id := range ids {
		if hook.count(text) == 0 {
			lost++
			continue
		}
		cctx, cancel := context.WithTimeout(ctxWithKey(ctx, owner[text]), 5*time.Second)
		got, err := nc.GetNotification(cctx, &vegav1.GetNotificationRequest{Id: id})
		cancel()
		if err != nil || got.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
			t.Errorf("GetNotification %s: %v %v", text, got.GetStatus(), err)
		}
	}
	// Retry-After: after each 429 the next attempt comes no sooner than 1 s
	// (a little slack for the clocks of two processes: 50 ms).
	log := hook.attemptLog()
	tooSoon, minGap := 0, time.Duration(-1)
	for i, a := range log {
		if a.Status != 429 || i+1 == len(log) {
			continue
		}
		gap := log[i+1].At.Sub(a.At)
		if minGap < 0 || gap < minGap {
			minGap = gap
		}
		if gap < time.Second-50*time.Millisecond {
			tooSoon++
		}
	}
	if tally.get(codes.OK) != n {
		t.Errorf("%d of %d Notify calls accepted: %s", tally.get(codes.OK), n, &tally)
	}
	if lost != 0 || c.Distinct != len(ids) {
		t.Errorf("%d accepted notifications never delivered (%d of %d distinct delivered)", lost, c.Distinct, len(ids))
	}
	if c.Duplicates != 0 {
		t.Errorf("%d duplicate deliveries; the receiver answered every request, so none is allowed", c.Duplicates)
	}
	if tooSoon != 0 {
		t.Errorf("%d attempts came sooner than Retry-After after a 429", tooSoon)
	}
	gaps := "no 429 seen"
	if minGap >= 0 {
		gaps = "shortest gap after a 429 " + ms(minGap)
	}
	record(t, Row{ID: "L5", Measured: fmt.Sprintf(
		"%d Notify calls (the last answered %s after the first): %s (%d DELIVERED at once, %d QUEUED); receiver: %d attempts, %d answered 429, %s, %d attempts sooner than Retry-After; drained %s after the first call (%.2f deliveries/s); delivered %d distinct, lost %d, duplicated %d",
		n, sent.Round(100*time.Millisecond), &tally, delivered.Load(), int64(tally.get(codes.OK))-delivered.Load(),
		c.Attempts, c.Limited, gaps, tooSoon, drained.Round(100*time.Millisecond), float64(c.Deliveries)/drained.Seconds(),
		c.Distinct, lost, c.Duplicates)})
}
