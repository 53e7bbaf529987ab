package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// The Redis fleet tests run three gateways wired exactly as main wires
// them, sharing the real Redis on 127.0.0.1:6379 (.ci/run starts it)
// through an in-process toxiproxy, under a prefix of their own.

const fleetRedisAddr = "127.0.0.1:6379"

// Budgets (VEGA_REDIS_TIMEOUT) of the tests: the proxy and the race
// detector cost tens of ms per round trip on a loaded machine, so tests
// without faults take 1s (a slow round trip must not turn a shared answer
// into a backend call), and fault tests 250ms, still far below the 500ms
// fault.
const (
	fleetBudget = time.Second
	faultBudget = 250 * time.Millisecond
)

// fleetRedisPrefix returns a fresh VEGA_REDIS_PREFIX and removes its keys
// when the test ends.
func fleetRedisPrefix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "vegatest-" + hex.EncodeToString(b[:])
	rdb := redis.NewClient(&redis.Options{Addr: fleetRedisAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("Redis at %s is required (.ci/run starts it): %v", fleetRedisAddr, err)
	}
	t.Cleanup(func() {
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Unlink(ctx, iter.Val())
		}
	})
	return prefix
}

// fleetCacheKeys lists the prefix's cache keys in Redis.
func fleetCacheKeys(t *testing.T, prefix string) []string {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: fleetRedisAddr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), prefix+":v1:c:*").Result()
	require.NoError(t, err)
	return keys
}

// newFleetRedisProxy is toxiproxy between the gateways and Redis.
func newFleetRedisProxy(t *testing.T) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "redis", "127.0.0.1:0", fleetRedisAddr)
	require.NoError(t, p.Start())
	t.Cleanup(p.Stop)
	return p
}

// startRedisFleet starts three gateways on one fake Ollama and one Redis
// prefix, and waits until each sees the other two.
func startRedisFleet(t *testing.T, p *toxiproxy.Proxy, prefix string, ollama *fakeLLM, budget time.Duration) []*gateway {
	t.Helper()
	env := map[string]string{
		"REDIS_URL": "redis://" + p.Listen + "/0", "VEGA_REDIS_PREFIX": prefix,
		"VEGA_REDIS_TIMEOUT": budget.String(),
		"VEGA_OLLAMA_URL":    ollama.URL, "VEGA_ADMIN_API_KEY": fleetAdminKey,
		"INITIAL_RATE_LIMIT": "1000", "MAX_RATE_LIMIT": "1000", "VEGA_CONCURRENCY_INITIAL": "64",
	}
	gws := make([]*gateway, 3)
	for i := range gws {
		gws[i] = startGateway(t, env)
	}
	for i, g := range gws {
		require.Eventually(t, func() bool {
			c := clusterOf(t, g)
			return c.GetReplicasSeen() == 3 && c.GetSubscribed()
		}, 10*time.Second, 20*time.Millisecond, "replica %d never saw the fleet: %v", i, clusterOf(t, g))
	}
	return gws
}

func clusterOf(t *testing.T, g *gateway) *vegav1.ClusterStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(withKey(context.Background(), fleetAdminKey), 5*time.Second)
	defer cancel()
	st, err := g.admin().GetStats(ctx, &vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_CLUSTER}})
	require.NoError(t, err)
	return st.GetStats().GetCluster()
}

func deterministic(prompt string) *vegav1.GenerateRequest {
	return &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt, Options: &vegav1.SamplingOptions{Temperature: zero()}}
}

