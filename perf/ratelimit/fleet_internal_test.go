package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/vega-gateway/vega/perf/policy"
)

// fakeFleet is the fleet's shared ceiling in process: one GCRA for all the
// Sets that share it, as perf/fleet keeps in Redis.
type fakeFleet struct {
	mu       sync.Mutex
	tat      time.Time
	lowest   float64   // a replica's lowered rate; 0: none
	holdTill time.Time // a replica's Retry-After holds the fleet until then
	down     atomic.Bool
	replicas int
	takes    atomic.Int64
}

func (f *fakeFleet) Take(_ context.Context, _ string, n int, rate float64, burst int, lowered bool, hold time.Duration) (int, time.Duration, float64, time.Duration, bool) {
	if f.down.Load() {
		return 0, 0, 0, 0, false
	}
	f.takes.Add(1)
	time.Sleep(200 * time.Microsecond) // a round trip
	f.mu.Lock()
	defer f.mu.Unlock()
	if lowered {
		f.lowest = rate
	}
	if f.lowest > 0 && f.lowest < rate {
		rate = f.lowest
	}
	now := time.Now()
	if until := now.Add(hold); hold > 0 && until.After(f.holdTill) {
		f.holdTill = until
	}
	if held := f.holdTill.Sub(now); held > 0 {
		return 0, held, f.lowest, held, true
	}
	g := newGCRA(rate, burst)
	g.tat = f.tat
	k := 0
	for k < n && g.wait(now) == 0 {
		g.take(now)
		k++
	}
	f.tat = g.tat
	if k == 0 {
		return 0, g.wait(now), f.lowest, 0, true
	}
	return k, 0, f.lowest, 0, true
}

func (f *fakeFleet) Replicas() int { return f.replicas }

// Lease grants the static share: these tests are about the rate.
func (f *fakeFleet) Lease(_ context.Context, _ string, _, _, lo, hi int) (int, bool) {
	if f.down.Load() {
		return 0, false
	}
	return max(lo, hi/max(1, f.replicas)), true
}

// offer sends rate calls/s to set for d, open loop, to a backend that
// answers at once, and counts the calls dispatched.
func offer(set *Set, rate float64, d time.Duration, dispatched *atomic.Int64, wg *sync.WaitGroup) {
	every := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for at := time.Duration(0); at < d; at += every {
		time.Sleep(time.Until(start.Add(at)))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if p, err := set.Acquire(ctx, "ollama", ""); err == nil {
				dispatched.Add(1)
				p.Release(policy.Result{Outcome: policy.Success})
			}
		})
	}
}

// Three replicas with a ceiling of 30/s, each offered 30/s: the backend
// gets 30/s from the fleet, not 90/s (issue 11's finding), with the fleet
// answering and, at a third each, without it.
func TestFleetSharesTheRateCeiling(t *testing.T) {
	for _, down := range []bool{false, true} {
		name := "fleet"
		if down {
			name = "fleet down: a third each"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ff := &fakeFleet{replicas: 3}
				ff.down.Store(down)
				var dispatched atomic.Int64
				var wg sync.WaitGroup
				for range 3 {
					set := newTestSet(t, Settings{Initial: 30, Min: 30, Max: 30, Fleet: ff})
					wg.Go(func() { offer(set, 30, 10*time.Second, &dispatched, &wg) })
				}
				wg.Wait()
				time.Sleep(time.Second) // the last batches asked ahead come back
				assert.InDelta(t, 300, float64(dispatched.Load()), 30, "calls dispatched in 10 s by the fleet")
				t.Logf("%d calls dispatched, %d asks of the fleet", dispatched.Load(), ff.takes.Load())
			})
		})
	}
}

// A replica's decrease reaches the others through the fleet.
func TestFleetCarriesADecrease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ff := &fakeFleet{replicas: 2}
		a := newTestSet(t, Settings{Initial: 100, Max: 100, Fleet: ff})
		b := newTestSet(t, Settings{Initial: 100, Max: 100, Fleet: ff})
		time.Sleep(2 * time.Second) // past the rate ceiling's evidence span
		p, err := a.Acquire(context.Background(), "ollama", "")
		if err != nil {
			t.Fatal(err)
		}
		p.Release(policy.Result{Outcome: policy.Overload})
		lowered := a.Stats()[0].Rate
		assert.Less(t, lowered, 100.0)
		for range 3 { // the decrease is published with a's next batch, b learns it with its own
			for _, s := range []*Set{a, b} {
				p, err := s.Acquire(context.Background(), "ollama", "")
				if err == nil {
					p.Release(policy.Result{Outcome: policy.Neutral})
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		assert.LessOrEqual(t, b.Stats()[0].Rate, lowered+1, "b follows the fleet's rate")
		time.Sleep(time.Second) // batches asked ahead come back before the bubble ends
	})
}

// A backend's Retry-After seen by replica a holds replica b too: a is
// granted the hold at once (off its callers' path), b learns it with its
// next batch and dispatches at most the batch it held before the hold
// ends; every call waits rather than fails (they fit their deadlines).
// Ordinary use beside it: with no Retry-After, b's calls go at once.
func TestFleetSharesARetryAfterHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ff := &fakeFleet{replicas: 2}
		a := newTestSet(t, Settings{Initial: 10, Max: 10, Fleet: ff})
		b := newTestSet(t, Settings{Initial: 10, Max: 10, Fleet: ff})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for range 3 { // ordinary use: each call dispatched at once
			start := time.Now()
			p, err := b.Acquire(ctx, "ollama", "")
			assert.NoError(t, err)
			assert.Less(t, time.Since(start), 150*time.Millisecond, "a call at 10/s waits at most a token")
			p.Release(policy.Result{Outcome: policy.Success})
			time.Sleep(100 * time.Millisecond)
		}

		p, err := a.Acquire(ctx, "ollama", "")
		assert.NoError(t, err)
		held := time.Now()
		p.Release(policy.Result{Outcome: policy.Overload, RetryAfter: 3 * time.Second})
		time.Sleep(10 * time.Millisecond) // a round trip or two
		ff.mu.Lock()
		assert.WithinDuration(t, held.Add(3*time.Second), ff.holdTill, 5*time.Millisecond, "a published the hold at once")
		ff.mu.Unlock()

		early := 0
		for range 5 {
			p, err := b.Acquire(ctx, "ollama", "")
			if !assert.NoError(t, err, "b's calls wait out the hold") {
				continue
			}
			if time.Since(held) < 3*time.Second {
				early++
			}
			p.Release(policy.Result{Outcome: policy.Success})
		}
		assert.LessOrEqual(t, early, 1, "b dispatched at most the batch it held during the hold")
		time.Sleep(time.Second) // batches asked ahead come back before the bubble ends
	})
}
