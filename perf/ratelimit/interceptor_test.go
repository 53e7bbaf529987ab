package ratelimit_test

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
	"github.com/vega-gateway/vega/perf/ratelimit"
)

// fakeGenerate is a GenerateService whose answer the test sets and whose
// calls it counts.
type fakeGenerate struct {
	vegav1.UnimplementedGenerateServiceServer
	calls  atomic.Int64
	answer atomic.Value // error to return; a nil *status.Status means success
}

func (f *fakeGenerate) result() error {
	f.calls.Add(1)
	if st, _ := f.answer.Load().(*status.Status); st != nil {
		return st.Err()
	}
	return nil
}

func (f *fakeGenerate) Generate(context.Context, *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	if err := f.result(); err != nil {
		return nil, err
	}
	return &vegav1.GenerateResponse{Text: "ok"}, nil
}

func (f *fakeGenerate) GenerateStream(_ *vegav1.GenerateStreamRequest, ss grpc.ServerStreamingServer[vegav1.GenerateStreamResponse]) error {
	if err := f.result(); err != nil {
		return err
	}
	return ss.Send(&vegav1.GenerateStreamResponse{Text: "ok", Done: true})
}

// table sends both Generate methods through the limiter of backend "b1";
// model "nolimit" keeps a request out of it.
func table() policy.Table {
	plan := func(_ context.Context, m proto.Message) (*policy.Decision, error) {
		model := m.(interface{ GetModel() string }).GetModel()
		return &policy.Decision{Backend: "b1", Limit: model != "nolimit"}, nil
	}
	return policy.Table{
		vegav1.GenerateService_Generate_FullMethodName: {
			NewRequest: func() proto.Message { return new(vegav1.GenerateRequest) },
			Plan:       plan,
		},
		vegav1.GenerateService_GenerateStream_FullMethodName: {
			NewRequest: func() proto.Message { return new(vegav1.GenerateStreamRequest) },
			Plan:       plan,
		},
	}
}

func serve(t *testing.T, set *ratelimit.Set, fake *fakeGenerate) vegav1.GenerateServiceClient {
	t.Helper()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(policy.UnaryServerInterceptor(table()), ratelimit.UnaryServerInterceptor(set)),
		grpc.ChainStreamInterceptor(policy.StreamServerInterceptor(table()), ratelimit.StreamServerInterceptor(set)),
	)
	vegav1.RegisterGenerateServiceServer(srv, fake)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return vegav1.NewGenerateServiceClient(conn)
}

// requireRefusal checks a refusal seen by a gRPC client: RESOURCE_EXHAUSTED
// with a QuotaFailure for b1 and a RetryInfo delay near retry.
func requireRefusal(t *testing.T, err error, retry time.Duration) {
	t.Helper()
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), "%v", err)
	assert.Contains(t, st.Message(), `backend "b1"`)
	assert.InDelta(t, retry, policy.RetryDelay(st), float64(time.Second), "RetryInfo")
	var subjects []string
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			for _, v := range q.GetViolations() {
				subjects = append(subjects, v.GetSubject())
			}
		}
	}
	assert.Equal(t, []string{"backend:b1"}, subjects, "QuotaFailure")
}

// At 0.1 req/s the second call would wait ~10s > MaxQueueWait 100ms: it is
// refused at once and never reaches the handler. The refusal is
// Trailers-Only (no header metadata, or stock clients never retry it) and
// carries grpc-retry-pushback-ms, the retry delay with jitter.
func TestUnaryInterceptorRejects(t *testing.T) {
	set := newSet(t, ratelimit.Settings{Initial: 0.1, Min: 0.1, Max: 0.1, MaxQueueWait: 100 * time.Millisecond})
	fake := &fakeGenerate{}
	client := serve(t, set, fake)
	ctx := t.Context()

	_, err := client.Generate(ctx, &vegav1.GenerateRequest{Model: "m"})
	require.NoError(t, err)
	var header, trailer metadata.MD
	_, err = client.Generate(ctx, &vegav1.GenerateRequest{Model: "m"}, grpc.Header(&header), grpc.Trailer(&trailer))
	requireRefusal(t, err, 10*time.Second)
	assert.Empty(t, header, "Trailers-Only")
	require.Len(t, trailer.Get(policy.PushbackTrailer), 1)
	pushback, err := strconv.Atoi(trailer.Get(policy.PushbackTrailer)[0])
	require.NoError(t, err)
	assert.GreaterOrEqual(t, pushback, 5000, "10 s × [0.5, 1.5)")
	assert.Less(t, pushback, 15000)

	// A caller whose deadline ends before any retry could start is told
	// not to retry.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = client.Generate(short, &vegav1.GenerateRequest{Model: "m"}, grpc.Trailer(&trailer))
	requireRefusal(t, err, 10*time.Second)
	assert.Equal(t, []string{"-1"}, trailer.Get(policy.PushbackTrailer))
	assert.Equal(t, int64(1), fake.calls.Load(), "a refused call must not reach the handler")

	// A request the policy keeps out of the limiter passes.
	_, err = client.Generate(ctx, &vegav1.GenerateRequest{Model: "nolimit"})
	require.NoError(t, err)
	assert.Equal(t, int64(2), fake.calls.Load())

	st := statsOf(t, set, "b1")
	assert.Equal(t, int64(1), st.Admitted)
	assert.Equal(t, int64(2), st.Rejected)
}

