// Package ratelimit is an adaptive rate limit per backend key, built on
// golang.org/x/time/rate, with unary and stream server interceptors.
//
// A Set holds one limiter per key, created on first use at
// Settings.Initial requests/s (the seed's INITIAL_RATE_LIMIT, MIN_RATE_LIMIT
// and MAX_RATE_LIMIT: 10, 1 and 100). A call takes a token at once or waits
// for one while its deadline and Settings.MaxWait (by default one token's
// time, 1/rate) allow; when the wait cannot fit it is refused at once with
// RESOURCE_EXHAUSTED, RetryInfo (the wait needed) and QuotaFailure (the
// backend), and its token is given back. Acquire returns a Permit value
// rather than a release closure, so admitting a call does not allocate.
//
// The rate adapts by AIMD after a slow start: until a key's first decrease
// each success adds one request/s, so the rate doubles per second of
// full-rate success (TCP's slow start). An overload (429) or a failure
// multiplies the rate by Decrease (down to Min), or, when the backend
// delivered less than that since the last decrease (measured over a
// second or more), sets it to what was delivered. From then on each
// success adds min(Increase, 5% of the rate before the last decrease)/rate,
// so the rate probes slowly near the ceiling the backend showed. The
// delivered-rate floor and the slow probe matter for backends that push
// back rarely but hard: one with a deep burst that answers an overshoot
// with Retry-After (a pause of every call) was overshot every 2 s before,
// and goodput ran in an on/off rhythm; now about every 6 s
// (TestConvergenceWithRetryAfter). A backend's Retry-After
// holds every call to the key until it has passed. Neutral results (the
// caller cancelled, bad input) change nothing. Two rules keep a burst of
// bad answers from collapsing the rate: at most one decrease per Cooldown,
// and none for a call scheduled before the last decrease, whose result
// speaks for the old rate (TCP's "once per round trip").
//
// Why AIMD and not a gradient or Vegas concurrency limit: the gateway's
// backends say when they are overloaded (429, Retry-After, 5xx) and the
// seed's contract is a rate in requests/s, so an explicit-signal rate
// controller needs no latency baseline; Vegas-style limits infer overload
// from latency, need a minimum-RTT probe window (Envoy's causes visible
// 503s) and move by ±1 per window, taking |L0 − C| windows to converge.
// TestConvergence measures AIMD in fake time: a backend of capacity C = 50
// req/s (a token bucket of 100ms burst, 20ms service time, 429 when over),
// an open-loop client at 3C with 1s deadlines. With the defaults the rate
// settles into [0.7C, 1.3C] 3.5s after starting at 10 req/s (5.1s with
// the additive climb alone, before slow start was added) with goodput
// 0.98C over the last 5s, and 0.3s after the capacity
// halves, with goodput 0.96C. The p99 latency of
// admitted calls is 41ms at C = 50 (about twice the service time).
//
// The defaults were chosen with the same simulation. Halving on overload
// (Decrease 0.5) saws between C/2 and C and loses goodput; 0.8 keeps it
// near C and still follows a halving of capacity at once. Waits are short
// by default because a deep queue of reservations keeps sending the old
// rate for as long as it lasts, and every queued call adds its wait to its
// latency (make bench's /wait30s rows show the extreme: no goodput at all).
// The figures behind these choices were taken before slow start and the
// delivered-rate floor existed and are not reproduced by a test; the ones
// above are (TestConvergence, TestConvergenceWithRetryAfter).
//
// A Set keeps at most Settings.MaxKeys limiters (10000 by default) while
// enough of them are idle: when a new key would exceed it, the least
// recently used limiters with no call in flight are evicted, down to
// MaxKeys − MaxKeys/8, so a caller cycling through many distinct keys
// (hosts) cannot grow it without bound. Recency is counted in keys added,
// not in time, which costs the fast path two loads and no clock. An evicted
// key's next call starts afresh at Initial; a Permit of an evicted limiter
// may still be released. When too few limiters are idle, new keys exceed
// MaxKeys rather than being refused (KeyStats counts them).
//
// In the perf chain the limiter is the innermost mechanism, inside the
// breaker: cache hits and coalesced waiters never spend a token, an open
// breaker fails fast without queueing here, and this package's refusals
// (Overload, not a backend failure) never count against the breaker.
package ratelimit
