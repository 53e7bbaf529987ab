package policy

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// UnaryServerInterceptor plans each request of a method in table, stores the
// Decision in the context and sends x-vega-served-from with the response.
// Methods not in table go straight to the handler.
func UnaryServerInterceptor(table Table) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		rule := table[info.FullMethod]
		if rule == nil {
			return handler(ctx, req)
		}
		msg, _ := req.(proto.Message)
		d, err := plan(ctx, rule, info.FullMethod, msg)
		if err != nil {
			return nil, err
		}
		resp, err := handler(NewContext(ctx, d), req)
		if err == nil {
			_ = grpc.SetHeader(ctx, servedFromMD(d.ServedFrom))
		} else {
			pushback(ctx, err)
		}
		return resp, err
	}
}

// StreamServerInterceptor does the same for server-streaming methods: it
// reads the request before the handler (which then receives it from its
// first RecvMsg) and sends the header before the first message.
func StreamServerInterceptor(table Table) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		rule := table[info.FullMethod]
		if rule == nil || rule.NewRequest == nil {
			return handler(srv, ss)
		}
		req := rule.NewRequest()
		if err := ss.RecvMsg(req); err != nil {
			return err
		}
		ctx := ss.Context()
		d, err := plan(ctx, rule, info.FullMethod, req)
		if err != nil {
			return err
		}
		ps := &PlannedStream{ServerStream: ss, ctx: NewContext(ctx, d), req: req, d: d}
		err = handler(srv, ps)
		if err == nil {
			ps.sendHeader()
		} else {
			pushback(ctx, err)
		}
		return err
	}
}

func plan(ctx context.Context, rule *Rule, method string, req proto.Message) (*Decision, error) {
	d, err := rule.Plan(ctx, req)
	if err != nil {
		return nil, err
	}
	d.Method, d.Request, d.rule = method, req, rule
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	if d.ServedFrom == "" {
		d.ServedFrom = FromBackend
	}
	return d, nil
}

// PlannedStream is the stream the handler of a planned streaming method
// sees: its context carries the Decision and its first RecvMsg yields the
// request the interceptor already read.
type PlannedStream struct {
	grpc.ServerStream
	ctx context.Context
	req proto.Message
	d   *Decision

	once     sync.Once // sends the served-from header once
	received bool      // the request was handed out; only the handler's goroutine touches it
}

// Context carries the Decision.
func (s *PlannedStream) Context() context.Context { return s.ctx }

// RecvMsg hands out the already-read request once, then reports the end of
// the (server-streaming) input.
func (s *PlannedStream) RecvMsg(m any) error {
	if !s.received {
		s.received = true
		dst, ok := m.(proto.Message)
		if !ok {
			return s.ServerStream.RecvMsg(m)
		}
		proto.Reset(dst)
		proto.Merge(dst, s.req)
		return nil
	}
	return s.ServerStream.RecvMsg(m)
}

// SendMsg sends the served-from header before the first message.
func (s *PlannedStream) SendMsg(m any) error {
	s.sendHeader()
	return s.ServerStream.SendMsg(m)
}

func (s *PlannedStream) sendHeader() {
	s.once.Do(func() {
		_ = s.ServerStream.SetHeader(servedFromMD(s.d.ServedFrom))
	})
}

// PushbackTrailer is the trailer with which gRPC's built-in retry (gRFC
// A6, honoured by grpc-go, grpc-java, C-core and its wrappers, grpc-js and
// grpc-dotnet) learns when to retry: milliseconds, or -1 for "do not".
const PushbackTrailer = "grpc-retry-pushback-ms"

// pushback sends PushbackTrailer with a refusal that carries a RetryInfo
// delay (RESOURCE_EXHAUSTED from the limiter or a backend's 429,
// UNAVAILABLE from an open breaker): the delay times a random factor in
// [0.5, 1.5), at least 50ms, so that clients refused together do not come
// back together (the stock clients use the value as it is); -1 when no
// retry would start before the caller's deadline. Refusals are sent
// Trailers-Only (no header was set), which the stock clients need before
// they retry at all.
func pushback(ctx context.Context, err error) {
	st, ok := status.FromError(err)
	if !ok || (st.Code() != codes.ResourceExhausted && st.Code() != codes.Unavailable) {
		return
	}
	delay := RetryDelay(st)
	if delay <= 0 {
		return
	}
	ms := max(int64(float64(delay.Milliseconds())*(0.5+rand.Float64())), 50)
	if dl, ok := ctx.Deadline(); ok && time.Now().Add(time.Duration(ms)*time.Millisecond).After(dl) {
		ms = -1
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs(PushbackTrailer, strconv.FormatInt(ms, 10)))
}

// RetryDelay returns the RetryInfo delay carried by st, or 0.
func RetryDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// The four possible headers, built once: grpc-go copies header metadata it
// is given, so sharing them costs nothing per call.
var servedFromMDs = map[string]metadata.MD{
	FromBackend:   metadata.Pairs(ServedFromHeader, FromBackend),
	FromCache:     metadata.Pairs(ServedFromHeader, FromCache),
	FromCoalesced: metadata.Pairs(ServedFromHeader, FromCoalesced),
	FromStale:     metadata.Pairs(ServedFromHeader, FromStale),
}

func servedFromMD(v string) metadata.MD {
	if md, ok := servedFromMDs[v]; ok {
		return md
	}
	return metadata.Pairs(ServedFromHeader, v)
}
