package promstats_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/service/promstats"
)

// fullStats fills every section with distinct values, so a figure read
// from the wrong field shows up as a wrong value.
func fullStats() *vegav1.Stats {
	return &vegav1.Stats{
		Time:   ts(1700000300, 0),
		Uptime: durationpb.New(90 * time.Minute),
		CircuitBreakers: &vegav1.CircuitBreakersStats{
			Open: 1,
			Breakers: []*vegav1.BreakerStats{
				{
					Key: "fetch:example.com", State: "open", Mode: "auto",
					Requests: 40, Successes: 25, Failures: 15, ConsecutiveFailures: 5,
					Rejected: 7, StateChanges: 3, LastChange: ts(1700000000, 500_000_000),
				},
				{
					Key: "ollama", State: "closed", Mode: "force-closed",
					Requests: 100, Successes: 99, Failures: 1,
				},
			},
		},
		Cache: &vegav1.CacheStats{
			Entries: 11, Bytes: 2048, CapacityBytes: 1 << 20,
			Hits: 30, StaleHits: 5, Misses: 15, CacheHitRate: 70,
			Stores: 14, Rejected: 2, Evictions: 3, Expirations: 4, Refreshes: 6, Purged: 8,
		},
		Streaming: &vegav1.StreamingStats{ActiveStreams: 2, StreamsTotal: 9, MessagesSent: 120, StreamsFailed: 1},
		Runtime: &vegav1.RuntimeStats{
			Goroutines: 42, HeapAllocBytes: 3 << 20, HeapObjects: 5000, GcCycles: 17,
			LastGcPause: durationpb.New(250 * time.Microsecond), Gomaxprocs: 8, GoVersion: "go1.26.8",
			SchedLatencyP50: durationpb.New(20 * time.Microsecond), SchedLatencyP99: durationpb.New(time.Millisecond),
			GcPauseP50: durationpb.New(100 * time.Microsecond), GcPauseP99: durationpb.New(2 * time.Millisecond),
			GcPauseMax: durationpb.New(5 * time.Millisecond),
			SlowRpcs:   4, SlowRpcThreshold: durationpb.New(500 * time.Millisecond),
			RecentSlowRpcs: []*vegav1.SlowRPC{
				{Method: "/vega.v1.GenerateService/Generate", Duration: durationpb.New(2 * time.Second), Code: "OK"},
				{Method: "/vega.v1.FetchService/Fetch", Duration: durationpb.New(time.Second), Code: "UNAVAILABLE"},
			},
		},
		MemoryLeaks: &vegav1.MemoryLeaksStats{
			Suspected: true, Window: durationpb.New(5 * time.Minute), Samples: 30,
			HeapGrowthBytesPerMinute: 6000, GoroutineGrowthPerMinute: 120,
			Reason:        "goroutines grew from 40 to 640 in 5m",
			GrowingStacks: []*vegav1.GrowingStack{{Count: 500, Growth: 480}, {Count: 90, Growth: 80}, {Count: 30, Growth: 20}},
		},
		Batch: &vegav1.BatchStats{
			Commits: 10, Operations: 40, AvgBatchSize: 4, MaxBatchSize: 9, FlushedOnSize: 1, FlushedOnInterval: 2, FlushedIdle: 7,
			AvgCommitMs: 1.5, MaxCommitMs: 4, MaxBatch: 128,
			Channels: map[string]*vegav1.OutboxChannelStats{"slack": {
				QueueDepth: 3, OldestPendingAgeMs: 2500, Accepted: 20, Delivered: 16, Retried: 4, DeadLettered: 1, DeadLetterDepth: 1, PausedForMs: 1000,
			}},
		},
		RequestCoalescing: &vegav1.RequestCoalescingStats{
			Requests: 200, Coalesced: 50, CoalesceRate: 25, Flights: 150,
			InFlightCount: 3, Waiting: 7, AvgWaitTimeMs: 12.5, Panics: 1, Abandoned: 2,
		},
		ConnectionPool: &vegav1.ConnectionPoolStats{
			TotalConnections: 10, ActiveConnections: 4, IdleConnections: 6,
			ConnectionsCreated: 25, ConnectionsClosed: 15,
			Requests: 400, ReusedRequests: 300, ReuseRate: 75, Errors: 8, ErrorRate: 2,
			RetiredByAge: 5, RetiredByErrors: 1, RetiredIdle: 9,
			AgeP50: durationpb.New(30 * time.Second), AgeP90: durationpb.New(2 * time.Minute), AgeMax: durationpb.New(5 * time.Minute),
			IdleP50: durationpb.New(1500 * time.Millisecond), IdleMax: durationpb.New(45 * time.Second),
			Hosts: []*vegav1.HostPoolStats{
				{Host: "api.example.com:443", Open: 7, Active: 3, Idle: 4, Requests: 350, Errors: 3, ErrorRate: 1},
				{Host: "ollama:11434", Open: 3, Active: 1, Idle: 2, Requests: 50, Errors: 5, ErrorRate: 10},
			},
		},
		RateLimiters: &vegav1.RateLimitersStats{
			Limiters: []*vegav1.LimiterStats{
				{
					Key: "ollama", CurrentRate: 12.5, MinRate: 1, MaxRate: 100,
					Admitted: 80, Rejected: 6, Waited: 20, Increases: 70, Decreases: 4,
					AvgWaitMs: 250, BlockedUntil: ts(1700000100, 0),
					ConcurrencyLimit: 6, InFlight: 3, QueueLength: 2, QueueDelayP50Ms: 20, QueueDelayP99Ms: 90,
					BaseLatencyMs: 400, SampleLatencyMs: 500, QueueTargetMs: 200, Standing: true,
					ShedDeadline: 1, ShedStanding: 4, ShedRetryAfter: 1, LimitIncreases: 3, LimitDecreases: 2,
					Tenants: []*vegav1.TenantLimiterStats{
						{Tenant: "alpha", Admitted: 60, Shed: 6, QueueLength: 2, Standing: true},
						{Tenant: "beta", Admitted: 20},
					},
				},
				{Key: "openai", CurrentRate: 50, MinRate: 2, MaxRate: 60, Admitted: 10},
			},
		},
		Integrations: &vegav1.IntegrationsStats{
			Backends: []*vegav1.BackendHealth{
				{Name: "http", Kind: "fetch", Type: "http", Calls: 12, Failures: 2, LastSuccess: ts(1700000250, 0)},
				{
					Name: "ollama", Kind: "llm", Type: "ollama", Host: "ollama:11434",
					Calls: 90, Failures: 9, LastSuccess: ts(1700000200, 0), LastError: ts(1700000150, 250_000_000),
					LastErrorMessage: "connection refused",
				},
				{Name: "sim", Kind: "llm", Type: "sim", Calls: 5},
				{Name: "hooks", Kind: "notify", Type: "webhook", Host: "hooks.example.com", Calls: 3, Failures: 3, LastError: ts(1700000010, 0)},
			},
		},
		Cluster: &vegav1.ClusterStats{
			ReplicaId: "gw-1", Prefix: "vega", Mode: "local", Fallback: true, Subscribed: false, ReplicasSeen: 3,
			RedisRttP50Ms: 0.25, RedisRttP99Ms: 2, RedisOps: 1000, RedisErrors: 12, RedisFallbacks: 300, RedisDials: 9,
			BreakerOpens: 2, RemoteHits: 40, RemoteMisses: 60, RemoteBad: 1, RemoteWrites: 55, RemoteSkipped: 3,
			WritesDropped: 4, PurgesSent: 1, PurgesReceived: 2,
			LeasesWon: 5, LeasesLost: 6, RemoteWaits: 7, LeaseTakeovers: 1, FleetCoalesced: 6,
			StreamsLed: 2, StreamJoins: 3, StreamJoinsRefused: 1, StreamTakeovers: 1, StreamsBroken: 1,
			BreakerNoticesSent: 2, BreakerNoticesReceived: 3, SlotLeases: 40, SlotsLeased: 7, FlightsHeld: 2,
		},
	}
}

