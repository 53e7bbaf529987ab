package ratelimit

import (
	"sort"
	"time"
)

// Stats is a snapshot of one key's limiter.
type Stats struct {
	Key          string
	Rate         float64 // current rate, requests/s
	Min, Max     float64 // bounds of the rate
	Admitted     int64   // calls admitted, at once or after a wait
	Rejected     int64   // calls refused with RESOURCE_EXHAUSTED
	Waited       int64   // admitted calls that waited for their token
	Canceled     int64   // calls whose context ended before they were admitted
	Increases    int64   // rate increases (one per success below Max)
	Decreases    int64   // rate decreases
	TotalWait    time.Duration
	BlockedUntil time.Time // end of the backend's Retry-After; zero when none is pending
}

// Stats returns a snapshot of every limiter, sorted by key. The counters
// are read one by one, not as one atomic snapshot.
func (s *Set) Stats() []Stats {
	now := s.s.Now()
	var out []Stats
	for _, l := range s.limiters.values() {
		st := Stats{
			Key:       l.key,
			Rate:      l.currentRate(),
			Min:       s.s.Min,
			Max:       s.s.Max,
			Admitted:  l.admitted.Load(),
			Rejected:  l.rejected.Load(),
			Waited:    l.waited.Load(),
			Canceled:  l.canceled.Load(),
			Increases: l.increases.Load(),
			Decreases: l.decreases.Load(),
			TotalWait: time.Duration(l.totalWait.Load()),
		}
		if b := l.blockedUntil.Load(); b > now.UnixNano() {
			st.BlockedUntil = time.Unix(0, b)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// ResetStats zeroes the counters of every limiter. Rates and Retry-After
// holds are kept.
func (s *Set) ResetStats() {
	for _, l := range s.limiters.values() {
		for _, c := range []interface{ Store(int64) }{&l.admitted, &l.rejected, &l.waited, &l.canceled, &l.increases, &l.decreases, &l.totalWait} {
			c.Store(0)
		}
	}
}

// KeyStats counts a Set's keys.
type KeyStats struct {
	Keys      int   // keys held now
	Evicted   int64 // idle keys evicted to stay within MaxKeys, since start
	Overflows int64 // keys added beyond MaxKeys because too few keys were idle, since start
}

// KeyStats returns the number of keys held and the eviction counters.
// ResetStats does not reset them.
func (s *Set) KeyStats() KeyStats {
	keys, evicted, overflows := s.limiters.counts()
	return KeyStats{Keys: keys, Evicted: evicted, Overflows: overflows}
}
