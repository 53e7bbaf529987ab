package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/llm"
	"github.com/vega-gateway/vega/integrations/llm/sim"
	"github.com/vega-gateway/vega/service"
)

// panicLLM panics inside the handler's call path.
type panicLLM struct{}

func (panicLLM) Generate(context.Context, *llm.Request) (*llm.Response, error) { panic("kaboom") }
func (panicLLM) Stream(context.Context, *llm.Request, llm.ChunkFunc) error     { panic("kaboom") }

func TestPanicBecomesInternalAndServerStaysUp(t *testing.T) {
	g, _ := startGatewayWith(t, nil, func(s *Server) {
		s.router.Add("boom", panicLLM{})
		s.router.Map("boom-model", "boom")
	})
	ctx := ctxTimeout(t, 10*time.Second)

	_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "boom-model", Prompt: "hi"})
	st := requireCode(t, err, codes.Internal)
	assert.Equal(t, "internal error", st.Message(), "the panic value is logged, not sent")
	assert.Contains(t, g.logs.String(), "kaboom")

	stream, err := g.generate().GenerateStream(ctx, &vegav1.GenerateStreamRequest{Model: "boom-model", Prompt: "hi"})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireCode(t, err, codes.Internal)

	_, err = g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "still here?"})
	require.NoError(t, err)
}

// enteringLLM reports each call as it enters the backend.
type enteringLLM struct {
	service.LLM
	entered chan struct{}
}

func (e enteringLLM) Generate(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	e.entered <- struct{}{}
	return e.LLM.Generate(ctx, req)
}

func TestGracefulShutdownFinishesInFlightCalls(t *testing.T) {
	entered := make(chan struct{}, 1)
	g, stop := startGatewayWith(t, nil, func(s *Server) {
		s.router.Add("sim", enteringLLM{LLM: sim.New("sim", sim.Settings{Latency: 400 * time.Millisecond}), entered: entered})
	})
	ctx := ctxTimeout(t, 10*time.Second)

	result := make(chan error, 1)
	go func() {
		_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "in flight"})
		result <- err
	}()
	select { // the call is inside the backend now
	case <-entered:
	case err := <-result:
		t.Fatalf("the call ended before reaching the backend: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the backend")
	}

	require.NoError(t, stop())
	require.NoError(t, <-result, "the call in flight when shutdown began completed")

	_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "too late"})
	requireCode(t, err, codes.Unavailable)
}

func TestShutdownIsBoundedWhenStreamsDoNotEnd(t *testing.T) {
	g, stop := startGatewayWith(t, map[string]string{
		"VEGA_ADMIN_API_KEY":    "k",
		"VEGA_SHUTDOWN_TIMEOUT": "200ms",
	}, nil)
	ctx := withKey(ctxTimeout(t, 20*time.Second), "k")
	watch, err := g.admin().WatchStats(ctx, &vegav1.WatchStatsRequest{Interval: durationpb.New(time.Hour)})
	require.NoError(t, err)
	_, err = watch.Recv() // the first snapshot: the stream is open and idle now
	require.NoError(t, err)

	start := time.Now()
	require.NoError(t, stop())
	assert.Less(t, time.Since(start), 10*time.Second, "GracefulStop gave way to Stop")
	_, err = watch.Recv()
	requireCode(t, err, codes.Unavailable)
}