// TestFleetSharesTheCache: a deterministic answer cached by replica 1 is a
// cache hit on replica 2 with no second backend call; PurgeCache on
// replica 3 purges Redis and every replica's local tier.
func TestFleetSharesTheCache(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	ollama := newFakeOllama(t)
	gws := startRedisFleet(t, newFleetRedisProxy(t), prefix, ollama, fleetBudget)
	ctx := ctxTimeout(t, 30*time.Second)

	req := deterministic("one answer for the fleet")
	r1, from, err := generateServedFrom(ctx, gws[0].generate(), req)
	require.NoError(t, err)
	assert.Equal(t, policy.FromBackend, from)
	require.EqualValues(t, 1, ollama.calls.Load())
	require.Eventually(t, func() bool { return len(fleetCacheKeys(t, prefix)) == 1 }, 5*time.Second, 10*time.Millisecond,
		"replica 1's answer never reached Redis")
	assert.True(t, strings.HasPrefix(fleetCacheKeys(t, prefix)[0], prefix+":v1:c:generate/ollama/"), "the key is the cache key under the prefix")

	r2, from, err := generateServedFrom(ctx, gws[1].generate(), req)
	require.NoError(t, err)
	assert.Equal(t, policy.FromCache, from, "replica 2 answers from the fleet's tier")
	assert.Equal(t, r1.GetText(), r2.GetText())
	assert.EqualValues(t, 1, ollama.calls.Load(), "no second backend call")
	c2 := clusterOf(t, gws[1])
	assert.EqualValues(t, 1, c2.GetRemoteHits())
	assert.Zero(t, c2.GetRemoteBad())
	assert.Equal(t, "redis", c2.GetMode())
	assert.Positive(t, c2.GetRedisRttP50Ms())

	// Non-deterministic answers are not cached, locally or in Redis.
	_, from, err = generateServedFrom(ctx, gws[0].generate(), &vegav1.GenerateRequest{Model: "llama3", Prompt: "creative"})
	require.NoError(t, err)
	assert.Equal(t, policy.FromBackend, from)
	assert.Len(t, fleetCacheKeys(t, prefix), 1)

	// PurgeCache on replica 3, which never saw the answer: Redis is empty,
	// and replicas 1 and 2 drop their local copies.
	purged, err := gws[2].admin().PurgeCache(withKey(ctx, fleetAdminKey), &vegav1.PurgeCacheRequest{Prefix: "generate/"})
	require.NoError(t, err)
	assert.EqualValues(t, 1, purged.GetPurged(), "one Redis key, no local entry on replica 3")
	assert.Empty(t, fleetCacheKeys(t, prefix))
	for i, g := range gws[:2] {
		require.Eventually(t, func() bool {
			return g.srv.cache.Stats().Entries == 0 && clusterOf(t, g).GetPurgesReceived() == 1
		}, 5*time.Second, 10*time.Millisecond, "replica %d kept its local copy", i+1)
	}
	calls := ollama.calls.Load()
	_, from, err = generateServedFrom(ctx, gws[1].generate(), req)
	require.NoError(t, err)
	assert.Equal(t, policy.FromBackend, from, "after the purge the answer is asked again")
	assert.Equal(t, calls+1, ollama.calls.Load())
}

