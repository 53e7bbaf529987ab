// Package ratelimit is the gateway's overload control per backend key: it
// decides whether a call goes to the backend now, waits for its turn, or is
// refused at once, with unary and stream server interceptors.
//
// Three limits stand in front of each backend:
//
//   - a concurrency limit, the number of calls at the backend at once. It
//     is the unit that matters for an LLM server (Ollama, vLLM,
//     llama-server): such a server runs N calls in parallel and queues the
//     rest invisibly and without bound; its overload signal is latency
//     rising, not a 429. The limit starts at Settings.InitialConcurrency
//     (the declared parallelism) and adapts by the gradient of the backend's
//     latency (concurrency.go, after Envoy's adaptive concurrency and
//     Netflix's concurrency-limits): per window of ≥ 1 s and ≥ 10 answers,
//     g = clamp(1.25 × base / p50, 0.5, 1) and limit ← limit × g, plus
//     √limit while the p50 stays within 10% of the base and the window used
//     half the limit. The base is the least window p50 of the last 30
//     windows (restarted after five windows at the floor). Overload
//     evidence — a 429, a 5xx or an unreachable backend, a Retry-After, a backend timeout, a caller's
//     deadline that ended while the backend had the call for at least twice
//     its base latency — cuts the limit by a tenth, at most once per window
//     and only for calls dispatched after the last cut. A caller's own
//     cancellation is no evidence.
//   - a rate ceiling in requests/s, the seed's INITIAL/MIN/MAX_RATE_LIMIT
//     (adapt.go): slow start until the first overload, then AIMD, falling
//     to the delivered rate on a 429, with Retry-After holding every
//     dispatch until it passes. It matters for quota-style backends (hosted
//     APIs, web hosts) that answer 429 instead of queueing.
//   - a queue per tenant in front of both (queue.go), served round-robin
//     (deficit round-robin with a quantum of one call, as FQ-CoDel, RFC
//     8290): a tenant alone uses all of the backend, and under overload
//     each tenant with calls waiting gets an equal share, so one tenant's
//     flood never starves another's trickle.
//
// Admission. A call is dispatched at once when nobody is queued, a slot is
// free and the rate ceiling has a token. Otherwise it is queued when its
// expected wait fits: wait = (calls served before it) / (the backend's
// service rate, min(rate ceiling, limit / service time)), plus what remains
// of a Retry-After; it must satisfy wait + service time ≤ 0.95 × the time
// left before the caller's deadline, and wait ≤ Settings.MaxQueueWait (30 s;
// the bound for calls without a deadline). A call that cannot fit is
// refused at once with RESOURCE_EXHAUSTED, RetryInfo (the expected wait)
// and QuotaFailure (the backend and the reason); no token or slot is
// spent. So a burst that an idle backend serves within its callers'
// deadlines is never refused: 200 calls at once to a backend of 4 slots of
// 400 ms each are all served (TestBurstsAnIdleBackendServesAreNeverRefused).
//
// Shedding real overload (CoDel, RFC 8289, per tenant queue). A queue is
// standing when the least queue delay of the calls dispatched in a window
// (interval = max(100 ms, 2 × base), and at least the time to dispatch 8
// calls at the backend's service rate, up to 1 s) stayed above the target
// (max(5 ms, base/2) by default, Settings.QueueTarget) for two windows in
// a row while more calls were offered than dispatched; it stops standing
// after a window in which no more were offered than dispatched. Until the
// first adaptation window gives a base, the service time of the calls
// answered so far stands in for it, and nothing is judged before the
// first answer. A burst that drains and a closed loop of callers never
// trip it, nor does a burst far above a small limit (a replica's share of
// a fleet's cap) that keeps arriving for a while: 20 calls over 600 ms to
// 2 slots of 100 ms are all served (TestBurstAboveAReplicasShareIsServed);
// windows of a dispatch or two took it for a standing queue. While a tenant's queue stands, its
// arrivals are refused when their wait exceeds the target (each tenant
// keeps one call queued, so the round-robin stays fair), and calls that
// waited more than twice the target are dropped when their turn comes
// instead of being served late. A call whose deadline would end before the
// usual service time is dropped at its turn too. OK calls then wait at most
// about twice the target: at 4× overload of a backend of 4 slots × 100 ms,
// goodput stays at capacity and the p99 of OK calls within 2 × 100 ms + the
// target (TestQueueingBackendUnderOverload, in fake time).
//
// Why FIFO per tenant and not LIFO: FIFO keeps the expected wait honest
// (the admission rule above needs it), never starves a call that was
// admitted, and the drop of stale calls at dispatch already gives what
// adaptive LIFO buys (fresh calls are served, stale ones fail fast);
// steady-state LIFO starves the oldest calls.
//
// Never lose a slot: a freed slot is handed to exactly one queued call
// (no broadcast); a slot handed to a caller who left in the same instant is
// given back (TestCallersLeavingWhileQueuedLoseNoSlot).
//
// Why written here rather than taken from a library: the Go ports of
// concurrency-limits (platinummonkey/go-concurrency-limits, failsafe-go's
// adaptivelimiter) have no per-tenant fair queue, admit by queue length
// rather than by deadline, and count every error (cancellations included)
// as a drop; x/time/rate (used here for the rate ceiling) has no fairness
// and no concurrency. The queue, its admission rule and CoDel are a few
// hundred lines, tested in fake time (testing/synctest).
//
// A Set keeps at most Settings.MaxKeys limiters (10000 by default) while
// enough of them are idle: when a new key would exceed it, the least
// recently used limiters with no call at the backend or queued are evicted,
// down to MaxKeys − MaxKeys/8, so a caller cycling through many distinct
// keys (hosts) cannot grow it without bound. An evicted key's next call
// starts afresh; a Permit of an evicted limiter may still be released.
//
// In fleet mode (Settings.Fleet; perf/fleet on Redis) the rate ceiling,
// a backend's Retry-After hold and the concurrency cap (MaxConcurrency)
// are the fleet's: fleet.go and slots.go say what is shared, the
// consistency chosen and what it costs. The queues and the adaptive
// gradient stay per replica.
//
// In the perf chain the limiter is the innermost mechanism, inside the
// breaker: cache hits and coalesced waiters never take a slot, an open
// breaker fails fast without queueing here, and this package's refusals
// (not a backend failure) never count against the breaker. The policy
// interceptor turns every refusal's RetryInfo into the
// grpc-retry-pushback-ms trailer that gRPC's built-in retry honours.
package ratelimit
