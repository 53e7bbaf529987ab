package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/vega-gateway/vega/perf/policy"
	"github.com/vega-gateway/vega/perf/ratelimit"
)

const huge = 1e12 // requests/s: no call ever waits

// BenchmarkAcquire is the cost of admitting a call and reporting its
// success: ours (key lookup, Acquire, Release: rate ceiling, concurrency
// slot, tenant queue bookkeeping, a latency sample) against a bare
// rate.Limiter.Allow and against Allow plus a semaphore slot (the same two
// limits from libraries). At impl=ours the rate is at Max, where a success
// has nothing to raise; impl=ours-adapting keeps it below Max, so successes
// change the rate.
func BenchmarkAcquire(b *testing.B) {
	run := func(b *testing.B, s ratelimit.Settings) {
		set, err := ratelimit.NewSet(s)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p, err := set.Acquire(ctx, "ollama", "")
				if err != nil {
					b.Fatal(err)
				}
				p.Release(policy.Result{Outcome: policy.Success})
			}
		})
	}
	b.Run("impl=ours", func(b *testing.B) {
		run(b, ratelimit.Settings{Initial: huge, Min: huge, Max: huge})
	})
	b.Run("impl=ours-adapting", func(b *testing.B) {
		run(b, ratelimit.Settings{Initial: huge / 2, Min: 1, Max: huge, Increase: 1})
	})
	// What the limiter composes, from libraries: a rate limiter and a
	// semaphore for the concurrency limit, each with its own lock (the
	// limiter takes one lock to admit and one to release).
	b.Run("impl=xrate+semaphore", func(b *testing.B) {
		lim := rate.NewLimiter(huge, int(huge/10))
		sem := semaphore.NewWeighted(64)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !lim.Allow() || !sem.TryAcquire(1) {
					b.Fatal("refused")
				}
				sem.Release(1)
			}
		})
	})
	b.Run("impl=xrate", func(b *testing.B) {
		lim := rate.NewLimiter(huge, int(huge/10))
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !lim.Allow() {
					b.Fatal("refused")
				}
			}
		})
	})
}

// BenchmarkReject is the cost of refusing a call whose wait cannot fit,
// with its RESOURCE_EXHAUSTED status and details: one slot, held, and a
// longest wait shorter than a turn.
func BenchmarkReject(b *testing.B) {
	set, err := ratelimit.NewSet(ratelimit.Settings{InitialConcurrency: 1, MinConcurrency: 1, MaxConcurrency: 1, MaxQueueWait: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := set.Acquire(ctx, "ollama", ""); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := set.Acquire(ctx, "ollama", ""); err == nil {
				b.Fatal("admitted")
			}
		}
	})
}
