package connpool

import (
	"cmp"
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Pool. Gauges describe the connections open now;
// counters are cumulative since New or the last ResetStats.
type Stats struct {
	TotalConnections  int64 // open now
	ActiveConnections int64 // open and carrying a request (until its body is done)
	IdleConnections   int64 // open and carrying none

	ConnectionsCreated int64 // dialed
	ConnectionsClosed  int64 // closed, by the pool, the Transport or the peer

	Requests       int64 // RoundTrip calls that have returned
	ReusedRequests int64 // of which ran on a socket that had carried a request before
	Errors         int64 // of which failed in the transport or got a 5xx response

	RetiredByAge    int64 // closed because older than ConnTTL
	RetiredByErrors int64 // closed because of the error rule
	RetiredIdle     int64 // closed while idle otherwise: IdleTimeout, eviction for MaxTotalConns, CloseIdleConnections, the peer

	AgeP50, AgeP90, AgeMax time.Duration // ages of open connections
	IdleP50, IdleMax       time.Duration // idle times of idle connections

	Hosts []HostStats // sorted by Host
}

// HostStats is one dialed address's share of Stats.
type HostStats struct {
	Host               string // dialed address, host:port
	Open, Active, Idle int64  // connections now
	Requests, Errors   int64  // cumulative
}

// ReuseRate is the percentage of requests that ran on a reused socket
// (the seed's reuse_rate); 0 without requests.
func (s Stats) ReuseRate() float64 {
	return percent(s.ReusedRequests, s.Requests)
}

// ErrorRate is the percentage of requests that failed or got a 5xx
// response; 0 without requests.
func (s Stats) ErrorRate() float64 {
	return percent(s.Errors, s.Requests)
}

func percent(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// Stats returns a snapshot of the pool.
func (p *Pool) Stats() Stats {
	now := p.s.Now()
	var st Stats
	var ages, idles []time.Duration
	hosts := make(map[string]*HostStats)

	p.mu.Lock()
	for host, hc := range p.hosts {
		hosts[host] = &HostStats{Host: host, Requests: hc.requests, Errors: hc.errors}
	}
	for c := range p.conns {
		hs := hosts[c.host] // every conn's host has counters, created at dial
		hs.Open++
		ages = append(ages, nonNegative(now.Sub(c.createdAt)))
		if c.inflight > 0 {
			hs.Active++
			st.ActiveConnections++
		} else {
			hs.Idle++
			st.IdleConnections++
			idles = append(idles, c.idleForLocked(now))
		}
	}
	p.mu.Unlock()

	st.TotalConnections = int64(len(ages))
	c := &p.counters
	st.ConnectionsCreated = c.connsCreated.Load()
	st.ConnectionsClosed = c.connsClosed.Load()
	st.Requests = c.requests.Load()
	st.ReusedRequests = c.reused.Load()
	st.Errors = c.errors.Load()
	st.RetiredByAge = c.retiredAge.Load()
	st.RetiredByErrors = c.retiredErrors.Load()
	st.RetiredIdle = c.retiredIdle.Load()

	slices.Sort(ages)
	slices.Sort(idles)
	st.AgeP50, st.AgeP90, st.AgeMax = quantile(ages, 0.5), quantile(ages, 0.9), quantile(ages, 1)
	st.IdleP50, st.IdleMax = quantile(idles, 0.5), quantile(idles, 1)

	st.Hosts = make([]HostStats, 0, len(hosts))
	for _, hs := range hosts {
		st.Hosts = append(st.Hosts, *hs)
	}
	slices.SortFunc(st.Hosts, func(a, b HostStats) int { return cmp.Compare(a.Host, b.Host) })
	return st
}

// ResetStats zeroes the cumulative counters, the pool's and its hosts'. The
// gauges, and the per-connection counts behind the error rule, are not
// statistics and stay.
func (p *Pool) ResetStats() {
	c := &p.counters
	for _, n := range []*atomic.Int64{
		&c.connsCreated, &c.connsClosed, &c.requests, &c.reused, &c.errors,
		&c.retiredAge, &c.retiredErrors, &c.retiredIdle,
	} {
		n.Store(0)
	}
	p.mu.Lock()
	for _, hc := range p.hosts {
		*hc = hostCounters{}
	}
	p.mu.Unlock()
}

// quantile is the nearest-rank q-quantile of sorted, 0 when empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
