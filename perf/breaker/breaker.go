package breaker

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/vega-gateway/vega/perf/policy"
)

// Outcomes as gobreaker sees them: nil is a success, errFailure a failure,
// errExcluded is not counted (Settings.IsExcluded).
var (
	errFailure  = errors.New("backend failure")
	errExcluded = errors.New("not the backend's fault")
)

// Set is a circuit breaker per backend key. Breakers are created on first
// use, and evicted when idle beyond Settings.MaxKeys keys. A Set is safe for
// concurrent use.
type Set struct {
	s        Settings // defaults applied; read-only after NewSet
	breakers sync.Map // key string → *breaker; added and removed under mu
	// epoch counts the keys added so far; a breaker records the epoch of
	// its last call, which orders breakers by recency without a clock.
	epoch atomic.Uint64

	mu        sync.Mutex // serialises adding and evicting keys; taken before any breaker's modeMu
	keys      int        // entries in breakers
	nextSweep int        // while keys is below it, a full set does not look for idle breakers again
	evicted   int64      // breakers evicted
	overflows int64      // keys added beyond MaxKeys because too few breakers were idle
}

// Allow admits a call to key's backend or refuses it. A refusal is an
// UNAVAILABLE status with a RetryInfo detail (the time until the next
// half-open probe), e.g. `circuit breaker for "ollama" is open; retry in
// 12s`. When the call is admitted, done must be called exactly once with its
// outcome: Success and Failure are counted, Neutral and Overload are not
// (an uncounted half-open probe frees its slot). done may be called after
// the key's breaker was evicted (Settings.MaxKeys): it then counts on the
// evicted breaker only.
func (s *Set) Allow(key string) (done func(policy.Outcome), err error) {
	b := s.get(key)
	if e := s.epoch.Load(); b.used.Load() != e { // mostly a read: the epoch moves when a key is added
		b.used.Store(e)
	}
	switch Mode(b.mode.Load()) {
	case ForceOpen:
		b.rejected.Add(1)
		return nil, b.refusalAt(ForceOpen, nil, time.Time{})
	case ForceClosed:
		b.requests.Add(1)
		b.inflight.Add(1)
		return b.countOnly, nil
	}
	// Fast path of an open breaker: until its open time ends gobreaker
	// would refuse too, so its lock and clock read are skipped. openUntil
	// is set just after gobreaker's own expiry (a few microseconds late at
	// most) and cleared by install.
	if until := b.openUntil.Load(); until != 0 {
		if now := time.Now(); now.UnixNano() < until {
			b.rejected.Add(1)
			return nil, b.refusalAt(Auto, gobreaker.ErrOpenState, now)
		}
	}
	var probe uint64 // the fleet's probe generation when this call is it (shared.go)
	if s.s.Fleet != nil {
		if probe, err = b.fleetAdmit(); err != nil {
			return nil, err
		}
	}
	cb := b.cb.Load()
	report, err := cb.Allow()
	if b.pending.Load() {
		b.deliver()
	}
	if err != nil {
		if probe != 0 {
			b.probeBusy.Store(false)
		}
		b.rejected.Add(1)
		return nil, b.refusalAt(Auto, err, time.Now())
	}
	b.requests.Add(1)
	b.inflight.Add(1)
	return func(o policy.Outcome) {
		b.inflight.Add(-1)
		switch o {
		case policy.Success:
			b.successes.Add(1)
			report(nil)
		case policy.Failure:
			b.failures.Add(1)
			report(errFailure)
		default:
			b.excluded.Add(1)
			report(errExcluded)
		}
		if probe != 0 { // after the local breaker: its own trip comes first
			b.probeDone(probe, o)
		}
		if b.pending.Load() {
			b.deliver()
		}
	}, nil
}

// SetMode forces key's breaker open or closed, or returns it to Auto. Going
// back to Auto from a forced mode starts a fresh, closed breaker. A change of
// the effective state is reported to OnStateChange.
func (s *Set) SetMode(key string, m Mode) {
	b := s.get(key)
	b.modeMu.Lock()
	for b.evicted { // evicted between get and Lock: use the key's new breaker
		b.modeMu.Unlock()
		b = s.get(key)
		b.modeMu.Lock()
	}
	from := b.state()
	old := Mode(b.mode.Swap(int32(m)))
	if old == m {
		b.modeMu.Unlock()
		return
	}
	if m == Auto {
		b.install()
	}
	b.changed(from, b.state(), time.Now())
	b.modeMu.Unlock()
	b.deliver()
}

