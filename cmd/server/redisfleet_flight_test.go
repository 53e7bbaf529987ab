package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// Fleet flights end to end, over three real gateway processes sharing
// Redis: a backend's error reaches the callers on every replica from one
// call, and the backend call is cancelled only once the fleet's last
// caller has left.

// gatedOllama is an Ollama whose /api/generate holds every call until the
// test opens the gate (or the call is cancelled), then answers: model
// "fail" with a 500, any other normally.
type gatedOllama struct {
	*httptest.Server
	gate      chan struct{}
	open      func()
	calls     atomic.Int64
	cancelled atomic.Int64 // calls that saw their context end before the gate opened
}

func newGatedOllama(t *testing.T) *gatedOllama {
	t.Helper()
	g := &gatedOllama{gate: make(chan struct{})}
	g.open = sync.OnceFunc(func() { close(g.gate) })
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.calls.Add(1)
		var req struct {
			Model  string `json:"model"`
			Prompt string `json:"prompt"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		select {
		case <-g.gate:
		case <-r.Context().Done():
			g.cancelled.Add(1)
			return
		}
		if req.Model == "fail" {
			http.Error(w, `{"error":"model runner crashed"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		_ = json.NewEncoder(w).Encode(map[string]any{"model": req.Model, "response": "gated says: " + req.Prompt,
			"done": true, "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 3})
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.open) // before Close: no call left hanging
	return g
}

// startFleetProcesses starts three gateway processes on one Redis prefix
// (no proxy: these tests inject no Redis fault) and waits until each sees
// the fleet.
func startFleetProcesses(t *testing.T, backendURL string) []*serverProcess {
	t.Helper()
	prefix := fleetRedisPrefix(t)
	procs := make([]*serverProcess, 3)
	var wg sync.WaitGroup
	for i := range procs {
		env := map[string]string{
			"REDIS_URL": "redis://" + fleetRedisAddr + "/0", "VEGA_REDIS_PREFIX": prefix, "VEGA_REDIS_TIMEOUT": fleetBudget.String(),
			"VEGA_OLLAMA_URL": backendURL, "VEGA_ADMIN_API_KEY": fleetAdminKey, "VEGA_DATA_DIR": t.TempDir(),
			"INITIAL_RATE_LIMIT": "1000", "MAX_RATE_LIMIT": "1000", "VEGA_CONCURRENCY_INITIAL": "64",
		}
		wg.Go(func() { procs[i] = startServerProcess(t, env) })
	}
	wg.Wait()
	for i, p := range procs {
		require.Eventually(t, func() bool {
			c := processStats(t, p).GetCluster()
			return c.GetReplicasSeen() == 3 && c.GetSubscribed()
		},
			10*time.Second, 20*time.Millisecond, "process %d never saw the fleet", i+1)
	}
	return procs
}

func processStats(t *testing.T, p *serverProcess) *vegav1.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(withKey(context.Background(), fleetAdminKey), 5*time.Second)
	defer cancel()
	st, err := vegav1.NewPerfAdminServiceClient(p.conn).GetStats(ctx, &vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{
		vegav1.StatsSection_STATS_SECTION_CLUSTER, vegav1.StatsSection_STATS_SECTION_REQUEST_COALESCING}})
	require.NoError(t, err)
	return st.GetStats()
}

// TestFleetSharesTheBackendError: identical calls on three replicas while
// the one backend call fails: one backend call, and every caller, on every
// replica, gets the same UNAVAILABLE.
func TestFleetSharesTheBackendError(t *testing.T) {
	backend := newGatedOllama(t)
	procs := startFleetProcesses(t, backend.URL)
	ctx := ctxTimeout(t, 60*time.Second)
	req := &vegav1.GenerateRequest{Model: "fail", Prompt: "a herd on a failing backend", Options: &vegav1.SamplingOptions{Temperature: zero()}}

	const perReplica = 10
	errs := make(chan error, 3*perReplica)
	for i := range 3 * perReplica {
		go func() {
			_, err := vegav1.NewGenerateServiceClient(procs[i%3].conn).Generate(ctx, req)
			errs <- err
		}()
	}
	// Every caller waits: on the leader's replica for its call, which has
	// reached the backend, on the others for the leader's flight.
	require.Eventually(t, func() bool {
		waiting := int64(0)
		for _, p := range procs {
			waiting += processStats(t, p).GetRequestCoalescing().GetWaiting()
		}
		return waiting == 3*perReplica && backend.calls.Load() > 0
	}, 20*time.Second, 20*time.Millisecond, "the callers never all waited")
	require.EqualValues(t, 1, backend.calls.Load())
	backend.open()

	var first *status.Status
	for range 3 * perReplica {
		st := requireCode(t, <-errs, codes.Unavailable)
		if first == nil {
			first = st
		}
		assert.Equal(t, first.Message(), st.Message(), "every caller gets the leader's error")
	}
	assert.EqualValues(t, 1, backend.calls.Load(), "one backend call for the whole fleet")
	waits := int64(0)
	for _, p := range procs {
		c := processStats(t, p).GetCluster()
		waits += c.GetRemoteWaits()
		assert.Zero(t, c.GetLeaseTakeovers())
	}
	assert.EqualValues(t, 2, waits, "the two other replicas waited for the leader's flight")
	assert.Empty(t, fleetCacheKeysOf(t, procs), "an error is never cached")
}

// fleetWaiters counts the waiters registered in Redis for the fleet's
// flights (what the leader checks before it cancels a call).
func fleetWaiters(t *testing.T, procs []*serverProcess) int64 {
	t.Helper()
	prefix := processStats(t, procs[0]).GetCluster().GetPrefix()
	rdb := redis.NewClient(&redis.Options{Addr: fleetRedisAddr})
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, prefix+":v1:f:*:w").Result()
	require.NoError(t, err)
	n := int64(0)
	for _, k := range keys {
		n += rdb.ZCard(ctx, k).Val()
	}
	return n
}