// TestFleetRedisTroubleIsInvisible runs steady traffic over three
// replicas — ten new keys every 250ms, each asked again and again — while
// Redis is, in turn, down, slow (500ms) and resetting connections: no
// caller sees an error, the backend sees each key at most once per
// replica, and the fleet shares its cache again once Redis is back.
func TestFleetRedisTroubleIsInvisible(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	ollama := newFakeOllama(t)
	p := newFleetRedisProxy(t)
	gws := startRedisFleet(t, p, prefix, ollama, faultBudget)
	ctx := ctxTimeout(t, 60*time.Second)

	var (
		distinct        sync.Map // every key asked
		begin           = time.Now()
		calls, failures atomic.Int64
		slowest         atomic.Int64
		mu              sync.Mutex
		errs            []string // guarded by mu
		stop            = make(chan struct{})
		wg              sync.WaitGroup
	)
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				g := gws[(w+i)%3]
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				start := time.Now()
				key := fmt.Sprintf("key-%d-%d", time.Since(begin)/(250*time.Millisecond), (w*7+i)%10)
				distinct.Store(key, true)
				_, err := g.generate().Generate(cctx, deterministic(key))
				cancel()
				took := time.Since(start)
				for old := slowest.Load(); int64(took) > old && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	phase := func(name string, d time.Duration, fault func() (heal func())) {
		t.Logf("phase %s", name)
		heal := fault()
		time.Sleep(d)
		heal()
	}
	time.Sleep(500 * time.Millisecond) // warm: every key asked once, shared through Redis
	phase("redis down", 1500*time.Millisecond, func() func() {
		p.Stop()
		return func() { require.NoError(t, p.Start()) }
	})
	phase("redis slow (500ms)", 1500*time.Millisecond, func() func() {
		_, err := p.Toxics.AddToxicJson(strings.NewReader(`{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":500}}`))
		require.NoError(t, err)
		return func() { require.NoError(t, p.Toxics.RemoveToxic(context.Background(), "slow")) }
	})
	phase("connections reset", 1500*time.Millisecond, func() func() {
		_, err := p.Toxics.AddToxicJson(strings.NewReader(`{"name":"reset","type":"reset_peer","stream":"downstream","attributes":{"timeout":0}}`))
		require.NoError(t, err)
		return func() { require.NoError(t, p.Toxics.RemoveToxic(context.Background(), "reset")) }
	})
	close(stop)
	wg.Wait()

	keys := 0
	distinct.Range(func(any, any) bool { keys++; return true })
	t.Logf("%d calls, %d keys, slowest %v, backend calls %d", calls.Load(), keys, time.Duration(slowest.Load()), ollama.calls.Load())
	assert.Zero(t, failures.Load(), "callers saw errors: %v", errs)
	assert.Greater(t, calls.Load(), int64(300), "too little traffic to mean anything")
	assert.LessOrEqual(t, ollama.calls.Load(), int64(keys*3), "backend calls beyond distinct keys × replicas")
	for i, g := range gws {
		c := clusterOf(t, g)
		t.Logf("replica %d: %+v", i+1, c)
		assert.Positive(t, c.GetBreakerOpens(), "replica %d never fell back", i+1)
		assert.Positive(t, c.GetRedisFallbacks(), "replica %d", i+1)
	}

	// Back: every replica uses Redis again, and shares a new answer.
	for i, g := range gws {
		require.Eventually(t, func() bool {
			_, _, err := generateServedFrom(ctx, g.generate(), deterministic("probe")) // traffic lets the breaker probe
			return err == nil && clusterOf(t, g).GetMode() == "redis"
		}, 10*time.Second, 50*time.Millisecond, "replica %d never rejoined Redis", i+1)
	}
	req := deterministic("after the storm")
	_, from, err := generateServedFrom(ctx, gws[0].generate(), req)
	require.NoError(t, err)
	require.Equal(t, policy.FromBackend, from)
	want := ollama.calls.Load()
	require.Eventually(t, func() bool {
		_, from, err := generateServedFrom(ctx, gws[2].generate(), req)
		return err == nil && from == policy.FromCache
	}, 5*time.Second, 20*time.Millisecond, "replica 3 never got replica 1's answer")
	assert.Equal(t, want, ollama.calls.Load(), "shared again: no backend call from replica 3")
}

func TestRedisConfig(t *testing.T) {
	cfg, err := LoadConfig("", func(string) string { return "" })
	require.NoError(t, err)
	assert.Equal(t, "vega", cfg.RedisPrefix)
	assert.Equal(t, 50*time.Millisecond, cfg.RedisTimeout)

	env := map[string]string{"REDIS_URL": "rediss://u:pw@redis.internal:6380/2", "VEGA_REDIS_PREFIX": "prod-eu", "VEGA_REDIS_TIMEOUT": "80ms"}
	cfg, err = LoadConfig("", func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, "prod-eu", cfg.RedisPrefix)
	assert.Equal(t, 80*time.Millisecond, cfg.RedisTimeout)

	for name, tc := range map[string]struct{ env map[string]string }{
		"REDIS_URL":          {map[string]string{"REDIS_URL": "redis://u:s3cret@host:6379/notadb"}},
		"VEGA_REDIS_PREFIX":  {map[string]string{"VEGA_REDIS_PREFIX": "a b"}},
		"VEGA_REDIS_TIMEOUT": {map[string]string{"VEGA_REDIS_TIMEOUT": "11s"}},
	} {
		_, err := LoadConfig("", func(k string) string { return tc.env[k] })
		require.Error(t, err, name)
		assert.True(t, strings.HasPrefix(err.Error(), name+":"), "%s: %v", name, err)
		assert.NotContains(t, err.Error(), "s3cret")
	}
}

