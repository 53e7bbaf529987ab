package ratelimit

import (
	"sort"
	"time"
)

// Stats is a snapshot of one key's limiter.
type Stats struct {
	Key      string
	Rate     float64 // current rate ceiling, requests/s
	Min, Max float64 // bounds of the rate ceiling

	ConcurrencyLimit int // calls the backend gets at once now
	InFlight         int // calls at the backend now
	Queued           int // calls waiting now
	// QueueDelayP50 and QueueDelayP99 are over the last 256 dispatches
	// (0 for a call dispatched at once).
	QueueDelayP50, QueueDelayP99 time.Duration
	BaseLatency                  time.Duration // unloaded latency (least recent window p50); 0 until known
	SampleLatency                time.Duration // the last window's p50 latency
	QueueTarget                  time.Duration // CoDel target in force
	Standing                     bool          // some tenant's queue is standing

	Admitted     int64 // calls dispatched to the backend, at once or after queueing
	Rejected     int64 // calls refused with RESOURCE_EXHAUSTED: the sum of the Shed… counts
	Waited       int64 // admitted calls that queued
	Canceled     int64 // calls whose caller left while queued
	Increases    int64 // rate ceiling increases
	Decreases    int64 // rate ceiling decreases
	LimitUp      int64 // concurrency limit rises
	LimitDown    int64 // concurrency limit cuts
	TotalWait    time.Duration
	BlockedUntil time.Time // end of the backend's Retry-After; zero when none is pending

	ShedDeadline, ShedStanding, ShedFull, ShedRetryAfter int64

	Tenants []TenantStats // sorted by name
}

// TenantStats is one tenant's share of a backend.
type TenantStats struct {
	Tenant   string
	Admitted int64
	Shed     int64
	Queued   int
	Standing bool
}

// Stats returns a snapshot of every limiter, sorted by key.
func (s *Set) Stats() []Stats {
	now := time.Now()
	var out []Stats
	for _, l := range s.limiters.values() {
		l.mu.Lock()
		st := Stats{
			Key: l.key, Rate: l.rate, Min: s.s.Min, Max: s.s.Max,
			ConcurrencyLimit: l.limitLocked(), InFlight: l.inflight, Queued: l.queued,
			BaseLatency: l.base, SampleLatency: l.sample, QueueTarget: l.targetLocked(),
			Admitted: l.stats.admitted, Waited: l.stats.waited, Canceled: l.stats.canceled,
			Increases: l.stats.increases, Decreases: l.stats.decreases,
			LimitUp: l.stats.limitUp, LimitDown: l.stats.limitDown, TotalWait: l.stats.totalWait,
			ShedDeadline: l.stats.shed[reasonDeadline], ShedStanding: l.stats.shed[reasonStanding],
			ShedFull: l.stats.shed[reasonFull], ShedRetryAfter: l.stats.shed[reasonRetryAfter],
		}
		st.QueueDelayP50, st.QueueDelayP99 = l.delays.quantiles()
		for _, n := range l.stats.shed {
			st.Rejected += n
		}
		if l.blockedUntil.After(now) {
			st.BlockedUntil = l.blockedUntil
		}
		for _, t := range l.tenants {
			l.codelLocked(t, now)
			st.Standing = st.Standing || t.standing
			st.Tenants = append(st.Tenants, TenantStats{Tenant: t.name, Admitted: t.admitted, Shed: t.shed, Queued: t.live, Standing: t.standing})
		}
		l.mu.Unlock()
		sort.Slice(st.Tenants, func(i, j int) bool { return st.Tenants[i].Tenant < st.Tenants[j].Tenant })
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// ResetStats zeroes the counters of every limiter. Limits, queues and
// Retry-After holds are kept.
func (s *Set) ResetStats() {
	for _, l := range s.limiters.values() {
		l.mu.Lock()
		l.stats = counters{}
		l.delays = delayRing{}
		for _, t := range l.tenants {
			t.admitted, t.shed = 0, 0
		}
		l.mu.Unlock()
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
