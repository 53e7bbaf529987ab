package ratelimit

import (
	"math"
	"time"
)

// ceilingClimb is the most the rate ceiling climbs per second after a
// decrease, as a fraction of the rate the backend last pushed back at: near
// that ceiling the rate probes slowly, so a backend that answers an
// overshoot with Retry-After (a pause of every call) is overshot rarely.
const ceilingClimb = 0.05

// increaseLocked raises the rate ceiling after a success, up to Max: by one
// request/s per success during slow start (until the key's first decrease,
// so the rate doubles per second of full-rate success, as TCP's slow
// start), then by min(Increase, ceilingClimb × the rate before the last
// decrease)/rate.
func (l *limiter) increaseLocked(now time.Time) {
	s := &l.set.s
	if l.rate >= s.Max {
		return
	}
	var step float64
	if l.ceiling == 0 {
		step = max(s.Increase/l.rate, 1)
	} else {
		step = min(s.Increase, ceilingClimb*l.ceiling) / l.rate
	}
	l.rate = min(l.rate+step, s.Max)
	l.stats.increases++
	l.applyLocked(now)
}

// decreaseLocked multiplies the rate ceiling by Decrease, down to Min,
// unless the call dispatched at `at` predates the last decrease or Cooldown
// has not passed. When the backend delivered less than that since the last
// decrease (over a second or more), the rate falls at once to what it
// delivered: a backend with a deep burst or a Retry-After pause pushes back
// only now and then, and a bare ×Decrease would leave the rate far above
// its capacity for many rounds.
func (l *limiter) decreaseLocked(now, at time.Time) {
	s := &l.set.s
	if at.Before(l.lastDecrease) || now.Sub(l.lastDecrease) < s.Cooldown || l.rate <= s.Min {
		return
	}
	next := l.rate * s.Decrease
	if span := now.Sub(l.since); span >= time.Second {
		next = min(next, float64(l.delivered)/span.Seconds())
	}
	l.ceiling = l.rate // ends slow start
	l.rate = max(next, s.Min)
	l.delivered = 0
	l.since, l.lastDecrease = now, now
	l.stats.decreases++
	l.lowered = l.set.s.Fleet != nil // published with the next batch
	l.credit = min(l.credit, 1)      // the batch was taken at the old rate
	l.applyLocked(now)
}

// applyLocked retunes the token bucket to the current rate.
func (l *limiter) applyLocked(now time.Time) {
	l.bucket.set(now, l.localRate(), l.burstFor(l.rate))
}

// burstFor is the bucket's burst at rate r.
func (l *limiter) burstFor(r float64) int {
	if b := l.set.s.Burst; b > 0 {
		return b
	}
	return max(1, int(math.Ceil(r/10)))
}