// TestNoRedisNoFleet: without REDIS_URL the gateway has no fleet (no
// goroutine, no connection) and PerfAdmin no cluster section.
func TestNoRedisNoFleet(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_ADMIN_API_KEY": fleetAdminKey})
	assert.Nil(t, g.srv.fleet)
	assert.Nil(t, clusterOf(t, g))
}

// TestFleetOfProcessesSharesTheCache is the same fleet as three real
// gateway processes: replica 1's answer is a hit on replica 2, PurgeCache
// on replica 3 purges all, and Redis cut under load (the proxy down) costs
// no caller an error; once it is back the fleet shares answers again.
func TestFleetOfProcessesSharesTheCache(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	ollama := newFakeOllama(t)
	p := newFleetRedisProxy(t)
	env := map[string]string{
		"REDIS_URL": "redis://" + p.Listen + "/0", "VEGA_REDIS_PREFIX": prefix, "VEGA_REDIS_TIMEOUT": faultBudget.String(),
		"VEGA_OLLAMA_URL": ollama.URL, "VEGA_ADMIN_API_KEY": fleetAdminKey,
		"INITIAL_RATE_LIMIT": "1000", "MAX_RATE_LIMIT": "1000", "VEGA_CONCURRENCY_INITIAL": "64",
	}
	procs := make([]*serverProcess, 3)
	var wg sync.WaitGroup
	for i := range procs {
		own := map[string]string{"VEGA_DATA_DIR": t.TempDir()} // each its own outbox file
		for k, v := range env {
			own[k] = v
		}
		wg.Go(func() { procs[i] = startServerProcess(t, own) })
	}
	wg.Wait()
	ctx := ctxTimeout(t, 60*time.Second)
	cluster := func(p *serverProcess) *vegav1.ClusterStats {
		st, err := vegav1.NewPerfAdminServiceClient(p.conn).GetStats(withKey(ctx, fleetAdminKey),
			&vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_CLUSTER}})
		require.NoError(t, err)
		return st.GetStats().GetCluster()
	}
	gen := func(p *serverProcess, req *vegav1.GenerateRequest) (string, error) {
		_, from, err := generateServedFrom(ctx, vegav1.NewGenerateServiceClient(p.conn), req)
		return from, err
	}
	for i, p := range procs {
		require.Eventually(t, func() bool { c := cluster(p); return c.GetReplicasSeen() == 3 && c.GetSubscribed() },
			10*time.Second, 20*time.Millisecond, "process %d never saw the fleet", i+1)
	}

	req := deterministic("shared by processes")
	from, err := gen(procs[0], req)
	require.NoError(t, err)
	require.Equal(t, policy.FromBackend, from)
	require.Eventually(t, func() bool { return len(fleetCacheKeys(t, prefix)) == 1 }, 5*time.Second, 10*time.Millisecond)
	from, err = gen(procs[1], req)
	require.NoError(t, err)
	assert.Equal(t, policy.FromCache, from)
	assert.EqualValues(t, 1, ollama.calls.Load(), "one backend call for the fleet")

	_, err = vegav1.NewPerfAdminServiceClient(procs[2].conn).PurgeCache(withKey(ctx, fleetAdminKey), &vegav1.PurgeCacheRequest{})
	require.NoError(t, err)
	assert.Empty(t, fleetCacheKeys(t, prefix))
	for i, p := range procs[:2] {
		require.Eventually(t, func() bool { return cluster(p).GetPurgesReceived() == 1 }, 5*time.Second, 10*time.Millisecond, "process %d", i+1)
	}
	from, err = gen(procs[1], req)
	require.NoError(t, err)
	assert.Equal(t, policy.FromBackend, from, "process 2's local copy was purged too")
	assert.EqualValues(t, 2, ollama.calls.Load())

	// Redis cut under load: six callers, new keys every 200ms, for 3s with
	// the proxy down for the middle 1.5s.
	var (
		failures atomic.Int64
		total    atomic.Int64
		keys     sync.Map
		stop     = make(chan struct{})
		mu       sync.Mutex
		errs     []string // guarded by mu
	)
	begin := time.Now()
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("load-%d-%d", time.Since(begin)/(200*time.Millisecond), (w+i)%5)
				keys.Store(key, true)
				if _, err := gen(procs[(w+i)%3], deterministic(key)); err != nil {
					failures.Add(1)
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
				total.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	calls := ollama.calls.Load()
	time.Sleep(750 * time.Millisecond)
	p.Stop()
	time.Sleep(1500 * time.Millisecond)
	require.NoError(t, p.Start())
	time.Sleep(750 * time.Millisecond)
	close(stop)
	wg.Wait()
	distinct := 0
	keys.Range(func(any, any) bool { distinct++; return true })
	t.Logf("%d calls over %d keys, %d backend calls", total.Load(), distinct, ollama.calls.Load()-calls)
	assert.Zero(t, failures.Load(), "callers saw errors: %v", errs)
	assert.LessOrEqual(t, ollama.calls.Load()-calls, int64(distinct*3), "backend calls beyond keys × replicas")

	after := deterministic("after the cut")
	from, err = gen(procs[0], after)
	require.NoError(t, err)
	require.Equal(t, policy.FromBackend, from)
	require.Eventually(t, func() bool { from, err := gen(procs[2], after); return err == nil && from == policy.FromCache },
		10*time.Second, 50*time.Millisecond, "process 3 never shared process 1's answer after Redis came back")
}

