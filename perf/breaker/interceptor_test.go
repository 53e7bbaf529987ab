package breaker_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/policy"
)

// fakeGenerate is a GenerateService whose answer the test sets and whose
// calls it counts.
type fakeGenerate struct {
	vegav1.UnimplementedGenerateServiceServer
	calls  atomic.Int64
	answer func(ctx context.Context) error // nil: succeed
	gate   chan struct{}                   // when set, each call reports its start here
}

func (f *fakeGenerate) handle(ctx context.Context) error {
	f.calls.Add(1)
	if f.gate != nil {
		f.gate <- struct{}{}
	}
	if f.answer == nil {
		return nil
	}
	return f.answer(ctx)
}

func (f *fakeGenerate) Generate(ctx context.Context, _ *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	if err := f.handle(ctx); err != nil {
		return nil, err
	}
	return &vegav1.GenerateResponse{Text: "ok"}, nil
}

func (f *fakeGenerate) GenerateStream(_ *vegav1.GenerateStreamRequest, ss grpc.ServerStreamingServer[vegav1.GenerateStreamResponse]) error {
	if err := f.handle(ss.Context()); err != nil {
		return err
	}
	return ss.Send(&vegav1.GenerateStreamResponse{Text: "ok", Done: true})
}

// table routes both Generate methods to backend "b1" through the breaker;
// model "nobreak" turns the breaker off for the request.
func table() policy.Table {
	plan := func(_ context.Context, m proto.Message) (*policy.Decision, error) {
		model := m.(interface{ GetModel() string }).GetModel()
		return &policy.Decision{Backend: "b1", Break: model != "nobreak"}, nil
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

// serve starts a gRPC server over bufconn with the chain policy → (a
// probe that reports when the breaker has finished with a call) → breaker →
// fake, and returns a client.
func serve(t *testing.T, set *breaker.Set, fake *fakeGenerate) (vegav1.GenerateServiceClient, <-chan struct{}) {
	t.Helper()
	finished := make(chan struct{}, 100)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			policy.UnaryServerInterceptor(table()),
			func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				defer func() { finished <- struct{}{} }()
				return h(ctx, req)
			},
			breaker.UnaryServerInterceptor(set),
		),
		grpc.ChainStreamInterceptor(
			policy.StreamServerInterceptor(table()),
			breaker.StreamServerInterceptor(set),
		),
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
	return vegav1.NewGenerateServiceClient(conn), finished
}

func TestUnaryInterceptorTripsAndFailsFast(t *testing.T) {
	set := newSet(t, breaker.Settings{ConsecutiveFailures: 5, OpenTimeout: time.Minute})
	fake := &fakeGenerate{answer: func(context.Context) error { return status.Error(codes.Unavailable, "backend down") }}
	client, _ := serve(t, set, fake)
	ctx := t.Context()

	for i := range 5 {
		_, err := client.Generate(ctx, &vegav1.GenerateRequest{Model: "m"})
		require.Equal(t, codes.Unavailable, status.Code(err), "call %d", i)
		require.Contains(t, status.Convert(err).Message(), "backend down", "call %d reached the backend", i)
	}
	require.Equal(t, int64(5), fake.calls.Load())

	_, err := client.Generate(ctx, &vegav1.GenerateRequest{Model: "m"})
	st := status.Convert(err)
	require.Equal(t, codes.Unavailable, st.Code())
	assert.Contains(t, st.Message(), `circuit breaker for "b1" is open; retry in `)
	assert.InDelta(t, time.Minute, policy.RetryDelay(st), float64(5*time.Second), "RetryInfo")
	assert.Equal(t, int64(5), fake.calls.Load(), "the handler must not be called while open")

	// A request the policy keeps out of the breaker still passes.
	fake.answer = nil
	_, err = client.Generate(ctx, &vegav1.GenerateRequest{Model: "nobreak"})
	require.NoError(t, err)
	assert.Equal(t, int64(6), fake.calls.Load())
}

func TestStreamInterceptorTripsAndFailsFast(t *testing.T) {
	set := newSet(t, breaker.Settings{ConsecutiveFailures: 3, OpenTimeout: time.Minute})
	fake := &fakeGenerate{answer: func(context.Context) error { return status.Error(codes.Internal, "backend broke") }}
	client, _ := serve(t, set, fake)

	recv := func() error {
		stream, err := client.GenerateStream(t.Context(), &vegav1.GenerateStreamRequest{Model: "m"})
		require.NoError(t, err)
		_, err = stream.Recv()
		return err
	}
	for range 3 {
		require.Equal(t, codes.Internal, status.Code(recv()))
	}
	err := recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Positive(t, policy.RetryDelay(status.Convert(err)))
	assert.Equal(t, int64(3), fake.calls.Load(), "the handler must not be called while open")
}

// The caller's mistakes, the backend's 429 and the caller's cancellation are
// not the backend failing: none of them trips the breaker.
func TestUnaryInterceptorCountsBackendFailuresOnly(t *testing.T) {
	set := newSet(t, breaker.Settings{ConsecutiveFailures: 5, MinRequests: 1})
	var answer atomic.Value // func(ctx) error
	fake := &fakeGenerate{
		answer: func(ctx context.Context) error { return answer.Load().(func(context.Context) error)(ctx) },
		gate:   make(chan struct{}, 1),
	}
	client, finished := serve(t, set, fake)
	ctx := t.Context()

	for _, code := range []codes.Code{codes.InvalidArgument, codes.ResourceExhausted, codes.NotFound} {
		answer.Store(func(context.Context) error { return status.Error(code, "no") })
		for range 10 {
			_, err := client.Generate(ctx, &vegav1.GenerateRequest{Model: "m"})
			require.Equal(t, code, status.Code(err))
			<-finished
			<-fake.gate
		}
	}

	// The caller cancels while the backend works.
	answer.Store(func(ctx context.Context) error {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	})
	for range 10 {
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			<-fake.gate // the handler runs
			cancel()
		}()
		_, err := client.Generate(cctx, &vegav1.GenerateRequest{Model: "m"})
		require.Equal(t, codes.Canceled, status.Code(err))
		<-finished // the breaker has the outcome
		cancel()
	}

	st := stateOf(t, set, "b1")
	assert.Equal(t, "closed", st.State)
	assert.Equal(t, int64(0), st.Failures)
	assert.Equal(t, int64(40), st.Excluded)

	answer.Store(func(context.Context) error { return nil })
	_, err := client.Generate(ctx, &vegav1.GenerateRequest{Model: "m"})
	require.NoError(t, err)
	<-fake.gate
	assert.Equal(t, int64(41), fake.calls.Load())
}

