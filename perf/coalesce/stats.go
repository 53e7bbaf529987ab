package coalesce

import (
	"sync/atomic"
	"time"
)

// Stats are a Group's counters and gauges. Each field is read atomically;
// together they are not one consistent snapshot. Metric names of the
// PerfAdmin request_coalescing section in parentheses.
type Stats struct {
	Requests  int64         // calls of Do and DoStream
	Coalesced int64         // calls that joined a flight another caller started
	Flights   int64         // flights started: backend calls
	InFlight  int64         // flights running now (in_flight_count)
	Waiting   int64         // callers in Do or DoStream now
	Panics    int64         // flights that panicked or called runtime.Goexit
	Abandoned int64         // flights cancelled because every waiter left
	TotalWait time.Duration // time joined callers waited: for a result (Do) or their first message (DoStream)
}

// CoalesceRate is the percentage of requests that joined a flight
// (coalesce_rate), 0 when there were none.
func (s Stats) CoalesceRate() float64 {
	if s.Requests == 0 {
		return 0
	}
	return 100 * float64(s.Coalesced) / float64(s.Requests)
}

// AvgWaitTime is the mean wait of a joined caller (avg_wait_time_ms), 0
// when none joined.
func (s Stats) AvgWaitTime() time.Duration {
	if s.Coalesced == 0 {
		return 0
	}
	return s.TotalWait / time.Duration(s.Coalesced)
}

// Stats returns the current counters and gauges.
func (g *Group) Stats() Stats {
	c := &g.stats
	return Stats{
		Requests:  c.flights.Load() + c.coalesced.Load() + c.refused.Load(),
		Coalesced: c.coalesced.Load(),
		Flights:   c.flights.Load(),
		InFlight:  c.inFlight.Load(),
		Waiting:   c.waiting.Load(),
		Panics:    c.panics.Load(),
		Abandoned: c.abandoned.Load(),
		TotalWait: time.Duration(c.totalWait.Load()),
	}
}

// ResetStats zeroes the counters. The gauges (InFlight, Waiting) describe
// the present and are kept.
func (g *Group) ResetStats() {
	c := &g.stats
	c.refused.Store(0)
	c.coalesced.Store(0)
	c.flights.Store(0)
	c.panics.Store(0)
	c.abandoned.Store(0)
	c.totalWait.Store(0)
}

// counters back Stats. Requests are counted as the flights started, the
// calls that joined one and the calls refused because their context had
// already ended: one atomic add fewer per call.
type counters struct {
	refused   atomic.Int64
	coalesced atomic.Int64
	flights   atomic.Int64
	inFlight  atomic.Int64
	waiting   atomic.Int64
	panics    atomic.Int64
	abandoned atomic.Int64
	totalWait atomic.Int64 // nanoseconds
}
