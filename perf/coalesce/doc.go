// Package coalesce makes identical in-flight requests share one backend
// call: while a call for a key runs, later callers of the same key wait for
// its result instead of starting their own (a "flight"). Finished results are
// not kept; that is perf/cache's job.
//
// Group.Do coalesces unary calls and Group.DoStream streaming ones; the
// interceptors apply them to the requests whose policy.Decision asks for it
// and report x-vega-served-from "coalesced" for every joiner.
//
// The rules, each pinned by a test:
//
//   - The shared call runs on its own goroutine with a context that keeps
//     the first caller's values (tenant, metadata, Decision) but not its
//     deadline or cancellation, so the first caller leaving never fails the
//     others.
//   - Every caller waits on its own context too, and leaves with its own
//     ctx.Err() at once; one caller's cancellation is never another's error.
//   - The flight is reference counted: its context is cancelled when the
//     last caller leaves, so nobody keeps a backend (an LLM) busy for
//     nobody. Its key is removed at that moment, under the lock, so a caller
//     arriving afterwards starts a fresh, live flight and never joins the
//     cancelled one; while the key is held by a live flight, no second
//     flight runs for it.
//   - A panic or runtime.Goexit in the shared call is recovered on the
//     flight's goroutine and becomes a *PanicError, a gRPC INTERNAL "internal
//     error", for every caller. The process stays up, the key works again,
//     and the panic value and stack go to the panic handler (WithPanicHandler;
//     slog by default), not to clients.
//   - Every caller of a flight gets the same result or error. Results and
//     streamed messages are shared, not copied: treat them as immutable.
//
// Why not golang.org/x/sync/singleflight: its Do runs the function on the
// first caller's goroutine, so that caller cannot leave early, and its
// DoChan cannot cancel the shared call when everyone has left (there is no
// reference count, and Forget would let a duplicate flight start) and
// re-raises a panic on a fresh goroutine, where nothing can recover it and
// the process dies. Adding a refcounted context around it would need its own
// map and lock anyway, so this package is the small map-and-mutex group
// written for these rules.
//
// The price of these rules is a goroutine hand-off and a context per
// flight: about 2 µs where singleflight.Do takes 0.3 µs and DoChan, which
// pays the same hand-off, about 2 µs (BenchmarkDo, 2 cores). That is nothing
// next to a backend call, and joining a flight costs no more than in
// singleflight.
//
// The flight has no deadline of its own: it lasts while someone waits for
// it, and the backend client's own timeout bounds a hung backend.
//
// Inside a flight, response headers and trailers set by the inner chain are
// dropped: a flight has no stream of its own, and writing to the first
// caller's stream from the flight goroutine would reach one caller only.
// Decision keys must identify the method as well as the request
// (policy.HashKey does), since unary flights of all methods share one map.
package coalesce
