// Package coalesce makes identical in-flight requests share one backend
// call: while a call for a key runs, later callers of the same key wait for
// its result instead of starting their own (a "flight"). Finished results are
// not kept; that is perf/cache's job.
//
// Group.Do coalesces unary calls and Group.DoStream streaming ones; the
// interceptors apply them to the requests whose policy.Decision asks for it
// and report x-vega-served-from "coalesced" for every joiner.
//
// A unary flight runs inline: the caller that starts it (the leader) calls
// the shared function on its own goroutine, as singleflight.Do does, and
// the callers that join it (followers) wait for its result. A streaming
// flight runs on a goroutine of its own (see below).
//
// The rules, each pinned by a test:
//
//   - The shared call runs with a context that keeps the first caller's
//     values (tenant, metadata, Decision) but not its deadline or
//     cancellation, context.WithCancel(context.WithoutCancel(ctx)), so the
//     first caller leaving never fails the others.
//   - Every caller watches its own context too; one caller's cancellation
//     is never another's error. A follower, and every DoStream caller,
//     leaves with its own ctx.Err() at once. The unary leader cannot return
//     before the shared call does, since that call runs on its goroutine;
//     but it leaves the reference count the moment its context ends
//     (context.AfterFunc), and once the call returns it gets its own
//     ctx.Err(), never the flight's result. Its client does not wait: a
//     gRPC client returns its own context's error by itself.
//   - The flight is reference counted over all its callers, the leader
//     included: its context is cancelled when the last caller leaves, so
//     nobody keeps a backend (an LLM) busy for nobody, and a leader left
//     alone sees the call it runs cancelled at once. Its key is removed at
//     that moment, under the lock, so a caller arriving afterwards starts a
//     fresh, live flight and never joins the cancelled one; while the key
//     is held by a live flight, no second flight runs for it.
//   - A panic or runtime.Goexit in the shared call is recovered in a
//     deferred call on the goroutine it ran on (the leader's, or the
//     streaming flight's) and becomes a *PanicError, a gRPC INTERNAL
//     "internal error", for every caller. The process stays up, the key
//     works again, and the panic value and stack go to the panic handler
//     (WithPanicHandler; slog by default), not to clients. Goexit cannot be
//     stopped: the flight is still completed for the followers, then the
//     leader's goroutine exits and its Do never returns (as with
//     singleflight.Do).
//   - Every caller of a flight gets the same result or error. Results and
//     streamed messages are shared, not copied: treat them as immutable.
//
// The trade-off of the inline leader: its handler goroutine, and so its
// grpc.MaxConcurrentStreams slot, stays taken until the flight ends, even
// after its own client gave up. That is bounded by the followers'
// lifetimes: when the last of them leaves, the flight is cancelled and the
// call unwinds. In exchange a unary flight costs no goroutine, no hand-off
// and no stack growth (the rest of the interceptor chain and the handler
// run on the leader's already grown stack), and the work stays inside the
// MaxConcurrentStreams bound instead of running as background work beside
// it. Singleflight's leader pays the same, without the reference count.
//
// Streams keep their flight goroutine: each caller sends the messages on
// its own stream, at its own client's pace, from its own goroutine. Were
// the flight to run on the starter's goroutine, its sends and the flight
// would take turns, and a slow starter's client (flow control blocking
// SendMsg) would slow the flight and every joiner with it; a slow caller
// must never slow the flight. The flight goroutine runs outside
// MaxConcurrentStreams, but only while some caller still reads it.
//
// Why not golang.org/x/sync/singleflight: its Do runs the function on the
// first caller's goroutine too, but gives it no context at all, so nothing
// is cancelled when every caller has left, and the followers cannot leave
// early; a panic is re-raised in every caller. Its DoChan lets callers
// leave but cannot cancel the shared call when everyone has left (there is
// no reference count, and Forget would let a duplicate flight start) and
// re-raises a panic on a fresh goroutine, where nothing can recover it and
// the process dies. Adding a refcounted context around it would need its
// own map and lock anyway, so this package is the small map-and-mutex group
// written for these rules.
//
// The price of these rules over singleflight.Do is a flight context per
// flight and, when the leader's context can end, a context.AfterFunc
// registration: at most 7 allocations per flight, 4 when the leader's
// context can never end (TestDoAllocs), where singleflight.Do makes none;
// make bench's report has the time against singleflight.Do and DoChan. That is nothing
// next to a backend call, and joining a flight costs no more than in
// singleflight. The channel a follower waits on is made only when one
// joins, and only a follower reads the clock.
//
// The flight has no deadline of its own: it lasts while someone waits for
// it, and the backend client's own timeout bounds a hung backend.
//
// Inside a flight, response headers and trailers set by the inner chain are
// dropped: a flight has no stream of its own, and writing to the first
// caller's stream would reach that caller only (and, for a stream, from
// another goroutine). A unary flight runs with its leader's own Decision,
// which nothing else touches meanwhile; a streaming flight, with a copy.
// Decision keys must identify the method as well as the request
// (policy.HashKey does), since unary flights of all methods share one map.
package coalesce
