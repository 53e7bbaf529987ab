package coalesce_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/coalesce"
	"github.com/vega-gateway/vega/perf/policy"
)

// fakeGenerate counts its calls and answers once release is closed. Model
// "solo" is planned without coalescing; prompt "panic" panics.
type fakeGenerate struct {
	vegav1.UnimplementedGenerateServiceServer
	calls   atomic.Int32
	release chan struct{}
}

func (f *fakeGenerate) Generate(ctx context.Context, req *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	n := f.calls.Add(1)
	if d := policy.FromContext(ctx); d == nil || d.ServedFrom != policy.FromBackend {
		return nil, status.Errorf(codes.FailedPrecondition, "handler decision = %+v; want one serving from the backend", d)
	}
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if req.GetPrompt() == "panic" {
		panic("boom")
	}
	return &vegav1.GenerateResponse{Text: fmt.Sprintf("%s #%d", req.GetPrompt(), n)}, nil
}

func (f *fakeGenerate) GenerateStream(req *vegav1.GenerateStreamRequest, stream grpc.ServerStreamingServer[vegav1.GenerateStreamResponse]) error {
	n := f.calls.Add(1)
	select {
	case <-f.release:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	msg := new(vegav1.GenerateStreamResponse) // reused: what was sent must not change
	for i := range chunks {
		msg.Text = fmt.Sprintf("%s #%d chunk %d", req.GetPrompt(), n, i)
		msg.Done = i == chunks-1
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return nil
}

const chunks = 5

// planGenerate keys a Generate or GenerateStream request by its content.
func planGenerate(method string) func(context.Context, proto.Message) (*policy.Decision, error) {
	return func(_ context.Context, m proto.Message) (*policy.Decision, error) {
		p := m.(interface{ GetModel() string })
		key, err := policy.HashKey("tenant", method, m)
		return &policy.Decision{Key: key, Coalesce: p.GetModel() != "solo"}, err
	}
}

// serve starts GenerateService behind the policy and coalesce interceptors
// on an in-memory listener.
func serve(t *testing.T) (*coalesce.Group, *fakeGenerate, vegav1.GenerateServiceClient) {
	t.Helper()
	table := policy.Table{
		vegav1.GenerateService_Generate_FullMethodName: {
			NewRequest: func() proto.Message { return new(vegav1.GenerateRequest) },
			Plan:       planGenerate("generate"),
		},
		vegav1.GenerateService_GenerateStream_FullMethodName: {
			NewRequest: func() proto.Message { return new(vegav1.GenerateStreamRequest) },
			Plan:       planGenerate("generate-stream"),
		},
	}
	g := coalesce.New(coalesce.WithPanicHandler(func(string, *coalesce.PanicError) {}))
	fake := &fakeGenerate{release: make(chan struct{})}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(policy.UnaryServerInterceptor(table), coalesce.UnaryServerInterceptor(g)),
		grpc.ChainStreamInterceptor(policy.StreamServerInterceptor(table), coalesce.StreamServerInterceptor(g)),
	)
	vegav1.RegisterGenerateServiceServer(srv, fake)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-served
	})
	return g, fake, vegav1.NewGenerateServiceClient(conn)
}

// eventually waits, without sleeping, until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second) // hang guard
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

type answer struct {
	text []string // the one unary text, or the stream's chunks
	from string   // x-vega-served-from
	err  error
}

func generate(ctx context.Context, client vegav1.GenerateServiceClient, req *vegav1.GenerateRequest, out chan<- answer) {
	var md metadata.MD
	resp, err := client.Generate(ctx, req, grpc.Header(&md))
	out <- answer{[]string{resp.GetText()}, served(md), err}
}

func generateStream(ctx context.Context, client vegav1.GenerateServiceClient, req *vegav1.GenerateStreamRequest, out chan<- answer) {
	stream, err := client.GenerateStream(ctx, req)
	if err != nil {
		out <- answer{err: err}
		return
	}
	var a answer
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			a.err = err
			break
		}
		a.text = append(a.text, msg.GetText())
	}
	md, _ := stream.Header()
	a.from = served(md)
	out <- a
}

