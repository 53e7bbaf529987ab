package service

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/cache"
	"github.com/vega-gateway/vega/perf/coalesce"
	"github.com/vega-gateway/vega/perf/connpool"
	"github.com/vega-gateway/vega/perf/fleet"
	"github.com/vega-gateway/vega/perf/monitor"
	"github.com/vega-gateway/vega/perf/ratelimit"
)

// This file turns the perf mechanisms' own statistics into PerfAdmin
// sections. Each adapter is a Reporter.

// CoalesceReporter reports a coalesce.Group.
type CoalesceReporter struct{ Group *coalesce.Group }

func (r CoalesceReporter) Report(s *vegav1.Stats) {
	st := r.Group.Stats()
	s.RequestCoalescing = &vegav1.RequestCoalescingStats{
		Requests: st.Requests, Coalesced: st.Coalesced, CoalesceRate: st.CoalesceRate(),
		Flights: st.Flights, InFlightCount: st.InFlight, Waiting: st.Waiting,
		AvgWaitTimeMs: ms(st.AvgWaitTime()), Panics: st.Panics, Abandoned: st.Abandoned,
	}
}

func (r CoalesceReporter) Reset() { r.Group.ResetStats() }

// CacheReporter reports a cache.Cache.
type CacheReporter struct{ Cache *cache.Cache }

func (r CacheReporter) Report(s *vegav1.Stats) {
	st := r.Cache.Stats()
	s.Cache = &vegav1.CacheStats{
		Entries: st.Entries, Bytes: st.Bytes, CapacityBytes: st.Capacity,
		Hits: st.Hits, StaleHits: st.StaleHits, Misses: st.Misses, CacheHitRate: st.HitRate(),
		Stores: st.Stores, Rejected: st.Rejected, Evictions: st.Evictions, Expirations: st.Expirations,
		Refreshes: st.Refreshes, Purged: st.Purged,
	}
}

func (r CacheReporter) Reset() { r.Cache.ResetStats() }

// BreakerReporter reports a breaker.Set.
type BreakerReporter struct{ Set *breaker.Set }

func (r BreakerReporter) Report(s *vegav1.Stats) {
	out := &vegav1.CircuitBreakersStats{}
	for _, b := range r.Set.Stats() {
		if b.State == "open" {
			out.Open++
		}
		out.Breakers = append(out.Breakers, breakerStats(b))
	}
	s.CircuitBreakers = out
}

func (r BreakerReporter) Reset() { r.Set.ResetStats() }

func breakerStats(b breaker.Stats) *vegav1.BreakerStats {
	out := &vegav1.BreakerStats{
		Key: b.Key, State: b.State, Mode: b.Mode, Requests: b.Requests, Successes: b.Successes,
		Failures: b.Failures, ConsecutiveFailures: b.ConsecutiveFailures, Rejected: b.Rejected,
		StateChanges: b.StateChanges,
	}
	if !b.LastChange.IsZero() {
		out.LastChange = timestamppb.New(b.LastChange)
	}
	return out
}

// LimiterReporter reports a ratelimit.Set.
type LimiterReporter struct{ Set *ratelimit.Set }

func (r LimiterReporter) Report(s *vegav1.Stats) {
	out := &vegav1.RateLimitersStats{}
	for _, l := range r.Set.Stats() {
		ls := &vegav1.LimiterStats{
			Key: l.Key, CurrentRate: l.Rate, MinRate: l.Min, MaxRate: l.Max,
			Admitted: l.Admitted, Rejected: l.Rejected, Waited: l.Waited,
			Increases: l.Increases, Decreases: l.Decreases,
			ConcurrencyLimit: int64(l.ConcurrencyLimit), InFlight: int64(l.InFlight), QueueLength: int64(l.Queued),
			QueueDelayP50Ms: ms(l.QueueDelayP50), QueueDelayP99Ms: ms(l.QueueDelayP99),
			BaseLatencyMs: ms(l.BaseLatency), SampleLatencyMs: ms(l.SampleLatency), QueueTargetMs: ms(l.QueueTarget),
			Standing: l.Standing, ShedDeadline: l.ShedDeadline, ShedStanding: l.ShedStanding, ShedFull: l.ShedFull,
			ShedRetryAfter: l.ShedRetryAfter, LimitIncreases: l.LimitUp, LimitDecreases: l.LimitDown,
		}
		for _, t := range l.Tenants {
			ls.Tenants = append(ls.Tenants, &vegav1.TenantLimiterStats{
				Tenant: t.Tenant, Admitted: t.Admitted, Shed: t.Shed, QueueLength: int64(t.Queued), Standing: t.Standing,
			})
		}
		if l.Admitted > 0 {
			ls.AvgWaitMs = ms(l.TotalWait) / float64(l.Admitted)
		}
		if l.BlockedUntil.After(time.Now()) {
			ls.BlockedUntil = timestamppb.New(l.BlockedUntil)
		}
		out.Limiters = append(out.Limiters, ls)
	}
	s.RateLimiters = out
}

