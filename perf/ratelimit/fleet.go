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
	// none); how long the fleet holds the backend for a Retry-After (0:
	// not); ok = false when the fleet cannot answer. lowered says this
	// replica has just lowered its rate to rate; hold > 0 that the backend
	// asked this replica to hold off that long.
	Take(ctx context.Context, backend string, n int, rate float64, burst int, lowered bool, hold time.Duration) (granted int, wait time.Duration, fleetRate float64, held time.Duration, ok bool)
	// Lease asks for this replica's lease of backend's concurrency slots
	// (slots.go): want is how many it would use (0: idle), busy how many
	// calls it has at the backend now, min and max the limits, max being
	// the fleet's cap. It returns the slots granted (at least min); ok =
	// false when the fleet cannot answer.
	Lease(ctx context.Context, backend string, want, busy, min, max int) (slots int, ok bool)
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
//   - a backend's Retry-After is published at once (a batch of none,
//     off the callers' path) and holds every replica: the fleet grants no
//     token until it passes, and a replica that learns of it (with its
//     next batch, or the answer to its own publication) drops the tokens
//     it holds and holds its queue too. A replica holding tokens of a
//     batch may spend them before it learns: at most a batch per replica
//     reaches the backend after the hold began;
//   - when the fleet cannot answer (Redis down, slow, its breaker open) the
//     replica falls back for a second at a time to its local bucket at its
//     share of the rate (rate / replicas seen), so the fleet stays near
//     its ceiling without Redis, and callers see no error.
//
// The concurrency cap is the fleet's too, leased in slots (slots.go, where
// the consistency is spelt out): a lease is asked for off the callers'
// path and renewed about every second while the backend is used; the
// leases sum to at most MaxConcurrency, except that a replica without one
// yet runs at MaxConcurrency / replicas for a round trip (the slack); a
// replica gets more only as the others renew or lapse (3 s), which is the
// cost: a burst far above a fresh replica's share queues behind it (and is
// served when its callers' deadlines allow: 20 calls with 20 s deadlines
// on a replica of 2 slots of 100 ms all are, in 1 s;
// TestBurstAboveAReplicasShareIsServed).
// Without the fleet each replica takes MaxConcurrency / replicas seen.
//
// The queues stay per replica, and so does the gradient of the
// concurrency limit (each replica's own view of the backend's latency).
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
	l.askLocked(now, l.batchLocked())
}

// publishLocked sends the fleet what it has not heard yet (a Retry-After
// hold, a decrease) in a batch of no token, unless a request is under way
// (its answer sends it then).
func (l *limiter) publishLocked(now time.Time) {
	if l.refilling || !l.fleetOnLocked(now) {
		return
	}
	l.refilling = true
	l.askLocked(now, 0)
}

// askLocked asks the fleet for n tokens off the callers' path, with the
// decrease and hold not yet published; refilling is set.
func (l *limiter) askLocked(now time.Time, n int) {
	rate, burst, lowered := l.rate, l.burst, l.lowered
	var hold time.Duration
	if l.holdToSend.After(now) {
		hold = l.holdToSend.Sub(now)
	}
	l.lowered, l.holdToSend = false, time.Time{}
	go func() {
		granted, wait, fleetRate, held, ok := l.set.s.Fleet.Take(context.Background(), l.key, n, rate, burst, lowered, hold)
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.refilling = false
		switch {
		case !ok:
			l.fleetRetryAt = now.Add(fleetFallback)
			l.lowered = l.lowered || lowered // publish it when the fleet is back
			if hold > 0 && now.Before(l.blockedUntil) {
				l.holdToSend = l.blockedUntil
			}
			l.applyLocked(now) // the local bucket at this replica's share
			l.armLocked(l.fleetRetryAt)
		case held > 0:
			// The fleet holds the backend (a Retry-After seen here or
			// elsewhere): no call before it ends, the tokens held go.
			if until := now.Add(held); until.After(l.blockedUntil) {
				l.blockedUntil = until
			}
			l.credit = 0
			l.refillAfter = l.blockedUntil
			l.armLocked(l.blockedUntil)
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
		if ok && (l.lowered || l.holdToSend.After(now)) {
			l.publishLocked(now) // noted while this request was under way
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
