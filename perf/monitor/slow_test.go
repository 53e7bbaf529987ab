package monitor_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/monitor"
)

// fakeGenerate is a GenerateService whose calls take, on the fake clock,
// the duration in the request's prompt, and fail with codes.Unavailable
// when the model is "down".
type fakeGenerate struct {
	vegav1.UnimplementedGenerateServiceServer
	clock *fakeClock
}

func (f *fakeGenerate) work(model, prompt string) error {
	d, err := time.ParseDuration(prompt)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	f.clock.Advance(d)
	if model == "down" {
		return status.Error(codes.Unavailable, "backend down")
	}
	return nil
}

func (f *fakeGenerate) Generate(_ context.Context, req *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	if err := f.work(req.GetModel(), req.GetPrompt()); err != nil {
		return nil, err
	}
	return &vegav1.GenerateResponse{Text: "ok"}, nil
}

func (f *fakeGenerate) GenerateStream(req *vegav1.GenerateStreamRequest, ss grpc.ServerStreamingServer[vegav1.GenerateStreamResponse]) error {
	if err := f.work(req.GetModel(), req.GetPrompt()); err != nil {
		return err
	}
	return ss.Send(&vegav1.GenerateStreamResponse{Text: "ok", Done: true})
}

// serve starts a gRPC server over bufconn with l's interceptors in front
// of a fakeGenerate on clock, and returns a client.
func serve(t *testing.T, l *monitor.SlowLog, clock *fakeClock) vegav1.GenerateServiceClient {
	t.Helper()
	monitor.SetClock(l, clock.Now)
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(l.UnaryServerInterceptor()),
		grpc.StreamInterceptor(l.StreamServerInterceptor()),
	)
	vegav1.RegisterGenerateServiceServer(srv, &fakeGenerate{clock: clock})
	lis := bufconn.Listen(1 << 20)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		wg.Wait()
	})
	return vegav1.NewGenerateServiceClient(conn)
}

func TestSlowLogUnary(t *testing.T) {
	clock := newFakeClock()
	l := monitor.NewSlowLog(time.Second, 0)
	client := serve(t, l, clock)
	ctx := t.Context()

	_, err := client.Generate(ctx, &vegav1.GenerateRequest{Model: "m", Prompt: "999ms"})
	require.NoError(t, err)
	count, threshold, recent := l.Snapshot()
	assert.Zero(t, count, "999ms is below the threshold")
	assert.Equal(t, time.Second, threshold)
	assert.Empty(t, recent)

	_, err = client.Generate(ctx, &vegav1.GenerateRequest{Model: "m", Prompt: "1s"})
	require.NoError(t, err)
	_, err = client.Generate(ctx, &vegav1.GenerateRequest{Model: "down", Prompt: "2500ms"})
	require.Equal(t, codes.Unavailable, status.Code(err))

	count, _, recent = l.Snapshot()
	assert.Equal(t, int64(2), count)
	want := []monitor.SlowRPC{
		{Method: vegav1.GenerateService_Generate_FullMethodName, Code: "Unavailable", Duration: 2500 * time.Millisecond, Time: clock.Now()},
		{Method: vegav1.GenerateService_Generate_FullMethodName, Code: "OK", Duration: time.Second, Time: clock.Now().Add(-2500 * time.Millisecond)},
	}
	assert.Equal(t, want, recent, "newest first")
}

func TestSlowLogStream(t *testing.T) {
	clock := newFakeClock()
	l := monitor.NewSlowLog(100*time.Millisecond, 0)
	client := serve(t, l, clock)

	for _, prompt := range []string{"50ms", "150ms"} {
		stream, err := client.GenerateStream(t.Context(), &vegav1.GenerateStreamRequest{Model: "m", Prompt: prompt})
		require.NoError(t, err)
		for err == nil {
			_, err = stream.Recv()
		}
		require.ErrorIs(t, err, io.EOF)
	}
	// The interceptor records a stream before its status goes out, so
	// before the client's Recv returns io.EOF.
	count, _, recent := l.Snapshot()
	assert.Equal(t, int64(1), count)
	require.Len(t, recent, 1)
	assert.Equal(t, vegav1.GenerateService_GenerateStream_FullMethodName, recent[0].Method)
	assert.Equal(t, "OK", recent[0].Code)
	assert.Equal(t, 150*time.Millisecond, recent[0].Duration)
}

func TestSlowLogKeepsTheNewest(t *testing.T) {
	clock := newFakeClock()
	l := monitor.NewSlowLog(time.Second, 3)
	client := serve(t, l, clock)

	for _, prompt := range []string{"1s", "2s", "3s", "4s", "5s"} {
		_, err := client.Generate(t.Context(), &vegav1.GenerateRequest{Model: "m", Prompt: prompt})
		require.NoError(t, err)
	}
	count, _, recent := l.Snapshot()
	assert.Equal(t, int64(5), count)
	var got []time.Duration
	for _, r := range recent {
		got = append(got, r.Duration)
	}
	assert.Equal(t, []time.Duration{5 * time.Second, 4 * time.Second, 3 * time.Second}, got)

	l.Reset()
	count, threshold, recent := l.Snapshot()
	assert.Zero(t, count)
	assert.Equal(t, time.Second, threshold)
	assert.Empty(t, recent)

	_, err := client.Generate(t.Context(), &vegav1.GenerateRequest{Model: "m", Prompt: "6s"})
	require.NoError(t, err)
	_, _, recent = l.Snapshot()
	require.Len(t, recent, 1, "after Reset")
	assert.Equal(t, 6*time.Second, recent[0].Duration)
}

func TestNewSlowLog(t *testing.T) {
	l := monitor.NewSlowLog(0, 0)
	assert.Equal(t, monitor.DefaultSlowThreshold, l.Threshold())

	// The default ring keeps 32.
	clock := newFakeClock()
	monitor.SetClock(l, clock.Now)
	call := l.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"}
	for range 40 {
		_, err := call(t.Context(), nil, info, func(context.Context, any) (any, error) {
			clock.Advance(time.Second)
			return nil, nil
		})
		require.NoError(t, err)
	}
	count, _, recent := l.Snapshot()
	assert.Equal(t, int64(40), count)
	assert.Len(t, recent, monitor.DefaultSlowKeep)

	assert.PanicsWithValue(t, "monitor: NewSlowLog threshold must not be negative, got -1s", func() { monitor.NewSlowLog(-time.Second, 0) })
	assert.PanicsWithValue(t, "monitor: NewSlowLog keep must not be negative, got -1", func() { monitor.NewSlowLog(0, -1) })
}
