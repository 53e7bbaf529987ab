// Package perf is the home of the gateway's performance mechanisms, one
// package per mechanism, each with unary and stream server interceptors:
//
//	policy    the per-method policy table and the per-request Decision
//	cache     bounded result cache (otter) with TTL, stale-while-revalidate
//	coalesce  identical in-flight requests share one backend call
//	breaker   circuit breaker per backend (sony/gobreaker two-step)
//	ratelimit adaptive (AIMD) rate limit per backend (x/time/rate)
//	connpool  the instrumented outbound HTTP transport
//
// perf imports neither service/ nor integrations/. The chain, outermost
// first, is
//
//	policy → cache.Lookup → coalesce → cache.Fill → breaker → ratelimit → handler
//
// so a cache hit or a coalesced waiter spends no breaker slot and no rate
// token, an open breaker fails fast without waiting for a token, and a
// limiter rejection never reaches the breaker's counts.
package perf
