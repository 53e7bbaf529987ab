package ratelimit

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/vega-gateway/vega/perf/policy"
)

// The concurrency limit's adaptation window: it closes after minWindow
// once it holds minSamples latencies, or after maxWindow with fewer.
const (
	minWindow  = time.Second
	maxWindow  = 30 * time.Second
	minSamples = 10
	maxSamples = 256 // latencies kept per window; a uniform sample beyond
	historyLen = 30  // windows whose p50 the baseline is the least of
	tolerance  = 1.25
	// headroomBelow: the limit grows only while the window's p50 latency
	// is within this percentage of the baseline. Between it and
	// tolerance × base the limit holds: a backend of N slots run at N+1
	// calls answers in (N+1)/N of its unloaded time, and growing further
	// there only lengthens its internal queue (and the p99 of every call).
	headroomBelow = 110
	lossFactor    = 0.9
)

// window is one adaptation window of the concurrency limit.
type window struct {
	start       time.Time
	samples     []time.Duration // latencies of successes; at most maxSamples
	seen        int             // successes in the window that give a latency sample
	delivered   int             // successes in the window, all of them
	maxInflight int             // most calls at the backend at once
	cut         bool            // the limit was cut for a loss in this window
}

func (w *window) add(d time.Duration) {
	w.seen++
	if len(w.samples) < maxSamples {
		w.samples = append(w.samples, d)
		return
	}
	if j := rand.IntN(w.seen); j < maxSamples {
		w.samples[j] = d
	}
}

// finishLocked takes a finished call's result into the rate ceiling and the
// concurrency limit.
func (l *limiter) finishLocked(p Permit, r policy.Result, latency time.Duration, expired bool, now time.Time) {
	l.inflight--
	hold := now.Sub(p.at)
	switch r.Outcome {
	case policy.Success:
		l.delivered++
		l.window.delivered++
		l.increaseLocked(now)
		// Only a call dispatched under the current limit speaks for it: a
		// window filled with answers to calls sent under the old limit
		// lags by a service time, and the limit overshoots (Envoy drops
		// such samples too). The answer still counts as a success.
		if !p.at.Before(l.changedAt) {
			l.window.add(latency)
		}
		if !l.answered {
			l.answered, l.hold = true, hold
		} else {
			l.hold += (hold - l.hold) / 5
		}
	case policy.Overload, policy.Failure:
		if r.Outcome == policy.Overload && r.RetryAfter > 0 {
			if until := now.Add(r.RetryAfter); until.After(l.blockedUntil) {
				l.blockedUntil = until
				if l.set.s.Fleet != nil { // every replica holds (fleet.go)
					l.holdToSend = until
				}
			}
		}
		l.decreaseLocked(now, p.at)
		if l.holdToSend.After(now) {
			l.publishLocked(now) // the hold and the decrease, at once
		}
		l.lossLocked(p)
	case policy.Neutral:
		// The caller's deadline ended while the backend still worked on
		// the call, though it had left the backend at least twice its
		// unloaded latency: the backend is slow, not the caller hasty.
		if expired && l.base > 0 && p.budget >= 2*l.base {
			l.lossLocked(p)
		}
	}
	l.adaptLocked(now)
}

// lossLocked cuts the limit by lossFactor for overload evidence: at most
// once per window, and not for a call dispatched before the last cut (its
// result speaks for the old limit).
func (l *limiter) lossLocked(p Permit) {
	if l.window.cut || p.epoch < l.cuts {
		return
	}
	l.window.cut = true
	l.setLimitLocked(l.limit * lossFactor)
}

// adaptLocked closes the window when it is due and moves the limit by the
// gradient of the window's p50 latency against the baseline:
//
//	g = clamp(tolerance × base / sample, 0.5, 1)
//	limit ← limit × g, plus √limit (one while a queue stands) when the
//	sample is within 10% of the base and the window used at least half
//	the limit (an idle backend's limit does not grow)
//
// The baseline is the least p50 of the last historyLen windows; after five
// windows in a row at MinConcurrency it restarts from the last window, so
// a backend that became slower for good (a larger model, longer prompts)
// does not pin the limit at its floor.
func (l *limiter) adaptLocked(now time.Time) {
	w := &l.window
	age := now.Sub(w.start)
	if age < minWindow || (w.seen < minSamples && age < maxWindow) {
		return
	}
	l.throughput = float64(w.delivered) / age.Seconds()
	if w.seen > 0 {
		s := slices.Clone(w.samples)
		slices.Sort(s)
		l.sample = s[(len(s)-1)/2]
		if len(l.history) == historyLen {
			l.history = l.history[1:]
		}
		l.history = append(l.history, l.sample)
		l.base = slices.Min(l.history)
		if !w.cut {
			g := min(1, max(0.5, tolerance*float64(l.base)/float64(l.sample)))
			next := l.limit * g
			if g >= 0.95 && l.sample <= l.base*headroomBelow/100 && 2*w.maxInflight >= l.limitLocked() {
				// Probe by √limit, or by one call while a queue stands:
				// under overload an overshoot of the backend's parallelism
				// shows at once in every call's latency.
				if l.standingLocked() {
					next++
				} else {
					next += math.Sqrt(l.limit)
				}
			}
			l.setLimitLocked(next)
		}
		if l.limit <= float64(l.set.s.MinConcurrency) {
			if l.atMin++; l.atMin >= 5 {
				l.history = append(l.history[:0], l.sample)
				l.base, l.atMin = l.sample, 0
			}
		} else {
			l.atMin = 0
		}
	}
	*w = window{start: now, samples: w.samples[:0], maxInflight: l.inflight}
}

// standingLocked reports whether some tenant's queue is standing.
func (l *limiter) standingLocked() bool {
	for _, t := range l.tenants {
		if t.standing {
			return true
		}
	}
	return false
}

// setLimitLocked moves the limit to v within its bounds, counting the move.
func (l *limiter) setLimitLocked(v float64) {
	s := &l.set.s
	v = min(max(v, float64(s.MinConcurrency)), float64(s.MaxConcurrency))
	switch {
	case v > l.limit:
		l.stats.limitUp++
	case v < l.limit:
		l.stats.limitDown++
		l.cuts++
	default:
		return
	}
	l.limit = v
	l.changedAt = time.Now()
}

// neededAtTurnLocked is the time a call must still have before its
// deadline when its turn comes: the recent service time (l.hold) and a
// quarter of margin, since a call dispatched with barely its service time
// left ends a little late as often as not. Admission asks the same of the
// call's expected turn, so that a call is not admitted only to be dropped
// at its turn. 0 before the first success.
func (l *limiter) neededAtTurnLocked() time.Duration { return l.hold + l.hold/4 }