func ts(sec int64, nanos int32) *timestamppb.Timestamp {
	return &timestamppb.Timestamp{Seconds: sec, Nanos: nanos}
}

// sample is one parsed series.
type sample struct {
	typ   dto.MetricType
	value float64
}

func counter(v float64) sample { return sample{dto.MetricType_COUNTER, v} }
func gauge(v float64) sample   { return sample{dto.MetricType_GAUGE, v} }

// scrape serves c from a fresh pedantic registry over HTTP, GETs /metrics
// and parses the body with the Prometheus text parser.
func scrape(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry() // also checks Collect against Describe
	require.NoError(t, reg.Register(c))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"), "Content-Type %q", resp.Header.Get("Content-Type"))

	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return families
}

// samples flattens families to `name{label="value",…}` → sample, labels
// sorted; an empty label value is the same as no label, as in Prometheus.
func samples(t *testing.T, families map[string]*dto.MetricFamily) map[string]sample {
	t.Helper()
	out := map[string]sample{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if l.GetValue() != "" {
					labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			var v float64
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			default:
				t.Fatalf("%s: unexpected type %v", name, f.GetType())
			}
			_, dup := out[key]
			require.False(t, dup, "duplicate series %s", key)
			out[key] = sample{f.GetType(), v}
		}
	}
	return out
}

