package fleet_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/cache"
	"github.com/vega-gateway/vega/perf/fleet"
	"github.com/vega-gateway/vega/perf/policy"
)

// BenchmarkGet is one cache-tier read on the real Redis: its round trip,
// hit (a 1 KiB value) and miss.
func BenchmarkGet(b *testing.B) {
	f := newFleet(b, fleet.Settings{Prefix: testPrefix(b), Timeout: time.Second})
	f.Set("hit", []byte(strings.Repeat("x", 1024)), time.Minute)
	eventually(b, 2*time.Second, func() bool { _, ok := f.Get(context.Background(), "hit"); return ok }, "write never landed")
	for _, key := range []string{"hit", "miss"} {
		b.Run("key="+key, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Get(context.Background(), key)
			}
		})
	}
	st := f.Stats()
	b.Logf("RTT p50 %v p99 %v over the last %d ops", st.RTTP50, st.RTTP99, min(st.Ops, 1024))
}

// BenchmarkLocalMiss is what a local miss costs in the Lookup interceptor
// (the backend answers at once, so only the cache's own work shows):
// tier=local, no Redis; tier=redis/remote=miss, one GET that finds nothing;
// tier=redis/remote=hit, one GET, a decode and the answer served from it.
func BenchmarkLocalMiss(b *testing.B) {
	answer := &vegav1.GenerateResponse{Text: strings.Repeat("word ", 100), Model: "llama3", FinishReason: "stop"}
	handler := func(context.Context, any) (any, error) { return answer, nil }
	req := &vegav1.GenerateRequest{Model: "llama3", Prompt: "p"}
	run := func(b *testing.B, c *cache.Cache, key string) {
		b.Helper()
		lookup := cache.LookupUnaryServerInterceptor(c)
		b.ReportAllocs()
		for b.Loop() {
			ctx := policy.NewContext(context.Background(), &policy.Decision{Key: key, ReadCache: true, WriteCache: true})
			if _, err := lookup(ctx, req, &grpc.UnaryServerInfo{}, handler); err != nil {
				b.Fatal(err)
			}
			c.PurgeLocal(key) // what a remote hit stored locally: the next lookup misses again
		}
	}
	// Each iteration purges the key locally, so every lookup is a local
	// miss (the purge, a scan of an empty cache, is in every variant).
	const tiny = 64 << 10
	b.Run("tier=local", func(b *testing.B) {
		c, err := cache.New(cache.Settings{MaxBytes: tiny})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c, "generate/ollama/k")
	})
	f := newFleet(b, fleet.Settings{Prefix: testPrefix(b), Timeout: time.Second})
	writer, err := cache.New(cache.Settings{Remote: f})
	if err != nil {
		b.Fatal(err)
	}
	defer writer.Close()
	writer.Set("generate/ollama/k", answer, 600, time.Minute, false)
	eventually(b, 2*time.Second, func() bool { _, ok := f.Get(context.Background(), "generate/ollama/k"); return ok }, "write never landed")
	for _, remote := range []string{"miss", "hit"} {
		b.Run("tier=redis/remote="+remote, func(b *testing.B) {
			c, err := cache.New(cache.Settings{MaxBytes: tiny, Remote: f})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			key := "generate/ollama/k"
			if remote == "miss" {
				key = "generate/ollama/absent"
			}
			run(b, c, key)
			if st := c.Stats(); remote == "hit" && st.RemoteHits == 0 {
				b.Fatalf("no remote hit: %+v", st)
			}
		})
	}
}
