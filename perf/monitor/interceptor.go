package monitor

import (
	"context"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor times each call, from its entry to the return of
// the rest of the chain, and records it in l when it took l's threshold or
// more, with the code of the error it returned. Put it outermost (after
// recovery) to see the latency a caller sees.
func (l *SlowLog) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := l.elapsed()
		resp, err := handler(ctx, req)
		if end := l.elapsed(); end-start >= l.threshold {
			l.record(info.FullMethod, err, end-start)
		}
		return resp, err
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams; a stream's
// duration is its whole life. Keep long-lived streams (WatchStats) out of it
// with a selector, or every one of them is "slow".
func (l *SlowLog) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := l.elapsed()
		err := handler(srv, ss)
		if end := l.elapsed(); end-start >= l.threshold {
			l.record(info.FullMethod, err, end-start)
		}
		return err
	}
}
