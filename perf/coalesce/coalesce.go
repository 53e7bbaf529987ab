package coalesce

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Group runs one call per key for all the concurrent callers of that key.
// The zero value is ready to use and logs panics with slog; New sets
// options. A Group must not be copied after first use.
type Group struct {
	mu      sync.Mutex
	calls   map[string]*call       // unary flights by key; guarded by mu, created lazily
	streams map[string]*streamCall // streaming flights by key; guarded by mu, created lazily

	onPanic func(key string, err *PanicError) // set by New, read-only afterwards
	stats   counters                          // atomic; no lock
}

// Option configures a Group.
type Option func(*Group)

// WithPanicHandler sets the function called once per flight that panicked
// or called runtime.Goexit, after its waiters were released, on the
// goroutine fn ran on: the leader's for Do, the flight's for DoStream. The
// default logs the key, the panic value and the stack with slog.Error. h
// must not panic.
func WithPanicHandler(h func(key string, err *PanicError)) Option {
	return func(g *Group) { g.onPanic = h }
}

// New returns a Group configured by opts.
func New(opts ...Option) *Group {
	g := &Group{}
	for _, o := range opts {
		o(g)
	}
	return g
}

// PanicError is the error every waiter of a flight gets when fn panicked or
// called runtime.Goexit. Its gRPC status is INTERNAL "internal error": the
// panic value and the stack are for logs and never sent to a client.
type PanicError struct {
	Value  any    // what fn panicked with; nil after runtime.Goexit
	Goexit bool   // fn called runtime.Goexit instead of returning
	Stack  []byte // the stack of the goroutine fn ran on, at the panic
}

func (e *PanicError) Error() string {
	if e.Goexit {
		return "coalesce: shared call exited without returning: internal error"
	}
	return "coalesce: shared call panicked: internal error"
}

// GRPCStatus makes a PanicError an INTERNAL status error.
func (e *PanicError) GRPCStatus() *status.Status {
	return status.New(codes.Internal, "internal error")
}

// flight is the part of a unary or streaming flight that manages its
// lifetime: the context fn runs with and the callers holding it.
type flight struct {
	key string
	// ctx is handed to fn: it has the first caller's values but none of its
	// cancellation. It is cancelled when fn has returned or when the last
	// waiter left, whichever comes first.
	ctx    context.Context
	cancel context.CancelFunc

	// waiters counts the callers that still want the result, the first
	// caller included; guarded by Group.mu. The flight is abandoned (ctx
	// cancelled, key removed) when it drops to zero before fn returns.
	waiters int
}

func newFlight(ctx context.Context, key string) flight {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return flight{key: key, ctx: fctx, cancel: cancel, waiters: 1}
}

// call is a unary flight. fn runs on the goroutine of the caller that
// started it (the leader); the others (followers) wait for ctx to end: once
// a call has followers, that happens only when fn has returned, since the
// last waiter leaving removes the call from the map before cancelling it.
// A follower is the only one to ask for ctx.Done, so the channel it waits
// on is made (lazily, by the context package) only when one joins.
type call struct {
	flight
	val any // written once by the leader before ctx is cancelled
	err error
}

// Do calls fn once for all concurrent callers of key and returns its result
// to each of them. joined reports that this caller joined a flight another
// caller started.
//
// fn runs on the goroutine of the caller that started the flight (the
// leader), with a context that carries the leader's values but not its
// deadline or cancellation; that context is cancelled once every caller
// has left. A caller that joined and whose ctx ends returns ctx.Err() at
// once and leaves the others waiting. The leader cannot return before fn
// does: when its ctx ends it leaves the flight at once (cancelling it if
// nobody else waits), and returns its ctx.Err() when fn returns. A panic
// or runtime.Goexit in fn becomes a *PanicError for every waiter; Goexit
// still ends the leader's goroutine. v is shared by all the waiters and
// must be treated as immutable.
//
// fn does not escape: it is called, if at all, before Do returns.
//
// A key is in flight only while fn runs: the results of finished flights
// are not kept.
func (g *Group) Do(ctx context.Context, key string, fn func(ctx context.Context) (any, error)) (v any, err error, joined bool) {
	if err := ctx.Err(); err != nil {
		g.stats.refused.Add(1)
		return nil, err, false
	}
	g.mu.Lock()
	if c, ok := g.calls[key]; ok {
		c.waiters++
		g.mu.Unlock()
		v, err = g.wait(ctx, c)
		return v, err, true
	}
	if g.calls == nil {
		g.calls = make(map[string]*call)
	}
	c := &call{flight: newFlight(ctx, key)}
	g.calls[key] = c
	g.mu.Unlock()
	v, err = g.lead(ctx, c, fn)
	return v, err, false
}

