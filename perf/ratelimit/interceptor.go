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
// rate; a panicking handler leaves the rate as it is.
func UnaryServerInterceptor(s *Set) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		d := policy.FromContext(ctx)
		if d == nil || !d.Limit || d.Backend == "" {
			return handler(ctx, req)
		}
		p, err := s.Acquire(waitContext(ctx, d), d.Backend)
		if err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		p.Release(policy.ClassifyCall(ctx, d, resp, err))
		return resp, err
	}
}

// StreamServerInterceptor does the same for streams: one token per stream,
// and the stream's final error is its result.
func StreamServerInterceptor(s *Set) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		d := policy.FromContext(ctx)
		if d == nil || !d.Limit || d.Backend == "" {
			return handler(srv, ss)
		}
		p, err := s.Acquire(waitContext(ctx, d), d.Backend)
		if err != nil {
			return err
		}
		err = handler(srv, ss)
		p.Release(policy.ClassifyCall(ctx, d, nil, err))
		return err
	}
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
