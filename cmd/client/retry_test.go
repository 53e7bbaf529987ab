package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// refusing refuses the first attempt of each call as the gateway's overload
// control does (Trailers-Only, grpc-retry-pushback-ms) and records when
// each attempt came.
type refusing struct {
	vegav1.UnimplementedGenerateServiceServer
	pushback string

	mu       sync.Mutex
	attempts []time.Time
	previous []string // grpc-previous-rpc-attempts of each attempt
}

func (r *refusing) Generate(ctx context.Context, _ *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, time.Now())
	r.previous = append(r.previous, md.Get("grpc-previous-rpc-attempts")...)
	if len(r.attempts) == 1 {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", r.pushback))
		return nil, status.Error(codes.ResourceExhausted, "backend \"ollama\" is overloaded")
	}
	return &vegav1.GenerateResponse{Text: "ok"}, nil
}

func serveRefusing(t *testing.T, r *refusing) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	vegav1.RegisterGenerateServiceServer(srv, r)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// The CLI's service config (the one the README gives) retries a refusal
// after the server's pushback, as gRPC's built-in retry does in every
// language.
func TestClientRetriesAfterPushback(t *testing.T) {
	r := &refusing{pushback: "300"}
	c := common{addr: serveRefusing(t, r)}
	conn, err := c.dial()
	require.NoError(t, err)
	defer conn.Close()
	resp, err := vegav1.NewGenerateServiceClient(conn).Generate(t.Context(), &vegav1.GenerateRequest{Model: "m", Prompt: "p"})
	require.NoError(t, err)
	assert.Equal(t, "ok", resp.GetText())
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Len(t, r.attempts, 2)
	assert.GreaterOrEqual(t, r.attempts[1].Sub(r.attempts[0]), 300*time.Millisecond, "after the pushback")
	assert.Equal(t, []string{"1"}, r.previous)
}

// A pushback of -1 (no retry fits the caller's deadline) stops the retry.
func TestClientDoesNotRetryWhenToldNot(t *testing.T) {
	r := &refusing{pushback: "-1"}
	c := common{addr: serveRefusing(t, r)}
	conn, err := c.dial()
	require.NoError(t, err)
	defer conn.Close()
	_, err = vegav1.NewGenerateServiceClient(conn).Generate(t.Context(), &vegav1.GenerateRequest{Model: "m", Prompt: "p"})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	r.mu.Lock()
	defer r.mu.Unlock()
	assert.Len(t, r.attempts, 1)
}