func (r LimiterReporter) Reset() { r.Set.ResetStats() }

// PoolReporter reports a connpool.Pool.
type PoolReporter struct{ Pool *connpool.Pool }

func (r PoolReporter) Report(s *vegav1.Stats) {
	st := r.Pool.Stats()
	out := &vegav1.ConnectionPoolStats{
		TotalConnections: st.TotalConnections, ActiveConnections: st.ActiveConnections, IdleConnections: st.IdleConnections,
		ConnectionsCreated: st.ConnectionsCreated, ConnectionsClosed: st.ConnectionsClosed,
		Requests: st.Requests, ReusedRequests: st.ReusedRequests, ReuseRate: st.ReuseRate(),
		Errors: st.Errors, ErrorRate: st.ErrorRate(),
		RetiredByAge: st.RetiredByAge, RetiredByErrors: st.RetiredByErrors, RetiredIdle: st.RetiredIdle,
		AgeP50: durationpb.New(st.AgeP50), AgeP90: durationpb.New(st.AgeP90), AgeMax: durationpb.New(st.AgeMax),
		IdleP50: durationpb.New(st.IdleP50), IdleMax: durationpb.New(st.IdleMax),
	}
	for _, h := range st.Hosts {
		hs := &vegav1.HostPoolStats{Host: h.Host, Open: h.Open, Active: h.Active, Idle: h.Idle, Requests: h.Requests, Errors: h.Errors}
		if h.Requests > 0 {
			hs.ErrorRate = 100 * float64(h.Errors) / float64(h.Requests)
		}
		out.Hosts = append(out.Hosts, hs)
	}
	s.ConnectionPool = out
}

func (r PoolReporter) Reset() { r.Pool.ResetStats() }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Admin actions. PerfAdmin needs these two things from the perf core.
type (
	breakerModes interface {
		SetMode(key string, m breaker.Mode)
		Stats() []breaker.Stats
	}
	cachePurger interface {
		Purge(prefix string) int
	}
)

// WithActions gives PerfAdmin the breakers it may force and the cache it may purge.
func (s *PerfAdminService) WithActions(breakers breakerModes, cache cachePurger) *PerfAdminService {
	s.breakers, s.cache = breakers, cache
	return s
}

var breakerModeOf = map[vegav1.BreakerMode]breaker.Mode{
	vegav1.BreakerMode_BREAKER_MODE_AUTO:         breaker.Auto,
	vegav1.BreakerMode_BREAKER_MODE_FORCE_OPEN:   breaker.ForceOpen,
	vegav1.BreakerMode_BREAKER_MODE_FORCE_CLOSED: breaker.ForceClosed,
}

// SetBreakerMode implements vega.v1.PerfAdminService.
func (s *PerfAdminService) SetBreakerMode(_ context.Context, in *vegav1.SetBreakerModeRequest) (*vegav1.SetBreakerModeResponse, error) {
	if s.breakers == nil {
		return nil, status.Error(codes.FailedPrecondition, "circuit breakers are not enabled")
	}
	if in.GetKey() == "" {
		return nil, invalidArgument("key", "required (a breaker key from GetStats, e.g. \"ollama\")")
	}
	mode, ok := breakerModeOf[in.GetMode()]
	if !ok {
		return nil, invalidArgument("mode", "one of BREAKER_MODE_AUTO, BREAKER_MODE_FORCE_OPEN, BREAKER_MODE_FORCE_CLOSED")
	}
	s.breakers.SetMode(in.GetKey(), mode)
	for _, b := range s.breakers.Stats() {
		if b.Key == in.GetKey() {
			return &vegav1.SetBreakerModeResponse{Breaker: breakerStats(b)}, nil
		}
	}
	return &vegav1.SetBreakerModeResponse{}, nil
}

// PurgeCache implements vega.v1.PerfAdminService.
func (s *PerfAdminService) PurgeCache(_ context.Context, in *vegav1.PurgeCacheRequest) (*vegav1.PurgeCacheResponse, error) {
	if s.cache == nil {
		return nil, status.Error(codes.FailedPrecondition, "the cache is not enabled")
	}
	return &vegav1.PurgeCacheResponse{Purged: int64(s.cache.Purge(in.GetPrefix()))}, nil
}

// RuntimeReporter reports the Go runtime and the slow RPCs.
type RuntimeReporter struct{ Slow *monitor.SlowLog }