// fleetCacheKeysOf lists the fleet's cache keys through process 1's prefix.
func fleetCacheKeysOf(t *testing.T, procs []*serverProcess) []string {
	t.Helper()
	return fleetCacheKeys(t, processStats(t, procs[0]).GetCluster().GetPrefix())
}

// TestFleetCallOutlivesTheLeadersCaller: the only caller on the leader's
// replica leaves while a caller on another replica waits: the backend call
// goes on, and the waiting caller gets its answer — so does a caller that
// arrives on the leader's replica meanwhile — from one backend call.
func TestFleetCallOutlivesTheLeadersCaller(t *testing.T) {
	backend := newGatedOllama(t)
	procs := startFleetProcesses(t, backend.URL)
	ctx := ctxTimeout(t, 60*time.Second)
	req := &vegav1.GenerateRequest{Model: "llama3", Prompt: "the leader's caller leaves", Options: &vegav1.SamplingOptions{Temperature: zero()}}

	leaderCtx, leaderLeaves := context.WithCancel(ctx)
	defer leaderLeaves()
	leaderDone := make(chan error, 1)
	go func() {
		_, err := vegav1.NewGenerateServiceClient(procs[0].conn).Generate(leaderCtx, req)
		leaderDone <- err
	}()
	require.Eventually(t, func() bool { return backend.calls.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the leader never called")
	type answer struct {
		text, from string
		err        error
	}
	waiterDone := make(chan answer, 1)
	go func() {
		resp, from, err := generateServedFrom(ctx, vegav1.NewGenerateServiceClient(procs[1].conn), req)
		waiterDone <- answer{resp.GetText(), from, err}
	}()
	require.Eventually(t, func() bool { return fleetWaiters(t, procs) == 1 },
		10*time.Second, 10*time.Millisecond, "replica 2's caller never registered as the flight's waiter")

	leaderLeaves()
	requireCode(t, <-leaderDone, codes.Canceled)
	time.Sleep(1500 * time.Millisecond) // the leader's replica checked the fleet's waiters several times
	require.Zero(t, backend.cancelled.Load(), "the backend call was cancelled while replica 2's caller waited")

	// A new caller on the leader's replica, whose local flight was given
	// up: it starts a new one, which waits for the held call (never a
	// cancelled one) rather than calling the backend again.
	lateDone := make(chan answer, 1)
	go func() {
		resp, from, err := generateServedFrom(ctx, vegav1.NewGenerateServiceClient(procs[0].conn), req)
		lateDone <- answer{resp.GetText(), from, err}
	}()
	require.Eventually(t, func() bool { return processStats(t, procs[0]).GetCluster().GetRemoteWaits() == 1 },
		10*time.Second, 10*time.Millisecond, "the late caller never waited for the held flight")
	backend.open()
	for _, done := range []chan answer{waiterDone, lateDone} {
		got := <-done
		require.NoError(t, got.err)
		assert.Equal(t, "gated says: the leader's caller leaves", got.text)
		assert.Equal(t, policy.FromCoalesced, got.from)
	}
	assert.EqualValues(t, 1, backend.calls.Load(), "one backend call")
	assert.Zero(t, backend.cancelled.Load())
	assert.Positive(t, processStats(t, procs[0]).GetCluster().GetFlightsHeld(), "PerfAdmin's cluster section counts the call held for the fleet")
}

// TestFleetCallCancelledWhenEveryCallerLeft: the callers on the leader's
// replica and on the two others all leave: the backend call is cancelled
// (the backend sees it), and the next caller starts a new, live call.
func TestFleetCallCancelledWhenEveryCallerLeft(t *testing.T) {
	backend := newGatedOllama(t)
	procs := startFleetProcesses(t, backend.URL)
	ctx := ctxTimeout(t, 60*time.Second)
	req := &vegav1.GenerateRequest{Model: "llama3", Prompt: "everybody leaves", Options: &vegav1.SamplingOptions{Temperature: zero()}}

	callers, leave := context.WithCancel(ctx)
	defer leave()
	done := make(chan error, 3)
	call := func(p *serverProcess) {
		_, err := vegav1.NewGenerateServiceClient(p.conn).Generate(callers, req)
		done <- err
	}
	go call(procs[0])
	require.Eventually(t, func() bool { return backend.calls.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the leader never called")
	go call(procs[1])
	go call(procs[2])
	require.Eventually(t, func() bool { return fleetWaiters(t, procs) == 2 },
		10*time.Second, 10*time.Millisecond, "the other replicas' callers never registered as the flight's waiters")

	leave()
	for range 3 {
		requireCode(t, <-done, codes.Canceled)
	}
	require.Eventually(t, func() bool { return backend.cancelled.Load() == 1 }, 10*time.Second, 10*time.Millisecond,
		"the backend call outlived every caller in the fleet")
	assert.EqualValues(t, 1, backend.calls.Load())

	// A later caller does not join the cancelled call: it leads a new one.
	backend.open()
	resp, from, err := generateServedFrom(ctx, vegav1.NewGenerateServiceClient(procs[1].conn), req)
	require.NoError(t, err)
	assert.Equal(t, policy.FromBackend, from)
	assert.Equal(t, "gated says: everybody leaves", resp.GetText())
	assert.EqualValues(t, 2, backend.calls.Load())
}

// TestRedisURLForClusterRefused: the gateway does not start on a REDIS_URL
// it would only half understand (Cluster, several hosts in one URL); the
// message says what is supported and never shows the password. A Sentinel
// URL (master_name) is accepted.
func TestRedisURLForClusterRefused(t *testing.T) {
	for url, want := range map[string]string{
		"redis://u:s3cret@h1:6379,h2:6379/0":       "Redis Cluster and several hosts in one URL are not supported",
		"redis://u:s3cret@h1:6379/0?addr=h2:6379":  "Redis Cluster and several hosts in one URL are not supported",
		"redis-sentinel://u:s3cret@h1:26379/0":     "must look like redis://host:6379/0",
		"redis://u:s3cret@h1:26379/0?master_name=": "master_name must not be empty",
	} {
		_, err := LoadConfig("", func(k string) string { return map[string]string{"REDIS_URL": url}[k] })
		require.Error(t, err, url)
		assert.Contains(t, err.Error(), "REDIS_URL: ")
		assert.Contains(t, err.Error(), want, url)
		assert.NotContains(t, err.Error(), "s3cret")
	}
	cfg, err := LoadConfig("", func(k string) string {
		return map[string]string{"REDIS_URL": "redis://u:s3cret@sentinel1:26379/0?master_name=primary&addr=sentinel2:26379"}[k]
	})
	require.NoError(t, err, "a Sentinel URL")
	assert.Contains(t, cfg.RedisURL, "master_name=primary")
}