func (s *Set) get(key string) *breaker {
	if v, ok := s.breakers.Load(key); ok {
		return v.(*breaker)
	}
	s.mu.Lock()
	if v, ok := s.breakers.Load(key); ok {
		s.mu.Unlock()
		return v.(*breaker)
	}
	kept := s.makeRoom()
	b := &breaker{set: s, key: key}
	b.countOnly = b.count
	b.install()
	s.breakers.Store(key, b)
	s.keys++
	s.epoch.Add(1)
	s.mu.Unlock()
	for _, k := range kept { // sweeping may have moved open breakers to half-open
		if k.pending.Load() {
			k.deliver()
		}
	}
	return b
}

// makeRoom is called under mu before a key is added. When the Set is full,
// it evicts the least recently used idle breakers (see idle), down to
// MaxKeys − MaxKeys/8 (at least one below MaxKeys), so that sweeping costs
// O(log MaxKeys) amortised per added key. When too few breakers are idle the
// new key is let in beyond MaxKeys and counted, and the Set is not swept
// again until it has grown by another MaxKeys/8. It returns the breakers
// it looked at and kept, whose state changes may wait for delivery.
func (s *Set) makeRoom() (kept []*breaker) {
	limit := s.s.MaxKeys
	if s.keys < limit {
		return nil
	}
	step := max(1, limit/8)
	if s.keys < s.nextSweep {
		s.overflows++
		return nil
	}
	type candidate struct {
		b    *breaker
		used uint64 // read once: calls move it while we sort
	}
	var idle []candidate
	s.breakers.Range(func(_, v any) bool {
		b := v.(*breaker)
		if b.idle() {
			idle = append(idle, candidate{b, b.used.Load()})
		} else {
			kept = append(kept, b)
		}
		return true
	})
	slices.SortFunc(idle, func(a, b candidate) int { return cmp.Compare(a.used, b.used) })
	for _, c := range idle {
		if s.keys <= limit-step {
			kept = append(kept, c.b)
			continue
		}
		if c.b.evict() {
			s.keys--
			s.evicted++
		} else {
			kept = append(kept, c.b)
		}
	}
	s.nextSweep = 0
	if s.keys >= limit {
		s.overflows++
		s.nextSweep = s.keys + step
	}
	return kept
}

// idle reports whether b may be evicted: in Auto mode, closed, with no
// call in flight. An operator's forced mode and an open or half-open
// breaker are kept, lest traffic reach a failing backend.
func (b *breaker) idle() bool {
	return Mode(b.mode.Load()) == Auto && b.inflight.Load() <= 0 && b.fleetUntil.Load() == 0 && b.probeGen.Load() == 0 &&
		b.cb.Load().State() == gobreaker.StateClosed
}

// evict removes b from its Set if it is still idle. s.mu is held. Under
// modeMu, so that SetMode never forces a breaker that is no longer the
// key's.
func (b *breaker) evict() bool {
	b.modeMu.Lock()
	defer b.modeMu.Unlock()
	if !b.idle() {
		return false
	}
	b.evicted = true
	b.set.breakers.CompareAndDelete(b.key, b)
	return true
}

