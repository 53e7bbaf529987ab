package ratelimit

import (
	"slices"
	"time"
)

// waiter is one queued call.
type waiter struct {
	t        *tenant
	arrived  time.Time
	deadline time.Time // zero: none
	ready    chan struct{}

	// Written under the limiter's mu; read by the waiter after ready is
	// closed, or under mu.
	state  waiterState
	permit Permit
	err    error
}

type waiterState uint8

const (
	queued  waiterState = iota
	granted             // dispatched: permit is set, ready closed
	shed                // refused while queued: err is set, ready closed
	gone                // its caller left
)

// tenant is one tenant's queue at one backend, with its CoDel state.
type tenant struct {
	name string
	q    []*waiter // FIFO; entries of callers that left stay until popped or compacted
	live int       // queued entries of q
	last time.Time // last arrival, for forgetting idle tenants

	// CoDel: the current window and what it saw.
	winStart   time.Time
	minSojourn time.Duration // least queue delay of the calls dispatched in the window
	dequeued   int           // calls that left the queue in the window: dispatched or dropped
	served     int           // calls dispatched to the backend in the window
	arrivals   int           // calls offered in the window, refused ones included
	above      bool          // the previous window's delay stayed above the target
	standing   bool          // a standing queue: overload

	admitted, shed int64 // since start or reset
}

// tenantLocked returns tenant name's queue, created on first use. Idle
// tenants are forgotten once there are many.
func (l *limiter) tenantLocked(name string, now time.Time) *tenant {
	t := l.tenants[name]
	if t == nil {
		if len(l.tenants) >= 1024 {
			for n, o := range l.tenants {
				if o.live == 0 && now.Sub(o.last) > time.Minute {
					delete(l.tenants, n)
				}
			}
		}
		t = &tenant{name: name, winStart: now, minSojourn: -1}
		l.tenants[name] = t
	}
	t.last = now
	return t
}

// codelLocked closes t's windows that ended by now and decides whether its
// queue is standing:
//
//   - nothing is judged before the first call has been answered (the
//     target and interval follow the backend's latency, unknown until
//     then);
//   - a window is "above" when the least queue delay of the calls
//     dispatched in it exceeded the target (a window with no dispatch is
//     above when its oldest queued call has waited longer than the target);
//   - the queue turns standing after two windows above in a row, the second
//     with more calls offered than dispatched to the backend (plus a
//     tenth): a queue that neither drains nor stops growing. A one-off
//     burst that drains, or a closed loop of callers, never trips it;
//   - it stops standing at the end of a window in which no more calls were
//     offered than dispatched to the backend: the overload is over. (Calls
//     dropped from the queue do not count as served, or dropping a backlog
//     would end the state that dropped it.)
func (l *limiter) codelLocked(t *tenant, now time.Time) {
	if !l.answered {
		// Nothing answered yet: no target nor interval to judge by (the
		// first calls' queue delay is the fleet's round trip for tokens,
		// or a slow backend's first service time). The window goes on.
		return
	}
	interval := l.intervalLocked()
	if now.Sub(t.winStart) < interval {
		return
	}
	if now.Sub(t.winStart) >= 2*interval { // an idle spell: nothing is standing
		t.above, t.standing = false, false
		t.resetWindow(now)
		return
	}
	target := l.targetLocked()
	above := t.minSojourn > target
	if t.dequeued == 0 {
		above = t.live > 0 && now.Sub(t.oldest()) > target
	}
	growing := t.arrivals > t.served+max(1, t.served/10)
	if t.standing {
		t.standing = t.arrivals > t.served
	} else {
		t.standing = above && t.above && growing
	}
	t.above = above
	t.resetWindow(now)
}

func (t *tenant) resetWindow(now time.Time) {
	t.winStart, t.minSojourn, t.dequeued, t.served, t.arrivals = now, -1, 0, 0, 0
}

