package ratelimit

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// pushStep is the relative change of the rate below which a success does
// not retune the token bucket, which would take its lock on every call.
const pushStep = 0.01

// increase adds Increase/rate to the rate, up to Max. It takes no lock:
// the rate moves by compare-and-swap, and the bucket is retuned (under mu)
// only once the rate has moved pushStep away from the bucket's.
func (l *limiter) increase() {
	s := l.set.s
	var r float64
	for {
		old := l.rate.Load()
		cur := math.Float64frombits(old)
		if cur >= s.Max { // the common case at steady state
			return
		}
		step := s.Increase / cur
		if !l.decreased.Load() {
			// Slow start: until the key's first decrease each success adds
			// one request/s, so the rate doubles per second of full-rate
			// success (TCP's slow start) instead of climbing Increase/s.
			step = max(step, 1)
		}
		r = min(cur+step, s.Max)
		if l.rate.CompareAndSwap(old, math.Float64bits(r)) {
			break
		}
	}
	l.increases.Add(1)
	if applied := math.Float64frombits(l.applied.Load()); r >= s.Max || math.Abs(r-applied) >= pushStep*applied {
		l.mu.Lock()
		l.applyLocked(s.Now())
		l.mu.Unlock()
	}
}

// decrease multiplies the rate by Decrease, down to Min, unless the call
// scheduled at `at` predates the last decrease or Cooldown has not passed.
func (l *limiter) decrease(now time.Time, at int64) {
	s := l.set.s
	l.mu.Lock()
	defer l.mu.Unlock()
	if at < l.lastDecrease || now.UnixNano()-l.lastDecrease < int64(s.Cooldown) {
		return
	}
	for {
		old := l.rate.Load()
		cur := math.Float64frombits(old)
		if cur <= s.Min {
			return
		}
		if l.rate.CompareAndSwap(old, math.Float64bits(max(cur*s.Decrease, s.Min))) {
			break
		}
	}
	l.decreases.Add(1)
	l.decreased.Store(true) // slow start ends
	l.lastDecrease = now.UnixNano()
	l.applyLocked(now)
}

// applyLocked retunes the token bucket to the current rate. l.mu is held.
func (l *limiter) applyLocked(now time.Time) {
	r := l.currentRate()
	l.applied.Store(math.Float64bits(r))
	l.bucket.SetLimitAt(now, rate.Limit(r))
	if burst := l.burstFor(r); burst != l.burst {
		l.bucket.SetBurstAt(now, burst)
		l.burst = burst
	}
}

// burstFor is the bucket's burst at rate r.
func (l *limiter) burstFor(r float64) int {
	if b := l.set.s.Burst; b > 0 {
		return b
	}
	return max(1, int(math.Ceil(r/10)))
}

// block holds every call until `until`.
func (l *limiter) block(until time.Time) {
	u := until.UnixNano()
	for {
		old := l.blockedUntil.Load()
		if old >= u || l.blockedUntil.CompareAndSwap(old, u) {
			return
		}
	}
}
