package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// caller is one Generate call running in the background, cancellable.
type caller struct {
	cancel context.CancelFunc
	done   chan struct{}
	resp   *vegav1.GenerateResponse
	err    error
}

func startCaller(t *testing.T, g *gateway, req *vegav1.GenerateRequest) *caller {
	ctx, cancel := context.WithTimeout(context.Background(), generous)
	t.Cleanup(cancel)
	c := &caller{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.resp, _, c.err = generate(ctx, g, req)
	}()
	return c
}

// wait is the caller's outcome (the test fails if it never comes).
func (c *caller) wait(t *testing.T) (*vegav1.GenerateResponse, error) {
	t.Helper()
	select {
	case <-c.done:
		return c.resp, c.err
	case <-time.After(generous):
		t.Fatalf("a caller did not return within %s", generous)
		return nil, nil
	}
}

// TestF9CancelOrders: callers of one coalesced Generate leave in every
// order. Whoever stays gets the real answer; the backend call is
// cancelled only when the last caller has left; a caller joining after
// the leader left never inherits its cancellation.
func TestF9CancelOrders(t *testing.T) {
	record(t, Row{ID: "F9",
		Did: "identical deterministic Generates on one gateway against a backend taking 3 s; a joiner is seen joining the flight " +
			"(PerfAdmin coalesced +1) before anyone cancels. Orders: leader cancels first; follower cancels first; all cancel; leader " +
			"cancels, then a late joiner arrives while a follower still waits; the only caller cancels and a new one arrives at once " +
			"(tailscale#18919).",
		MustHold: "the remaining callers get the backend's answer (OK, same text); a caller gets CANCELED only from its own cancel; one " +
			"backend call per flight, not cancelled while anyone waits; when all left, the backend sees the request cancelled; the " +
			"arrival after everyone left gets a live call (OK), never CANCELED.",
	})
	llm := newFakeLLM(t, llmOpts{})
	g := startGateway(t, merge(roomy, llm.env()))
	const model = "slow-3000"
	coalesced := func() int64 { return g.Stats(t).GetRequestCoalescing().GetCoalesced() }
	joined := func(before int64, n int64) {
		t.Helper()
		eventually(t, "the follower joins the flight", func() bool { return coalesced() >= before+n })
	}
	atBackend := func(prompt string, n int) {
		t.Helper()
		eventually(t, "the call reaches the backend", func() bool { return llm.callsFor(prompt) >= n })
	}
	wantOK := func(who string, c *caller, prompt string) {
		t.Helper()
		resp, err := c.wait(t)
		if err != nil || !strings.HasPrefix(resp.GetText(), "fake says:") {
			t.Fatalf("%s (%s): %v, want the backend's answer", who, prompt, err)
		}
	}
	wantCanceled := func(who string, c *caller) {
		t.Helper()
		if _, err := c.wait(t); status.Code(err) != codes.Canceled {
			t.Fatalf("%s cancelled itself but got %v, want CANCELED", who, err)
		}
	}
	var lines []string

	// 1. The leader cancels first.
	p := "f9-leader-first"
	before := coalesced()
	cancelledBefore := llm.cancelled.Load()
	a := startCaller(t, g, genReq(model, p))
	atBackend(p, 1)
	b := startCaller(t, g, genReq(model, p))
	joined(before, 1)
	a.cancel()
	wantCanceled("leader", a)
	wantOK("follower after the leader left", b, p)
	if llm.callsFor(p) != 1 || llm.cancelled.Load() != cancelledBefore {
		t.Fatalf("leader first: %d backend calls, %d cancelled at the backend; want 1 and 0", llm.callsFor(p), llm.cancelled.Load()-cancelledBefore)
	}
	lines = append(lines, "leader first: leader CANCELED, follower OK, 1 backend call, 0 cancelled at the backend")

	// 2. A follower cancels first.
	p = "f9-follower-first"
	before = coalesced()
	a = startCaller(t, g, genReq(model, p))
	atBackend(p, 1)
	b = startCaller(t, g, genReq(model, p))
	joined(before, 1)
	b.cancel()
	wantCanceled("follower", b)
	wantOK("leader after the follower left", a, p)
	if llm.callsFor(p) != 1 || llm.cancelled.Load() != cancelledBefore {
		t.Fatalf("follower first: %d backend calls, %d cancelled; want 1 and 0", llm.callsFor(p), llm.cancelled.Load()-cancelledBefore)
	}
	lines = append(lines, "follower first: follower CANCELED, leader OK, 1 backend call, 0 cancelled")

	// 3. Everyone cancels: the backend call is cancelled.
	p = "f9-all"
	before = coalesced()
	abandonedBefore := g.Stats(t).GetRequestCoalescing().GetAbandoned()
	a = startCaller(t, g, genReq(model, p))
	atBackend(p, 1)
	b = startCaller(t, g, genReq(model, p))
	c := startCaller(t, g, genReq(model, p))
	joined(before, 2)
	a.cancel()
	b.cancel()
	if llm.cancelled.Load() != cancelledBefore {
		t.Fatalf("the backend call was cancelled while a caller still waited")
	}
	c.cancel()
	for _, x := range []*caller{a, b, c} {
		wantCanceled("caller of an abandoned flight", x)
	}
	cancelIn := eventually(t, "the backend sees the abandoned call cancelled", func() bool {
		return llm.cancelled.Load() == cancelledBefore+1
	})
	abandoned := g.Stats(t).GetRequestCoalescing().GetAbandoned() - abandonedBefore
	if llm.callsFor(p) != 1 || abandoned != 1 {
		t.Fatalf("all cancel: %d backend calls, %d flights abandoned; want 1 and 1", llm.callsFor(p), abandoned)
	}
	lines = append(lines, fmt.Sprintf("all cancel (3 callers): 3 CANCELED, 1 backend call, cancelled at the backend %s after the last left "+
		"(1 flight abandoned)", cancelIn.Round(time.Millisecond)))

	// 4. The leader leaves; a late joiner arrives while a follower waits.
	p = "f9-late-joiner"
	before = coalesced()
	cancelledBefore = llm.cancelled.Load()
	a = startCaller(t, g, genReq(model, p))
	atBackend(p, 1)
	b = startCaller(t, g, genReq(model, p))
	joined(before, 1)
	a.cancel()
	wantCanceled("leader", a)
	c = startCaller(t, g, genReq(model, p))
	joined(before, 2)
	wantOK("follower", b, p)
	wantOK("late joiner", c, p)
	if llm.callsFor(p) != 1 || llm.cancelled.Load() != cancelledBefore {
		t.Fatalf("late joiner: %d backend calls, %d cancelled; want 1 and 0", llm.callsFor(p), llm.cancelled.Load()-cancelledBefore)
	}
	lines = append(lines, "leader left, late joiner while a follower waits: both OK from the one backend call, 0 cancelled")

	// 5. The only caller leaves; a new one arrives at once (tailscale#18919).
	p = "f9-rejoin"
	a = startCaller(t, g, genReq(model, p))
	atBackend(p, 1)
	a.cancel()
	c = startCaller(t, g, genReq(model, p))
	wantCanceled("the only caller", a)
	wantOK("the caller arriving after everyone left", c, p)
	lines = append(lines, fmt.Sprintf("the only caller left, a new one at once: CANCELED then OK (%d backend call(s); 1: it joined before "+
		"the flight was given up, 2: the abandoned one and a new live one)", llm.callsFor(p)))

	st := g.Stats(t)
	if br := breakerStats(st, "ollama"); br.GetFailures() != 0 {
		t.Fatalf("cancellations were counted: %s", breakerLine(br))
	}
	co := st.GetRequestCoalescing()
	record(t, Row{ID: "F9", Measured: strings.Join(lines, "; ") + fmt.Sprintf(
		". Coalescing: %d requests, %d coalesced, %d flights, %d abandoned, %d panics; %s; gateway %s.",
		co.GetRequests(), co.GetCoalesced(), co.GetFlights(), co.GetAbandoned(), co.GetPanics(),
		breakerLine(breakerStats(st, "ollama")), g.Runtime(t))})
}
