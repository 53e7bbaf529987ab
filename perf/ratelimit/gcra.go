package ratelimit

import "time"

// gcra is the rate ceiling's token bucket as the generic cell rate
// algorithm: one "theoretical arrival time" instead of a token count. It
// is written here rather than taken from golang.org/x/time/rate because it
// lives under the limiter's own mutex: rate.Limiter's lock would be a
// second lock per call (BenchmarkAcquire measured it), and the limiter needs
// only three operations.
//
// A call may start when tat − now ≤ (burst − 1) × interval; starting one
// moves tat to max(tat, now) + interval. An idle bucket thus lets burst
// calls start at once, then one per interval.
type gcra struct {
	interval time.Duration // 1/rate
	burst    int
	tat      time.Time
}

func newGCRA(rate float64, burst int) gcra {
	return gcra{interval: intervalOf(rate), burst: max(1, burst)}
}

func intervalOf(rate float64) time.Duration {
	return max(1, time.Duration(float64(time.Second)/rate))
}

// wait is how long until a call may start (0: now).
func (g *gcra) wait(now time.Time) time.Duration {
	allowAt := g.tat.Add(-time.Duration(g.burst-1) * g.interval)
	return max(0, allowAt.Sub(now))
}

// take starts a call; the caller checked wait first.
func (g *gcra) take(now time.Time) {
	if g.tat.Before(now) {
		g.tat = now
	}
	g.tat = g.tat.Add(g.interval)
}

// set changes the rate and burst, keeping at most one burst of backlog.
func (g *gcra) set(now time.Time, rate float64, burst int) {
	g.interval, g.burst = intervalOf(rate), max(1, burst)
	if most := now.Add(time.Duration(g.burst) * g.interval); g.tat.After(most) {
		g.tat = most
	}
}