// TestFleetCoalescesAcrossReplicas is issue 11's herd: 300 identical
// Generate calls spread over three replicas against a backend answering in
// 600ms make exactly one backend call, whether the answer is kept
// (deterministic: through the shared cache tier) or not (non-deterministic:
// handed to the flight's waiters only, nothing cached); the callers on the
// other replicas are woken by the leader's notice, not by polling.
func TestFleetCoalescesAcrossReplicas(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	ollama := newFakeOllama(t)
	gws := startRedisFleet(t, newFleetRedisProxy(t), prefix, ollama, fleetBudget)
	ctx := ctxTimeout(t, 60*time.Second)

	for _, tc := range []struct {
		name string
		req  *vegav1.GenerateRequest
	}{
		{"deterministic", &vegav1.GenerateRequest{Model: "wait-600", Prompt: "the fleet's herd", Options: &vegav1.SamplingOptions{Temperature: zero()}}},
		{"non-deterministic", &vegav1.GenerateRequest{Model: "wait-600", Prompt: "the fleet's creative herd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := ollama.calls.Load()
			coalescedBefore := make([]int64, 3)
			for i, g := range gws {
				coalescedBefore[i] = clusterOf(t, g).GetFleetCoalesced()
			}
			const n = 300
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				texts = map[string]int{}
				from  = map[string]int{}
				took  = make([][]time.Duration, 3) // per replica; guarded by mu
			)
			start := time.Now()
			for i := range n {
				wg.Go(func() {
					resp, sf, err := generateServedFrom(ctx, gws[i%3].generate(), tc.req)
					d := time.Since(start)
					mu.Lock()
					defer mu.Unlock()
					if assert.NoError(t, err) {
						texts[resp.GetText()]++
						from[sf]++
						took[i%3] = append(took[i%3], d)
					}
				})
			}
			wg.Wait()
			assert.Equal(t, calls+1, ollama.calls.Load(), "one backend call for the whole fleet")
			assert.Len(t, texts, 1, "every caller got the same answer")
			assert.Equal(t, map[string]int{policy.FromBackend: 1, policy.FromCoalesced: n - 1}, from)
			var leader, others time.Duration // the slowest caller on the leader's replica and on the others
			for i, g := range gws {
				slowest := slices.Max(took[i])
				if got := clusterOf(t, g).GetFleetCoalesced() - coalescedBefore[i]; got == 1 {
					others = max(others, slowest)
				} else {
					assert.Zero(t, got, "replica %d", i+1)
					leader = slowest
				}
			}
			t.Logf("slowest caller: leader's replica %v, other replicas %v", leader, others)
			assert.Less(t, others, leader+250*time.Millisecond, "remote waiters are woken by the notice")
			// The deterministic answer is cached; the non-deterministic one
			// is not (only handed to its flight's waiters).
			assert.Len(t, fleetCacheKeys(t, prefix), 1)
		})
	}
	for i, g := range gws {
		assert.Zero(t, clusterOf(t, g).GetLeaseTakeovers(), "replica %d", i+1)
	}
}

