package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// TestPerfChainOff is the bare server make bench compares the chain with:
// VEGA_PERF_CHAIN=off serves Generate without cache, coalescing, breaker or
// limiter (no x-vega-served-from header, nothing cached), and anything but
// on or off is refused.
func TestPerfChainOff(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_PERF_CHAIN": "off"})
	ctx := ctxTimeout(t, 10*time.Second)
	req := &vegav1.GenerateRequest{Model: "sim", Prompt: "hi", Options: &vegav1.SamplingOptions{Temperature: zero()}}
	for range 2 {
		resp, sf, err := generateServedFrom(ctx, g.generate(), req)
		require.NoError(t, err)
		assert.NotEmpty(t, resp.GetText())
		assert.Empty(t, sf, "no perf chain, no served-from header")
	}

	on := startGateway(t, map[string]string{"VEGA_PERF_CHAIN": "on"})
	_, _, err := generateServedFrom(ctx, on.generate(), req)
	require.NoError(t, err)
	_, sf, err := generateServedFrom(ctx, on.generate(), req)
	require.NoError(t, err)
	assert.Equal(t, "cache", sf, "the chain is on by default")

	_, err = LoadConfig("", func(k string) string { return map[string]string{"VEGA_PERF_CHAIN": "maybe"}[k] })
	assert.ErrorContains(t, err, "VEGA_PERF_CHAIN")
}
