package breaker

import (
	"errors"
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
// use. A Set is safe for concurrent use.
type Set struct {
	s        Settings // defaults applied; read-only after NewSet
	breakers sync.Map // key string → *breaker; entries are never removed
}

// Allow admits a call to key's backend or refuses it. A refusal is an
// UNAVAILABLE status with a RetryInfo detail (the time until the next
// half-open probe), e.g. `circuit breaker for "ollama" is open; retry in
// 12s`. When the call is admitted, done must be called exactly once with its
// outcome: Success and Failure are counted, Neutral and Overload are not
// (an uncounted half-open probe frees its slot).
func (s *Set) Allow(key string) (done func(policy.Outcome), err error) {
	b := s.get(key)
	switch Mode(b.mode.Load()) {
	case ForceOpen:
		b.rejected.Add(1)
		return nil, b.refusal(ForceOpen, nil)
	case ForceClosed:
		b.requests.Add(1)
		return b.countOnly, nil
	}
	cb := b.cb.Load()
	report, err := cb.Allow()
	if b.pending.Load() {
		b.deliver()
	}
	if err != nil {
		b.rejected.Add(1)
		return nil, b.refusal(Auto, err)
	}
	b.requests.Add(1)
	return func(o policy.Outcome) {
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
	b := &breaker{set: s, key: key}
	b.countOnly = b.count
	b.install()
	v, _ := s.breakers.LoadOrStore(key, b)
	return v.(*breaker)
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

	_ [64]byte // keeps the counters' cache line apart from the fields above

	requests, successes, failures, excluded, rejected atomic.Int64 // reset by ResetStats

	_ [64]byte

	modeMu sync.Mutex // serialises SetMode (mode changes and cb replacement)

	mu           sync.Mutex // guards the fields below; taken inside gobreaker's mutex, never around a call into gobreaker or OnStateChange
	events       []Event    // changes not yet delivered
	delivering   bool       // a goroutine is delivering events
	lastChange   time.Time
	stateChanges int64
}

// install replaces the automatic breaker by a fresh, closed one whose state
// changes are recorded as long as it stays installed. Callers serialise it
// (get before publishing b, SetMode under modeMu).
func (b *breaker) install() {
	s := b.set.s
	epoch := b.epoch.Add(1)
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
			b.changed(from.String(), to.String(), time.Now())
		},
	}))
}

// count records an outcome in ForceClosed mode.
func (b *breaker) count(o policy.Outcome) {
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
	b.mu.Lock()
	defer b.mu.Unlock()
	if to == "open" {
		b.openUntil.Store(at.Add(b.set.s.OpenTimeout).UnixNano())
	}
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
	return b.cb.Load().State().String()
}
