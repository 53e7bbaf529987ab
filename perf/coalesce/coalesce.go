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

// WithPanicHandler sets the function called, on the flight's goroutine,
// once per flight that panicked or called runtime.Goexit, after its waiters
// were released. The default logs the key, the panic value and the stack
// with slog.Error. h must not panic.
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
	Stack  []byte // the flight goroutine's stack at the panic
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

	// waiters counts the callers that still want the result; guarded by
	// Group.mu. The flight is abandoned (ctx cancelled, key removed) when
	// it drops to zero before fn returns.
	waiters int
}

func newFlight(ctx context.Context, key string) flight {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return flight{key: key, ctx: fctx, cancel: cancel, waiters: 1}
}

// call is a unary flight. Its waiters wait for ctx to end: once a call has
// waiters, that happens only when fn has returned, since the last waiter
// leaving removes the call from the map before cancelling it.
type call struct {
	flight
	val any // written once by the flight goroutine before ctx is cancelled
	err error
}

// Do calls fn once for all concurrent callers of key and returns its result
// to each of them. joined reports that this caller joined a flight another
// caller started.
//
// fn runs on its own goroutine with a context that carries the first
// caller's values but not its deadline or cancellation; that context is
// cancelled once every caller has left. A caller whose ctx ends returns
// ctx.Err() at once and leaves the others waiting. A panic or
// runtime.Goexit in fn becomes a *PanicError for every waiter. v is shared
// by all the waiters and must be treated as immutable.
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
		g.stats.coalesced.Add(1)
		start := time.Now()
		v, err = g.wait(ctx, c)
		g.stats.totalWait.Add(int64(time.Since(start)))
		return v, err, true
	}
	if g.calls == nil {
		g.calls = make(map[string]*call)
	}
	c := &call{flight: newFlight(ctx, key)}
	g.calls[key] = c
	g.mu.Unlock()

	g.stats.flights.Add(1)
	g.stats.inFlight.Add(1)
	go g.run(c, fn)
	v, err = g.wait(ctx, c)
	return v, err, false
}

// wait waits for c's result or the end of ctx, whichever comes first. It
// holds no lock while it waits.
func (g *Group) wait(ctx context.Context, c *call) (any, error) {
	g.stats.waiting.Add(1)
	defer g.stats.waiting.Add(-1)
	select {
	case <-c.ctx.Done():
		return c.val, c.err
	case <-ctx.Done():
		g.leaveCall(c)
		return nil, ctx.Err()
	}
}

// leaveCall drops one waiter of c. The last one to leave a running flight
// removes its key at once, under the lock, so the next caller of the key
// starts a fresh, live flight instead of joining a cancelled one; then it
// cancels the flight's context.
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

// run is the flight goroutine of c.
func (g *Group) run(c *call, fn func(ctx context.Context) (any, error)) {
	normal := false
	defer func() {
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
		g.finish(&c.flight, perr) // releases the waiters
		g.report(c.key, perr)
	}()
	c.val, c.err = fn(c.ctx)
	normal = true
}

// abnormal describes a flight function that did not return: p is what
// recover returned in the flight goroutine's deferred call. p is nil only
// under runtime.Goexit, since panic(nil) panics with a
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