// breaker is the state of one key.
type breaker struct {
	set       *Set
	key       string
	countOnly func(policy.Outcome) // b.count, bound once so ForceClosed does not allocate

	// Read on every call, rarely written.
	cb    atomic.Pointer[gobreaker.TwoStepCircuitBreaker[struct{}]] // the automatic breaker
	epoch atomic.Uint64                                             // bumped when cb is replaced; a replaced breaker's events are dropped
	mode  atomic.Int32                                              // a Mode
	// pending is set when events may wait in events; it spares the hot
	// path a lock. Written under mu.
	pending   atomic.Bool
	refused   atomic.Pointer[refusal] // the last refusal status, reused while it still says the same
	openUntil atomic.Int64            // when the current open state ends, Unix ns; written under mu
	used      atomic.Uint64           // the Set's epoch at the last call (for eviction)

	_ [64]byte // keeps the counters' cache line apart from the fields above

	requests, successes, failures, excluded, rejected atomic.Int64 // reset by ResetStats
	inflight                                          atomic.Int64 // admitted calls whose done has not been called

	_ [64]byte

	modeMu  sync.Mutex // serialises SetMode (mode changes and cb replacement) and eviction
	evicted bool       // removed from the Set; guarded by modeMu

	mu           sync.Mutex // guards the fields below; taken inside gobreaker's mutex, never around a call into gobreaker or OnStateChange
	events       []Event    // changes not yet delivered
	delivering   bool       // a goroutine is delivering events
	lastChange   time.Time
	stateChanges int64

	// Fleet mode (shared.go). fleetUntil and probeGen are read by Allow;
	// they and the fields below are written under fmu, which is taken
	// after gobreaker's mutex and never around a call into gobreaker.
	fleetUntil atomic.Int64  // the fleet holds the key until then, Unix ns (0: no hold)
	probeGen   atomic.Uint64 // this replica probes for the fleet: the probe's generation (0: not)
	probeBusy  atomic.Bool   // the fleet's probe call is in flight
	fmu        sync.Mutex
	fgen       uint64          // bumped at every fleet move; stale timers and probes see it
	timer      *time.Timer     // the hold's claim, or the probe lease's end
	outbox     []time.Duration // notices to send: open for d, closed when 0
	sending    bool            // a goroutine sends the outbox
}

// install replaces the automatic breaker by a fresh, closed one whose state
// changes are recorded as long as it stays installed. Callers serialise it
// (get before publishing b, SetMode under modeMu).
func (b *breaker) install() {
	s := b.set.s
	epoch := b.epoch.Add(1)
	b.openUntil.Store(0) // the fresh breaker is closed
	b.cb.Store(gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        b.key,
		MaxRequests: s.MaxProbes,
		Interval:    s.Interval,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= s.ConsecutiveFailures {
				return true
			}
			n := c.TotalSuccesses + c.TotalFailures
			return n >= s.MinRequests && float64(c.TotalFailures) >= s.FailureRatio*float64(n)
		},
		IsExcluded: func(err error) bool { return err == errExcluded },
		// Runs with gobreaker's mutex held: record and queue only.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if b.epoch.Load() != epoch || Mode(b.mode.Load()) != Auto {
				return
			}
			now := time.Now()
			b.changed(from.String(), to.String(), now)
			if s.Fleet != nil {
				b.localChange(from, to, now)
			}
		},
	}))
}

// count records an outcome in ForceClosed mode.
func (b *breaker) count(o policy.Outcome) {
	b.inflight.Add(-1)
	switch o {
	case policy.Success:
		b.successes.Add(1)
	case policy.Failure:
		b.failures.Add(1)
	default:
		b.excluded.Add(1)
	}
}

// changed records a state change and queues its event.
func (b *breaker) changed(from, to string, at time.Time) {
	if from == to {
		return
	}
	if to == "open" {
		b.mu.Lock()
		b.openUntil.Store(at.Add(b.set.s.OpenTimeout).UnixNano())
		b.mu.Unlock()
	}
	b.record(from, to, at)
}

// record counts a change of the effective state and queues its event.
func (b *breaker) record(from, to string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastChange = at
	b.stateChanges++
	if b.set.s.OnStateChange != nil {
		b.events = append(b.events, Event{Key: b.key, From: from, To: to, At: at})
		b.pending.Store(true)
	}
}

// deliver hands queued events to OnStateChange with no lock held. One
// goroutine delivers at a time, so events of a key arrive in order; others
// leave theirs to it.
func (b *breaker) deliver() {
	b.mu.Lock()
	if b.delivering {
		b.mu.Unlock()
		return
	}
	b.delivering = true
	defer func() { // also when the callback panics
		b.delivering = false
		b.pending.Store(len(b.events) > 0)
		b.mu.Unlock()
	}()
	for len(b.events) > 0 {
		events := b.events
		b.events = nil
		b.mu.Unlock()
		for _, e := range events {
			b.set.s.OnStateChange(e)
		}
		b.mu.Lock()
	}
}

// state is the effective state: the forced one, or the automatic
// breaker's. It may move an expired open breaker to half-open.
func (b *breaker) state() string {
	switch Mode(b.mode.Load()) {
	case ForceOpen:
		return "open"
	case ForceClosed:
		return "closed"
	}
	switch {
	case b.fleetUntil.Load() != 0:
		return "open"
	case b.probeGen.Load() != 0:
		return "half-open"
	}
	return b.cb.Load().State().String()
}