func (r RuntimeReporter) Report(s *vegav1.Stats) {
	rt := monitor.ReadRuntime()
	out := &vegav1.RuntimeStats{
		Goroutines: rt.Goroutines, HeapAllocBytes: rt.HeapAllocBytes, HeapObjects: rt.HeapObjects,
		GcCycles: rt.GCCycles, LastGcPause: durationpb.New(rt.LastGCPause), Gomaxprocs: int32(rt.GOMAXPROCS),
		GoVersion:       rt.GoVersion,
		SchedLatencyP50: durationpb.New(rt.SchedLatencyP50), SchedLatencyP99: durationpb.New(rt.SchedLatencyP99),
		GcPauseP50: durationpb.New(rt.GCPauseP50), GcPauseP99: durationpb.New(rt.GCPauseP99), GcPauseMax: durationpb.New(rt.GCPauseMax),
	}
	if r.Slow != nil {
		count, threshold, recent := r.Slow.Snapshot()
		out.SlowRpcs, out.SlowRpcThreshold = count, durationpb.New(threshold)
		for _, rpc := range recent {
			out.RecentSlowRpcs = append(out.RecentSlowRpcs, &vegav1.SlowRPC{
				Method: rpc.Method, Duration: durationpb.New(rpc.Duration), Code: rpc.Code, Time: timestamppb.New(rpc.Time),
			})
		}
	}
	s.Runtime = out
}

func (r RuntimeReporter) Reset() {
	if r.Slow != nil {
		r.Slow.Reset()
	}
}

// LeakReporter reports a monitor.LeakDetector.
type LeakReporter struct{ Detector *monitor.LeakDetector }

func (r LeakReporter) Report(s *vegav1.Stats) {
	rep := r.Detector.Report()
	out := &vegav1.MemoryLeaksStats{
		Suspected: rep.Suspected, Window: durationpb.New(rep.Window), Samples: int64(rep.Samples),
		HeapGrowthBytesPerMinute: rep.HeapGrowthPerMinute, GoroutineGrowthPerMinute: rep.GoroutineGrowthPerMinute,
		Reason: rep.Reason,
	}
	for _, g := range rep.GrowingStacks {
		out.GrowingStacks = append(out.GrowingStacks, &vegav1.GrowingStack{Count: g.Count, Growth: g.Growth, Functions: g.Functions})
	}
	s.MemoryLeaks = out
}

func (r LeakReporter) Reset() { r.Detector.Reset() }

// ClusterReporter reports this replica's part in a fleet: its Redis
// connection and the cache's shared tier.
type ClusterReporter struct {
	Fleet *fleet.Fleet
	Cache *cache.Cache
}

func (r ClusterReporter) Report(s *vegav1.Stats) {
	f := r.Fleet.Stats()
	out := &vegav1.ClusterStats{
		ReplicaId: f.ReplicaID, Prefix: f.Prefix, Mode: f.Mode, Fallback: f.Mode == fleet.ModeLocal,
		Subscribed: f.Subscribed, ReplicasSeen: f.ReplicasSeen,
		RedisRttP50Ms: ms(f.RTTP50), RedisRttP99Ms: ms(f.RTTP99),
		RedisOps: f.Ops, RedisErrors: f.Errors, RedisFallbacks: f.Fallbacks, RedisDials: f.Dials,
		BreakerOpens: f.BreakerOpens, WritesDropped: f.WritesDropped,
		PurgesSent: f.PurgesSent, PurgesReceived: f.PurgesReceived,
		LeasesWon: f.LeasesWon, LeasesLost: f.LeasesLost, RemoteWaits: f.RemoteWaits, LeaseTakeovers: f.Takeovers,
		StreamsLed: f.StreamsLed, StreamJoins: f.StreamJoins, StreamJoinsRefused: f.StreamJoinsRefused,
		StreamTakeovers: f.StreamTakeovers, StreamsBroken: f.StreamsBroken,
		BreakerNoticesSent: f.BreakerNoticesSent, BreakerNoticesReceived: f.BreakerNoticesReceived,
		SlotLeases: f.SlotLeases, SlotsLeased: f.SlotsLeased, FlightsHeld: f.Held,
	}
	if r.Cache != nil {
		c := r.Cache.Stats()
		out.RemoteHits, out.RemoteMisses, out.RemoteBad = c.RemoteHits, c.RemoteMisses, c.RemoteBad
		out.RemoteWrites, out.RemoteSkipped = c.RemoteWrites, c.RemoteSkipped
		out.FleetCoalesced = c.FleetCoalesced
	}
	s.Cluster = out
}

// Reset zeroes the fleet's counters; the cache's remote counters are the
// cache section's to reset.
func (r ClusterReporter) Reset() { r.Fleet.ResetStats() }
