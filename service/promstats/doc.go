// Package promstats exposes PerfAdmin's statistics on /metrics: NewCollector
// returns a prometheus.Collector that takes one vegav1.Stats snapshot per
// scrape and turns every figure in it into a vega_* series.
//
//	reg.MustRegister(promstats.NewCollector(snapshot))
//
// The rules:
//
//   - One family per PerfAdmin figure, named vega_<section>_<figure>, in base
//     units: durations in seconds (_seconds; avg_wait_time_ms and avg_wait_ms
//     are divided by 1000), sizes in bytes (_bytes), percentages as ratios
//     from 0 to 1 (_ratio; coalesce_rate 42.5 is 0.425), per-minute trends
//     per second, timestamps in seconds since the Unix epoch
//     (_timestamp_seconds).
//   - Counts that only grow are counters (_total); everything else —
//     current levels, ratios, averages, quantiles, settings — is a gauge.
//     ResetStats sets the counters of a section to zero; Prometheus sees
//     that as a counter reset, which rate() and increase() already handle.
//     Ratios and averages are "since start or reset", as in PerfAdmin; for
//     a windowed view divide the rates of their counters instead
//     (rate(vega_cache_hits_total[5m]) / ...).
//   - A section the snapshot left unset emits no series; so does a nil
//     snapshot. A timestamp that is unset (a breaker that never changed
//     state, a backend never called) emits no sample rather than 0.
//   - Per-entry series carry the entry's key: backend for circuit breakers,
//     rate limiters and integrations (plus kind and type for integrations),
//     host for the connection pool's hosts.
//   - A circuit breaker's state is a number, vega_circuit_breaker_state
//     (0 closed, 1 half-open, 2 open: alert on == 2), and its words are on
//     vega_circuit_breaker_info{state,mode} (always 1). A state the
//     collector does not know is left out of the number but kept on the info.
//   - Repeated details are exposed as their count (recent slow RPCs, growing
//     goroutine stacks); free text (the leak reason, a backend's last error
//     message) and the snapshot's own time are not exposed.
//
// The series ("backend" etc. are labels; PerfAdmin field in parentheses when
// the name differs):
//
//	series                                                      type     labels                     meaning
//	vega_uptime_seconds                                         gauge                               how long the gateway has run
//
//	vega_circuit_breakers_open                                  gauge                               breakers open now
//	vega_circuit_breaker_state                                  gauge    backend                    0 closed, 1 half-open, 2 open
//	vega_circuit_breaker_info                                   gauge    backend, state, mode       always 1
//	vega_circuit_breaker_requests_total                         counter  backend                    calls admitted
//	vega_circuit_breaker_successes_total                        counter  backend                    admitted calls that succeeded
//	vega_circuit_breaker_failures_total                         counter  backend                    admitted calls that failed
//	vega_circuit_breaker_consecutive_failures                   gauge    backend                    consecutive failures now
//	vega_circuit_breaker_rejected_total                         counter  backend                    calls refused
//	vega_circuit_breaker_state_changes_total                    counter  backend                    state changes
//	vega_circuit_breaker_last_state_change_timestamp_seconds    gauge    backend                    when the state last changed (last_change)
//
//	vega_cache_entries                                          gauge                               entries now
//	vega_cache_size_bytes                                       gauge                               bytes held (bytes)
//	vega_cache_capacity_bytes                                   gauge                               upper bound on bytes
//	vega_cache_hits_total                                       counter                             fresh hits
//	vega_cache_stale_hits_total                                 counter                             stale answers served
//	vega_cache_misses_total                                     counter                             lookups that found nothing
//	vega_cache_hit_ratio                                        gauge                               0-1 (cache_hit_rate)
//	vega_cache_stores_total                                     counter                             answers stored
//	vega_cache_rejected_total                                   counter                             answers not cacheable
//	vega_cache_evictions_total                                  counter                             evicted for capacity
//	vega_cache_expirations_total                                counter                             expired
//	vega_cache_refreshes_total                                  counter                             background refreshes
//	vega_cache_purged_total                                     counter                             removed by PurgeCache
//
//	vega_streaming_active_streams                               gauge                               streams open now
//	vega_streaming_streams_total                                counter                             streams started
//	vega_streaming_messages_sent_total                          counter                             messages sent (messages_sent)
//	vega_streaming_streams_failed_total                         counter                             streams that failed
//
//	vega_runtime_goroutines                                     gauge                               goroutines now
//	vega_runtime_heap_alloc_bytes                               gauge                               live heap bytes
//	vega_runtime_heap_objects                                   gauge                               live heap objects
//	vega_runtime_gc_cycles_total                                counter                             completed GC cycles
//	vega_runtime_last_gc_pause_seconds                          gauge                               most recent GC pause
//	vega_runtime_gomaxprocs                                     gauge                               GOMAXPROCS
//	vega_runtime_info                                           gauge    go_version                 always 1
//	vega_runtime_sched_latency_p50_seconds                      gauge                               scheduler latency, median
//	vega_runtime_sched_latency_p99_seconds                      gauge                               scheduler latency, 99th pct
//	vega_runtime_gc_pause_p50_seconds                           gauge                               GC pause, median
//	vega_runtime_gc_pause_p99_seconds                           gauge                               GC pause, 99th percentile
//	vega_runtime_gc_pause_max_seconds                           gauge                               GC pause, longest
//	vega_runtime_slow_rpcs_total                                counter                             RPCs over the threshold (slow_rpcs)
//	vega_runtime_slow_rpc_threshold_seconds                     gauge                               VEGA_SLOW_RPC_THRESHOLD
//	vega_runtime_recent_slow_rpcs                               gauge                               len(recent_slow_rpcs)
//
//	vega_memory_leak_suspected                                  gauge                               1 suspected, 0 not
//	vega_memory_leak_window_seconds                             gauge                               trend window
//	vega_memory_leak_samples                                    gauge                               samples in the window
//	vega_memory_leak_heap_growth_bytes_per_second               gauge                               heap_growth_bytes_per_minute / 60
//	vega_memory_leak_goroutine_growth_per_second                gauge                               goroutine_growth_per_minute / 60
//	vega_memory_leak_growing_stacks                             gauge                               len(growing_stacks)
//
//	vega_request_coalescing_requests_total                      counter                             requests that could be coalesced
//	vega_request_coalescing_coalesced_total                     counter                             requests that joined a flight
//	vega_request_coalescing_coalesce_ratio                      gauge                               0-1 (coalesce_rate)
//	vega_request_coalescing_flights_total                       counter                             shared calls started (flights)
//	vega_request_coalescing_in_flight                           gauge                               shared calls now (in_flight_count)
//	vega_request_coalescing_waiting                             gauge                               callers waiting now
//	vega_request_coalescing_avg_wait_seconds                    gauge                               avg_wait_time_ms / 1000
//	vega_request_coalescing_panics_total                        counter                             shared calls that panicked
//	vega_request_coalescing_abandoned_total                     counter                             shared calls every caller left
//
//	vega_connection_pool_open_connections                       gauge                               open connections (total_connections)
//	vega_connection_pool_active_connections                     gauge                               carrying a request now
//	vega_connection_pool_idle_connections                       gauge                               idle now
//	vega_connection_pool_connections_created_total              counter                             connections opened
//	vega_connection_pool_connections_closed_total               counter                             connections closed
//	vega_connection_pool_requests_total                         counter                             requests sent
//	vega_connection_pool_reused_requests_total                  counter                             requests on a reused connection
//	vega_connection_pool_reuse_ratio                            gauge                               0-1 (reuse_rate)
//	vega_connection_pool_errors_total                           counter                             transport errors and 5xx
//	vega_connection_pool_error_ratio                            gauge                               0-1 (error_rate)
//	vega_connection_pool_connections_retired_total              counter  reason                     reason="age" (retired_by_age), "errors" (retired_by_errors), "idle" (retired_idle)
//	vega_connection_pool_connection_age_p50_seconds             gauge                               age of open connections, median (age_p50)
//	vega_connection_pool_connection_age_p90_seconds             gauge                               … 90th percentile (age_p90)
//	vega_connection_pool_connection_age_max_seconds             gauge                               … oldest (age_max)
//	vega_connection_pool_connection_idle_p50_seconds            gauge                               idle time of idle connections, median (idle_p50)
//	vega_connection_pool_connection_idle_max_seconds            gauge                               … longest (idle_max)
//	vega_connection_pool_host_open_connections                  gauge    host                       hosts[].open
//	vega_connection_pool_host_active_connections                gauge    host                       hosts[].active
//	vega_connection_pool_host_idle_connections                  gauge    host                       hosts[].idle
//	vega_connection_pool_host_requests_total                    counter  host                       hosts[].requests
//	vega_connection_pool_host_errors_total                      counter  host                       hosts[].errors
//	vega_connection_pool_host_error_ratio                       gauge    host                       0-1 (hosts[].error_rate)
//
//	vega_rate_limiter_current_rate                              gauge    backend                    requests per second now
//	vega_rate_limiter_min_rate                                  gauge    backend                    MIN_RATE_LIMIT
//	vega_rate_limiter_max_rate                                  gauge    backend                    MAX_RATE_LIMIT
//	vega_rate_limiter_admitted_total                            counter  backend                    calls admitted
//	vega_rate_limiter_rejected_total                            counter  backend                    calls refused
//	vega_rate_limiter_waited_total                              counter  backend                    admitted after waiting
//	vega_rate_limiter_increases_total                           counter  backend                    rate increases
//	vega_rate_limiter_decreases_total                           counter  backend                    rate decreases
//	vega_rate_limiter_avg_wait_seconds                          gauge    backend                    avg_wait_ms / 1000
//	vega_rate_limiter_blocked_until_timestamp_seconds           gauge    backend                    Retry-After hold; absent when none (blocked_until)
//	vega_rate_limiter_concurrency_limit                         gauge    backend                    calls sent to the backend at once
//	vega_rate_limiter_in_flight                                 gauge    backend                    calls at the backend now
//	vega_rate_limiter_queue_length                              gauge    backend                    calls queued now
//	vega_rate_limiter_queue_delay_p50_seconds                   gauge    backend                    queue_delay_p50_ms / 1000
//	vega_rate_limiter_queue_delay_p99_seconds                   gauge    backend                    queue_delay_p99_ms / 1000
//	vega_rate_limiter_base_latency_seconds                      gauge    backend                    base_latency_ms / 1000
//	vega_rate_limiter_sample_latency_seconds                    gauge    backend                    sample_latency_ms / 1000
//	vega_rate_limiter_queue_target_seconds                      gauge    backend                    queue_target_ms / 1000
//	vega_rate_limiter_standing                                  gauge    backend                    1 while a queue is standing
//	vega_rate_limiter_limit_increases_total                     counter  backend                    concurrency limit rises
//	vega_rate_limiter_limit_decreases_total                     counter  backend                    concurrency limit cuts
//	vega_rate_limiter_shed_total                                counter  backend, reason            refusals: deadline, standing, full, retry_after (shed_*)
//	vega_rate_limiter_tenant_admitted_total                     counter  backend, tenant            tenants[].admitted
//	vega_rate_limiter_tenant_shed_total                         counter  backend, tenant            tenants[].shed
//	vega_rate_limiter_tenant_queue_length                       gauge    backend, tenant            tenants[].queue_length
//
//	vega_batch_commits_total                                    counter                             outbox group commits (one fsync each)
//	vega_batch_operations_total                                 counter                             writes made durable by them
//	vega_batch_avg_size                                         gauge                               writes per commit (avg_batch_size)
//	vega_batch_max_size                                         gauge                               largest batch (max_batch_size)
//	vega_batch_avg_commit_seconds                               gauge                               avg_commit_ms / 1000
//	vega_batch_max_commit_seconds                               gauge                               max_commit_ms / 1000
//	vega_batch_flushes_total                                    counter  reason                     reason="size" (flushed_on_size), "interval", "idle"
//	vega_outbox_queue_depth                                     gauge    channel                    notifications waiting
//	vega_outbox_oldest_pending_age_seconds                      gauge    channel                    oldest waiting (oldest_pending_age_ms)
//	vega_outbox_accepted_total                                  counter  channel                    accepted
//	vega_outbox_delivered_total                                 counter  channel                    delivered
//	vega_outbox_retried_total                                   counter  channel                    attempts scheduled again
//	vega_outbox_dead_lettered_total                             counter  channel                    failed for good
//	vega_outbox_dead_letters                                    gauge    channel                    dead letters kept (dead_letter_depth)
//	vega_outbox_paused_seconds                                  gauge    channel                    until the next attempt (paused_for_ms)
//
//	vega_integration_info                                       gauge    backend, kind, type, host  always 1
//	vega_integration_calls_total                                counter  backend, kind, type        calls
//	vega_integration_failures_total                             counter  backend, kind, type        failed calls
//	vega_integration_last_success_timestamp_seconds             gauge    backend, kind, type        last success; absent until one
//	vega_integration_last_error_timestamp_seconds               gauge    backend, kind, type        last failure; absent until one
//
//	cluster (only with REDIS_URL):
//	vega_cluster_info                                           gauge    replica, prefix, mode      always 1; mode "redis" or "local"
//	vega_cluster_fallback                                       gauge                               1 while on the local tier alone (Redis breaker open)
//	vega_cluster_subscribed                                     gauge                               1 while the purge channel subscription is confirmed
//	vega_cluster_replicas_seen                                  gauge                               replicas with a live heartbeat, this one included
//	vega_cluster_redis_rtt_p50_seconds                          gauge                               Redis round trip, median (redis_rtt_p50_ms)
//	vega_cluster_redis_rtt_p99_seconds                          gauge                               Redis round trip, p99 (redis_rtt_p99_ms)
//	vega_cluster_redis_ops_total                                counter                             operations sent to Redis
//	vega_cluster_redis_errors_total                             counter                             sent and failed
//	vega_cluster_redis_fallbacks_total                          counter                             not sent: breaker open or 256 in flight
//	vega_cluster_redis_dials_total                              counter                             connections dialled
//	vega_cluster_redis_breaker_opens_total                      counter                             the Redis breaker opened (breaker_opens)
//	vega_cluster_remote_hits_total                              counter                             local misses the shared tier answered
//	vega_cluster_remote_misses_total                            counter                             local misses it did not
//	vega_cluster_remote_bad_total                               counter                             shared entries failing the checks, ignored
//	vega_cluster_remote_writes_total                            counter                             answers handed to the shared tier
//	vega_cluster_remote_skipped_total                           counter                             answers kept local (over 1 MiB, not protobuf)
//	vega_cluster_writes_dropped_total                           counter                             shared-tier writes dropped
//	vega_cluster_purges_sent_total                              counter                             fleet-wide purges sent
//	vega_cluster_purges_received_total                          counter                             other replicas' purges applied here
//	vega_cluster_leases_won_total                               counter                             cross-replica flights led here
//	vega_cluster_leases_lost_total                              counter                             flights another replica led
//	vega_cluster_remote_waits_total                             counter                             waits for another replica's flight
//	vega_cluster_lease_takeovers_total                          counter                             waits that found the owner gone and took over
//	vega_cluster_fleet_coalesced_total                          counter                             flights answered by another replica's call
//	vega_cluster_streams_led_total                              counter                             stream flights led here for the fleet
//	vega_cluster_stream_joins_total                             counter                             follows of another replica's stream flight
//	vega_cluster_stream_joins_refused_total                     counter                             not followed (8 follows running): alone
//	vega_cluster_stream_takeovers_total                         counter                             follows that found the leader gone
//	vega_cluster_streams_broken_total                           counter                             stream flights led here that ended broken
//	vega_cluster_flights_held_total                             counter                             calls kept running for other replicas' waiters
//	vega_cluster_breaker_notices_sent_total                     counter                             breaker trips and closes published to the fleet
//	vega_cluster_breaker_notices_received_total                 counter                             other replicas' breaker trips and closes applied here
//	vega_cluster_slot_leases_total                              counter                             concurrency slot leases granted to this replica
//	vega_cluster_slots_leased                                   gauge                               slots this replica's current leases hold
//
// The names deliberately avoid the seed's (coalesce_rate, cache_hit_rate,
// avg_wait_time_ms, in_flight_count …) where those carry a non-base unit
// or read like a counter; the table keeps the PerfAdmin field beside each.
package promstats
