package ratelimit

import (
	"context"
	"time"
)

// In fleet mode MaxConcurrency is the fleet's cap on a backend's calls at
// once, not each replica's: a replica's concurrency limit is its own
// adaptive limit (the gradient of concurrency.go, unchanged) capped by the
// slots it leases from the fleet (Fleet.Lease; perf/fleet/slots.go says
// how a lease is shared out). The consistency chosen, and its cost:
//
//   - a lease is asked for off the callers' path, when a key is first used
//     and then at most every leaseRenew while it is used (a call arriving
//     or leaving); it lasts leaseLife, so a replica that stops using the
//     backend gives its slots back within that, without a word;
//   - a replica asks for what it would use: the most calls it had at the
//     backend or queued since its last ask, or, when that reached its
//     lease, the larger of that and its own adaptive limit. A replica with
//     a queue thus asks for more, an idle one for none (it keeps MinConcurrency
//     and an equal part of what the others leave);
//   - the sum of the leases stays within MaxConcurrency (when
//     MinConcurrency × replicas ≤ MaxConcurrency), but a replica without
//     a lease — starting, or back from an idle spell longer than
//     leaseLife — uses MaxConcurrency / replicas seen until its lease
//     comes back (one round trip), while the fleet reserved only
//     MinConcurrency for it. That is the slack: the backend may see up to
//     MaxConcurrency / replicas − MinConcurrency calls above the cap for
//     that round trip and until the other replicas renew (about a
//     second). Starting at MinConcurrency instead would keep the cap
//     exact, but a burst arriving on such a replica then queues behind
//     one slot and trips the standing-queue detection (measured in fake
//     time: thousands of refusals where there were none);
//   - when the fleet cannot answer (Redis down, slow, its breaker open) the
//     replica uses MaxConcurrency / replicas seen (at least
//     MinConcurrency) and asks again after a second. Replicas that still
//     reach Redis keep their leases meanwhile, so a replica cut off alone
//     may take the backend up to that share above the cap.
const (
	leaseRenew = time.Second
	leaseLife  = 3 * time.Second // perf/fleet's LeaseTTL: the lease is counted from before the ask
)

// capLocked is the most calls the fleet lets this replica have at the
// backend at once: its lease, or its share when it holds none; no cap
// alone.
func (l *limiter) capLocked() int {
	s := &l.set.s
	switch {
	case s.Fleet == nil:
		return s.MaxConcurrency
	case l.lease > 0:
		return l.lease
	}
	return max(s.MinConcurrency, s.MaxConcurrency/max(1, s.Fleet.Replicas()))
}

// slotsLocked notes the demand (the calls at the backend or queued, and
// arriving more) and renews the lease when it is due: at every call's
// arrival and departure.
func (l *limiter) slotsLocked(now time.Time, arriving int) {
	f := l.set.s.Fleet
	if f == nil {
		return
	}
	l.demand = max(l.demand, l.inflight+l.queued+arriving)
	if l.lease > 0 && !now.Before(l.leaseUntil) {
		l.lease = 0 // lapsed: the fleet gave it to the others
	}
	if l.leasing || now.Before(l.leaseNext) {
		return
	}
	l.leasing = true
	want := l.demand
	if limit := l.capLocked(); want >= limit {
		want = max(want, int(l.limit))
	}
	l.demand = 0
	busy := l.inflight
	s := &l.set.s
	go func() {
		slots, ok := f.Lease(context.Background(), l.key, want, busy, s.MinConcurrency, s.MaxConcurrency)
		after := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.leasing = false
		if !ok {
			l.lease = 0
			l.leaseNext = after.Add(fleetFallback)
		} else {
			l.lease = slots
			l.leaseUntil = now.Add(leaseLife)
			l.leaseNext = after.Add(leaseRenew)
		}
		l.pumpLocked(after) // a larger lease lets queued calls go
	}()
}