// The caller's own deadline is neutral; the backend's own timeout
// (DEADLINE_EXCEEDED while the caller still waits) is a failure. Fake time,
// called without a server.
func TestInterceptorDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newSet(t, breaker.Settings{ConsecutiveFailures: 5})
		intercept := breaker.UnaryServerInterceptor(set)
		d := &policy.Decision{Backend: "b1", Break: true}
		var calls int
		slow := func(ctx context.Context, _ any) (any, error) {
			calls++
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		for range 10 {
			ctx, cancel := context.WithTimeout(policy.NewContext(t.Context(), d), time.Second)
			_, err := intercept(ctx, nil, &grpc.UnaryServerInfo{}, slow)
			cancel()
			require.Equal(t, codes.DeadlineExceeded, status.Code(err))
		}
		assert.Equal(t, "closed", stateOf(t, set, "b1").State, "10 caller deadlines must not trip")
		assert.Equal(t, 10, calls)

		backendTimeout := func(context.Context, any) (any, error) {
			calls++
			return nil, status.Error(codes.DeadlineExceeded, "backend timed out")
		}
		ctx := policy.NewContext(t.Context(), d)
		for range 5 {
			_, _ = intercept(ctx, nil, &grpc.UnaryServerInfo{}, backendTimeout)
		}
		assert.Equal(t, "open", stateOf(t, set, "b1").State, "5 backend timeouts trip")
		_, err := intercept(ctx, nil, &grpc.UnaryServerInfo{}, backendTimeout)
		assert.Equal(t, codes.Unavailable, status.Code(err))
		assert.Equal(t, 15, calls)
	})
}

func TestInterceptorPanicCountsAsFailure(t *testing.T) {
	set := newSet(t, breaker.Settings{ConsecutiveFailures: 1})
	intercept := breaker.UnaryServerInterceptor(set)
	ctx := policy.NewContext(t.Context(), &policy.Decision{Backend: "b1", Break: true})

	func() {
		defer func() { assert.Equal(t, "boom", recover(), "the panic goes on") }()
		_, _ = intercept(ctx, nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { panic("boom") })
	}()
	st := stateOf(t, set, "b1")
	assert.Equal(t, int64(1), st.Failures)
	assert.Equal(t, "open", st.State)
}

func TestInterceptorPassThrough(t *testing.T) {
	set := newSet(t, breaker.Settings{})
	set.SetMode("b1", breaker.ForceOpen)
	intercept := breaker.UnaryServerInterceptor(set)
	ok := func(context.Context, any) (any, error) { return "ok", nil }
	for name, ctx := range map[string]context.Context{
		"no decision": t.Context(),
		"break off":   policy.NewContext(t.Context(), &policy.Decision{Backend: "b1"}),
		"no backend":  policy.NewContext(t.Context(), &policy.Decision{Break: true}),
	} {
		resp, err := intercept(ctx, nil, &grpc.UnaryServerInfo{}, ok)
		assert.NoError(t, err, name)
		assert.Equal(t, "ok", resp, name)
	}
}

// A half-open probe whose caller cancels gives its slot back through the
// interceptor too: the next request is admitted as a probe.
func TestInterceptorCancelledProbeReleasesSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newSet(t, breaker.Settings{ConsecutiveFailures: 1, MaxProbes: 1, OpenTimeout: time.Second})
		intercept := breaker.UnaryServerInterceptor(set)
		info := &grpc.UnaryServerInfo{}
		ctx := policy.NewContext(t.Context(), &policy.Decision{Backend: "b1", Break: true})
		fail := func(context.Context, any) (any, error) { return nil, status.Error(codes.Unavailable, "down") }
		_, _ = intercept(ctx, nil, info, fail)
		require.Equal(t, "open", stateOf(t, set, "b1").State)
		time.Sleep(2 * time.Second)

		probeCtx, cancel := context.WithCancel(ctx)
		started, calls := make(chan struct{}), 0
		errc := make(chan error, 1)
		go func() {
			_, err := intercept(probeCtx, nil, info, func(ctx context.Context, _ any) (any, error) {
				calls++
				close(started)
				<-ctx.Done()
				return nil, status.FromContextError(ctx.Err()).Err()
			})
			errc <- err
		}()
		<-started
		_, err := intercept(ctx, nil, info, fail)
		require.Equal(t, codes.Unavailable, status.Code(err))
		require.Contains(t, status.Convert(err).Message(), "probes in flight", "the only probe slot is taken")

		cancel()
		require.Equal(t, codes.Canceled, status.Code(<-errc))
		_, err = intercept(ctx, nil, info, func(context.Context, any) (any, error) { calls++; return "ok", nil })
		require.NoError(t, err, "the cancelled probe released its slot")
		assert.Equal(t, 2, calls)
		assert.Equal(t, "closed", stateOf(t, set, "b1").State)
	})
}
