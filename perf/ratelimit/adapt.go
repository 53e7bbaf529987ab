package ratelimit

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// pushStep is the relative change of the rate below which a success does
// not retune the token bucket, which would take its lock on every call.
const pushStep = 0.01

// ceilingClimb is the most the rate climbs per second after a decrease, as
// a fraction of the rate the backend last pushed back at: near that
// ceiling the rate probes slowly, so a backend that answers an overshoot
// with Retry-After (a pause of every call) is overshot rarely.
const ceilingClimb = 0.05

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
		var step float64
		if ceiling := math.Float64frombits(l.ceiling.Load()); ceiling == 0 {
			// Slow start: until the key's first decrease each success adds
			// one request/s, so the rate doubles per second of full-rate
			// success (TCP's slow start) instead of climbing Increase/s.
			step = max(s.Increase/cur, 1)
		} else {
			// After a decrease, climb by at most ceilingClimb of the rate
			// at which the backend last pushed back, per second.
			step = min(s.Increase, ceilingClimb*ceiling) / cur
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
	// What the backend delivered since the last decrease: after a second
	// or more of evidence the rate falls at once to it when that is lower
	// than cur × Decrease. A backend with a deep burst or a Retry-After
	// pause pushes back only now and then, and a bare ×Decrease would
	// leave the rate far above its capacity for many rounds.
	var measured float64
	if span := now.UnixNano() - l.since; span >= int64(time.Second) {
		measured = float64(l.delivered.Load()) / (float64(span) / float64(time.Second))
	}
	for {
		old := l.rate.Load()
		cur := math.Float64frombits(old)
		if cur <= s.Min {
			return
		}
		next := cur * s.Decrease
		if measured > 0 {
			next = min(next, measured)
		}
		if l.rate.CompareAndSwap(old, math.Float64bits(max(next, s.Min))) {
			l.ceiling.Store(old) // ends slow start
			break
		}
	}
	l.delivered.Store(0)
	l.since = now.UnixNano()
	l.decreases.Add(1)
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
