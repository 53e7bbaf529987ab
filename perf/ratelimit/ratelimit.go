package ratelimit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/policy"
)

// Set is an adaptive rate limiter per backend key. Limiters are created on
// first use, and evicted when idle beyond Settings.MaxKeys keys. A Set is
// safe for concurrent use.
type Set struct {
	s        Settings           // defaults applied; read-only after NewSet
	limiters registry[*limiter] // bounded by s.MaxKeys while enough limiters are idle
}

// Permit is an admitted call. Release it once with the call's result; the
// zero Permit (from a refused Acquire) ignores Release. It is a small value,
// not a closure, so that admitting a call does not allocate. A Permit whose
// limiter has been evicted meanwhile may still be released: its result then
// adapts the evicted limiter only.
type Permit struct {
	l  *limiter
	at int64 // when the token was reserved, Unix ns
}

// Acquire admits a call to key's backend, waiting for a token while both
// ctx's deadline and Settings.MaxWait allow. When the wait cannot fit, it
// returns at once RESOURCE_EXHAUSTED with a RetryInfo detail (the wait
// needed) and a QuotaFailure detail naming the backend, and gives the token
// back. When ctx ends during the wait, it returns CANCELED or
// DEADLINE_EXCEEDED and gives the token back. A Retry-After reported by the
// backend is a floor on every wait: no call is admitted before it ends.
func (s *Set) Acquire(ctx context.Context, key string) (Permit, error) {
	l := s.get(key)
	if e := s.limiters.epoch.Load(); l.used.Load() != e { // mostly a read: the epoch moves when a key is added
		l.used.Store(e)
	}
	if err := ctx.Err(); err != nil { // a caller who left spends no token
		l.canceled.Add(1)
		return Permit{}, status.FromContextError(err).Err()
	}
	now := s.s.Now()
	if now.UnixNano() >= l.blockedUntil.Load() && l.bucket.AllowN(now, 1) {
		l.admitted.Add(1)
		l.inflight.Add(1)
		return Permit{l: l, at: now.UnixNano()}, nil
	}
	return l.wait(ctx, now)
}

// Release reports the call's result: Success raises the rate by
// Increase/rate (up to Max); Overload and Failure multiply it by Decrease
// (down to Min, at most once per Cooldown, and only for a call scheduled
// after the last decrease); an Overload with RetryAfter also holds every
// call to the key until RetryAfter has passed. Neutral changes nothing.
func (p Permit) Release(r policy.Result) {
	l := p.l
	if l == nil {
		return
	}
	l.inflight.Add(-1)
	switch r.Outcome {
	case policy.Success:
		l.delivered.Add(1)
		l.increase()
	case policy.Overload, policy.Failure:
		now := l.set.s.Now()
		if r.Outcome == policy.Overload && r.RetryAfter > 0 {
			l.block(now.Add(r.RetryAfter))
		}
		l.decrease(now, p.at)
	}
}

func (s *Set) get(key string) *limiter {
	return s.limiters.load(key, func() *limiter {
		l := &limiter{set: s, key: key}
		l.rate.Store(math.Float64bits(s.s.Initial))
		l.applied.Store(math.Float64bits(s.s.Initial))
		l.burst = l.burstFor(s.s.Initial)
		l.bucket = rate.NewLimiter(rate.Limit(s.s.Initial), l.burst)
		l.since = s.s.Now().UnixNano()
		return l
	})
}

// limiter is the state of one key.
type limiter struct {
	set *Set
	key string

	// Read on every call, rarely written.
	bucket       *rate.Limiter           // the token bucket; it has its own lock
	rate         atomic.Uint64           // math.Float64bits of the current rate; changed by compare-and-swap
	applied      atomic.Uint64           // math.Float64bits of the bucket's rate; written under mu
	blockedUntil atomic.Int64            // Unix ns before which no call is admitted (Retry-After)
	refused      atomic.Pointer[refusal] // the last refusal, reused while it says the same
	used         atomic.Uint64           // the registry's epoch at the last call (for eviction)
	ceiling      atomic.Uint64           // math.Float64bits of the rate before the last decrease; 0 during slow start
	delivered    atomic.Int64            // successes since the last decrease (or creation)

	_ [64]byte // keeps the counters' cache line apart from the fields above

	admitted, rejected, waited, canceled, increases, decreases atomic.Int64 // reset by ResetStats
	totalWait                                                  atomic.Int64 // ns; reset by ResetStats
	inflight                                                   atomic.Int64 // admitted calls not yet released, or waiting for a token

	_ [64]byte

	mu           sync.Mutex // guards the fields below and retuning the bucket; never held across a wait
	burst        int        // the bucket's burst
	lastDecrease int64      // Unix ns of the last decrease
	since        int64      // Unix ns of the last decrease, or of creation: delivered counts from here
}

func (l *limiter) currentRate() float64 { return math.Float64frombits(l.rate.Load()) }

// wait is Acquire's slow path: reserve a token, and wait for it if the wait
// fits.
func (l *limiter) wait(ctx context.Context, now time.Time) (Permit, error) {
	s := l.set.s
	l.inflight.Add(1) // a waiting call is in flight too; taken back on refusal
	start := now
	maxWait := s.MaxWait
	if maxWait == 0 {
		maxWait = time.Duration(float64(time.Second) / l.currentRate())
	}
	limit := now.Add(maxWait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(limit) {
		limit = dl
	}
	r := l.bucket.ReserveN(now, 1)
	at := now.Add(r.DelayFrom(now))
	if !r.OK() { // cannot happen while the burst is at least 1
		at = limit.Add(time.Second)
	}
	for {
		if blocked := time.Unix(0, l.blockedUntil.Load()); blocked.After(at) {
			at = blocked // Retry-After is a floor on the wait
		}
		if at.After(limit) {
			r.CancelAt(now)
			l.inflight.Add(-1)
			l.rejected.Add(1)
			return Permit{}, l.exhausted(at.Sub(now))
		}
		d := at.Sub(now)
		if d <= 0 {
			break
		}
		if err := sleep(ctx, d); err != nil {
			r.CancelAt(s.Now())
			l.inflight.Add(-1)
			l.canceled.Add(1)
			return Permit{}, status.FromContextError(err).Err()
		}
		// A Retry-After may have come while we slept: check again. (The
		// timer is the authority on how long we slept, should Now be a
		// clock that did not move.)
		now = later(s.Now(), now.Add(d))
	}
	l.admitted.Add(1)
	if waited := now.Sub(start); waited > 0 {
		l.waited.Add(1)
		l.totalWait.Add(int64(waited))
	}
	// The permit is dated when the call was scheduled, at the rate of that
	// moment.
	return Permit{l: l, at: start.UnixNano()}, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
