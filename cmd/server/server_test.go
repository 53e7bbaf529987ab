package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

func TestMain(m *testing.M) {
	if os.Getenv(asServerEnv) == "1" { // a child process of TestNotifySurvivesKill9
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// gateway is a running server wired exactly as main wires it, on loopback.
type gateway struct {
	srv  *Server
	conn *grpc.ClientConn
	logs *syncBuffer
}

// startGateway runs the real server with env as its environment (plus
// loopback ports) and stops it when the test ends.
func startGateway(t *testing.T, env map[string]string) *gateway {
	t.Helper()
	g, _ := startGatewayWith(t, env, nil)
	return g
}

// startGatewayWith also lets the test change the built server before it
// serves, and returns a function that stops it and reports Serve's result.
func startGatewayWith(t *testing.T, env map[string]string, adjust func(*Server)) (*gateway, func() error) {
	t.Helper()
	full := map[string]string{"VEGA_GRPC_ADDR": "127.0.0.1:0", "VEGA_HTTP_ADDR": "127.0.0.1:0", "VEGA_DATA_DIR": t.TempDir()}
	for k, v := range env {
		full[k] = v
	}
	cfg, err := LoadConfig("", func(k string) string { return full[k] })
	require.NoError(t, err)
	logs := &syncBuffer{}
	srv, err := NewServer(cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	if adjust != nil {
		adjust(srv)
	}
	require.NoError(t, srv.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	var (
		once    sync.Once
		stopErr error
	)
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(30 * time.Second):
				stopErr = errors.New("server did not stop within 30s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		conn.Close()
		assert.NoError(t, stop())
	})
	return &gateway{srv: srv, conn: conn, logs: logs}, stop
}

func (g *gateway) generate() vegav1.GenerateServiceClient {
	return vegav1.NewGenerateServiceClient(g.conn)
}
func (g *gateway) fetch() vegav1.FetchServiceClient   { return vegav1.NewFetchServiceClient(g.conn) }
func (g *gateway) notify() vegav1.NotifyServiceClient { return vegav1.NewNotifyServiceClient(g.conn) }
func (g *gateway) admin() vegav1.PerfAdminServiceClient {
	return vegav1.NewPerfAdminServiceClient(g.conn)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-api-key", key)
}

func requireCode(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, want, st.Code(), "message: %s", st.Message())
	return st
}

func TestReflectionListsServicesAndHealthServes(t *testing.T) {
	g := startGateway(t, nil)
	ctx := ctxTimeout(t, 10*time.Second)

	stream, err := reflectionpb.NewServerReflectionClient(g.conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	require.NoError(t, stream.CloseSend())
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	assert.ElementsMatch(t, []string{
		"vega.v1.GenerateService", "vega.v1.FetchService", "vega.v1.NotifyService", "vega.v1.PerfAdminService",
		"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
	}, names)

	h, err := healthpb.NewHealthClient(g.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, h.GetStatus())
	h, err = healthpb.NewHealthClient(g.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "vega.v1.GenerateService"})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, h.GetStatus())

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/nope": 404} {
		resp, err := http.Get("http://" + g.srv.HTTPAddr() + path)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, path)
	}
}

func TestGenerateSim(t *testing.T) {
	g := startGateway(t, nil)
	ctx := ctxTimeout(t, 10*time.Second)

	resp, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
	require.NoError(t, err)
	assert.NotEmpty(t, resp.GetText())
	assert.Equal(t, "sim", resp.GetBackend())
	assert.Equal(t, "sim", resp.GetModel())
	assert.Positive(t, resp.GetUsage().GetCompletionTokens())
	assert.Equal(t, resp.GetUsage().GetPromptTokens()+resp.GetUsage().GetCompletionTokens(), resp.GetUsage().GetTotalTokens())

	again, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
	require.NoError(t, err)
	assert.Equal(t, resp.GetText(), again.GetText(), "sim is deterministic")

	stream, err := g.generate().GenerateStream(ctx, &vegav1.GenerateStreamRequest{Model: "sim", Prompt: "hi"})
	require.NoError(t, err)
	text, last, n := drain(t, stream)
	assert.Equal(t, resp.GetText(), text, "stream and unary give the same text")
	assert.True(t, last.GetDone())
	assert.Equal(t, resp.GetFinishReason(), last.GetFinishReason())
	assert.Greater(t, n, 2, "streamed in several chunks")
}

func drain(t *testing.T, stream grpc.ServerStreamingClient[vegav1.GenerateStreamResponse]) (string, *vegav1.GenerateStreamResponse, int) {
	t.Helper()
	var (
		sb   strings.Builder
		last *vegav1.GenerateStreamResponse
		n    int
	)
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return sb.String(), last, n
		}
		require.NoError(t, err)
		require.False(t, last.GetDone(), "a chunk after done")
		sb.WriteString(c.GetText())
		last = c
		n++
	}
}

