package cache_test

import (
	"context"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/cache"
	"github.com/vega-gateway/vega/perf/policy"
)

// Example shows an entry going from fresh to stale to gone, with one
// refresh while it is stale. The clock is injected so the example needs no
// sleep.
func Example() {
	var now atomic.Int64 // the cache reads its clock from other goroutines too
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	c, err := cache.New(cache.Settings{
		MaxBytes:   1 << 20,
		DefaultTTL: time.Minute,
		Jitter:     1e-9, // next to no jitter, to make the output exact
		StaleFor:   10 * time.Second,
		Now:        func() time.Time { return time.Unix(0, now.Load()) },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	c.Set("acme/answer", "42", 2, 0, false)
	v, st := c.Get("acme/answer")
	fmt.Println(v, st)

	now.Add(int64(65 * time.Second)) // past the TTL, within StaleFor
	v, st = c.Get("acme/answer")
	fmt.Println(v, st)
	done := make(chan struct{})
	started := c.TryRefresh(context.Background(), "acme/answer", 5*time.Second, func(ctx context.Context) {
		defer close(done)
		c.Set("acme/answer", "43", 2, 0, false) // what the backend says now
	})
	<-done
	v, st = c.Get("acme/answer")
	fmt.Println(started, v, st)

	fmt.Println(c.Purge("acme/"))
	_, st = c.Get("acme/answer")
	fmt.Println(st)

	s := c.Stats()
	fmt.Printf("hits=%d stale=%d misses=%d refreshes=%d hit rate=%.0f%%\n",
		s.Hits, s.StaleHits, s.Misses, s.Refreshes, s.HitRate())
	// Output:
	// 42 fresh
	// 42 stale
	// true 43 fresh
	// 1
	// miss
	// hits=2 stale=1 misses=1 refreshes=1 hit rate=75%
}

// ExampleLookupUnaryServerInterceptor wires the cache into the perf chain:
// Lookup before the coalescer, Fill inside its flight.
func ExampleLookupUnaryServerInterceptor() {
	c, err := cache.New(cache.Settings{MaxBytes: 256 << 20, StaleFor: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var table policy.Table // the service's policy table (service/policy.go)

	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			policy.UnaryServerInterceptor(table),
			cache.LookupUnaryServerInterceptor(c, cache.WithRefreshTimeout(10*time.Second)),
			// coalesce.UnaryServerInterceptor(...) goes here
			cache.FillUnaryServerInterceptor(c),
		),
		grpc.ChainStreamInterceptor(
			policy.StreamServerInterceptor(table),
			cache.LookupStreamServerInterceptor(c),
			cache.FillStreamServerInterceptor(c),
		),
	)
	defer srv.Stop()
}