func TestCollectorExposesEveryFigure(t *testing.T) {
	families := scrape(t, promstats.NewCollector(fullStats))

	for name, f := range families {
		assert.True(t, strings.HasPrefix(name, "vega_"), "family %s is not prefixed vega_", name)
		assert.NotEmpty(t, f.GetHelp(), "family %s has no help", name)
	}

	want := map[string]sample{
		`vega_uptime_seconds`: gauge(5400),

		`vega_circuit_breakers_open`:                                                            gauge(1),
		`vega_circuit_breaker_state{backend="fetch:example.com"}`:                               gauge(2),
		`vega_circuit_breaker_state{backend="ollama"}`:                                          gauge(0),
		`vega_circuit_breaker_info{backend="fetch:example.com",mode="auto",state="open"}`:       gauge(1),
		`vega_circuit_breaker_info{backend="ollama",mode="force-closed",state="closed"}`:        gauge(1),
		`vega_circuit_breaker_requests_total{backend="fetch:example.com"}`:                      counter(40),
		`vega_circuit_breaker_requests_total{backend="ollama"}`:                                 counter(100),
		`vega_circuit_breaker_successes_total{backend="fetch:example.com"}`:                     counter(25),
		`vega_circuit_breaker_successes_total{backend="ollama"}`:                                counter(99),
		`vega_circuit_breaker_failures_total{backend="fetch:example.com"}`:                      counter(15),
		`vega_circuit_breaker_failures_total{backend="ollama"}`:                                 counter(1),
		`vega_circuit_breaker_consecutive_failures{backend="fetch:example.com"}`:                gauge(5),
		`vega_circuit_breaker_consecutive_failures{backend="ollama"}`:                           gauge(0),
		`vega_circuit_breaker_rejected_total{backend="fetch:example.com"}`:                      counter(7),
		`vega_circuit_breaker_rejected_total{backend="ollama"}`:                                 counter(0),
		`vega_circuit_breaker_state_changes_total{backend="fetch:example.com"}`:                 counter(3),
		`vega_circuit_breaker_state_changes_total{backend="ollama"}`:                            counter(0),
		`vega_circuit_breaker_last_state_change_timestamp_seconds{backend="fetch:example.com"}`: gauge(1700000000.5),
		// ollama never changed state: no timestamp sample.

		`vega_cache_entries`:           gauge(11),
		`vega_cache_size_bytes`:        gauge(2048),
		`vega_cache_capacity_bytes`:    gauge(1048576),
		`vega_cache_hits_total`:        counter(30),
		`vega_cache_stale_hits_total`:  counter(5),
		`vega_cache_misses_total`:      counter(15),
		`vega_cache_hit_ratio`:         gauge(0.7),
		`vega_cache_stores_total`:      counter(14),
		`vega_cache_rejected_total`:    counter(2),
		`vega_cache_evictions_total`:   counter(3),
		`vega_cache_expirations_total`: counter(4),
		`vega_cache_refreshes_total`:   counter(6),
		`vega_cache_purged_total`:      counter(8),

		`vega_streaming_active_streams`:       gauge(2),
		`vega_streaming_streams_total`:        counter(9),
		`vega_streaming_messages_sent_total`:  counter(120),
		`vega_streaming_streams_failed_total`: counter(1),

		`vega_runtime_goroutines`:                  gauge(42),
		`vega_runtime_heap_alloc_bytes`:            gauge(3145728),
		`vega_runtime_heap_objects`:                gauge(5000),
		`vega_runtime_gc_cycles_total`:             counter(17),
		`vega_runtime_last_gc_pause_seconds`:       gauge(0.00025),
		`vega_runtime_gomaxprocs`:                  gauge(8),
		`vega_runtime_info{go_version="go1.26.8"}`: gauge(1),
		`vega_runtime_sched_latency_p50_seconds`:   gauge(0.00002),
		`vega_runtime_sched_latency_p99_seconds`:   gauge(0.001),
		`vega_runtime_gc_pause_p50_seconds`:        gauge(0.0001),
		`vega_runtime_gc_pause_p99_seconds`:        gauge(0.002),
		`vega_runtime_gc_pause_max_seconds`:        gauge(0.005),
		`vega_runtime_slow_rpcs_total`:             counter(4),
		`vega_runtime_slow_rpc_threshold_seconds`:  gauge(0.5),
		`vega_runtime_recent_slow_rpcs`:            gauge(2),

		`vega_memory_leak_suspected`:                    gauge(1),
		`vega_memory_leak_window_seconds`:               gauge(300),
		`vega_memory_leak_samples`:                      gauge(30),
		`vega_memory_leak_heap_growth_bytes_per_second`: gauge(100),
		`vega_memory_leak_goroutine_growth_per_second`:  gauge(2),
		`vega_memory_leak_growing_stacks`:               gauge(3),

		`vega_request_coalescing_requests_total`:   counter(200),
		`vega_request_coalescing_coalesced_total`:  counter(50),
		`vega_request_coalescing_coalesce_ratio`:   gauge(0.25),
		`vega_request_coalescing_flights_total`:    counter(150),
		`vega_request_coalescing_in_flight`:        gauge(3),
		`vega_request_coalescing_waiting`:          gauge(7),
		`vega_request_coalescing_avg_wait_seconds`: gauge(0.0125),
		`vega_request_coalescing_panics_total`:     counter(1),
		`vega_request_coalescing_abandoned_total`:  counter(2),

		`vega_connection_pool_open_connections`:                                    gauge(10),
		`vega_connection_pool_active_connections`:                                  gauge(4),
		`vega_connection_pool_idle_connections`:                                    gauge(6),
		`vega_connection_pool_connections_created_total`:                           counter(25),
		`vega_connection_pool_connections_closed_total`:                            counter(15),
		`vega_connection_pool_requests_total`:                                      counter(400),
		`vega_connection_pool_reused_requests_total`:                               counter(300),
		`vega_connection_pool_reuse_ratio`:                                         gauge(0.75),
		`vega_connection_pool_errors_total`:                                        counter(8),
		`vega_connection_pool_error_ratio`:                                         gauge(0.02),
		`vega_connection_pool_connections_retired_total{reason="age"}`:             counter(5),
		`vega_connection_pool_connections_retired_total{reason="errors"}`:          counter(1),
		`vega_connection_pool_connections_retired_total{reason="idle"}`:            counter(9),
		`vega_connection_pool_connection_age_p50_seconds`:                          gauge(30),
		`vega_connection_pool_connection_age_p90_seconds`:                          gauge(120),
		`vega_connection_pool_connection_age_max_seconds`:                          gauge(300),
		`vega_connection_pool_connection_idle_p50_seconds`:                         gauge(1.5),
		`vega_connection_pool_connection_idle_max_seconds`:                         gauge(45),
		`vega_connection_pool_host_open_connections{host="api.example.com:443"}`:   gauge(7),
		`vega_connection_pool_host_open_connections{host="ollama:11434"}`:          gauge(3),
		`vega_connection_pool_host_active_connections{host="api.example.com:443"}`: gauge(3),
		`vega_connection_pool_host_active_connections{host="ollama:11434"}`:        gauge(1),
		`vega_connection_pool_host_idle_connections{host="api.example.com:443"}`:   gauge(4),
		`vega_connection_pool_host_idle_connections{host="ollama:11434"}`:          gauge(2),
		`vega_connection_pool_host_requests_total{host="api.example.com:443"}`:     counter(350),
		`vega_connection_pool_host_requests_total{host="ollama:11434"}`:            counter(50),
		`vega_connection_pool_host_errors_total{host="api.example.com:443"}`:       counter(3),
		`vega_connection_pool_host_errors_total{host="ollama:11434"}`:              counter(5),
		`vega_connection_pool_host_error_ratio{host="api.example.com:443"}`:        gauge(0.01),
		`vega_connection_pool_host_error_ratio{host="ollama:11434"}`:               gauge(0.1),

		`vega_rate_limiter_current_rate{backend="ollama"}`:                         gauge(12.5),
		`vega_rate_limiter_current_rate{backend="openai"}`:                         gauge(50),
		`vega_rate_limiter_min_rate{backend="ollama"}`:                             gauge(1),
		`vega_rate_limiter_min_rate{backend="openai"}`:                             gauge(2),
		`vega_rate_limiter_max_rate{backend="ollama"}`:                             gauge(100),
		`vega_rate_limiter_max_rate{backend="openai"}`:                             gauge(60),
		`vega_rate_limiter_admitted_total{backend="ollama"}`:                       counter(80),
		`vega_rate_limiter_admitted_total{backend="openai"}`:                       counter(10),
		`vega_rate_limiter_rejected_total{backend="ollama"}`:                       counter(6),
		`vega_rate_limiter_rejected_total{backend="openai"}`:                       counter(0),
		`vega_rate_limiter_waited_total{backend="ollama"}`:                         counter(20),
		`vega_rate_limiter_waited_total{backend="openai"}`:                         counter(0),
		`vega_rate_limiter_increases_total{backend="ollama"}`:                      counter(70),
		`vega_rate_limiter_increases_total{backend="openai"}`:                      counter(0),
		`vega_rate_limiter_decreases_total{backend="ollama"}`:                      counter(4),
		`vega_rate_limiter_decreases_total{backend="openai"}`:                      counter(0),
		`vega_rate_limiter_avg_wait_seconds{backend="ollama"}`:                     gauge(0.25),
		`vega_rate_limiter_avg_wait_seconds{backend="openai"}`:                     gauge(0),
		`vega_rate_limiter_blocked_until_timestamp_seconds{backend="ollama"}`:      gauge(1700000100),
		`vega_rate_limiter_concurrency_limit{backend="ollama"}`:                    gauge(6),
		`vega_rate_limiter_concurrency_limit{backend="openai"}`:                    gauge(0),
		`vega_rate_limiter_in_flight{backend="ollama"}`:                            gauge(3),
		`vega_rate_limiter_in_flight{backend="openai"}`:                            gauge(0),
		`vega_rate_limiter_queue_length{backend="ollama"}`:                         gauge(2),
		`vega_rate_limiter_queue_length{backend="openai"}`:                         gauge(0),
		`vega_rate_limiter_queue_delay_p50_seconds{backend="ollama"}`:              gauge(0.02),
		`vega_rate_limiter_queue_delay_p50_seconds{backend="openai"}`:              gauge(0),
		`vega_rate_limiter_queue_delay_p99_seconds{backend="ollama"}`:              gauge(0.09),
		`vega_rate_limiter_queue_delay_p99_seconds{backend="openai"}`:              gauge(0),
		`vega_rate_limiter_base_latency_seconds{backend="ollama"}`:                 gauge(0.4),
		`vega_rate_limiter_base_latency_seconds{backend="openai"}`:                 gauge(0),
		`vega_rate_limiter_sample_latency_seconds{backend="ollama"}`:               gauge(0.5),
		`vega_rate_limiter_sample_latency_seconds{backend="openai"}`:               gauge(0),
		`vega_rate_limiter_queue_target_seconds{backend="ollama"}`:                 gauge(0.2),
		`vega_rate_limiter_queue_target_seconds{backend="openai"}`:                 gauge(0),
		`vega_rate_limiter_standing{backend="ollama"}`:                             gauge(1),
		`vega_rate_limiter_standing{backend="openai"}`:                             gauge(0),
		`vega_rate_limiter_limit_increases_total{backend="ollama"}`:                counter(3),
		`vega_rate_limiter_limit_increases_total{backend="openai"}`:                counter(0),
		`vega_rate_limiter_limit_decreases_total{backend="ollama"}`:                counter(2),
		`vega_rate_limiter_limit_decreases_total{backend="openai"}`:                counter(0),
		`vega_rate_limiter_shed_total{backend="ollama",reason="deadline"}`:         counter(1),
		`vega_rate_limiter_shed_total{backend="ollama",reason="standing"}`:         counter(4),
		`vega_rate_limiter_shed_total{backend="ollama",reason="full"}`:             counter(0),
		`vega_rate_limiter_shed_total{backend="ollama",reason="retry_after"}`:      counter(1),
		`vega_rate_limiter_shed_total{backend="openai",reason="deadline"}`:         counter(0),
		`vega_rate_limiter_shed_total{backend="openai",reason="standing"}`:         counter(0),
		`vega_rate_limiter_shed_total{backend="openai",reason="full"}`:             counter(0),
		`vega_rate_limiter_shed_total{backend="openai",reason="retry_after"}`:      counter(0),
		`vega_rate_limiter_tenant_admitted_total{backend="ollama",tenant="alpha"}`: counter(60),
		`vega_rate_limiter_tenant_shed_total{backend="ollama",tenant="alpha"}`:     counter(6),
		`vega_rate_limiter_tenant_queue_length{backend="ollama",tenant="alpha"}`:   gauge(2),
		`vega_rate_limiter_tenant_admitted_total{backend="ollama",tenant="beta"}`:  counter(20),
		`vega_rate_limiter_tenant_shed_total{backend="ollama",tenant="beta"}`:      counter(0),
		`vega_rate_limiter_tenant_queue_length{backend="ollama",tenant="beta"}`:    gauge(0),
		// openai is not blocked: no blocked_until sample.

		`vega_batch_commits_total`:                                counter(10),
		`vega_batch_operations_total`:                             counter(40),
		`vega_batch_avg_size`:                                     gauge(4),
		`vega_batch_max_size`:                                     gauge(9),
		`vega_batch_avg_commit_seconds`:                           gauge(0.0015),
		`vega_batch_max_commit_seconds`:                           gauge(0.004),
		`vega_batch_flushes_total{reason="size"}`:                 counter(1),
		`vega_batch_flushes_total{reason="interval"}`:             counter(2),
		`vega_batch_flushes_total{reason="idle"}`:                 counter(7),
		`vega_outbox_queue_depth{channel="slack"}`:                gauge(3),
		`vega_outbox_oldest_pending_age_seconds{channel="slack"}`: gauge(2.5),
		`vega_outbox_accepted_total{channel="slack"}`:             counter(20),
		`vega_outbox_delivered_total{channel="slack"}`:            counter(16),
		`vega_outbox_retried_total{channel="slack"}`:              counter(4),
		`vega_outbox_dead_lettered_total{channel="slack"}`:        counter(1),
		`vega_outbox_dead_letters{channel="slack"}`:               gauge(1),
		`vega_outbox_paused_seconds{channel="slack"}`:             gauge(1),

		`vega_integration_info{backend="http",kind="fetch",type="http"}`:                               gauge(1),
		`vega_integration_info{backend="ollama",host="ollama:11434",kind="llm",type="ollama"}`:         gauge(1),
		`vega_integration_info{backend="sim",kind="llm",type="sim"}`:                                   gauge(1),
		`vega_integration_info{backend="hooks",host="hooks.example.com",kind="notify",type="webhook"}`: gauge(1),
		`vega_integration_calls_total{backend="http",kind="fetch",type="http"}`:                        counter(12),
		`vega_integration_calls_total{backend="ollama",kind="llm",type="ollama"}`:                      counter(90),
		`vega_integration_calls_total{backend="sim",kind="llm",type="sim"}`:                            counter(5),
		`vega_integration_calls_total{backend="hooks",kind="notify",type="webhook"}`:                   counter(3),
		`vega_integration_failures_total{backend="http",kind="fetch",type="http"}`:                     counter(2),
		`vega_integration_failures_total{backend="ollama",kind="llm",type="ollama"}`:                   counter(9),
		`vega_integration_failures_total{backend="sim",kind="llm",type="sim"}`:                         counter(0),
		`vega_integration_failures_total{backend="hooks",kind="notify",type="webhook"}`:                counter(3),
		`vega_integration_last_success_timestamp_seconds{backend="http",kind="fetch",type="http"}`:     gauge(1700000250),
		`vega_integration_last_success_timestamp_seconds{backend="ollama",kind="llm",type="ollama"}`:   gauge(1700000200),
		`vega_integration_last_error_timestamp_seconds{backend="ollama",kind="llm",type="ollama"}`:     gauge(1700000150.25),
		`vega_integration_last_error_timestamp_seconds{backend="hooks",kind="notify",type="webhook"}`:  gauge(1700000010),

		`vega_cluster_info{mode="local",prefix="vega",replica="gw-1"}`: gauge(1),
		`vega_cluster_fallback`:                       gauge(1),
		`vega_cluster_subscribed`:                     gauge(0),
		`vega_cluster_replicas_seen`:                  gauge(3),
		`vega_cluster_redis_rtt_p50_seconds`:          gauge(0.00025),
		`vega_cluster_redis_rtt_p99_seconds`:          gauge(0.002),
		`vega_cluster_redis_ops_total`:                counter(1000),
		`vega_cluster_redis_errors_total`:             counter(12),
		`vega_cluster_redis_fallbacks_total`:          counter(300),
		`vega_cluster_redis_dials_total`:              counter(9),
		`vega_cluster_redis_breaker_opens_total`:      counter(2),
		`vega_cluster_remote_hits_total`:              counter(40),
		`vega_cluster_remote_misses_total`:            counter(60),
		`vega_cluster_remote_bad_total`:               counter(1),
		`vega_cluster_remote_writes_total`:            counter(55),
		`vega_cluster_remote_skipped_total`:           counter(3),
		`vega_cluster_writes_dropped_total`:           counter(4),
		`vega_cluster_purges_sent_total`:              counter(1),
		`vega_cluster_purges_received_total`:          counter(2),
		`vega_cluster_leases_won_total`:               counter(5),
		`vega_cluster_leases_lost_total`:              counter(6),
		`vega_cluster_remote_waits_total`:             counter(7),
		`vega_cluster_lease_takeovers_total`:          counter(1),
		`vega_cluster_fleet_coalesced_total`:          counter(6),
		`vega_cluster_streams_led_total`:              counter(2),
		`vega_cluster_stream_joins_total`:             counter(3),
		`vega_cluster_stream_joins_refused_total`:     counter(1),
		`vega_cluster_stream_takeovers_total`:         counter(1),
		`vega_cluster_streams_broken_total`:           counter(1),
		`vega_cluster_flights_held_total`:             counter(2),
		`vega_cluster_breaker_notices_sent_total`:     counter(2),
		`vega_cluster_breaker_notices_received_total`: counter(3),
		`vega_cluster_slot_leases_total`:              counter(40),
		`vega_cluster_slots_leased`:                   gauge(7),
	}
	assert.Equal(t, want, samples(t, families))
}