func TestGenerateOllamaAndOpenAI(t *testing.T) {
	ollama := newFakeOllama(t)
	openai := newFakeOpenAI(t, "sk-test-secret")
	g := startGateway(t, map[string]string{
		"VEGA_OLLAMA_URL":      ollama.URL,
		"VEGA_OPENAI_BASE_URL": openai.URL + "/v1",
		"VEGA_OPENAI_API_KEY":  "sk-test-secret",
	})
	ctx := ctxTimeout(t, 10*time.Second)

	// The default backend is Ollama (VEGA_OLLAMA_URL wins over the OpenAI one).
	resp, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: "hello there"})
	require.NoError(t, err)
	assert.Equal(t, "ollama says: hello there", resp.GetText())
	assert.Equal(t, "ollama", resp.GetBackend())
	assert.Equal(t, "stop", resp.GetFinishReason())
	assert.Equal(t, int64(1), ollama.calls.Load())

	resp, err = g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "llama3", Messages: []*vegav1.ChatMessage{
		{Role: "system", Content: "be brief"}, {Role: "user", Content: "chat please"},
	}})
	require.NoError(t, err)
	assert.Equal(t, "ollama says: chat please", resp.GetText())

	stream, err := g.generate().GenerateStream(ctx, &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "stream me"})
	require.NoError(t, err)
	text, last, n := drain(t, stream)
	assert.Equal(t, "ollama says: stream me", text)
	assert.Equal(t, "stop", last.GetFinishReason())
	assert.Equal(t, int32(4), last.GetUsage().GetCompletionTokens())
	assert.GreaterOrEqual(t, n, 4)

	// sim is always there, whatever the default.
	resp, err = g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "x"})
	require.NoError(t, err)
	assert.Equal(t, "sim", resp.GetBackend())
	assert.Equal(t, int64(3), ollama.calls.Load())
	assert.Equal(t, int64(0), openai.calls.Load())
}

func TestGenerateOpenAIDefault(t *testing.T) {
	openai := newFakeOpenAI(t, "sk-test-secret")
	g := startGateway(t, map[string]string{
		"VEGA_OPENAI_BASE_URL": openai.URL,
		"VEGA_OPENAI_API_KEY":  "sk-test-secret",
	})
	ctx := ctxTimeout(t, 10*time.Second)

	resp, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "gpt-x", Prompt: "hello"})
	require.NoError(t, err)
	assert.Equal(t, "openai says: hello", resp.GetText())
	assert.Equal(t, "openai", resp.GetBackend())
	assert.Equal(t, int32(1), resp.GetUsage().GetPromptTokens())

	stream, err := g.generate().GenerateStream(ctx, &vegav1.GenerateStreamRequest{Model: "gpt-x", Prompt: "stream it"})
	require.NoError(t, err)
	text, last, _ := drain(t, stream)
	assert.Equal(t, "openai says: stream it", text)
	assert.Equal(t, "stop", last.GetFinishReason())
	assert.Equal(t, int32(2), last.GetUsage().GetPromptTokens())

	// A 401 from the backend is the gateway's problem, not the caller's, and
	// the message does not carry the key.
	g2 := startGateway(t, map[string]string{"VEGA_OPENAI_BASE_URL": openai.URL, "VEGA_OPENAI_API_KEY": "sk-wrong-key"})
	_, err = g2.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "gpt-x", Prompt: "hello"})
	st := requireCode(t, err, codes.FailedPrecondition)
	assert.NotContains(t, st.Message(), "sk-wrong-key")
	assert.NotContains(t, g2.logs.String(), "sk-wrong-key")
}

