package ratelimit

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/policy"
)

// UnaryServerInterceptor admits the requests whose policy.Decision has
// Limit set through the limiter of their Backend, queued under their
// Tenant; others go straight to the handler. A request the limiter refuses
// gets its RESOURCE_EXHAUSTED (or the context's CANCELED /
// DEADLINE_EXCEEDED) and never reaches the handler. The call's result,
// classified by policy.ClassifyCall, adapts the limits; a panicking handler
// leaves them as they are (its permit is released as Neutral, so the slot
// is freed).
func UnaryServerInterceptor(s *Set) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return limited(ctx, s, nil, func() (any, error) { return handler(ctx, req) })
	}
}

// StreamServerInterceptor does the same for streams: a stream holds its
// slot until it ends, its latency is the time to its first message, and its
// final error is its result.
func StreamServerInterceptor(s *Set) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		d := policy.FromContext(ss.Context())
		if d == nil || !d.Limit || d.Backend == "" {
			return handler(srv, ss)
		}
		ts := &timedStream{ServerStream: ss}
		_, err := limited(ss.Context(), s, ts, func() (any, error) { return nil, handler(srv, ts) })
		return err
	}
}

// limited runs call under ctx's Decision: admitted by the key's limiter,
// its result released to it.
func limited(ctx context.Context, s *Set, ts *timedStream, call func() (any, error)) (resp any, err error) {
	d := policy.FromContext(ctx)
	if d == nil || !d.Limit || d.Backend == "" {
		return call()
	}
	p, err := s.Acquire(waitContext(ctx, d), d.Backend, d.Tenant)
	if err != nil {
		return nil, err
	}
	released := false
	defer func() {
		if !released { // call panicked or called runtime.Goexit
			p.Release(policy.Result{Outcome: policy.Neutral})
		}
	}()
	if ts != nil {
		ts.start = p.at
	}
	resp, err = call()
	released = true
	latency := time.Since(p.at)
	if ts != nil {
		if first := ts.first.Load(); first != 0 {
			latency = time.Duration(first)
		}
	}
	expired := err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
	p.release(policy.ClassifyCall(ctx, d, resp, err), latency, expired)
	return resp, err
}

// timedStream notes when the first message was sent.
type timedStream struct {
	grpc.ServerStream
	start time.Time    // dispatch; set before the handler runs
	first atomic.Int64 // time from start to the first message, ns; 0 before it
}

func (s *timedStream) SendMsg(m any) error {
	if s.first.Load() == 0 {
		s.first.Store(int64(max(time.Since(s.start), 1)))
	}
	return s.ServerStream.SendMsg(m)
}

// waitContext bounds the wait for a turn by the caller's deadline. Inside a
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

// deadlineOnly reports a deadline to Acquire's admission without arming a
// timer: Acquire refuses at once a wait that would not fit, and an admitted
// wait is still bounded by the flight's own cancellation.
type deadlineOnly struct {
	context.Context
	deadline time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.deadline, true }