// TestCollectorPassesLint is testutil.CollectAndLint spelled out: testutil
// itself imports github.com/kylelemons/godebug, which go.mod does not
// require, while its promlint package needs nothing new.
func TestCollectorPassesLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(promstats.NewCollector(fullStats)))
	families, err := reg.Gather()
	require.NoError(t, err)
	require.NotEmpty(t, families)
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestCollectorSkipsUnsetSections(t *testing.T) {
	full := fullStats()
	tests := []struct {
		name   string
		stats  *vegav1.Stats
		prefix string // every family starts with it; "" means no family at all
		want   int    // families
	}{
		{name: "nil snapshot", stats: nil},
		{name: "empty snapshot", stats: &vegav1.Stats{}},
		{name: "time only", stats: &vegav1.Stats{Time: full.Time}},
		{name: "batch, no channels", stats: &vegav1.Stats{Batch: &vegav1.BatchStats{Commits: 1}}, prefix: "vega_batch_", want: 7},
		{name: "batch with a channel", stats: &vegav1.Stats{Batch: full.Batch}, prefix: "vega_", want: 15},
		{name: "uptime", stats: &vegav1.Stats{Uptime: full.Uptime}, prefix: "vega_uptime_", want: 1},
		{name: "circuit breakers", stats: &vegav1.Stats{CircuitBreakers: full.CircuitBreakers}, prefix: "vega_circuit_breaker", want: 10},
		{name: "no breakers yet", stats: &vegav1.Stats{CircuitBreakers: &vegav1.CircuitBreakersStats{}}, prefix: "vega_circuit_breakers_open", want: 1},
		{name: "cache", stats: &vegav1.Stats{Cache: full.Cache}, prefix: "vega_cache_", want: 13},
		{name: "streaming", stats: &vegav1.Stats{Streaming: full.Streaming}, prefix: "vega_streaming_", want: 4},
		{name: "runtime", stats: &vegav1.Stats{Runtime: full.Runtime}, prefix: "vega_runtime_", want: 15},
		{name: "memory leaks", stats: &vegav1.Stats{MemoryLeaks: full.MemoryLeaks}, prefix: "vega_memory_leak_", want: 6},
		{name: "request coalescing", stats: &vegav1.Stats{RequestCoalescing: full.RequestCoalescing}, prefix: "vega_request_coalescing_", want: 9},
		{name: "connection pool", stats: &vegav1.Stats{ConnectionPool: full.ConnectionPool}, prefix: "vega_connection_pool_", want: 22},
		{name: "rate limiters", stats: &vegav1.Stats{RateLimiters: full.RateLimiters}, prefix: "vega_rate_limiter_", want: 25},
		{name: "no limiters yet", stats: &vegav1.Stats{RateLimiters: &vegav1.RateLimitersStats{}}},
		{name: "integrations", stats: &vegav1.Stats{Integrations: full.Integrations}, prefix: "vega_integration_", want: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			families := scrape(t, promstats.NewCollector(func() *vegav1.Stats { return tt.stats }))
			for name := range families {
				assert.True(t, tt.prefix != "" && strings.HasPrefix(name, tt.prefix), "unexpected family %s", name)
			}
			assert.Len(t, families, tt.want, "families")
		})
	}
}