// TestFleetTakesOverFromADeadLeader: the replica leading a flight is
// killed (SIGKILL) while the backend works; the waiters on the other two
// replicas take the flight over once its lease expires (lease 3s + one 1s
// check) and their callers get the answer, with one more backend call.
func TestFleetTakesOverFromADeadLeader(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	ollama := newFakeOllama(t)
	p := newFleetRedisProxy(t)
	procs := make([]*serverProcess, 3)
	var wg sync.WaitGroup
	for i := range procs {
		env := map[string]string{
			"REDIS_URL": "redis://" + p.Listen + "/0", "VEGA_REDIS_PREFIX": prefix, "VEGA_REDIS_TIMEOUT": fleetBudget.String(),
			"VEGA_OLLAMA_URL": ollama.URL, "VEGA_DATA_DIR": t.TempDir(),
		}
		wg.Go(func() { procs[i] = startServerProcess(t, env) })
	}
	wg.Wait()
	ctx := ctxTimeout(t, 60*time.Second)
	req := &vegav1.GenerateRequest{Model: "wait-1500", Prompt: "the leader dies", Options: &vegav1.SamplingOptions{Temperature: zero()}}

	leaderDone := make(chan error, 1)
	go func() {
		_, err := vegav1.NewGenerateServiceClient(procs[0].conn).Generate(ctx, req)
		leaderDone <- err
	}()
	require.Eventually(t, func() bool { return ollama.calls.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the leader never called")
	type result struct {
		from string
		err  error
		took time.Duration
	}
	results := make(chan result, 2)
	start := time.Now()
	for _, w := range procs[1:] {
		go func() {
			_, from, err := generateServedFrom(ctx, vegav1.NewGenerateServiceClient(w.conn), req)
			results <- result{from, err, time.Since(start)}
		}()
	}
	time.Sleep(300 * time.Millisecond) // both wait for the leader
	procs[0].kill9(t)
	killed := time.Now()
	assert.Error(t, <-leaderDone, "the leader's own caller loses its connection")

	var froms []string
	for range 2 {
		r := <-results
		require.NoError(t, r.err, "a waiter's caller saw an error")
		froms = append(froms, r.from)
	}
	took := time.Since(killed)
	t.Logf("waiters answered %v after the kill (served from %v), backend calls %d", took, froms, ollama.calls.Load())
	assert.EqualValues(t, 2, ollama.calls.Load(), "one call by the dead leader, one by the replica that took over")
	assert.ElementsMatch(t, []string{policy.FromBackend, policy.FromCoalesced}, froms)
	assert.Less(t, took, 4*time.Second+1500*time.Millisecond+time.Second, "takeover bound (lease 3s + check 1s) + the backend's 1.5s + slack")
}
