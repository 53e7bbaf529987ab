package breaker

import (
	"sort"
	"time"
)

// Stats is a snapshot of one key's breaker.
type Stats struct {
	Key   string
	State string // effective state: "closed", "half-open" or "open"
	Mode  string // "auto", "force-open" or "force-closed"

	Requests  int64 // calls admitted
	Successes int64 // admitted calls that succeeded
	Failures  int64 // admitted calls that failed (counted against the backend)
	Excluded  int64 // admitted calls whose outcome was not counted (Neutral, Overload)
	Rejected  int64 // calls refused with UNAVAILABLE

	// ConsecutiveFailures is the automatic breaker's current run of
	// failures; it restarts at every state change and Interval.
	ConsecutiveFailures int64

	StateChanges int64
	LastChange   time.Time // zero when the state never changed
}

// Stats returns a snapshot of every breaker, sorted by key. The counters
// are read one by one, not as one atomic snapshot.
func (s *Set) Stats() []Stats {
	var out []Stats
	s.breakers.Range(func(_, v any) bool {
		out = append(out, v.(*breaker).stats())
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// ResetStats zeroes the counters of every breaker. It changes no state.
func (s *Set) ResetStats() {
	s.breakers.Range(func(_, v any) bool {
		b := v.(*breaker)
		b.requests.Store(0)
		b.successes.Store(0)
		b.failures.Store(0)
		b.excluded.Store(0)
		b.rejected.Store(0)
		b.mu.Lock()
		b.stateChanges = 0
		b.mu.Unlock()
		return true
	})
}

func (b *breaker) stats() Stats {
	st := Stats{
		Key:                 b.key,
		State:               b.state(), // before taking mu: it may call into gobreaker
		Mode:                Mode(b.mode.Load()).String(),
		Requests:            b.requests.Load(),
		Successes:           b.successes.Load(),
		Failures:            b.failures.Load(),
		Excluded:            b.excluded.Load(),
		Rejected:            b.rejected.Load(),
		ConsecutiveFailures: int64(b.cb.Load().Counts().ConsecutiveFailures),
	}
	if b.pending.Load() {
		b.deliver() // state() may have moved open to half-open
	}
	b.mu.Lock()
	st.StateChanges = b.stateChanges
	st.LastChange = b.lastChange
	b.mu.Unlock()
	return st
}

// KeyStats counts a Set's keys.
type KeyStats struct {
	Keys      int   // keys held now
	Evicted   int64 // idle breakers evicted to stay within MaxKeys, since start
	Overflows int64 // keys added beyond MaxKeys because too few breakers were idle, since start
}

// KeyStats returns the number of keys held and the eviction counters.
// ResetStats does not reset them.
func (s *Set) KeyStats() KeyStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return KeyStats{Keys: s.keys, Evicted: s.evicted, Overflows: s.overflows}
}