func served(md metadata.MD) string {
	if v := md.Get(policy.ServedFromHeader); len(v) == 1 {
		return v[0]
	}
	return fmt.Sprint(md.Get(policy.ServedFromHeader))
}

// collect receives n answers and counts them by served-from header.
func collect(t *testing.T, n int, answers <-chan answer) (all []answer, from map[string]int) {
	t.Helper()
	from = map[string]int{}
	for range n {
		select {
		case a := <-answers:
			all = append(all, a)
			from[a.from]++
		case <-time.After(5 * time.Second): // hang guard
			t.Fatalf("got %d answers; want %d", len(all), n)
		}
	}
	return all, from
}

func TestUnaryInterceptorIdentical(t *testing.T) {
	g, fake, client := serve(t)
	const n = 100
	answers := make(chan answer, n)
	for range n {
		go generate(t.Context(), client, &vegav1.GenerateRequest{Model: "m", Prompt: "hello"}, answers)
	}
	eventually(t, "99 callers to join the flight", func() bool { return g.Stats().Coalesced == n-1 })
	close(fake.release)

	all, from := collect(t, n, answers)
	for _, a := range all {
		require.NoError(t, a.err)
		assert.Equal(t, []string{"hello #1"}, a.text)
	}
	assert.Equal(t, map[string]int{policy.FromBackend: 1, policy.FromCoalesced: n - 1}, from)
	assert.EqualValues(t, 1, fake.calls.Load(), "handler calls")
}

func TestUnaryInterceptorDistinct(t *testing.T) {
	g, fake, client := serve(t)
	const n = 20
	answers := make(chan answer, n)
	for i := range n {
		go generate(t.Context(), client, &vegav1.GenerateRequest{Model: "m", Prompt: fmt.Sprint("p", i)}, answers)
	}
	eventually(t, "20 concurrent handler calls", func() bool { return fake.calls.Load() == n })
	close(fake.release)

	all, from := collect(t, n, answers)
	for _, a := range all {
		require.NoError(t, a.err)
	}
	assert.Equal(t, map[string]int{policy.FromBackend: n}, from)
	assert.EqualValues(t, n, fake.calls.Load(), "handler calls")
	assert.EqualValues(t, n, g.Stats().Flights)
}

func TestUnaryInterceptorDeadline(t *testing.T) {
	g, fake, client := serve(t)
	req := &vegav1.GenerateRequest{Model: "m", Prompt: "hello"}
	answers := make(chan answer, 2)
	go generate(t.Context(), client, req, answers)
	eventually(t, "the flight to start", func() bool { return fake.calls.Load() == 1 })
	go generate(t.Context(), client, req, answers)
	eventually(t, "a caller to join", func() bool { return g.Stats().Coalesced == 1 })

	// The handler stays blocked until release, so this deadline expires
	// while its caller waits in the coalescer.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := client.Generate(ctx, req)
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "short-deadline caller: %v", err)
	st := g.Stats()
	assert.EqualValues(t, 2, st.Coalesced, "the short-deadline caller joined the flight before it left")
	assert.EqualValues(t, 0, st.Abandoned)

	close(fake.release)
	all, from := collect(t, 2, answers)
	for _, a := range all {
		require.NoError(t, a.err)
		assert.Equal(t, []string{"hello #1"}, a.text)
	}
	assert.Equal(t, map[string]int{policy.FromBackend: 1, policy.FromCoalesced: 1}, from)
	assert.EqualValues(t, 1, fake.calls.Load(), "handler calls")
}

func TestUnaryInterceptorNotCoalesced(t *testing.T) {
	g, fake, client := serve(t)
	const n = 5
	answers := make(chan answer, n)
	for range n {
		go generate(t.Context(), client, &vegav1.GenerateRequest{Model: "solo", Prompt: "hello"}, answers)
	}
	eventually(t, "5 concurrent handler calls", func() bool { return fake.calls.Load() == n })
	close(fake.release)

	all, from := collect(t, n, answers)
	for _, a := range all {
		require.NoError(t, a.err)
	}
	assert.Equal(t, map[string]int{policy.FromBackend: n}, from)
	assert.EqualValues(t, n, fake.calls.Load(), "handler calls")
	assert.Zero(t, g.Stats().Requests, "the group saw requests that asked for no coalescing")
}

