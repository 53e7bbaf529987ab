package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/policy"
)

// queueingBackend is an LLM server in fake time: it runs n calls at once,
// each for service, and queues the others without bound, in arrival order
// (Ollama, vLLM and llama-server all do), never answering 429. A call whose
// caller leaves is dropped, queued or running.
type queueingBackend struct {
	slots   chan struct{}
	service time.Duration
}

func newQueueingBackend(n int, service time.Duration) *queueingBackend {
	return &queueingBackend{slots: make(chan struct{}, n), service: service}
}

func (b *queueingBackend) serve(ctx context.Context) error {
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.slots }()
	t := time.NewTimer(b.service)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// load is one open-loop client: Rate calls/s from From to To (since the
// start of the run), each with Deadline (0: none).
type load struct {
	Tenant   string
	Rate     float64
	From, To time.Duration
	Deadline time.Duration
}

// outcome is one call's fate.
type outcome struct {
	tenant  string
	sent    time.Duration // since the start
	code    string        // "OK" or the status code's name
	latency time.Duration
}

// run drives set's key "llm" backed by b with loads, in fake time (inside a
// synctest bubble), and returns every call's outcome, sorted by send time.
func run(t *testing.T, set *Set, b *queueingBackend, loads ...load) []outcome {
	t.Helper()
	start := time.Now()
	var mu sync.Mutex
	var out []outcome
	var wg sync.WaitGroup
	call := func(ld load, sent time.Duration) {
		ctx := context.Background()
		if ld.Deadline > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, ld.Deadline)
			defer cancel()
		}
		began := time.Now()
		o := outcome{tenant: ld.Tenant, sent: sent, code: "OK"}
		p, err := set.Acquire(ctx, "llm", ld.Tenant)
		if err == nil {
			err = b.serve(ctx)
			if err == nil {
				p.Release(policy.Result{Outcome: policy.Success})
			} else {
				p.release(policy.Result{Outcome: policy.Neutral}, time.Since(p.at), errors.Is(err, context.DeadlineExceeded))
			}
		}
		if err != nil {
			o.code = status.FromContextError(err).Code().String()
			if st, ok := status.FromError(err); ok {
				o.code = st.Code().String()
			}
		}
		o.latency = time.Since(began)
		mu.Lock()
		out = append(out, o)
		mu.Unlock()
	}
	for _, ld := range loads {
		wg.Go(func() {
			every := time.Duration(float64(time.Second) / ld.Rate)
			time.Sleep(ld.From)
			for at := ld.From; at < ld.To; at += every {
				time.Sleep(time.Until(start.Add(at)))
				wg.Go(func() { call(ld, at) })
			}
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b outcome) int { return int(a.sent - b.sent) })
	return out
}

// figures summarises the outcomes of tenant ("" = all) sent in [from, to).
type figures struct {
	calls, ok int
	codes     map[string]int
	p50, p99  time.Duration // of OK calls
	perSecond float64       // OK calls per second of the span
}

func summarise(out []outcome, tenant string, from, to time.Duration) figures {
	f := figures{codes: map[string]int{}}
	var lat []time.Duration
	for _, o := range out {
		if o.sent < from || o.sent >= to || (tenant != "" && o.tenant != tenant) {
			continue
		}
		f.calls++
		f.codes[o.code]++
		if o.code == "OK" {
			f.ok++
			lat = append(lat, o.latency)
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		f.p50 = lat[(len(lat)-1)/2]
		f.p99 = lat[min(len(lat)-1, (len(lat)*99+99)/100-1)]
	}
	f.perSecond = float64(f.ok) / (to - from).Seconds()
	return f
}

func (f figures) String() string {
	var codes []string
	for c, n := range f.codes {
		codes = append(codes, fmt.Sprintf("%s=%d", c, n))
	}
	slices.Sort(codes)
	return fmt.Sprintf("%d calls, %.1f OK/s, p50 %v p99 %v [%s]", f.calls, f.perSecond, f.p50, f.p99, strings.Join(codes, " "))
}

func newTestSet(t *testing.T, s Settings) *Set {
	t.Helper()
	set, err := NewSet(s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}
