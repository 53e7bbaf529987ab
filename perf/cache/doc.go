// Package cache is the gateway's result cache: a bounded, in-memory map from
// a request's policy key (policy.Decision.Key, which already includes the
// caller's tenant) to the answer the backend gave for it. A unary answer is
// stored as the response message; a server-streaming answer as the ordered
// messages of a stream that completed.
//
// Two interceptors share one Cache. Lookup sits before the coalescer and
// answers from the cache; Fill sits inside the coalesced flight, looks again
// (a flight may have stored the answer between this caller's miss and now,
// as groupcache's load does) and stores what the flight brought back:
//
//	policy → cache.Lookup → coalesce → cache.Fill → breaker → ratelimit → handler
//
// The rules:
//
//   - Only successful answers are stored, and only when the Decision allows
//     it (WriteCache, and the rule's Store func: it refuses truncated bodies
//     and 5xx fetches). Errors — 5xx, UNAVAILABLE, timeouts, cancellations —
//     are never cached, so an outage is never replayed after it ends.
//     Refused answers count as Stats.Rejected.
//   - The key is the Decision's, so entries are scoped per tenant; a hit
//     never crosses tenants. Values are shared by every reader and must be
//     treated as immutable.
//   - Every entry is fresh for its TTL (the rule's, else the Decision's, else
//     Settings.DefaultTTL) randomised by ±Jitter/2, so entries written
//     together do not expire together.
//   - Negative answers (404/410) live at most Settings.NegativeTTL and are
//     never served stale.
//   - Stale-while-revalidate: for Settings.StaleFor after it expires, an
//     entry is still served, marked "stale", while exactly one background
//     refresh per key (at most Settings.MaxRefreshes in all) asks the backend
//     again through the rest of the chain. StaleFor 0 turns this off.
//   - The cache is bounded by bytes, not entries: each entry weighs its key,
//     its value's encoded size and a fixed per-entry overhead (measured, see
//     entryOverhead), and the total stays under Settings.MaxBytes.
//
// A fleet of gateways shares a second tier (Settings.Remote, a small
// interface declared here and implemented by perf/fleet on Redis; this
// package imports no Redis client). The local tier stays in front: a local
// hit asks the remote nothing; a local miss asks it once, in the Lookup
// interceptor, and a fresh (or, when this caller may refresh, stale) entry
// found there is stored locally with its remaining lifetime and served as a
// cache hit. Every answer stored locally is also handed to the remote tier,
// encoded (remote.go: versioned, checked on read for version, size, key and
// type; a bad entry is ignored and counted) when at most RemoteMaxBytes,
// for its fresh TTL plus the stale window. Purge purges the remote tier
// and, through it, every gateway's local tier. A remote that fails is a
// miss, never an error. Identical local misses at once share one remote
// read.
//
// With Settings.Flights too, Fill coalesces unary calls across the fleet:
// the local flight leads the fleet's flight for its key (and shares the
// answer before the waiters are woken: through the remote tier when it may
// be kept, handed to that flight's waiters only when not) or waits for
// another gateway's and serves its answer as coalesced; when the fleet
// cannot answer it calls the backend alone, as before. A leader's error is
// handed to its flight's waiters too, never kept: a gRPC status other than
// CANCELED and DEADLINE_EXCEEDED from a call whose context had not ended,
// with only its client-facing details (sharederr.go says which and why).
// The leader's backend call goes on after its own callers left while
// other gateways still wait for it (Flights.Lead's context).
//
// FleetStreamServerInterceptor does it for streams, with a StreamFlights
// (perf/fleet's LeadStream), inside the local stream flight: the leader
// shares each message as it sends it, then its end; a follower sends the
// leader's messages from the first, marked coalesced. A follow that fails
// before it sent anything leads or follows again, then calls the backend
// alone; one that fails after it sent a message ends its callers with
// UNAVAILABLE (remotestream.go), never a second generation spliced on.
// A leader whose own callers all left goes on while other gateways follow
// it (StreamFlights' followed, asked every 250ms).
//
// The store is github.com/maypok86/otter/v2: a concurrent W-TinyLFU cache
// whose hit ratio on skewed (Zipf) traffic beats LRU, with weights,
// per-entry expiry and an injectable clock. This package adds the fresh and
// stale deadlines, the refresh bookkeeping, the stats and the interceptors;
// BenchmarkZipfHitRatio compares its hit ratio with raw otter's.
package cache