func TestUnaryInterceptorPanic(t *testing.T) {
	g, fake, client := serve(t)
	const n = 3
	answers := make(chan answer, n)
	for range n {
		go generate(t.Context(), client, &vegav1.GenerateRequest{Model: "m", Prompt: "panic"}, answers)
	}
	eventually(t, "the callers to join", func() bool { return g.Stats().Coalesced == n-1 })
	close(fake.release)

	all, _ := collect(t, n, answers)
	for _, a := range all {
		st := status.Convert(a.err)
		assert.Equal(t, codes.Internal, st.Code(), "%v", a.err)
		assert.Equal(t, "internal error", st.Message())
	}
	assert.EqualValues(t, 1, g.Stats().Panics)

	// The server is up and the key works again.
	go generate(t.Context(), client, &vegav1.GenerateRequest{Model: "m", Prompt: "hello"}, answers)
	all, _ = collect(t, 1, answers)
	require.NoError(t, all[0].err)
	assert.Equal(t, []string{"hello #2"}, all[0].text)
}

func TestStreamInterceptorIdentical(t *testing.T) {
	g, fake, client := serve(t)
	const n = 10
	answers := make(chan answer, n)
	for range n {
		go generateStream(t.Context(), client, &vegav1.GenerateStreamRequest{Model: "m", Prompt: "hello"}, answers)
	}
	eventually(t, "9 callers to join the flight", func() bool { return g.Stats().Coalesced == n-1 })
	close(fake.release)

	var want []string
	for i := range chunks {
		want = append(want, fmt.Sprintf("hello #1 chunk %d", i))
	}
	all, from := collect(t, n, answers)
	for _, a := range all {
		require.NoError(t, a.err)
		assert.Equal(t, want, a.text)
	}
	assert.Equal(t, map[string]int{policy.FromBackend: 1, policy.FromCoalesced: n - 1}, from)
	assert.EqualValues(t, 1, fake.calls.Load(), "handler calls")
}

func TestStreamInterceptorNotCoalesced(t *testing.T) {
	_, fake, client := serve(t)
	const n = 3
	answers := make(chan answer, n)
	for range n {
		go generateStream(t.Context(), client, &vegav1.GenerateStreamRequest{Model: "solo", Prompt: "hello"}, answers)
	}
	eventually(t, "3 concurrent handler calls", func() bool { return fake.calls.Load() == n })
	close(fake.release)

	all, from := collect(t, n, answers)
	var texts []string
	for _, a := range all {
		require.NoError(t, a.err)
		require.Len(t, a.text, chunks)
		texts = append(texts, a.text[0])
	}
	slices.Sort(texts)
	assert.Equal(t, []string{"hello #1 chunk 0", "hello #2 chunk 0", "hello #3 chunk 0"}, texts)
	assert.Equal(t, map[string]int{policy.FromBackend: n}, from)
}

// A leader whose client cancels gets its own cancellation while its handler
// goroutine still runs the flight; the follower gets the answer and the
// flight is neither abandoned nor repeated.
func TestUnaryInterceptorLeaderCancel(t *testing.T) {
	g, fake, client := serve(t)
	req := &vegav1.GenerateRequest{Model: "m", Prompt: "hello"}
	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	defer cancelLeader()
	leader, follower := make(chan answer, 1), make(chan answer, 1)
	go generate(leaderCtx, client, req, leader)
	eventually(t, "the flight to start", func() bool { return fake.calls.Load() == 1 })
	go generate(t.Context(), client, req, follower)
	eventually(t, "a caller to join", func() bool { return g.Stats().Coalesced == 1 })

	cancelLeader()
	la, _ := collect(t, 1, leader)
	assert.Equal(t, codes.Canceled, status.Code(la[0].err), "leader: %v", la[0].err)
	close(fake.release)
	fa, from := collect(t, 1, follower)
	require.NoError(t, fa[0].err)
	assert.Equal(t, []string{"hello #1"}, fa[0].text)
	assert.Equal(t, map[string]int{policy.FromCoalesced: 1}, from)
	assert.EqualValues(t, 1, fake.calls.Load(), "handler calls")
	eventually(t, "the flight to end", func() bool { return g.Stats().InFlight == 0 })
	assert.EqualValues(t, 0, g.Stats().Abandoned)
}

