// Package fleet is one replica's connection to the Redis that a fleet of
// gateways shares (REDIS_URL). Redis is an accelerator, never the source of
// truth: every operation has a small budget (Settings.Timeout, default
// 50ms), a local circuit breaker stops sending to a Redis that fails (no
// per-call dial storm), and every failure is reported to the caller as "not
// there" — a miss, a skipped write — never as an error the gateway's
// callers could see.
//
// What it holds, under Settings.Prefix ("vega"), so that two fleets on one
// Redis never mix:
//
//	<prefix>:v1:c:<cache key>   a cached answer (perf/cache's encoding), PX = fresh TTL + stale window
//	<prefix>:v1:m               ZSET of replica ids scored by their heartbeat's expiry (Redis TIME, ms)
//	<prefix>:v1:m:<replica>     one key per live replica, PX = 3 heartbeats
//	<prefix>:v1:r:<backend>     a backend's fleet-wide rate ceiling (Take: GCRA hash), PX 60s
//	<prefix>:v1:f:<cache key>   a cross-replica flight's lease (Lead; flight.go), PX 3s
//	<prefix>:v1:f:<key>:r:<tok> an answer not to keep, handed to its flight's waiters, PX 30s
//	<prefix>:v1:f:<key>:w       ZSET of the fleet's waiters for key's flight, scored by expiry (Redis TIME + 3s, ms)
//	<prefix>:v1:f:<key>:s:<tok> a stream flight's chunks then its end (Redis stream, MAXLEN 4097), PX 10s past its last write or lease renewal
//	<prefix>:v1:f:<key>:s:<tok>:w ZSET of the stream flight's followers, scored by expiry (Redis TIME + 3s, ms)
//	<prefix>:v1:b:<backend>     a backend's breaker is open fleet-wide (BreakerOpened; breaker.go), PX = the open time left
//	<prefix>:v1:bp:<backend>    the fleet's half-open probe right of a backend (ClaimProbe), PX 5s
//	<prefix>:v1:s:<backend>     a backend's concurrency slot leases (Lease; slots.go): replica -> slots:expiry:want, PX 6s
//	<prefix>:v1:evt             the fleet's one pub/sub channel (cache purges, flight and breaker notices)
//
// The cache tier is the three methods perf/cache's Remote interface asks
// for: Get (one GET within the budget, on the caller's critical path), Set
// (queued, written by a background writer; dropped when the queue is full)
// and Purge (SCAN + UNLINK of the prefix's keys, bounded, then a PUBLISH so
// every replica purges its local tier; OnPurge receives the others').
//
// Lead (flight.go) coalesces a key's backend calls across the fleet: a
// lease per key (SET NX PX 3s, renewed every second while the call runs),
// waiters woken by a "done" notice on the same channel, the answer stored
// (or, when it must not be kept, handed over under the flight's token)
// before the notice, and a takeover within 4s when the owner dies. A
// leader's backend error is handed over the same way (perf/cache decides
// which: a gRPC status other than CANCELED and DEADLINE_EXCEEDED, from a
// call whose context had not ended; never kept as cache). The leader's
// call runs with a context of Lead's that ends only once the fleet's last
// waiter has left: waiters register in the key's waiters ZSET within their
// checks and leave it when their caller does; once the leader's own
// callers have all left, it checks the ZSET at once and then every 250ms,
// and cancels when it is empty or Redis fails. Take (rate.go) is a
// backend's rate ceiling for the whole fleet.
//
// LeadStream (stream.go) does it for streams: the leader appends every
// chunk, then the end (OK or code and message) or "broken", to a Redis
// stream of its flight, from a writer goroutine with a bounded queue. A
// failed append is tried again for 20s, so a Redis outage pauses the
// followers; a full queue, more than 4096 chunks or 4 MiB, or Redis
// failing for longer make the flight broken, never a truncated stream that
// looks complete. A replica that finds the lease held follows that stream
// from its first entry (XREAD BLOCK 500ms slices, at most 8 follows per
// replica, each holding a pool connection while it blocks; a cancelled
// follower gives its connection back within a slice, as go-redis honours
// the deadline, not the cancellation, of a blocking read) and reports the
// owner gone when, after 3s without a new entry, the lease is gone without
// an end entry. What its caller does then (perf/cache: lead again if
// nothing was sent, else UNAVAILABLE) is the caller's rule. Followers
// register in the flight's followers ZSET while they read, so a leader
// whose own callers left can ask (followed) whether to go on.
//
// The client avoids go-redis's known pitfalls: context deadlines are
// honoured (ContextTimeoutEnabled), no command is retried (MaxRetries -1:
// a dead node is not asked twice), the pool wait is the operation budget
// (PoolTimeout), dials are bounded (250ms, one attempt, at most 4 at once)
// and the pool is small (32), since go-redis backs off its dials only after
// PoolSize failures in a row. At most 256 operations are in flight; beyond
// that an operation is skipped (fail open) rather than queued.
//
// REDIS_URL names one server, or the primary a set of Sentinels watch
// (master_name=…; url.go): then the client asks the Sentinels for the
// primary at each new connection, and followFailovers moves the fleet's
// subscription to the new primary on "+switch-master". Redis Cluster is
// refused (a flight's scripts touch several keys at once).
//
// Without a Fleet nothing of this runs: New is only called when REDIS_URL is
// set, and it starts its goroutines (heartbeat, subscriber, writers) then.
package fleet
