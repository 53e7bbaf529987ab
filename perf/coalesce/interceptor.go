package coalesce

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vega-gateway/vega/perf/policy"
)

// UnaryServerInterceptor makes the concurrent requests that share a
// policy.Decision key with Coalesce set share one call of the rest of the
// chain. Requests without a Decision, without a key or with Coalesce unset
// go straight to the handler.
//
// The shared call runs on the first caller's goroutine (see Group.Do), with
// that caller's own Decision: nothing else touches it meanwhile, so it needs
// no copy, and what the inner chain reports in it (ServedFrom: the inner
// chain may report FromCache; WriteCache, TTL) is the starter's. Every
// joiner reports FromCoalesced.
func UnaryServerInterceptor(g *Group) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		d := policy.FromContext(ctx)
		if d == nil || !d.Coalesce || d.Key == "" {
			return handler(ctx, req)
		}
		// The closure does not escape (Do calls it before returning), so it
		// costs no allocation.
		resp, err, joined := g.Do(ctx, d.Key, func(fctx context.Context) (any, error) {
			d.ServedFrom = policy.FromBackend
			return handler(grpc.NewContextWithServerTransportStream(fctx, noHeaders{&info.FullMethod}), req)
		})
		if joined {
			d.ServedFrom = policy.FromCoalesced
		}
		return resp, callerError(ctx, err) // resp is nil when the caller left early
	}
}

// callerError turns the caller's own context error, which Do returns as it
// is when the caller leaves early, into its gRPC status (CANCELED,
// DEADLINE_EXCEEDED): grpc-go would report a bare context error as
// UNKNOWN, in the logs and in grpc_server_handled_total.
func callerError(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return status.FromContextError(err).Err()
	}
	return err
}

// StreamServerInterceptor does for server-streaming methods what
// UnaryServerInterceptor does for unary ones. The shared handler reads the
// Decision's request and its messages reach every caller; each caller sends
// them on its own stream from its own goroutine, so a slow caller slows
// neither the flight nor the others. Requests the policy interceptor did not
// plan (no Decision.Request) go straight to the handler.
func StreamServerInterceptor(g *Group) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		d := policy.FromContext(ctx)
		if d == nil || !d.Coalesce || d.Key == "" || d.Request == nil {
			return handler(srv, ss)
		}
		// servedFrom is what the flight reports, published before its first
		// message; only the starter's flight sets it.
		var servedFrom atomic.Pointer[string]
		fn := func(fctx context.Context, emit func(msg any) error) error {
			fs := &flightStream{d: d.Clone(), req: d.Request, emit: emit, servedFrom: &servedFrom}
			fs.ctx = flightContext(fctx, fs.d, &info.FullMethod)
			err := handler(srv, fs)
			fs.publish()
			return err
		}
		joined, labelled := false, false
		label := func() { // before the caller's first message, or its end
			if labelled {
				return
			}
			labelled = true
			switch p := servedFrom.Load(); {
			case joined:
				d.ServedFrom = policy.FromCoalesced
			case p != nil:
				d.ServedFrom = *p
			default:
				d.ServedFrom = policy.FromBackend
			}
		}
		err, _ := g.doStream(ctx, d.Key, fn, func(j bool) { joined = j }, func(msg any) error {
			label()
			return ss.SendMsg(msg)
		})
		label()
		return callerError(ctx, err)
	}
}

// flightStream is the grpc.ServerStream the shared handler of a streaming
// flight writes to. Its context is the flight's, its one request is the
// Decision's, its messages go to every caller and its headers and trailers
// go nowhere: a flight has no stream of its own.
type flightStream struct {
	ctx        context.Context
	d          *policy.Decision // the flight's own copy
	req        proto.Message
	emit       func(msg any) error
	servedFrom *atomic.Pointer[string]
	received   bool // the request was handed out; only the handler's goroutine touches it
	published  bool // servedFrom was set; likewise
}

func (s *flightStream) Context() context.Context     { return s.ctx }
func (s *flightStream) SetHeader(metadata.MD) error  { return nil }
func (s *flightStream) SendHeader(metadata.MD) error { return nil }
func (s *flightStream) SetTrailer(metadata.MD)       {}

// RecvMsg hands out a copy of the request once, then reports the end of the
// (server-streaming) input.
func (s *flightStream) RecvMsg(m any) error {
	if s.received {
		return io.EOF
	}
	dst, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "coalesce: cannot receive into %T", m)
	}
	s.received = true
	proto.Reset(dst)
	proto.Merge(dst, s.req)
	return nil
}

// SendMsg emits a copy of m, so the handler may reuse its message.
func (s *flightStream) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "coalesce: cannot send %T", m)
	}
	s.publish()
	return s.emit(proto.Clone(pm))
}

// publish makes how the flight was served visible to its starter, once,
// before the first message.
func (s *flightStream) publish() {
	if !s.published {
		s.published = true
		from := s.d.ServedFrom
		s.servedFrom.Store(&from)
	}
}

// flightContext is the context the inner chain of a streaming flight runs
// with: the flight's, carrying the flight's own Decision and a transport
// stream that drops headers and trailers, which would otherwise reach only
// the first caller, from another goroutine.
func flightContext(fctx context.Context, fd *policy.Decision, method *string) context.Context {
	return grpc.NewContextWithServerTransportStream(policy.NewContext(fctx, fd), noHeaders{method})
}

// noHeaders is a grpc.ServerTransportStream that drops what it is given.
// Being a single pointer, it goes into an interface without an allocation.
type noHeaders struct{ method *string }

func (s noHeaders) Method() string             { return *s.method }
func (noHeaders) SetHeader(metadata.MD) error  { return nil }
func (noHeaders) SendHeader(metadata.MD) error { return nil }
func (noHeaders) SetTrailer(metadata.MD) error { return nil }