func TestCollectorTakesOneSnapshotPerScrape(t *testing.T) {
	var calls atomic.Int64
	c := promstats.NewCollector(func() *vegav1.Stats {
		calls.Add(1)
		return fullStats()
	})
	scrape(t, c) // registering calls Describe, not the snapshot
	assert.EqualValues(t, 1, calls.Load(), "snapshots after one scrape")
	scrape(t, c)
	assert.EqualValues(t, 2, calls.Load(), "snapshots after two scrapes")
}

func TestCollectorBreakerState(t *testing.T) {
	tests := []struct {
		state     string
		wantValue float64
		wantState bool // a vega_circuit_breaker_state sample
	}{
		{state: "closed", wantValue: 0, wantState: true},
		{state: "half-open", wantValue: 1, wantState: true},
		{state: "open", wantValue: 2, wantState: true},
		{state: "melting", wantState: false},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			st := &vegav1.Stats{CircuitBreakers: &vegav1.CircuitBreakersStats{
				Breakers: []*vegav1.BreakerStats{{Key: "ollama", State: tt.state, Mode: "force-open"}},
			}}
			got := samples(t, scrape(t, promstats.NewCollector(func() *vegav1.Stats { return st })))

			s, ok := got[`vega_circuit_breaker_state{backend="ollama"}`]
			require.Equal(t, tt.wantState, ok, "state sample present")
			if ok {
				assert.Equal(t, gauge(tt.wantValue), s)
			}
			info := fmt.Sprintf(`vega_circuit_breaker_info{backend="ollama",mode="force-open",state=%q}`, tt.state)
			assert.Equal(t, gauge(1), got[info], "info %s", info)
		})
	}
}
