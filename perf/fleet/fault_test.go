package fleet_test

import (
	"context"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// redisProxy is toxiproxy, in process, between a fleet and the real Redis.
type redisProxy struct {
	*toxiproxy.Proxy
}

func newRedisProxy(t testing.TB) *redisProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "redis", "127.0.0.1:0", redisAddr)
	require.NoError(t, p.Start())
	t.Cleanup(p.Stop)
	return &redisProxy{p}
}

func (p *redisProxy) url() string { return "redis://" + p.Listen + "/0" }

// toxic adds a toxic on both directions' downstream side; remove with the
// returned function.
func (p *redisProxy) toxic(t testing.TB, kind string, attrs string) func() {
	t.Helper()
	_, err := p.Toxics.AddToxicJson(strings.NewReader(`{"name":"t","type":"` + kind + `","stream":"downstream","attributes":` + attrs + `}`))
	require.NoError(t, err)
	return func() { require.NoError(t, p.Toxics.RemoveToxic(context.Background(), "t")) }
}

// hammer runs n Gets and returns the slowest.
func hammer(t testing.TB, f *fleet.Fleet, n int) (slowest time.Duration, hits int) {
	t.Helper()
	for range n {
		start := time.Now()
		if _, ok := f.Get(context.Background(), "k"); ok {
			hits++
		}
		slowest = max(slowest, time.Since(start))
	}
	return slowest, hits
}

// TestRedisTroubleFallsBackAndRejoins: Redis down, slow (500ms) or
// resetting connections costs a Get no more than its budget and a miss —
// never an error — the breaker stops the dials, and the replica uses Redis
// again once it is back.
func TestRedisTroubleFallsBackAndRejoins(t *testing.T) {
	// Through the in-process proxy under the race detector a round trip
	// can take tens of ms on a loaded machine: 150ms keeps the healthy
	// phases healthy and is still far below the 500ms fault.
	const budget = 150 * time.Millisecond
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T, p *redisProxy) (heal func())
	}{
		{"down", func(_ *testing.T, p *redisProxy) func() {
			p.Stop()
			return func() { require.NoError(t, p.Start()) }
		}},
		{"latency 500ms", func(t *testing.T, p *redisProxy) func() {
			return p.toxic(t, "latency", `{"latency":500}`)
		}},
		{"reset peer", func(t *testing.T, p *redisProxy) func() {
			return p.toxic(t, "reset_peer", `{"timeout":0}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := testPrefix(t)
			p := newRedisProxy(t)
			f := newFleet(t, fleet.Settings{URL: p.url(), Prefix: prefix, Timeout: budget, BreakerTimeout: 300 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond})
			f.Set("k", []byte("v"), time.Minute)
			eventually(t, 5*time.Second, func() bool { _, ok := f.Get(context.Background(), "k"); return ok }, "no hit through the proxy")

			heal := tc.fault(t, p)
			dials := f.Stats().Dials
			start := time.Now()
			slowest, hits := hammer(t, f, 2000)
			took := time.Since(start)
			assert.Zero(t, hits, "Redis is unusable: every Get is a miss")
			// A Get costs its budget at most; the dial bound (250ms) only
			// ever applies inside a breaker probe or the writers.
			assert.Less(t, slowest, budget+150*time.Millisecond, "a Get outlived its budget")
			st := f.Stats()
			assert.Equal(t, fleet.ModeLocal, st.Mode)
			assert.Positive(t, st.BreakerOpens)
			assert.Greater(t, st.Fallbacks, int64(1900), "with the breaker open Gets are not sent")
			// Without the breaker: 2000 dials. With it: the probes (one per
			// 300ms open period) plus the heartbeat and subscriber.
			assert.Less(t, st.Dials-dials, int64(40), "dial storm: %d dials in %v", st.Dials-dials, took)

			heal()
			eventually(t, 5*time.Second, func() bool { _, ok := f.Get(context.Background(), "k"); return ok }, "never rejoined Redis")
			eventually(t, time.Second, func() bool { return f.Stats().Mode == fleet.ModeRedis }, "mode still %s", f.Stats().Mode)
		})
	}
}
