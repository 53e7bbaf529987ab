package ratelimit

import (
	"context"
	"time"
)

// Fleet shares each backend's rate ceiling among the replicas of a fleet
// (perf/fleet implements it on Redis). It is asked off the callers' path,
// for a small batch of tokens at a time.
type Fleet interface {
	// Take asks the fleet's ceiling of backend (rate requests/s, burst) for
	// up to n tokens: how many it granted now; when none, how long until
	// one will be; the fleet's rate when a replica lowered it recently (0:
	// none); ok = false when the fleet cannot answer. lowered says this
	// replica has just lowered its rate to rate.
	Take(ctx context.Context, backend string, n int, rate float64, burst int, lowered bool) (granted int, wait time.Duration, fleetRate float64, ok bool)
	// Replicas is how many replicas share the fleet (at least 1).
	Replicas() int
}

// In fleet mode (Settings.Fleet set) the rate ceiling is the fleet's: a
// dispatch spends a token of a batch this replica was granted by the
// fleet, so that the fleet's calls to a backend stay within one ceiling
// however they spread over replicas. The consistency chosen, and its cost:
//
//   - a batch is 20 ms of the rate (at least one token) and lasts a second
//     unused; the next batch is asked for when half of one is left, so a
//     replica in steady use holds a token when a call comes and Redis is
//     not on the call's path; the fleet may thus run ahead of its ceiling
//     by about a batch per replica. Redis is never asked while the
//     limiter's lock is held; a call that finds no token (the first after
//     an idle spell, or when the fleet's ceiling is reached) waits in the
//     queue for the batch's round trip;
//   - each replica adapts its own rate from what it sees; a decrease is
//     published with the next batch and caps the fleet's rate for 10 s,
//     so one replica's 429 slows every replica;
//   - when the fleet cannot answer (Redis down, slow, its breaker open) the
//     replica falls back for a second at a time to its local bucket at its
//     share of the rate (rate / replicas seen), so the fleet stays near
//     its ceiling without Redis, and callers see no error.
//
// The concurrency limit and the queues stay per replica: they follow each
// replica's own view of the backend's latency.
const (
	fleetBatch    = 20 * time.Millisecond // a batch is this much of the rate
	creditLife    = time.Second           // an unused batch expires
	fleetFallback = time.Second           // after a failed Take, local for this long
)

// fleetOnLocked reports whether the rate ceiling is the fleet's now.
func (l *limiter) fleetOnLocked(now time.Time) bool {
	return l.set.s.Fleet != nil && !now.Before(l.fleetRetryAt)
}

// tokenWaitLocked is how long until the rate ceiling lets a call start: 0
// now; in fleet mode without a token, -1 (a batch is being asked for, and
// its answer pumps the queue).
func (l *limiter) tokenWaitLocked(now time.Time) time.Duration {
	if !l.fleetOnLocked(now) {
		return l.bucket.wait(now)
	}
	if l.credit > 0 && now.Before(l.creditUntil) {
		return 0
	}
	l.credit = 0
	l.refillLocked(now)
	return -1
}

// takeTokenLocked spends the token tokenWaitLocked found.
func (l *limiter) takeTokenLocked(now time.Time) {
	if l.fleetOnLocked(now) {
		l.credit--
		if l.credit < max(1, l.batchLocked()/2) {
			l.refillLocked(now) // ask ahead, so the next call finds a token
		}
		return
	}
	l.bucket.take(now)
}

// refillLocked asks the fleet for a batch, unless a request is under way.
func (l *limiter) refillLocked(now time.Time) {
	if l.refilling || now.Before(l.refillAfter) {
		return
	}
	l.refilling = true
	n := l.batchLocked()
	rate, burst, lowered := l.rate, l.burst, l.lowered
	l.lowered = false
	go func() {
		granted, wait, fleetRate, ok := l.set.s.Fleet.Take(context.Background(), l.key, n, rate, burst, lowered)
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.refilling = false
		switch {
		case !ok:
			l.fleetRetryAt = now.Add(fleetFallback)
			l.lowered = l.lowered || lowered // publish it when the fleet is back
			l.applyLocked(now)               // the local bucket at this replica's share
			l.armLocked(l.fleetRetryAt)
		case granted > 0:
			if !now.Before(l.creditUntil) {
				l.credit = 0
			}
			l.credit += granted
			l.creditUntil = now.Add(creditLife)
		default:
			l.refillAfter = now.Add(wait)
			l.armLocked(l.refillAfter)
		}
		if ok && fleetRate > 0 && fleetRate < l.rate {
			// Another replica saw overload: follow the fleet's rate.
			l.rate = max(fleetRate, l.set.s.Min)
			l.applyLocked(now)
		}
		l.pumpLocked(now)
	}()
}

// batchLocked is how many tokens to ask the fleet for at once: fleetBatch
// of the rate, at least one, at most the burst.
func (l *limiter) batchLocked() int {
	return max(1, min(l.burst, int(l.rate*fleetBatch.Seconds())))
}

// localRate is the rate of the local bucket: the whole rate for a gateway
// alone, this replica's share of it when the fleet cannot answer.
func (l *limiter) localRate() float64 {
	if f := l.set.s.Fleet; f != nil {
		return l.rate / float64(max(1, f.Replicas()))
	}
	return l.rate
}
