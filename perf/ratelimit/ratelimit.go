package ratelimit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/policy"
)

// Set is the overload control of every backend key: a limiter per key,
// created on first use and evicted when idle beyond Settings.MaxKeys keys.
// A Set is safe for concurrent use.
type Set struct {
	s        Settings           // defaults applied; read-only after NewSet
	limiters registry[*limiter] // bounded by s.MaxKeys while enough limiters are idle
}

// Permit is a call admitted to the backend. Release it once with the
// call's result; the zero Permit (from a refused Acquire) ignores Release.
// It is a small value, not a closure, so that admitting a call does not
// allocate. A Permit whose limiter has been evicted meanwhile may still be
// released: its result then adapts the evicted limiter only.
type Permit struct {
	l  *limiter
	at time.Time // when the call was dispatched to the backend
	// epoch is the limiter's decrease count at dispatch: a result of a
	// call dispatched before the last decrease speaks for the old limits.
	epoch int64
	// budget is what was left of the call's deadline at dispatch (0: none).
	budget time.Duration
}

// Acquire admits a call of tenant to key's backend. It dispatches the call
// at once when the backend has a free slot (the concurrency limit), the
// rate ceiling has a token and nobody is queued; otherwise the call waits
// in its tenant's queue when its expected wait fits its deadline (and
// Settings.MaxQueueWait) and the queue is not standing, and is refused at
// once with RESOURCE_EXHAUSTED, RetryInfo and QuotaFailure when it cannot
// fit or the queue is standing (see the package documentation). When ctx
// ends while queued, it returns CANCELED or DEADLINE_EXCEEDED and the call
// never reaches the backend.
func (s *Set) Acquire(ctx context.Context, key, tenant string) (Permit, error) {
	l := s.get(key)
	if e := s.limiters.epoch.Load(); l.used.Load() != e { // mostly a read: the epoch moves when a key is added
		l.used.Store(e)
	}
	if err := ctx.Err(); err != nil { // a caller who left takes no slot
		return Permit{}, status.FromContextError(err).Err()
	}
	deadline, _ := ctx.Deadline()
	now := time.Now()
	l.mu.Lock()
	t := l.tenantLocked(tenant, now)
	t.arrivals++ // offered, whatever becomes of it (CoDel's window)
	l.slotsLocked(now, 1)
	if l.queued == 0 && l.inflight < l.limitLocked() && !now.Before(l.blockedUntil) && l.tokenWaitLocked(now) == 0 {
		l.takeTokenLocked(now)
		p := l.dispatchLocked(t, now, 0, deadline, false)
		l.mu.Unlock()
		return p, nil
	}
	w, err := l.enqueueLocked(t, now, deadline)
	l.mu.Unlock()
	if err != nil {
		return Permit{}, err
	}
	return l.wait(ctx, w)
}

// Release reports the call's result. Success gives a latency sample to the
// concurrency limit and raises the rate ceiling; Overload and Failure cut
// both (at most once per window and per Cooldown, and only for a call
// dispatched after the last cut); an Overload with RetryAfter also holds
// every call to the key until it has passed. Neutral changes nothing. The
// freed slot goes to the next queued call.
func (p Permit) Release(r policy.Result) { p.release(r, -1, false) }

// release frees the slot. expired says the caller's deadline ended while the
// call was at the backend: overload evidence for the concurrency limit when
// the deadline left the backend ample time (see limiter.finishLocked).
func (p Permit) release(r policy.Result, latency time.Duration, expired bool) {
	l := p.l
	if l == nil {
		return
	}
	now := time.Now()
	if latency < 0 {
		latency = now.Sub(p.at)
	}
	l.mu.Lock()
	l.slotsLocked(now, 0)
	l.finishLocked(p, r, latency, expired, now)
	l.pumpLocked(now)
	l.mu.Unlock()
	l.busy.Add(-1)
}

func (s *Set) get(key string) *limiter {
	return s.limiters.load(key, func() *limiter {
		now := time.Now()
		l := &limiter{set: s, key: key, tenants: make(map[string]*tenant)}
		l.rate = s.s.Initial
		l.burst = l.burstFor(s.s.Initial)
		l.bucket = newGCRA(l.localRate(), l.burst)
		l.since = now
		l.limit = float64(s.s.InitialConcurrency)
		l.window.start = now
		return l
	})
}

