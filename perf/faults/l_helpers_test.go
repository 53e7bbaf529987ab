package faults

// Helpers of the load rows (L1–L5): an open-loop pacer, latency
// percentiles, refusal checks and readers of the gateway's limiter and
// breaker stats.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// pace starts fn(i) in its own goroutine rate times a second for d
// (open loop: a slow answer does not slow the offered load) and waits for
// every call to end. It returns how many it started.
func pace(ctx context.Context, rate float64, d time.Duration, fn func(i int)) int {
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	n := 0
	for {
		next := start.Add(time.Duration(n) * interval)
		if next.Sub(start) >= d || ctx.Err() != nil {
			break
		}
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		i := n
		wg.Go(func() { fn(i) })
		n++
	}
	wg.Wait()
	return n
}

// latencies collects call durations; safe for concurrent use.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration // guarded by mu
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// pct is the p-th percentile (0 < p ≤ 100); 0 when empty.
func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (l *latencies) String() string {
	return fmt.Sprintf("p50 %s, p99 %s", ms(l.pct(50)), ms(l.pct(99)))
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// explicitRefusal says whether err is a refusal a caller can act on: a
// RESOURCE_EXHAUSTED or UNAVAILABLE status carrying RetryInfo.
func explicitRefusal(err error) bool {
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted && st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// limiterOf is the gateway's limiter for backend key ("ollama", …).
func limiterOf(t testing.TB, g *gateway, key string) *vegav1.LimiterStats {
	t.Helper()
	for _, l := range g.Stats(t).GetRateLimiters().GetLimiters() {
		if l.GetKey() == key {
			return l
		}
	}
	return nil
}

// openBreakers lists the breakers not closed, as "key=state".
func openBreakers(t testing.TB, g *gateway) []string {
	t.Helper()
	var open []string
	for _, b := range g.Stats(t).GetCircuitBreakers().GetBreakers() {
		if b.GetState() != "closed" {
			open = append(open, b.GetKey()+"="+b.GetState())
		}
	}
	return open
}

// settleGoroutines waits (up to within) until the gateway's goroutines
// are at most limit, and returns the last reading.
func settleGoroutines(t testing.TB, g *gateway, limit int64, within time.Duration) runtimeSnap {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := g.Runtime(t)
		if r.Goroutines <= limit || time.Now().After(deadline) {
			return r
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// allRows is whether every row runs in full (make faults sets FAULTS_ALL=1).
func allRows() bool { return os.Getenv("FAULTS_ALL") == "1" }
