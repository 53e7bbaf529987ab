// Package breaker is a circuit breaker per backend key, built on the
// two-step form of sony/gobreaker v2, with unary and stream server
// interceptors.
//
// A Set holds one breaker per key, created on first use. A breaker trips
// open after Settings.ConsecutiveFailures failures in a row, or when the
// failures reach Settings.FailureRatio of at least Settings.MinRequests
// decided calls within one Settings.Interval. While open it refuses calls at
// once with UNAVAILABLE and a RetryInfo detail saying when the next probe
// will be let through. After Settings.OpenTimeout it turns half-open and
// admits at most Settings.MaxProbes calls at a time; that many successes in
// a row close it, one failure opens it again.
//
// Only backend failures count. The interceptors classify each call with
// policy.ClassifyCall, and:
//
//	policy.Success   counted as a success
//	policy.Failure   counted as a failure (a panic in the handler too)
//	policy.Neutral   not counted: the caller's own cancellation or deadline,
//	policy.Overload  bad input, a limiter rejection, a backend's 429
//
// An uncounted half-open probe gives its slot back, so a cancelled probe
// never leaves the breaker stuck half-open.
//
// Operators may force a breaker open or closed (SetMode, PerfAdmin's
// breaker actions): ForceOpen refuses every call, ForceClosed admits every
// call and only counts outcomes in Stats, and Auto hands the key back to a
// fresh, closed automatic breaker. A refusal while open says when the next
// probe will be let through (rounded up to the second; to 10ms below one
// second); a refusal while the half-open probes are busy advises 1s.
//
// A Set keeps at most Settings.MaxKeys breakers (10000 by default) while
// enough of them are idle: when a new key would exceed it, the least
// recently used breakers that are closed, in Auto mode and with no call in
// flight are evicted, down to MaxKeys − MaxKeys/8, so a caller cycling
// through many distinct keys (hosts) cannot grow it without bound. Recency
// is counted in keys added, not in time. An open, half-open or forced
// breaker is never evicted: losing it would let traffic through to a
// failing backend or undo an operator's decision. An evicted key's next
// call gets a fresh, closed breaker; a done of an evicted breaker may
// still be called. When too few breakers are idle, new keys exceed MaxKeys
// rather than being refused (KeyStats counts them).
//
// gobreaker calls its state-change hook with its mutex held; this package
// only queues the event there and delivers it to Settings.OnStateChange
// after the mutex is released, so the callback may call back into the Set.
//
// In fleet mode (Settings.Fleet; perf/fleet on Redis) trips are shared
// (shared.go): a trip on one replica holds the key on every replica for
// the open time, one replica probes for the whole fleet (the winner of a
// SET NX probe right, one call at a time), and its outcome closes or
// reopens the key everywhere. Only hints travel: each replica's local
// breaker still decides, every fleet step runs off the callers' path, and
// a fleet that cannot answer leaves the local breakers exactly as without
// one. Forced modes stay local.
//
// In the perf chain the breaker sits outside the rate limiter: an open
// breaker fails fast without waiting for a token, and a limiter rejection
// (RESOURCE_EXHAUSTED, Overload) never reaches the breaker's counts.
package breaker