// A leader alone whose client cancels abandons the flight: the handler's
// context is cancelled at once (the fake then returns), and the key works
// again.
func TestUnaryInterceptorLeaderAloneCancel(t *testing.T) {
	g, fake, client := serve(t)
	req := &vegav1.GenerateRequest{Model: "m", Prompt: "hello"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	answers := make(chan answer, 1)
	go generate(ctx, client, req, answers)
	eventually(t, "the flight to start", func() bool { return fake.calls.Load() == 1 })

	cancel()
	a, _ := collect(t, 1, answers)
	assert.Equal(t, codes.Canceled, status.Code(a[0].err), "%v", a[0].err)
	eventually(t, "the flight to be abandoned and end", func() bool {
		st := g.Stats()
		return st.Abandoned == 1 && st.InFlight == 0 && st.Waiting == 0
	})

	close(fake.release)
	go generate(t.Context(), client, req, answers)
	a, from := collect(t, 1, answers)
	require.NoError(t, a[0].err)
	assert.Equal(t, []string{"hello #2"}, a[0].text)
	assert.Equal(t, map[string]int{policy.FromBackend: 1}, from)
}

// TestUnaryInterceptorAllocs pins what the interceptor adds to a flight it
// starts: Do's four allocations and the context that drops headers. The
// Decision is the caller's own (no copy), fn's closure stays on the stack
// and the response is shared as is.
func TestUnaryInterceptorAllocs(t *testing.T) {
	g := coalesce.New()
	intercept := coalesce.UnaryServerInterceptor(g)
	d := &policy.Decision{Key: "k", Coalesce: true, ServedFrom: policy.FromBackend}
	ctx := policy.NewContext(context.Background(), d)
	info := &grpc.UnaryServerInfo{FullMethod: vegav1.GenerateService_Generate_FullMethodName}
	resp := &vegav1.GenerateResponse{Text: "answer"}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	got := testing.AllocsPerRun(100, func() {
		if v, err := intercept(ctx, nil, info, handler); v != resp || err != nil {
			t.Fatalf("intercept = %v, %v; want the handler's response", v, err)
		}
	})
	if got > 5 {
		t.Errorf("a flight through the interceptor allocates %v times; want at most 5", got)
	}
}

// A caller who leaves a flight early gets its own cancellation or deadline
// as a gRPC status: grpc-go reports a bare context error as UNKNOWN (in the
// logs, in grpc_server_handled_total), which make bench's overload runs
// showed at the end of each run.
func TestUnaryInterceptorCallerLeavingIsAStatus(t *testing.T) {
	g := coalesce.New()
	intercept := coalesce.UnaryServerInterceptor(g)
	info := &grpc.UnaryServerInfo{FullMethod: vegav1.GenerateService_Generate_FullMethodName}
	release := make(chan struct{})
	started := make(chan struct{})
	handler := func(ctx context.Context, _ any) (any, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &vegav1.GenerateResponse{Text: "answer"}, nil
	}
	newCtx := func(parent context.Context) context.Context {
		return policy.NewContext(parent, &policy.Decision{Key: "k", Coalesce: true, ServedFrom: policy.FromBackend})
	}
	leaderDone := make(chan error, 1)
	go func() {
		_, err := intercept(newCtx(t.Context()), nil, info, handler)
		leaderDone <- err
	}()
	<-started

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := intercept(newCtx(canceled), nil, info, handler)
	assert.Equal(t, codes.Canceled, status.Code(err), "%v", err)

	expired, cancel2 := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel2()
	<-expired.Done()
	_, err = intercept(newCtx(expired), nil, info, handler)
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)

	close(release)
	require.NoError(t, <-leaderDone)
}