// oldest is the arrival of t's oldest live queued call.
func (t *tenant) oldest() time.Time {
	for _, w := range t.q {
		if w.state == queued {
			return w.arrived
		}
	}
	return time.Time{}
}

// dequeue counts a call leaving t's queue after sojourn.
func (t *tenant) dequeue(sojourn time.Duration) {
	t.dequeued++
	if t.minSojourn < 0 || sojourn < t.minSojourn {
		t.minSojourn = sojourn
	}
}

// enqueueLocked queues a call that cannot be dispatched now, or refuses it
// when its expected wait cannot fit or its queue is standing or full.
func (l *limiter) enqueueLocked(t *tenant, now, deadline time.Time) (*waiter, error) {
	s := &l.set.s
	l.codelLocked(t, now)
	wait, held := l.expectedWaitLocked(t, now)
	service := l.neededAtTurnLocked()
	switch {
	case t.standing && t.live > 0 && wait > l.targetLocked():
		// A standing queue keeps what it can serve within the target, and
		// always one call per tenant: the round-robin then gives every
		// flooding tenant the same share, whatever the phase of their
		// arrivals against the backend's answers.
		return nil, l.shedLocked(t, reasonStanding, wait, now)
	case wait > s.MaxQueueWait:
		return nil, l.shedLocked(t, l.deadlineReason(held, wait-held > s.MaxQueueWait), wait, now)
	case !deadline.IsZero() && float64(wait+service) > 0.95*float64(deadline.Sub(now)):
		fitsWithoutHold := float64(wait-held+service) <= 0.95*float64(deadline.Sub(now))
		return nil, l.shedLocked(t, l.deadlineReason(held, !fitsWithoutHold), wait, now)
	case l.queued >= s.MaxQueue || t.live >= s.MaxTenantQueue:
		return nil, l.shedLocked(t, reasonFull, wait, now)
	}
	w := &waiter{t: t, arrived: now, deadline: deadline, ready: make(chan struct{})}
	if len(t.q) > 2*t.live+16 { // mostly callers who left: compact
		t.q = slices.DeleteFunc(t.q, func(w *waiter) bool { return w.state != queued })
	}
	t.q = append(t.q, w)
	if t.live == 0 {
		l.ring = append(l.ring, t)
	}
	t.live++
	l.queued++
	l.busy.Add(1)
	l.pumpLocked(now) // a slot or token may be free while others queue: keep the order
	return w, nil
}

// deadlineReason is reasonDeadline, or reasonRetryAfter when only the
// backend's Retry-After hold made the wait too long.
func (l *limiter) deadlineReason(held time.Duration, fitsOnlyWithoutHold bool) reason {
	if held > 0 && !fitsOnlyWithoutHold {
		return reasonRetryAfter
	}
	return reasonDeadline
}

// expectedWaitLocked estimates how long a call of t arriving now would
// queue: the calls served before it (its own tenant's queue, times the
// number of tenants with calls queued, served round-robin; at most every
// queued call) at the rate the backend is served (the rate ceiling, or the
// concurrency limit over the service time when that is lower), plus what
// remains of a Retry-After hold (also returned alone as held).
func (l *limiter) expectedWaitLocked(t *tenant, now time.Time) (wait, held time.Duration) {
	backlogged := len(l.ring)
	if t.live == 0 {
		backlogged++
	}
	ahead := min(l.queued+1, (t.live+1)*backlogged)
	wait = time.Duration(float64(ahead) / l.serviceRateLocked() * float64(time.Second))
	if l.blockedUntil.After(now) {
		held = l.blockedUntil.Sub(now)
		wait += held
	}
	return wait, held
}

// serviceRateLocked is the rate in calls/s at which the backend is served:
// the rate ceiling, or the concurrency limit in force (capped by the
// fleet's lease) over the service time when that is lower — or what the
// backend was seen to deliver in the last window when that is more (the
// service time can lag behind a limit just cut, and underrate a backend
// that is in fact serving at full speed). The rate ceiling alone before
// the first answer.
func (l *limiter) serviceRateLocked() float64 {
	perSecond := l.rate
	if service := l.hold; service > 0 {
		perSecond = min(perSecond, max(float64(l.limitLocked())/service.Seconds(), l.throughput))
	}
	return perSecond
}

