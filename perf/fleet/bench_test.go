package fleet_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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

// BenchmarkRemoteWaiterWake is what a waiter on another replica pays after
// the leader's finish, on the real Redis: the leader's finish script
// (store, drop the lease, publish), the notice reaching the waiter's
// replica, and the waiter's check: one round trip that reads the answer,
// handed over or kept in the cache tier. Each iteration is a new flight whose
// waiter is registered (its first check done) before the leader finishes.
// It reports the waiter's extra latency over the leader's callers (from
// the leader's finish returning, which is when they answer: extra-p50/p99)
// and from the finish starting (wake-p50/p99).
func BenchmarkRemoteWaiterWake(b *testing.B) {
	prefix := testPrefix(b)
	f1 := newFleet(b, fleet.Settings{Prefix: prefix, ReplicaID: "leader"})
	f2 := newFleet(b, fleet.Settings{Prefix: prefix, ReplicaID: "waiter"})
	eventually(b, 3*time.Second, func() bool { return f2.Stats().Subscribed }, "no subscription")
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	answer := []byte(strings.Repeat("x", 1024))
	for _, keep := range []bool{true, false} {
		b.Run(map[bool]string{true: "answer=kept", false: "answer=handed"}[keep], func(b *testing.B) {
			ctx := context.Background()
			var extra, wake []time.Duration
			i := 0
			for b.Loop() {
				i++
				key := fmt.Sprintf("wake/%v/%d", keep, i)
				_, finish, _ := f1.Lead(ctx, key)
				_, _, wait := f2.Lead(ctx, key)
				if finish == nil || wait == nil {
					b.Fatal("no flight")
				}
				woken := make(chan time.Time, 1)
				go func() {
					v, _, ok := wait(ctx)
					if !ok || v == nil {
						woken <- time.Time{}
						return
					}
					woken <- time.Now()
				}()
				for rdb.ZCard(ctx, prefix+":v1:f:"+key+":w").Val() == 0 { // registered: its first check is done
				}
				start := time.Now()
				finish(answer, time.Minute, keep)
				finished := time.Now()
				at := <-woken
				if at.IsZero() {
					b.Fatal("the waiter got no answer")
				}
				extra = append(extra, max(at.Sub(finished), 0))
				wake = append(wake, at.Sub(start))
			}
			b.StopTimer()
			q := func(d []time.Duration, p float64) float64 {
				slices.Sort(d)
				return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
			}
			b.ReportMetric(q(extra, 0.5), "extra-p50-ms")
			b.ReportMetric(q(extra, 0.99), "extra-p99-ms")
			b.ReportMetric(q(wake, 0.5), "wake-p50-ms")
			b.ReportMetric(q(wake, 0.99), "wake-p99-ms")
			_, _ = rdb.Del(ctx, prefix+":v1:c:"+fmt.Sprintf("wake/%v/%d", keep, i)).Result()
		})
	}
	st := f2.Stats()
	b.Logf("waiter's Redis RTT p50 %v p99 %v", st.RTTP50, st.RTTP99)
}
