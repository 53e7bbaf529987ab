package breaker

import (
	"context"

	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/policy"
)

// UnaryServerInterceptor guards the backend named by the request's
// policy.Decision with s. Requests without a Decision, with Break unset or
// with no Backend go straight to the handler. A refused request gets
// UNAVAILABLE and never reaches the handler. The outcome is classified by
// policy.ClassifyCall, so the caller's own cancellation or deadline is not
// counted. A panicking handler counts as a failure; the panic goes on to
// the recovery interceptor, which must be outside this one.
func UnaryServerInterceptor(s *Set) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return guarded(ctx, s, func() (any, error) { return handler(ctx, req) })
	}
}

// StreamServerInterceptor does the same for streams: the whole stream is one
// call, classified by the handler's error.
func StreamServerInterceptor(s *Set) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		_, err := guarded(ss.Context(), s, func() (any, error) { return nil, handler(srv, ss) })
		return err
	}
}

// guarded runs call under the breaker of ctx's Decision and reports its
// outcome to it.
func guarded(ctx context.Context, s *Set, call func() (any, error)) (resp any, err error) {
	d := policy.FromContext(ctx)
	if d == nil || !d.Break || d.Backend == "" {
		return call()
	}
	done, err := s.Allow(d.Backend)
	if err != nil {
		return nil, err
	}
	reported := false
	defer func() {
		if !reported { // call panicked or called runtime.Goexit
			done(policy.Failure)
		}
	}()
	resp, err = call()
	reported = true
	done(policy.ClassifyCall(ctx, d, resp, err).Outcome)
	return resp, err
}