// dispatchLocked admits a call of t to the backend after sojourn in the
// queue.
func (l *limiter) dispatchLocked(t *tenant, now time.Time, sojourn time.Duration, deadline time.Time, fromQueue bool) Permit {
	l.codelLocked(t, now)
	t.dequeue(sojourn)
	t.served++
	t.admitted++
	l.inflight++
	if l.inflight > l.window.maxInflight {
		l.window.maxInflight = l.inflight
	}
	l.stats.admitted++
	if sojourn > 0 {
		l.stats.waited++
		l.stats.totalWait += sojourn
	}
	l.delays.add(sojourn)
	if !fromQueue { // a queued call was counted busy when it was queued
		l.busy.Add(1)
	}
	p := Permit{l: l, at: now, epoch: l.cuts}
	if !deadline.IsZero() {
		p.budget = max(deadline.Sub(now), 1)
	}
	return p
}

// pumpLocked hands free slots to queued calls, round-robin between tenants,
// while the rate ceiling has tokens and no Retry-After holds the backend;
// it arms the timer for the next token or the end of the hold. Under a
// standing queue, a call that has queued longer than twice the target is
// refused instead (CoDel's drop at dequeue); so is a call whose deadline
// would end before the backend's usual service time.
func (l *limiter) pumpLocked(now time.Time) {
	for l.queued > 0 && l.inflight < l.limitLocked() {
		if now.Before(l.blockedUntil) {
			l.armLocked(l.blockedUntil)
			return
		}
		if d := l.tokenWaitLocked(now); d != 0 {
			if d > 0 {
				l.armLocked(now.Add(d))
			} // else a fleet batch is on its way and pumps when it comes
			return
		}
		w := l.popLocked()
		sojourn := now.Sub(w.arrived)
		l.codelLocked(w.t, now)
		if w.t.standing && sojourn > 2*l.targetLocked() {
			w.t.dequeue(sojourn)
			l.refuseQueuedLocked(w, reasonStanding, now)
			continue
		}
		if !w.deadline.IsZero() && w.deadline.Sub(now) < l.neededAtTurnLocked() {
			w.t.dequeue(sojourn)
			l.refuseQueuedLocked(w, reasonDeadline, now)
			continue
		}
		l.takeTokenLocked(now)
		w.permit = l.dispatchLocked(w.t, now, sojourn, w.deadline, true)
		w.state = granted
		close(w.ready)
	}
}

// popLocked takes the next live call, round-robin over the tenants with
// calls queued (deficit round-robin with a quantum of one call).
func (l *limiter) popLocked() *waiter {
	for {
		if l.next >= len(l.ring) {
			l.next = 0
		}
		t := l.ring[l.next]
		var w *waiter
		for len(t.q) > 0 && w == nil {
			if t.q[0].state == queued {
				w = t.q[0]
			}
			t.q[0] = nil
			t.q = t.q[1:]
		}
		if w == nil { // cannot happen: a tenant with no live call leaves the ring
			t.live = 0
			l.ring = slices.Delete(l.ring, l.next, l.next+1)
			continue
		}
		t.live--
		l.queued--
		if t.live == 0 {
			t.q = t.q[:0:0]
			l.ring = slices.Delete(l.ring, l.next, l.next+1)
		} else {
			l.next++
		}
		if l.next >= len(l.ring) {
			// Wrap now: a tenant that comes back joins at the tail and must
			// not be served before those already waiting.
			l.next = 0
		}
		return w
	}
}