// The backend's 429 with a 2s Retry-After lowers the rate and holds the
// next calls: those whose deadline ends before the hold are refused at
// once and never reach the handler.
func TestUnaryInterceptorHonoursRetryAfter(t *testing.T) {
	set := newSet(t, ratelimit.Settings{Initial: 1000, Max: 1000})
	fake := &fakeGenerate{}
	tooMany, err := status.New(codes.ResourceExhausted, "backend: 429").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(2 * time.Second)})
	require.NoError(t, err)
	fake.answer.Store(tooMany)
	client := serve(t, set, fake)

	_, err = client.Generate(t.Context(), &vegav1.GenerateRequest{Model: "m"})
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "backend: 429", "the first call reached the backend")

	fake.answer.Store((*status.Status)(nil))
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err = client.Generate(ctx, &vegav1.GenerateRequest{Model: "m"})
		cancel()
		requireRefusal(t, err, 2*time.Second)
	}
	assert.Equal(t, int64(1), fake.calls.Load(), "no call before the Retry-After ends")
	st := statsOf(t, set, "b1")
	assert.Equal(t, 800.0, st.Rate, "an overload lowers the rate")
	assert.False(t, st.BlockedUntil.IsZero())
}

func TestStreamInterceptorRejects(t *testing.T) {
	set := newSet(t, ratelimit.Settings{Initial: 0.1, Min: 0.1, Max: 0.1, MaxQueueWait: 100 * time.Millisecond})
	fake := &fakeGenerate{}
	client := serve(t, set, fake)

	recv := func() error {
		stream, err := client.GenerateStream(t.Context(), &vegav1.GenerateStreamRequest{Model: "m"})
		require.NoError(t, err)
		_, err = stream.Recv()
		return err
	}
	require.NoError(t, recv())
	requireRefusal(t, recv(), 10*time.Second)
	assert.Equal(t, int64(1), fake.calls.Load(), "a refused stream must not reach the handler")
}

// Results reach the limiter as policy.ClassifyCall sees them.
func TestInterceptorReportsResults(t *testing.T) {
	set := newSet(t, ratelimit.Settings{Initial: 100, Min: 1, Max: 200, Increase: 50, Decrease: 0.5, Cooldown: time.Nanosecond})
	intercept := ratelimit.UnaryServerInterceptor(set)
	ctx := policy.NewContext(t.Context(), &policy.Decision{Backend: "b1", Limit: true})
	info := &grpc.UnaryServerInfo{}
	answer := func(err error) grpc.UnaryHandler {
		return func(context.Context, any) (any, error) { return nil, err }
	}

	_, _ = intercept(ctx, nil, info, answer(nil))
	assert.Equal(t, 101.0, statsOf(t, set, "b1").Rate, "success (slow start: +1)")
	_, _ = intercept(ctx, nil, info, answer(status.Error(codes.InvalidArgument, "bad")))
	assert.Equal(t, 101.0, statsOf(t, set, "b1").Rate, "the caller's mistake is neutral")
	_, _ = intercept(ctx, nil, info, answer(status.Error(codes.Unavailable, "down")))
	assert.Equal(t, 50.5, statsOf(t, set, "b1").Rate, "failure")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := intercept(cancelled, nil, info, answer(nil))
	assert.Equal(t, codes.Canceled, status.Code(err), "a context already done is refused")

	for name, ctx := range map[string]context.Context{
		"no decision": t.Context(),
		"limit off":   policy.NewContext(t.Context(), &policy.Decision{Backend: "b1"}),
		"no backend":  policy.NewContext(t.Context(), &policy.Decision{Limit: true}),
	} {
		called := false
		_, err := intercept(ctx, nil, info, func(context.Context, any) (any, error) { called = true; return nil, nil })
		assert.NoError(t, err, name)
		assert.True(t, called, name)
	}
	assert.Equal(t, int64(3), statsOf(t, set, "b1").Admitted)
}

// A panicking handler releases its permit (as Neutral): the key becomes
// idle again and can be evicted, and the rate stays.
func TestInterceptorPanicReleasesThePermit(t *testing.T) {
	set := newSet(t, ratelimit.Settings{MaxKeys: 1})
	intercept := ratelimit.UnaryServerInterceptor(set)
	call := func(key string, h grpc.UnaryHandler) {
		ctx := policy.NewContext(t.Context(), &policy.Decision{Backend: key, Limit: true})
		_, _ = intercept(ctx, nil, &grpc.UnaryServerInfo{}, h)
	}
	func() {
		defer func() { assert.Equal(t, "boom", recover(), "the panic goes on") }()
		call("a", func(context.Context, any) (any, error) { panic("boom") })
	}()
	assert.Equal(t, 10.0, statsOf(t, set, "a").Rate, "a panic leaves the rate as it is")
	ok := func(context.Context, any) (any, error) { return "ok", nil }
	call("b", ok)
	call("c", ok)
	ks := set.KeyStats()
	assert.Zero(t, ks.Overflows, "every key was idle when the next came: %+v", ks)
	assert.Equal(t, int64(2), ks.Evicted)
}

// Inside a coalesced flight the context has no deadline; the planning
// caller's Decision.Deadline bounds the wait for a token instead.
func TestInterceptorWaitIsBoundedByThePlannedDeadline(t *testing.T) {
	set := newSet(t, ratelimit.Settings{Initial: 1, Min: 1, Max: 1, Burst: 1, MaxQueueWait: 5 * time.Second})
	intercept := ratelimit.UnaryServerInterceptor(set)
	ok := func(context.Context, any) (any, error) { return "ok", nil }
	d := &policy.Decision{Backend: "b1", Limit: true, Deadline: time.Now().Add(50 * time.Millisecond)}
	ctx := policy.NewContext(context.WithoutCancel(t.Context()), d) // no deadline of its own
	_, err := intercept(ctx, nil, &grpc.UnaryServerInfo{}, ok)
	require.NoError(t, err, "the burst token")
	_, err = intercept(ctx, nil, &grpc.UnaryServerInfo{}, ok)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "a 1 s wait does not fit the planned 50 ms")
}
