package fleet_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vega-gateway/vega/perf/fleet"
)

// BenchmarkStreamHop is the time a chunk takes from the leader's send to a
// follower on another Fleet (the writer's append, the follower's blocked
// XREAD waking), one chunk at a time, on the real Redis; p50 and p99 of
// the hops are reported beside the mean.
func BenchmarkStreamHop(b *testing.B) {
	prefix := testPrefix(b)
	f1 := newFleet(b, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(b, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	ctx := context.Background()
	got := make(chan struct{}, 1)
	var (
		send func([]byte)
		end  func(bool, uint32, string)
		done chan error
	)
	flight := 0
	start := func() {
		key := fmt.Sprintf("generatestream/bench/%d", flight)
		flight++
		var follow func(context.Context, func([]byte) error) (uint32, string, error)
		send, end, _, _ = f1.LeadStream(ctx, key)
		_, _, _, follow = f2.LeadStream(ctx, key)
		if send == nil || follow == nil {
			b.Fatal("no flight")
		}
		done = make(chan error, 1)
		go func() {
			_, _, err := follow(ctx, func([]byte) error { got <- struct{}{}; return nil })
			done <- err
		}()
	}
	stop := func() {
		end(true, 0, "")
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	chunk := make([]byte, 64)
	var hops []time.Duration
	start()
	n := 0
	for b.Loop() {
		if n == 4000 { // below the flight's bound
			stop()
			start()
			n = 0
		}
		t0 := time.Now()
		send(chunk)
		<-got
		hops = append(hops, time.Since(t0))
		n++
	}
	stop()
	slices.Sort(hops)
	b.ReportMetric(float64(hops[len(hops)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(hops[len(hops)*99/100].Microseconds()), "p99-µs")
}
