package ratelimit

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/policy"
)

// UnaryServerInterceptor admits the requests whose policy.Decision has
// Limit set through the limiter of their Backend; others go straight to the
// handler. A request the limiter refuses gets its RESOURCE_EXHAUSTED (or
// the context's CANCELED / DEADLINE_EXCEEDED) and never reaches the
// handler. The call's result, classified by policy.ClassifyCall, adapts the
// rate; a panicking handler leaves the rate as it is (its permit is
// released as Neutral, so the key can still become idle and be evicted).
func UnaryServerInterceptor(s *Set) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return limited(ctx, s, func() (any, error) { return handler(ctx, req) })
	}
}

// StreamServerInterceptor does the same for streams: one token per stream,
// and the stream's final error is its result.
func StreamServerInterceptor(s *Set) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		_, err := limited(ss.Context(), s, func() (any, error) { return nil, handler(srv, ss) })
		return err
	}
}

// limited runs call under ctx's Decision: admitted by the key's limiter,
// its result released to it.
func limited(ctx context.Context, s *Set, call func() (any, error)) (resp any, err error) {
	d := policy.FromContext(ctx)
	if d == nil || !d.Limit || d.Backend == "" {
		return call()
	}
	p, err := s.Acquire(waitContext(ctx, d), d.Backend)
	if err != nil {
		return nil, err
	}
	released := false
	defer func() {
		if !released { // call panicked or called runtime.Goexit
			p.Release(policy.Result{Outcome: policy.Neutral})
		}
	}()
	resp, err = call()
	released = true
	p.Release(policy.ClassifyCall(ctx, d, resp, err))
	return resp, err
}

// waitContext bounds the wait for a token by the caller's deadline. Inside a
// coalesced flight the context carries no deadline (the flight outlives any
// one caller), so the deadline the caller who started it planned with
// (Decision.Deadline) bounds the wait instead: a flight never queues longer
// than its callers would wait.
func waitContext(ctx context.Context, d *policy.Decision) context.Context {
	if _, ok := ctx.Deadline(); ok || d.Deadline.IsZero() {
		return ctx
	}
	return deadlineOnly{Context: ctx, deadline: d.Deadline}
}

// deadlineOnly reports a deadline to Acquire's wait computation without
// arming a timer: Acquire rejects at once a wait that would not fit, and an
// admitted wait is still bounded by the flight's own cancellation.
type deadlineOnly struct {
	context.Context
	deadline time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.deadline, true }