// limiter is the state of one backend key.
type limiter struct {
	set *Set
	key string

	used atomic.Uint64 // the registry's epoch at the last call (for eviction)
	busy atomic.Int64  // calls at the backend or queued; a limiter with none may be evicted

	mu sync.Mutex // guards everything below; never held across a wait or a callback

	// The rate ceiling (adapt.go).
	bucket       gcra      // the token bucket; retuned as rate moves
	rate         float64   // current ceiling, requests/s
	burst        int       // the bucket's burst
	ceiling      float64   // the rate before the last decrease; 0 during slow start
	delivered    int64     // successes since the last decrease (or creation)
	since        time.Time // the last decrease, or creation: delivered counts from here
	lastDecrease time.Time
	blockedUntil time.Time // no call is dispatched before it (the backend's Retry-After)

	// Fleet mode (fleet.go).
	credit       int       // tokens of the fleet's batch left
	creditUntil  time.Time // the batch expires then
	refilling    bool      // a batch is being asked for
	refillAfter  time.Time // the fleet said no token before then
	fleetRetryAt time.Time // the fleet failed: the local bucket until then
	lowered      bool      // a decrease not yet published to the fleet
	lease        int       // concurrency slots leased from the fleet; 0: none (slots.go)
	leaseUntil   time.Time // the lease lapses then unless renewed
	leaseNext    time.Time // the lease is renewed at the first call from then
	leasing      bool      // a lease is being asked for
	demand       int       // most calls at the backend or queued since the last ask
	holdToSend   time.Time // the end of a Retry-After hold not yet published to the fleet

	// The concurrency limit (concurrency.go).
	limit      float64 // calls at the backend at once (its floor, at least 1: limitLocked)
	inflight   int     // calls at the backend now
	window     window  // the current adaptation window
	history    []time.Duration
	base       time.Duration // unloaded latency: min of the recent windows' p50; 0 until the first window
	sample     time.Duration // the last window's p50; 0 until the first window
	atMin      int           // windows in a row that ended at MinConcurrency
	hold       time.Duration // how long a successful call holds its slot: a moving average
	answered   bool          // a call has succeeded: hold is known
	changedAt  time.Time     // when the limit last moved: earlier calls give no latency sample
	throughput float64       // successes per second in the last window
	cuts       int64         // limit and rate decreases so far (Permit.epoch)

	// The queues (queue.go).
	tenants map[string]*tenant
	ring    []*tenant // tenants with queued calls, served round-robin
	next    int       // index in ring of the tenant served next
	queued  int       // calls queued, all tenants
	timer   *time.Timer
	timerAt time.Time // when timer fires; zero when not armed
	delays  delayRing // queue delays of recent dispatches

	refused [numReasons]*refusal // the last refusal of each reason, reused while it says the same

	stats counters
}

// counters are the limiter's statistics; ResetStats zeroes them.
type counters struct {
	admitted, waited, canceled, increases, decreases int64
	shed                                             [numReasons]int64
	limitUp, limitDown                               int64
	totalWait                                        time.Duration
}

// wait waits for w's turn.
func (l *limiter) wait(ctx context.Context, w *waiter) (Permit, error) {
	var expire <-chan time.Time
	if w.deadline.IsZero() || w.deadline.Sub(w.arrived) > l.set.s.MaxQueueWait {
		t := time.NewTimer(l.set.s.MaxQueueWait)
		defer t.Stop()
		expire = t.C
	}
	select {
	case <-w.ready:
		return w.permit, w.err
	case <-ctx.Done():
		return l.leave(w, status.FromContextError(ctx.Err()).Err(), false)
	case <-expire:
		return l.leave(w, nil, true)
	}
}

// leave takes w out of its queue: its caller left (err) or it waited
// Settings.MaxQueueWait (timedOut). A slot handed to w just before goes
// back, so no slot is ever lost.
func (l *limiter) leave(w *waiter, err error, timedOut bool) (Permit, error) {
	now := time.Now()
	l.mu.Lock()
	switch w.state {
	case queued:
		w.state = gone
		w.t.live--
		l.queued--
		l.busy.Add(-1)
		if w.t.live == 0 {
			l.unringLocked(w.t)
		}
		if timedOut {
			err = l.shedLocked(w.t, reasonDeadline, l.retryHintLocked(w.t, now), now)
		} else {
			l.stats.canceled++
		}
	case granted:
		if timedOut { // the slot came as the wait ran out: take it
			l.mu.Unlock()
			return w.permit, nil
		}
		// The slot was handed over as the caller left: give it back
		// without a sample.
		w.state = gone
		l.inflight--
		l.busy.Add(-1)
		l.stats.canceled++
		l.pumpLocked(now)
	case shed:
		err = w.err
	}
	l.mu.Unlock()
	return Permit{}, err
}

// limitLocked is the concurrency limit in force: the adaptive limit,
// capped in fleet mode by the slots leased (slots.go).
func (l *limiter) limitLocked() int { return min(max(1, int(math.Floor(l.limit))), l.capLocked()) }
