package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

func TestMetricsEndpointCarriesGRPCAndVegaSeries(t *testing.T) {
	g := startGateway(t, nil)
	ctx := ctxTimeout(t, 10*time.Second)
	for range 3 {
		_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "metrics"})
		require.NoError(t, err)
	}
	resp, err := http.Get("http://" + g.srv.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)

	handled := families["grpc_server_handled_total"]
	require.NotNil(t, handled, "gRPC server metrics")
	var generateOK float64
	for _, m := range handled.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["grpc_method"] == "Generate" && labels["grpc_code"] == "OK" {
			generateOK = m.GetCounter().GetValue()
		}
	}
	assert.Equal(t, 3.0, generateOK)

	requests := families["vega_request_coalescing_requests_total"]
	require.NotNil(t, requests)
	assert.Equal(t, 3.0, requests.GetMetric()[0].GetCounter().GetValue())
	require.NotNil(t, families["vega_runtime_goroutines"])
	assert.Positive(t, families["vega_runtime_goroutines"].GetMetric()[0].GetGauge().GetValue())
	var vega int
	for name := range families {
		if strings.HasPrefix(name, "vega_") {
			vega++
		}
	}
	assert.Greater(t, vega, 40, "every PerfAdmin figure is exported")
}

func TestGetStatsShowsLiveSections(t *testing.T) {
	recv := newReceiver(t)
	recv.up.Store(true)
	g := startGateway(t, map[string]string{"VEGA_ADMIN_API_KEY": "k", "VEGA_SLOW_RPC_THRESHOLD": "100ms", "VEGA_SIM_LATENCY": "150ms", "VEGA_WEBHOOK_URL": recv.URL})
	ctx := ctxTimeout(t, 10*time.Second)
	_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "slow one"})
	require.NoError(t, err)
	sent, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "for the batch section"})
	require.NoError(t, err)
	require.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, sent.GetStatus())
	resp, err := g.admin().GetStats(withKey(ctx, "k"), &vegav1.GetStatsRequest{})
	require.NoError(t, err)
	st := resp.GetStats()
	rt := st.GetRuntime()
	assert.Equal(t, int64(1), rt.GetSlowRpcs())
	require.Len(t, rt.GetRecentSlowRpcs(), 1)
	assert.Equal(t, "/vega.v1.GenerateService/Generate", rt.GetRecentSlowRpcs()[0].GetMethod())
	assert.Equal(t, "OK", rt.GetRecentSlowRpcs()[0].GetCode())
	assert.GreaterOrEqual(t, rt.GetSchedLatencyP99().AsDuration(), rt.GetSchedLatencyP50().AsDuration())
	assert.NotNil(t, st.GetMemoryLeaks())
	assert.False(t, st.GetMemoryLeaks().GetSuspected())
	for name, section := range map[string]any{
		"circuit_breakers": st.GetCircuitBreakers(), "cache": st.GetCache(), "streaming": st.GetStreaming(),
		"request_coalescing": st.GetRequestCoalescing(), "connection_pool": st.GetConnectionPool(),
		"rate_limiters": st.GetRateLimiters(), "integrations": st.GetIntegrations(),
	} {
		assert.NotNil(t, section, name)
	}
	assert.Equal(t, int64(1), st.GetRequestCoalescing().GetFlights())
	batch := st.GetBatch()
	require.NotNil(t, batch, "batch")
	assert.GreaterOrEqual(t, batch.GetOperations(), int64(2), "the accept and the delivery were written")
	assert.Positive(t, batch.GetCommits())
	assert.Equal(t, int64(128), batch.GetMaxBatch())
	hook := batch.GetChannels()["webhook"]
	require.NotNil(t, hook)
	assert.Equal(t, int64(1), hook.GetAccepted())
	assert.Equal(t, int64(1), hook.GetDelivered())
	assert.Equal(t, int64(0), hook.GetQueueDepth())
	assert.Equal(t, 10.0, hook.GetRatePerSecond(), "generic webhook pacing")
}

func TestTracingOnStartsAndStops(t *testing.T) {
	// An endpoint where nothing listens: export fails quietly, calls work,
	// shutdown stays bounded. The exporter reads the process environment.
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
		"OTEL_EXPORTER_OTLP_TIMEOUT":  "200", // ms, per export
		"OTEL_BSP_EXPORT_TIMEOUT":     "200", // ms
		"OTEL_BSP_SCHEDULE_DELAY":     "50",  // ms
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	g := startGateway(t, env)
	require.NotNil(t, g.srv.tracing.provider)
	_, err := g.generate().Generate(ctxTimeout(t, 10*time.Second), &vegav1.GenerateRequest{Model: "sim", Prompt: "traced"})
	require.NoError(t, err)
}

func TestWatchStatsSlowReaderNeverSlowsTheServer(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_ADMIN_API_KEY": "k"})
	ctx := withKey(ctxTimeout(t, 20*time.Second), "k")
	watch, err := g.admin().WatchStats(ctx, &vegav1.WatchStatsRequest{Interval: durationpb.New(100 * time.Millisecond)})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)

	// The watcher stops reading for 4 s (40 intervals). Meanwhile the
	// server answers other calls at once.
	for range 20 {
		start := time.Now()
		_, err := g.admin().GetStats(ctx, &vegav1.GetStatsRequest{})
		require.NoError(t, err)
		assert.Less(t, time.Since(start), time.Second)
		time.Sleep(200 * time.Millisecond)
	}
	// After the pause the stream goes on and reaches a snapshot taken after
	// it. What the watcher's own transport buffered arrives first; this test
	// cannot tell whether the server skipped ticks (grpc-go's client window
	// grows large enough to hold every snapshot of the pause), so it checks
	// only that the stream resumes and is bounded by one per interval.
	resumed := time.Now()
	var n int
	for {
		snap, err := watch.Recv()
		require.NoError(t, err)
		n++
		if snap.GetStats().GetTime().AsTime().After(resumed) {
			break
		}
		require.LessOrEqual(t, n, 41, "more snapshots than ticks of the pause")
	}
	assert.True(t, resumed.After(first.GetStats().GetTime().AsTime()))
	t.Logf("%d buffered snapshots before a fresh one", n-1)
}