func TestGenerateBackendFailures(t *testing.T) {
	ollama := newFakeOllama(t)
	down := newFakeOllama(t)
	down.Close() // nothing listens there any more
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL})
	gDown := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": down.URL})

	t.Run("backend down", func(t *testing.T) {
		_, err := gDown.generate().Generate(ctxTimeout(t, 10*time.Second), &vegav1.GenerateRequest{Model: "llama3", Prompt: "hi"})
		st := requireCode(t, err, codes.Unavailable)
		assert.NotContains(t, st.Message(), strings.TrimPrefix(down.URL, "http://"), "no upstream address in the message")
	})
	t.Run("500", func(t *testing.T) {
		_, err := g.generate().Generate(ctxTimeout(t, 10*time.Second), &vegav1.GenerateRequest{Model: "broken", Prompt: "hi"})
		requireCode(t, err, codes.Unavailable)
	})
	t.Run("404 model", func(t *testing.T) {
		_, err := g.generate().Generate(ctxTimeout(t, 10*time.Second), &vegav1.GenerateRequest{Model: "missing", Prompt: "hi"})
		st := requireCode(t, err, codes.NotFound)
		assert.Contains(t, st.Message(), "not found")
	})
	t.Run("slow past the deadline", func(t *testing.T) {
		before := ollama.cancelled.Load()
		_, err := g.generate().Generate(ctxTimeout(t, 300*time.Millisecond), &vegav1.GenerateRequest{Model: "slow", Prompt: "hi"})
		requireCode(t, err, codes.DeadlineExceeded)
		// The caller's deadline travelled to the backend call and ended it.
		require.Eventually(t, func() bool { return ollama.cancelled.Load() == before+1 }, 5*time.Second, 10*time.Millisecond)
	})
	t.Run("stream 500", func(t *testing.T) {
		stream, err := g.generate().GenerateStream(ctxTimeout(t, 10*time.Second), &vegav1.GenerateStreamRequest{Model: "broken", Prompt: "hi"})
		require.NoError(t, err)
		_, err = stream.Recv()
		requireCode(t, err, codes.Unavailable)
	})
}

func TestGenerateBackend429(t *testing.T) {
	// Its own gateway: a 429 with Retry-After holds every call to that
	// backend back for the delay, which would slow the other cases down.
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL})
	_, err := g.generate().Generate(ctxTimeout(t, 10*time.Second), &vegav1.GenerateRequest{Model: "ratelimited", Prompt: "hi"})
	st := requireCode(t, err, codes.ResourceExhausted)
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	require.NotNil(t, retry, "RetryInfo detail")
	assert.Equal(t, 3*time.Second, retry.GetRetryDelay().AsDuration())

	// Retry-After is a floor: a call that cannot wait 3 s is refused at
	// once, without reaching the backend.
	start := time.Now()
	_, err = g.generate().Generate(ctxTimeout(t, time.Second), &vegav1.GenerateRequest{Model: "llama3", Prompt: "hi"})
	requireCode(t, err, codes.ResourceExhausted)
	assert.Less(t, time.Since(start), 500*time.Millisecond, "refused at once, not after waiting")
	assert.Equal(t, int64(1), ollama.calls.Load())
}

func TestGenerateBadInput(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL})
	ctx := ctxTimeout(t, 10*time.Second)
	neg, big, nan := -0.5, 2.5, 1.5
	cases := map[string]*vegav1.GenerateRequest{
		"no model":             {Prompt: "hi"},
		"no prompt":            {Model: "llama3"},
		"prompt and messages":  {Model: "llama3", Prompt: "hi", Messages: []*vegav1.ChatMessage{{Role: "user", Content: "x"}}},
		"bad role":             {Model: "llama3", Messages: []*vegav1.ChatMessage{{Role: "wizard", Content: "x"}}},
		"negative temperature": {Model: "llama3", Prompt: "hi", Options: &vegav1.SamplingOptions{Temperature: &neg}},
		"temperature too high": {Model: "llama3", Prompt: "hi", Options: &vegav1.SamplingOptions{Temperature: &big}},
		"top_p above 1":        {Model: "llama3", Prompt: "hi", Options: &vegav1.SamplingOptions{TopP: &nan}},
		"negative max_tokens":  {Model: "llama3", Prompt: "hi", Options: &vegav1.SamplingOptions{MaxTokens: -1}},
		"too many stops":       {Model: "llama3", Prompt: "hi", Options: &vegav1.SamplingOptions{Stop: strings.Fields("a b c d e f g h i")}},
		"unknown cache mode":   {Model: "llama3", Prompt: "hi", CacheControl: &vegav1.CacheControl{Mode: 42}},
		"huge model name":      {Model: strings.Repeat("m", 300), Prompt: "hi"},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := g.generate().Generate(ctx, req)
			requireCode(t, err, codes.InvalidArgument)
			stream, err := g.generate().GenerateStream(ctx, &vegav1.GenerateStreamRequest{
				Model: req.Model, Prompt: req.Prompt, Messages: req.Messages, Options: req.Options, CacheControl: req.CacheControl,
			})
			require.NoError(t, err)
			_, err = stream.Recv()
			requireCode(t, err, codes.InvalidArgument)
		})
	}
	assert.Equal(t, int64(0), ollama.calls.Load(), "bad input never reaches the backend")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}

func TestNewServerFailureLeavesNothingRunning(t *testing.T) {
	cfg, err := LoadConfig("", func(k string) string {
		return map[string]string{"VEGA_FETCH_ALLOW": "*.example.com"}[k] // refused by the fetcher
	})
	require.NoError(t, err)
	_, err = NewServer(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	require.ErrorContains(t, err, "VEGA_FETCH_ALLOW")
	// goleak in TestMain fails the package if the pool's janitor survived.
}