// wait waits for c's result or the end of ctx, whichever comes first. It
// holds no lock while it waits.
func (g *Group) wait(ctx context.Context, c *call) (v any, err error) {
	g.stats.coalesced.Add(1)
	g.stats.waiting.Add(1)
	start := time.Now()
	select {
	case <-c.ctx.Done():
		v, err = c.val, c.err
	case <-ctx.Done():
		g.leaveCall(c)
		err = ctx.Err()
	}
	g.stats.totalWait.Add(int64(time.Since(start)))
	g.stats.waiting.Add(-1)
	return v, err
}

// lead runs fn for c on the leader's goroutine. While fn runs, the end of
// ctx makes the leader leave c's refcount, from the context package's
// AfterFunc goroutine, without waiting for fn; so when the leader was the
// last waiter the flight context is cancelled at once. The deferred call
// ends the flight however fn ends: by returning, by panicking (recovered
// here, the process stays up) or by runtime.Goexit (which it cannot stop:
// the flight is completed for the followers, then the goroutine exits).
func (g *Group) lead(ctx context.Context, c *call, fn func(ctx context.Context) (any, error)) (v any, err error) {
	g.stats.flights.Add(1)
	g.stats.inFlight.Add(1)
	g.stats.waiting.Add(1)
	var stop func() bool
	if ctx.Done() != nil { // a ctx that can never end never leaves
		stop = context.AfterFunc(ctx, func() { g.leaveCall(c) })
	}
	normal := false
	defer func() {
		if stop != nil {
			stop() // if too late, leaveCall runs or ran; it cannot abandon a finished call
		}
		var perr *PanicError
		if !normal {
			perr = abnormal(recover())
			c.err = perr
		}
		g.mu.Lock()
		if g.calls[c.key] == c { // neither abandoned nor replaced by a newer flight
			delete(g.calls, c.key)
		}
		g.mu.Unlock()
		g.finish(&c.flight, perr) // releases the followers
		g.stats.waiting.Add(-1)
		g.report(c.key, perr)
		// The leader's own cancellation is its own error, never the flight's.
		if err = ctx.Err(); err == nil {
			v, err = c.val, c.err
		}
	}()
	c.val, c.err = fn(c.ctx)
	normal = true
	return
}

// leaveCall drops one waiter of c. The last one to leave a running flight
// removes its key at once, under the lock, so the next caller of the key
// starts a fresh, live flight instead of joining a cancelled one; then it
// cancels the flight's context. A waiter leaving a finished call (the
// leader's AfterFunc racing with the end of fn) changes nothing: the call
// is no longer in the map.
func (g *Group) leaveCall(c *call) {
	g.mu.Lock()
	c.waiters--
	abandoned := c.waiters == 0 && g.calls[c.key] == c
	if abandoned {
		delete(g.calls, c.key)
	}
	g.mu.Unlock()
	if abandoned {
		g.abandon(&c.flight)
	}
}

func (g *Group) abandon(f *flight) {
	g.stats.abandoned.Add(1)
	f.cancel()
}

// abnormal describes a flight function that did not return: p is what
// recover returned in the deferred call of the goroutine fn ran on. p is
// nil only under runtime.Goexit, since panic(nil) panics with a
// *runtime.PanicNilError (Go 1.21).
func abnormal(p any) *PanicError {
	return &PanicError{Value: p, Goexit: p == nil, Stack: debug.Stack()}
}

// finish counts the end of the flight, then cancels its context.
func (g *Group) finish(f *flight, perr *PanicError) {
	g.stats.inFlight.Add(-1)
	if perr != nil {
		g.stats.panics.Add(1)
	}
	f.cancel()
}

// report hands a flight's panic to the panic handler, after its waiters
// were released.
func (g *Group) report(key string, perr *PanicError) {
	switch {
	case perr == nil:
	case g.onPanic != nil:
		g.onPanic(key, perr)
	default:
		slog.Error("coalesce: shared call panicked", "key", key, "panic", perr.Value,
			"goexit", perr.Goexit, "stack", string(perr.Stack))
	}
}
