package promstats

import (
	"github.com/prometheus/client_golang/prometheus"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// Label names.
const (
	labelBackend   = "backend"
	labelKind      = "kind"
	labelType      = "type"
	labelHost      = "host"
	labelState     = "state"
	labelMode      = "mode"
	labelReason    = "reason"
	labelGoVersion = "go_version"
	labelChannel   = "channel"
	labelTenant    = "tenant"
)

// breakerStateValues is the value of vega_circuit_breaker_state.
var breakerStateValues = map[string]float64{"closed": 0, "half-open": 1, "open": 2}

// collector is the prometheus.Collector NewCollector returns. Its fields are
// set once by NewCollector and only read afterwards, so concurrent scrapes
// share it without a lock.
type collector struct {
	snapshot func() *vegav1.Stats
	descs    []*prometheus.Desc // every Desc below, for Describe

	stats           figures[*vegav1.Stats]
	breakers        figures[*vegav1.CircuitBreakersStats]
	breaker         figures[*vegav1.BreakerStats] // labels: backend
	breakerInfo     figures[*vegav1.BreakerStats] // labels: backend, state, mode
	cache           figures[*vegav1.CacheStats]
	streaming       figures[*vegav1.StreamingStats]
	runtime         figures[*vegav1.RuntimeStats]
	runtimeInfo     figures[*vegav1.RuntimeStats] // labels: go_version
	memoryLeaks     figures[*vegav1.MemoryLeaksStats]
	coalescing      figures[*vegav1.RequestCoalescingStats]
	pool            figures[*vegav1.ConnectionPoolStats]
	poolRetired     *prometheus.Desc                    // labels: reason
	poolHost        figures[*vegav1.HostPoolStats]      // labels: host
	limiter         figures[*vegav1.LimiterStats]       // labels: backend
	limiterShed     *prometheus.Desc                    // labels: backend, reason
	limiterTenant   figures[*vegav1.TenantLimiterStats] // labels: backend, tenant
	batch           figures[*vegav1.BatchStats]
	batchFlushes    *prometheus.Desc                    // labels: reason
	outbox          figures[*vegav1.OutboxChannelStats] // labels: channel
	outboxInfo      *prometheus.Desc                    // labels: store, replica
	outboxOwner     *prometheus.Desc                    // labels: channel, owner
	integration     figures[*vegav1.BackendHealth]      // labels: backend, kind, type
	integrationInfo figures[*vegav1.BackendHealth]      // labels: backend, kind, type, host
	cluster         figures[*vegav1.ClusterStats]
	clusterInfo     figures[*vegav1.ClusterStats] // labels: replica, prefix, mode
}

// NewCollector returns a prometheus.Collector that, on each scrape, takes
// one snapshot (all sections) and exposes every figure as vega_* series;
// the package documentation lists them. Sections the snapshot leaves unset
// emit nothing, and a nil snapshot emits nothing at all.
//
// snapshot is called once per scrape, and concurrently when scrapes
// overlap; it must be safe for that.
func NewCollector(snapshot func() *vegav1.Stats) prometheus.Collector {
	c := &collector{snapshot: snapshot}
	d := &c.descs

	c.stats = newFigures[*vegav1.Stats](d)
	c.stats.add(prometheus.GaugeValue, "uptime_seconds", "How long the gateway has been running.",
		func(s *vegav1.Stats) (float64, bool) { return seconds(s.GetUptime()), s.GetUptime() != nil })

	c.breakers = newFigures[*vegav1.CircuitBreakersStats](d)
	c.breakers.gauge("circuit_breakers_open", "Circuit breakers open now.",
		func(s *vegav1.CircuitBreakersStats) float64 { return float64(s.GetOpen()) })

	c.breaker = newFigures[*vegav1.BreakerStats](d, labelBackend)
	c.breaker.add(prometheus.GaugeValue, "circuit_breaker_state",
		"State of the backend's circuit breaker: 0 closed, 1 half-open, 2 open.",
		func(s *vegav1.BreakerStats) (float64, bool) { v, ok := breakerStateValues[s.GetState()]; return v, ok })
	// perf/breaker counts requests, successes and failures since start or
	// ResetStats, apart from gobreaker's windowed counts, so they are counters.
	c.breaker.counter("circuit_breaker_requests_total", "Calls the breaker admitted.",
		func(s *vegav1.BreakerStats) float64 { return float64(s.GetRequests()) })
	c.breaker.counter("circuit_breaker_successes_total", "Admitted calls that succeeded.",
		func(s *vegav1.BreakerStats) float64 { return float64(s.GetSuccesses()) })
	c.breaker.counter("circuit_breaker_failures_total", "Admitted calls that failed.",
		func(s *vegav1.BreakerStats) float64 { return float64(s.GetFailures()) })
	c.breaker.gauge("circuit_breaker_consecutive_failures", "Consecutive failures now.",
		func(s *vegav1.BreakerStats) float64 { return float64(s.GetConsecutiveFailures()) })
	c.breaker.counter("circuit_breaker_rejected_total", "Calls the breaker refused with UNAVAILABLE.",
		func(s *vegav1.BreakerStats) float64 { return float64(s.GetRejected()) })
	c.breaker.counter("circuit_breaker_state_changes_total", "State changes of the breaker.",
		func(s *vegav1.BreakerStats) float64 { return float64(s.GetStateChanges()) })
	c.breaker.timestamp("circuit_breaker_last_state_change_timestamp_seconds",
		"When the breaker's state last changed, in seconds since the Unix epoch; absent if it never changed.",
		(*vegav1.BreakerStats).GetLastChange)

	c.breakerInfo = newFigures[*vegav1.BreakerStats](d, labelBackend, labelState, labelMode)
	c.breakerInfo.gauge("circuit_breaker_info",
		`Always 1; the labels name the breaker's state ("closed", "half-open", "open") and mode ("auto", "force-open", "force-closed").`,
		func(*vegav1.BreakerStats) float64 { return 1 })

	c.cache = newFigures[*vegav1.CacheStats](d)
	c.cache.gauge("cache_entries", "Entries in the result cache now.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetEntries()) })
	c.cache.gauge("cache_size_bytes", "Bytes the result cache holds (weighted size of keys and answers).",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetBytes()) })
	c.cache.gauge("cache_capacity_bytes", "Upper bound on the bytes the result cache holds.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetCapacityBytes()) })
	c.cache.counter("cache_hits_total", "Lookups answered with a fresh entry.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetHits()) })
	c.cache.counter("cache_stale_hits_total", "Lookups answered with a stale entry while a refresh ran.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetStaleHits()) })
	c.cache.counter("cache_misses_total", "Lookups that found nothing usable.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetMisses()) })
	c.cache.gauge("cache_hit_ratio", "Fraction (0-1) of lookups answered from the cache, fresh or stale, since start or reset.",
		func(s *vegav1.CacheStats) float64 { return ratio(s.GetCacheHitRate()) })
	c.cache.counter("cache_stores_total", "Answers stored in the cache.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetStores()) })
	c.cache.counter("cache_rejected_total", "Answers not stored because they were not cacheable.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetRejected()) })
	c.cache.counter("cache_evictions_total", "Entries evicted to respect the capacity.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetEvictions()) })
	c.cache.counter("cache_expirations_total", "Entries that expired.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetExpirations()) })
	c.cache.counter("cache_refreshes_total", "Background refreshes started.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetRefreshes()) })
	c.cache.counter("cache_purged_total", "Entries removed by PurgeCache.",
		func(s *vegav1.CacheStats) float64 { return float64(s.GetPurged()) })

	c.streaming = newFigures[*vegav1.StreamingStats](d)
	c.streaming.gauge("streaming_active_streams", "Server-streaming RPCs open now.",
		func(s *vegav1.StreamingStats) float64 { return float64(s.GetActiveStreams()) })
	c.streaming.counter("streaming_streams_total", "Server-streaming RPCs started.",
		func(s *vegav1.StreamingStats) float64 { return float64(s.GetStreamsTotal()) })
	c.streaming.counter("streaming_messages_sent_total", "Messages sent on all server streams.",
		func(s *vegav1.StreamingStats) float64 { return float64(s.GetMessagesSent()) })
	c.streaming.counter("streaming_streams_failed_total", "Server-streaming RPCs that ended with an error.",
		func(s *vegav1.StreamingStats) float64 { return float64(s.GetStreamsFailed()) })

	c.runtime = newFigures[*vegav1.RuntimeStats](d)
	c.runtime.gauge("runtime_goroutines", "Goroutines now.",
		func(s *vegav1.RuntimeStats) float64 { return float64(s.GetGoroutines()) })
	c.runtime.gauge("runtime_heap_alloc_bytes", "Bytes of live heap objects.",
		func(s *vegav1.RuntimeStats) float64 { return float64(s.GetHeapAllocBytes()) })
	c.runtime.gauge("runtime_heap_objects", "Live heap objects.",
		func(s *vegav1.RuntimeStats) float64 { return float64(s.GetHeapObjects()) })
	c.runtime.counter("runtime_gc_cycles_total", "Completed GC cycles since the process started.",
		func(s *vegav1.RuntimeStats) float64 { return float64(s.GetGcCycles()) })
	c.runtime.gauge("runtime_last_gc_pause_seconds", "Duration of the most recent GC pause.",
		func(s *vegav1.RuntimeStats) float64 { return seconds(s.GetLastGcPause()) })
	c.runtime.gauge("runtime_gomaxprocs", "GOMAXPROCS.",
		func(s *vegav1.RuntimeStats) float64 { return float64(s.GetGomaxprocs()) })
	c.runtime.gauge("runtime_sched_latency_p50_seconds", "Median time runnable goroutines waited for a CPU, since start.",
		func(s *vegav1.RuntimeStats) float64 { return seconds(s.GetSchedLatencyP50()) })
	c.runtime.gauge("runtime_sched_latency_p99_seconds", "99th percentile of the time runnable goroutines waited for a CPU, since start.",
		func(s *vegav1.RuntimeStats) float64 { return seconds(s.GetSchedLatencyP99()) })
	c.runtime.gauge("runtime_gc_pause_p50_seconds", "Median stop-the-world GC pause, since start.",
		func(s *vegav1.RuntimeStats) float64 { return seconds(s.GetGcPauseP50()) })
	c.runtime.gauge("runtime_gc_pause_p99_seconds", "99th percentile of stop-the-world GC pauses, since start.",
		func(s *vegav1.RuntimeStats) float64 { return seconds(s.GetGcPauseP99()) })
	c.runtime.gauge("runtime_gc_pause_max_seconds", "Longest stop-the-world GC pause, since start.",
		func(s *vegav1.RuntimeStats) float64 { return seconds(s.GetGcPauseMax()) })
	c.runtime.counter("runtime_slow_rpcs_total", "RPCs slower than the slow-RPC threshold.",
		func(s *vegav1.RuntimeStats) float64 { return float64(s.GetSlowRpcs()) })
	c.runtime.gauge("runtime_slow_rpc_threshold_seconds", "The slow-RPC threshold (VEGA_SLOW_RPC_THRESHOLD).",
		func(s *vegav1.RuntimeStats) float64 { return seconds(s.GetSlowRpcThreshold()) })
	c.runtime.gauge("runtime_recent_slow_rpcs", "Slow RPCs in PerfAdmin's list of the most recent ones.",
		func(s *vegav1.RuntimeStats) float64 { return float64(len(s.GetRecentSlowRpcs())) })

	c.runtimeInfo = newFigures[*vegav1.RuntimeStats](d, labelGoVersion)
	c.runtimeInfo.add(prometheus.GaugeValue, "runtime_info", "Always 1; go_version is the Go version of the binary.",
		func(s *vegav1.RuntimeStats) (float64, bool) { return 1, s.GetGoVersion() != "" })

	c.memoryLeaks = newFigures[*vegav1.MemoryLeaksStats](d)
	c.memoryLeaks.gauge("memory_leak_suspected", "1 when the heap or the goroutine count grew steadily over the window, else 0.",
		func(s *vegav1.MemoryLeaksStats) float64 { return boolValue(s.GetSuspected()) })
	c.memoryLeaks.gauge("memory_leak_window_seconds", "The window the growth trend is measured over.",
		func(s *vegav1.MemoryLeaksStats) float64 { return seconds(s.GetWindow()) })
	c.memoryLeaks.gauge("memory_leak_samples", "Samples in the window.",
		func(s *vegav1.MemoryLeaksStats) float64 { return float64(s.GetSamples()) })
	c.memoryLeaks.gauge("memory_leak_heap_growth_bytes_per_second", "Trend of live heap bytes over the window (least squares), per second.",
		func(s *vegav1.MemoryLeaksStats) float64 { return s.GetHeapGrowthBytesPerMinute() / 60 })
	c.memoryLeaks.gauge("memory_leak_goroutine_growth_per_second", "Trend of the goroutine count over the window (least squares), per second.",
		func(s *vegav1.MemoryLeaksStats) float64 { return s.GetGoroutineGrowthPerMinute() / 60 })
	c.memoryLeaks.gauge("memory_leak_growing_stacks", "Goroutine stacks whose count grew over the window.",
		func(s *vegav1.MemoryLeaksStats) float64 { return float64(len(s.GetGrowingStacks())) })

	c.coalescing = newFigures[*vegav1.RequestCoalescingStats](d)
	c.coalescing.counter("request_coalescing_requests_total", "Requests that could be coalesced.",
		func(s *vegav1.RequestCoalescingStats) float64 { return float64(s.GetRequests()) })
	c.coalescing.counter("request_coalescing_coalesced_total", "Requests that joined an identical call in flight.",
		func(s *vegav1.RequestCoalescingStats) float64 { return float64(s.GetCoalesced()) })
	c.coalescing.gauge("request_coalescing_coalesce_ratio", "Fraction (0-1) of requests that were coalesced, since start or reset.",
		func(s *vegav1.RequestCoalescingStats) float64 { return ratio(s.GetCoalesceRate()) })
	c.coalescing.counter("request_coalescing_flights_total", "Shared calls started (one backend call each).",
		func(s *vegav1.RequestCoalescingStats) float64 { return float64(s.GetFlights()) })
	c.coalescing.gauge("request_coalescing_in_flight", "Shared calls running now.",
		func(s *vegav1.RequestCoalescingStats) float64 { return float64(s.GetInFlightCount()) })
	c.coalescing.gauge("request_coalescing_waiting", "Callers waiting for a shared call now.",
		func(s *vegav1.RequestCoalescingStats) float64 { return float64(s.GetWaiting()) })
	c.coalescing.gauge("request_coalescing_avg_wait_seconds", "Mean time a coalesced caller waited, since start or reset.",
		func(s *vegav1.RequestCoalescingStats) float64 { return s.GetAvgWaitTimeMs() / 1e3 })
	c.coalescing.counter("request_coalescing_panics_total", "Shared calls that panicked (their callers got INTERNAL).",
		func(s *vegav1.RequestCoalescingStats) float64 { return float64(s.GetPanics()) })
	c.coalescing.counter("request_coalescing_abandoned_total", "Shared calls cancelled because every caller left.",
		func(s *vegav1.RequestCoalescingStats) float64 { return float64(s.GetAbandoned()) })

	c.pool = newFigures[*vegav1.ConnectionPoolStats](d)
	c.pool.gauge("connection_pool_open_connections", "Open outbound connections.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetTotalConnections()) })
	c.pool.gauge("connection_pool_active_connections", "Outbound connections carrying a request now.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetActiveConnections()) })
	c.pool.gauge("connection_pool_idle_connections", "Idle outbound connections.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetIdleConnections()) })
	c.pool.counter("connection_pool_connections_created_total", "Outbound connections opened.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetConnectionsCreated()) })
	c.pool.counter("connection_pool_connections_closed_total", "Outbound connections closed.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetConnectionsClosed()) })
	c.pool.counter("connection_pool_requests_total", "Outbound requests sent.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetRequests()) })
	c.pool.counter("connection_pool_reused_requests_total", "Outbound requests sent on a reused connection.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetReusedRequests()) })
	c.pool.gauge("connection_pool_reuse_ratio", "Fraction (0-1) of outbound requests sent on a reused connection, since start or reset.",
		func(s *vegav1.ConnectionPoolStats) float64 { return ratio(s.GetReuseRate()) })
	c.pool.counter("connection_pool_errors_total", "Outbound transport errors and 5xx answers.",
		func(s *vegav1.ConnectionPoolStats) float64 { return float64(s.GetErrors()) })
	c.pool.gauge("connection_pool_error_ratio", "Fraction (0-1) of outbound requests that failed, since start or reset.",
		func(s *vegav1.ConnectionPoolStats) float64 { return ratio(s.GetErrorRate()) })
	c.pool.gauge("connection_pool_connection_age_p50_seconds", "Median age of open connections.",
		func(s *vegav1.ConnectionPoolStats) float64 { return seconds(s.GetAgeP50()) })
	c.pool.gauge("connection_pool_connection_age_p90_seconds", "90th percentile of the age of open connections.",
		func(s *vegav1.ConnectionPoolStats) float64 { return seconds(s.GetAgeP90()) })
	c.pool.gauge("connection_pool_connection_age_max_seconds", "Age of the oldest open connection.",
		func(s *vegav1.ConnectionPoolStats) float64 { return seconds(s.GetAgeMax()) })
	c.pool.gauge("connection_pool_connection_idle_p50_seconds", "Median idle time of idle connections.",
		func(s *vegav1.ConnectionPoolStats) float64 { return seconds(s.GetIdleP50()) })
	c.pool.gauge("connection_pool_connection_idle_max_seconds", "Longest idle time of an idle connection.",
		func(s *vegav1.ConnectionPoolStats) float64 { return seconds(s.GetIdleMax()) })
	c.poolRetired = newDesc(d, "connection_pool_connections_retired_total",
		`Outbound connections retired, by reason: "age" (CONNECTION_TTL), "errors" (over 50% failed of 10 or more requests), "idle" (IDLE_TIMEOUT).`,
		labelReason)

	c.poolHost = newFigures[*vegav1.HostPoolStats](d, labelHost)
	c.poolHost.gauge("connection_pool_host_open_connections", "Open connections to the host.",
		func(s *vegav1.HostPoolStats) float64 { return float64(s.GetOpen()) })
	c.poolHost.gauge("connection_pool_host_active_connections", "Connections to the host carrying a request now.",
		func(s *vegav1.HostPoolStats) float64 { return float64(s.GetActive()) })
	c.poolHost.gauge("connection_pool_host_idle_connections", "Idle connections to the host.",
		func(s *vegav1.HostPoolStats) float64 { return float64(s.GetIdle()) })
	c.poolHost.counter("connection_pool_host_requests_total", "Requests sent to the host.",
		func(s *vegav1.HostPoolStats) float64 { return float64(s.GetRequests()) })
	c.poolHost.counter("connection_pool_host_errors_total", "Failed requests to the host.",
		func(s *vegav1.HostPoolStats) float64 { return float64(s.GetErrors()) })
	c.poolHost.gauge("connection_pool_host_error_ratio", "Fraction (0-1) of requests to the host that failed, since start or reset.",
		func(s *vegav1.HostPoolStats) float64 { return ratio(s.GetErrorRate()) })

	c.limiter = newFigures[*vegav1.LimiterStats](d, labelBackend)
	c.limiter.gauge("rate_limiter_current_rate", "Current rate limit, in requests per second.",
		func(s *vegav1.LimiterStats) float64 { return s.GetCurrentRate() })
	c.limiter.gauge("rate_limiter_min_rate", "Lowest rate limit (MIN_RATE_LIMIT), in requests per second.",
		func(s *vegav1.LimiterStats) float64 { return s.GetMinRate() })
	c.limiter.gauge("rate_limiter_max_rate", "Highest rate limit (MAX_RATE_LIMIT), in requests per second.",
		func(s *vegav1.LimiterStats) float64 { return s.GetMaxRate() })
	c.limiter.counter("rate_limiter_admitted_total", "Calls the limiter admitted.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetAdmitted()) })
	c.limiter.counter("rate_limiter_rejected_total", "Calls the limiter refused with RESOURCE_EXHAUSTED.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetRejected()) })
	c.limiter.counter("rate_limiter_waited_total", "Admitted calls that had to wait for a token.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetWaited()) })
	c.limiter.counter("rate_limiter_increases_total", "Rate increases (successes).",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetIncreases()) })
	c.limiter.counter("rate_limiter_decreases_total", "Rate decreases (429, 5xx, timeouts).",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetDecreases()) })
	c.limiter.gauge("rate_limiter_avg_wait_seconds", "Mean wait of admitted calls, since start or reset.",
		func(s *vegav1.LimiterStats) float64 { return s.GetAvgWaitMs() / 1e3 })
	c.limiter.timestamp("rate_limiter_blocked_until_timestamp_seconds",
		"Admissions are held until then (seconds since the Unix epoch) by the backend's Retry-After; absent when not blocked.",
		(*vegav1.LimiterStats).GetBlockedUntil)
	c.limiter.gauge("rate_limiter_concurrency_limit", "Adaptive concurrency limit: calls the gateway sends to the backend at once.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetConcurrencyLimit()) })
	c.limiter.gauge("rate_limiter_in_flight", "Calls at the backend now.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetInFlight()) })
	c.limiter.gauge("rate_limiter_queue_length", "Calls waiting in the gateway's queue for the backend now.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetQueueLength()) })
	c.limiter.gauge("rate_limiter_queue_delay_p50_seconds", "Median queue delay of the last 256 dispatched calls.",
		func(s *vegav1.LimiterStats) float64 { return s.GetQueueDelayP50Ms() / 1e3 })
	c.limiter.gauge("rate_limiter_queue_delay_p99_seconds", "99th percentile queue delay of the last 256 dispatched calls.",
		func(s *vegav1.LimiterStats) float64 { return s.GetQueueDelayP99Ms() / 1e3 })
	c.limiter.gauge("rate_limiter_base_latency_seconds", "The backend's unloaded latency (least recent window median).",
		func(s *vegav1.LimiterStats) float64 { return s.GetBaseLatencyMs() / 1e3 })
	c.limiter.gauge("rate_limiter_sample_latency_seconds", "The backend's median latency in the last window.",
		func(s *vegav1.LimiterStats) float64 { return s.GetSampleLatencyMs() / 1e3 })
	c.limiter.gauge("rate_limiter_queue_target_seconds", "Queue target in force (CoDel).",
		func(s *vegav1.LimiterStats) float64 { return s.GetQueueTargetMs() / 1e3 })
	c.limiter.gauge("rate_limiter_standing", "1 while some tenant's queue for the backend is standing (overload), else 0.",
		func(s *vegav1.LimiterStats) float64 { return boolValue(s.GetStanding()) })
	c.limiter.counter("rate_limiter_limit_increases_total", "Concurrency limit rises.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetLimitIncreases()) })
	c.limiter.counter("rate_limiter_limit_decreases_total", "Concurrency limit cuts.",
		func(s *vegav1.LimiterStats) float64 { return float64(s.GetLimitDecreases()) })
	c.limiterShed = newDesc(d, "rate_limiter_shed_total",
		"Calls refused, by reason: deadline (the wait could not fit), standing (a standing queue), full (the queue was full), retry_after (the backend's Retry-After outlasts the deadline).",
		labelBackend, labelReason)
	c.limiterTenant = newFigures[*vegav1.TenantLimiterStats](d, labelBackend, labelTenant)
	c.limiterTenant.counter("rate_limiter_tenant_admitted_total", "Calls of the tenant dispatched to the backend.",
		func(s *vegav1.TenantLimiterStats) float64 { return float64(s.GetAdmitted()) })
	c.limiterTenant.counter("rate_limiter_tenant_shed_total", "Calls of the tenant refused.",
		func(s *vegav1.TenantLimiterStats) float64 { return float64(s.GetShed()) })
	c.limiterTenant.gauge("rate_limiter_tenant_queue_length", "Calls of the tenant waiting now.",
		func(s *vegav1.TenantLimiterStats) float64 { return float64(s.GetQueueLength()) })

	c.batch = newFigures[*vegav1.BatchStats](d)
	c.batch.counter("batch_commits_total", "Group commits of the notification outbox (one fsync each).",
		func(s *vegav1.BatchStats) float64 { return float64(s.GetCommits()) })
	c.batch.counter("batch_operations_total", "Writes made durable by those commits.",
		func(s *vegav1.BatchStats) float64 { return float64(s.GetOperations()) })
	c.batch.gauge("batch_avg_size", "Mean writes per commit, since start or reset.",
		func(s *vegav1.BatchStats) float64 { return s.GetAvgBatchSize() })
	c.batch.gauge("batch_max_size", "Largest batch, since start or reset.",
		func(s *vegav1.BatchStats) float64 { return float64(s.GetMaxBatchSize()) })
	c.batch.gauge("batch_avg_commit_seconds", "Mean time of one commit (write and fsync), since start or reset.",
		func(s *vegav1.BatchStats) float64 { return s.GetAvgCommitMs() / 1e3 })
	c.batch.gauge("batch_max_commit_seconds", "Slowest commit, since start or reset.",
		func(s *vegav1.BatchStats) float64 { return s.GetMaxCommitMs() / 1e3 })
	c.batchFlushes = newDesc(d, "batch_flushes_total",
		`Commits by what started them: "size" (the batch was full), "interval" (VEGA_OUTBOX_FLUSH_INTERVAL ended), "idle" (nothing else was waiting).`,
		labelReason)

	c.outbox = newFigures[*vegav1.OutboxChannelStats](d, labelChannel)
	c.outbox.gauge("outbox_queue_depth", "Notifications waiting for delivery on the channel.",
		func(s *vegav1.OutboxChannelStats) float64 { return float64(s.GetQueueDepth()) })
	c.outbox.gauge("outbox_oldest_pending_age_seconds", "Age of the channel's oldest waiting notification; 0 when none waits.",
		func(s *vegav1.OutboxChannelStats) float64 { return s.GetOldestPendingAgeMs() / 1e3 })
	c.outbox.counter("outbox_accepted_total", "Notifications accepted (recorded durably) for the channel.",
		func(s *vegav1.OutboxChannelStats) float64 { return float64(s.GetAccepted()) })
	c.outbox.counter("outbox_delivered_total", "Notifications the channel's receiver accepted.",
		func(s *vegav1.OutboxChannelStats) float64 { return float64(s.GetDelivered()) })
	c.outbox.counter("outbox_retried_total", "Failed delivery attempts scheduled again (429, 5xx, network errors).",
		func(s *vegav1.OutboxChannelStats) float64 { return float64(s.GetRetried()) })
	c.outbox.counter("outbox_dead_lettered_total", "Notifications that failed for good (dead letters).",
		func(s *vegav1.OutboxChannelStats) float64 { return float64(s.GetDeadLettered()) })
	c.outbox.gauge("outbox_dead_letters", "Dead letters kept now (re-drivable with PerfAdmin RedriveNotifications).",
		func(s *vegav1.OutboxChannelStats) float64 { return float64(s.GetDeadLetterDepth()) })
	c.outbox.gauge("outbox_paused_seconds", "Time until the channel's next attempt may start (Retry-After or backoff); 0 when not waiting.",
		func(s *vegav1.OutboxChannelStats) float64 { return s.GetPausedForMs() / 1e3 })

	c.outboxInfo = newDesc(d, "outbox_info",
		`Always 1; store is "bbolt" (one gateway) or "postgres" (a fleet), replica is this gateway's name in the channel leases ("postgres" only).`,
		"store", "replica")
	c.outboxOwner = newDesc(d, "outbox_channel_owner",
		"Always 1, for each channel whose lease a replica holds (PostgreSQL store): owner is the replica delivering the channel.",
		labelChannel, "owner")

	c.integration = newFigures[*vegav1.BackendHealth](d, labelBackend, labelKind, labelType)
	c.integration.counter("integration_calls_total", "Calls to the backend.",
		func(s *vegav1.BackendHealth) float64 { return float64(s.GetCalls()) })
	c.integration.counter("integration_failures_total", "Failed calls to the backend (the caller's own cancellation is not a failure).",
		func(s *vegav1.BackendHealth) float64 { return float64(s.GetFailures()) })
	c.integration.timestamp("integration_last_success_timestamp_seconds",
		"Last successful call, in seconds since the Unix epoch; absent until the first.",
		(*vegav1.BackendHealth).GetLastSuccess)
	c.integration.timestamp("integration_last_error_timestamp_seconds",
		"Last failed call, in seconds since the Unix epoch; absent until the first.",
		(*vegav1.BackendHealth).GetLastError)

	c.integrationInfo = newFigures[*vegav1.BackendHealth](d, labelBackend, labelKind, labelType, labelHost)
	c.integrationInfo.gauge("integration_info", "Always 1; the labels describe a configured backend (host is empty for built-ins).",
		func(*vegav1.BackendHealth) float64 { return 1 })

	c.cluster = newFigures[*vegav1.ClusterStats](d)
	c.cluster.gauge("cluster_fallback", "1 while this replica runs on its local tier alone (the breaker around Redis is open), else 0.",
		func(s *vegav1.ClusterStats) float64 { return boolValue(s.GetFallback()) })
	c.cluster.gauge("cluster_subscribed", "1 while the subscription to the fleet's purge channel is confirmed, else 0.",
		func(s *vegav1.ClusterStats) float64 { return boolValue(s.GetSubscribed()) })
	c.cluster.gauge("cluster_replicas_seen", "Replicas with a live heartbeat at this replica's last one, itself included.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetReplicasSeen()) })
	c.cluster.gauge("cluster_redis_rtt_p50_seconds", "Median Redis round trip of the last 1024 successful operations.",
		func(s *vegav1.ClusterStats) float64 { return s.GetRedisRttP50Ms() / 1e3 })
	c.cluster.gauge("cluster_redis_rtt_p99_seconds", "99th percentile Redis round trip of the last 1024 successful operations.",
		func(s *vegav1.ClusterStats) float64 { return s.GetRedisRttP99Ms() / 1e3 })
	c.cluster.counter("cluster_redis_ops_total", "Operations sent to Redis.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRedisOps()) })
	c.cluster.counter("cluster_redis_errors_total", "Operations sent to Redis that failed (timeouts, resets, refused connections).",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRedisErrors()) })
	c.cluster.counter("cluster_redis_fallbacks_total", "Operations not sent to Redis (breaker open, or 256 in flight): served locally.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRedisFallbacks()) })
	c.cluster.counter("cluster_redis_dials_total", "Connections to Redis dialled.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRedisDials()) })
	c.cluster.counter("cluster_redis_breaker_opens_total", "Times the breaker around Redis opened.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetBreakerOpens()) })
	c.cluster.counter("cluster_remote_hits_total", "Local cache misses answered by the fleet's shared tier, fresh or stale.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRemoteHits()) })
	c.cluster.counter("cluster_remote_misses_total", "Local cache misses the shared tier could not answer (absent, expired, Redis failing).",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRemoteMisses()) })
	c.cluster.counter("cluster_remote_bad_total", "Shared entries that failed the checks (version, size, key, type) and were ignored.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRemoteBad()) })
	c.cluster.counter("cluster_remote_writes_total", "Answers handed to the shared tier.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRemoteWrites()) })
	c.cluster.counter("cluster_remote_skipped_total", "Answers kept local: above the shared tier's size bound, or not protobuf.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRemoteSkipped()) })
	c.cluster.counter("cluster_writes_dropped_total", "Writes to the shared tier dropped (queue full or Redis failing).",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetWritesDropped()) })
	c.cluster.counter("cluster_purges_sent_total", "Fleet-wide cache purges this replica sent.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetPurgesSent()) })
	c.cluster.counter("cluster_purges_received_total", "Other replicas' cache purges applied to this replica's local tier.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetPurgesReceived()) })
	c.cluster.counter("cluster_leases_won_total", "Cross-replica flights this replica led for the fleet.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetLeasesWon()) })
	c.cluster.counter("cluster_leases_lost_total", "Cross-replica flights another replica led.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetLeasesLost()) })
	c.cluster.counter("cluster_remote_waits_total", "Waits for another replica's flight.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetRemoteWaits()) })
	c.cluster.counter("cluster_lease_takeovers_total", "Waits that found neither lease nor answer (the owner gone) and took over.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetLeaseTakeovers()) })
	c.cluster.counter("cluster_fleet_coalesced_total", "Flights answered by another replica's backend call.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetFleetCoalesced()) })
	c.cluster.counter("cluster_streams_led_total", "Stream flights this replica led for the fleet (its chunks shared through Redis).",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetStreamsLed()) })
	c.cluster.counter("cluster_stream_joins_total", "Follows of another replica's stream flight, from its first chunk.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetStreamJoins()) })
	c.cluster.counter("cluster_stream_joins_refused_total", "Stream flights not followed because 8 follows were running here: the caller went alone.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetStreamJoinsRefused()) })
	c.cluster.counter("cluster_stream_takeovers_total", "Follows that found the stream flight's leader gone with no end.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetStreamTakeovers()) })
	c.cluster.counter("cluster_streams_broken_total", "Stream flights led here that ended broken (nothing to share, over the bounds, Redis failing).",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetStreamsBroken()) })
	c.cluster.counter("cluster_flights_held_total", "Flights whose backend call went on for other replicas' waiters after this replica's callers had all left.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetFlightsHeld()) })
	c.cluster.counter("cluster_breaker_notices_sent_total", "This replica's circuit breaker trips and closes published to the fleet.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetBreakerNoticesSent()) })
	c.cluster.counter("cluster_breaker_notices_received_total", "Other replicas' circuit breaker trips and closes applied here.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetBreakerNoticesReceived()) })
	c.cluster.counter("cluster_slot_leases_total", "Concurrency slot leases granted to this replica by the fleet, renewals included.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetSlotLeases()) })
	c.cluster.gauge("cluster_slots_leased", "Concurrency slots this replica's current leases hold, all backends.",
		func(s *vegav1.ClusterStats) float64 { return float64(s.GetSlotsLeased()) })
	c.clusterInfo = newFigures[*vegav1.ClusterStats](d, "replica", "prefix", labelMode)
	c.clusterInfo.gauge("cluster_info", `Always 1; replica is this replica's id, prefix the fleet's (VEGA_REDIS_PREFIX), mode "redis" or "local".`,
		func(*vegav1.ClusterStats) float64 { return 1 })

	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.snapshot()
	if st == nil {
		return
	}
	c.stats.collect(ch, st)
	if s := st.GetCircuitBreakers(); s != nil {
		c.breakers.collect(ch, s)
		for _, b := range s.GetBreakers() {
			c.breaker.collect(ch, b, b.GetKey())
			c.breakerInfo.collect(ch, b, b.GetKey(), b.GetState(), b.GetMode())
		}
	}
	if s := st.GetCache(); s != nil {
		c.cache.collect(ch, s)
	}
	if s := st.GetStreaming(); s != nil {
		c.streaming.collect(ch, s)
	}
	if s := st.GetRuntime(); s != nil {
		c.runtime.collect(ch, s)
		c.runtimeInfo.collect(ch, s, s.GetGoVersion())
	}
	if s := st.GetMemoryLeaks(); s != nil {
		c.memoryLeaks.collect(ch, s)
	}
	if s := st.GetBatch(); s != nil {
		c.batch.collect(ch, s)
		ch <- prometheus.MustNewConstMetric(c.batchFlushes, prometheus.CounterValue, float64(s.GetFlushedOnSize()), "size")
		ch <- prometheus.MustNewConstMetric(c.batchFlushes, prometheus.CounterValue, float64(s.GetFlushedOnInterval()), "interval")
		ch <- prometheus.MustNewConstMetric(c.batchFlushes, prometheus.CounterValue, float64(s.GetFlushedIdle()), "idle")
		if s.GetStore() != "" {
			ch <- prometheus.MustNewConstMetric(c.outboxInfo, prometheus.GaugeValue, 1, s.GetStore(), s.GetReplica())
		}
		for name, o := range s.GetChannels() {
			c.outbox.collect(ch, o, name)
			if o.GetOwner() != "" {
				ch <- prometheus.MustNewConstMetric(c.outboxOwner, prometheus.GaugeValue, 1, name, o.GetOwner())
			}
		}
	}
	if s := st.GetRequestCoalescing(); s != nil {
		c.coalescing.collect(ch, s)
	}
	if s := st.GetConnectionPool(); s != nil {
		c.pool.collect(ch, s)
		ch <- prometheus.MustNewConstMetric(c.poolRetired, prometheus.CounterValue, float64(s.GetRetiredByAge()), "age")
		ch <- prometheus.MustNewConstMetric(c.poolRetired, prometheus.CounterValue, float64(s.GetRetiredByErrors()), "errors")
		ch <- prometheus.MustNewConstMetric(c.poolRetired, prometheus.CounterValue, float64(s.GetRetiredIdle()), "idle")
		for _, h := range s.GetHosts() {
			c.poolHost.collect(ch, h, h.GetHost())
		}
	}
	if s := st.GetRateLimiters(); s != nil {
		for _, l := range s.GetLimiters() {
			c.limiter.collect(ch, l, l.GetKey())
			for reason, n := range map[string]int64{
				"deadline": l.GetShedDeadline(), "standing": l.GetShedStanding(), "full": l.GetShedFull(), "retry_after": l.GetShedRetryAfter(),
			} {
				ch <- prometheus.MustNewConstMetric(c.limiterShed, prometheus.CounterValue, float64(n), l.GetKey(), reason)
			}
			for _, t := range l.GetTenants() {
				c.limiterTenant.collect(ch, t, l.GetKey(), t.GetTenant())
			}
		}
	}
	if s := st.GetCluster(); s != nil {
		c.cluster.collect(ch, s)
		c.clusterInfo.collect(ch, s, s.GetReplicaId(), s.GetPrefix(), s.GetMode())
	}
	if s := st.GetIntegrations(); s != nil {
		for _, b := range s.GetBackends() {
			c.integration.collect(ch, b, b.GetName(), b.GetKind(), b.GetType())
			c.integrationInfo.collect(ch, b, b.GetName(), b.GetKind(), b.GetType(), b.GetHost())
		}
	}
}