// unringLocked takes t, whose last queued call left, out of the ring.
func (l *limiter) unringLocked(t *tenant) {
	i := slices.Index(l.ring, t)
	if i < 0 {
		return
	}
	l.ring = slices.Delete(l.ring, i, i+1)
	if i < l.next {
		l.next--
	}
	if l.next >= len(l.ring) {
		l.next = 0
	}
	t.q = t.q[:0:0]
}

// refuseQueuedLocked refuses a call taken from the queue.
func (l *limiter) refuseQueuedLocked(w *waiter, r reason, now time.Time) {
	w.err = l.shedLocked(w.t, r, l.retryHintLocked(w.t, now), now)
	w.state = shed
	l.busy.Add(-1)
	close(w.ready)
}

// retryHintLocked is the wait a refused call of t should let pass before
// trying again: its expected wait now, at least the queue target.
func (l *limiter) retryHintLocked(t *tenant, now time.Time) time.Duration {
	wait, _ := l.expectedWaitLocked(t, now)
	return max(wait, l.targetLocked())
}

// armLocked makes sure the pump runs again at `at`.
func (l *limiter) armLocked(at time.Time) {
	if !l.timerAt.IsZero() && !l.timerAt.After(at) {
		return // armed for earlier
	}
	l.timerAt = at
	d := time.Until(at)
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.onTimer)
		return
	}
	l.timer.Reset(d)
}

func (l *limiter) onTimer() {
	now := time.Now()
	l.mu.Lock()
	l.timerAt = time.Time{}
	l.pumpLocked(now)
	l.mu.Unlock()
}

// targetLocked is the queue target in force.
func (l *limiter) targetLocked() time.Duration {
	if t := l.set.s.QueueTarget; t > 0 {
		return t
	}
	return max(5*time.Millisecond, l.latencyLocked()/2)
}

// codelDispatches is how many dispatches a CoDel window lasts at least (at
// the backend's service rate, up to minWindow): "more offered than
// dispatched" means little over a window of one or two dispatches. Under
// a concurrency limit or fleet lease of 2 slots of 100 ms, windows of
// 100 ms took a burst of 20 calls arriving over 300 ms (faster than the
// 20/s served, well within their deadlines) for a queue that does not
// drain, and refused 14 of them (TestBurstAboveAReplicasShareIsServed).
// With 8, a window of twice the latency already holds as many at the
// default limit of 4, so only smaller limits get longer windows: a burst
// must now keep arriving faster than it is served for more than two
// windows (0.8 s at 2 slots of 100 ms) to look standing.
const codelDispatches = 8

// intervalLocked is CoDel's interval: twice the backend's usual latency,
// at least 100ms (and at least twice a configured target), and long
// enough for codelDispatches dispatches at the rate the backend is served,
// up to minWindow.
func (l *limiter) intervalLocked() time.Duration {
	serve := min(minWindow, time.Duration(codelDispatches/l.serviceRateLocked()*float64(time.Second)))
	return max(100*time.Millisecond, 2*l.latencyLocked(), 2*l.set.s.QueueTarget, serve)
}

// latencyLocked is the backend's usual latency, which the queue's target
// and interval follow: the base once the first adaptation window has
// closed, before that the service time of the calls answered so far (0
// before the first answer).
func (l *limiter) latencyLocked() time.Duration {
	if l.base > 0 {
		return l.base
	}
	return l.hold
}

// delayRing keeps the queue delays of the last dispatches.
type delayRing struct {
	d [256]time.Duration
	n int // dispatches recorded; d[n%len] is the next slot
}

func (r *delayRing) add(d time.Duration) {
	r.d[r.n%len(r.d)] = d
	r.n++
}

// quantiles returns the p50 and p99 of the recorded delays.
func (r *delayRing) quantiles() (p50, p99 time.Duration) {
	n := min(r.n, len(r.d))
	if n == 0 {
		return 0, 0
	}
	s := slices.Clone(r.d[:n])
	slices.Sort(s)
	return s[(n-1)/2], s[min(n-1, (n*99+99)/100-1)]
}
