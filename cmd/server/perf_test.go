package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// servedFrom calls Generate and returns the x-vega-served-from header.
func generateServedFrom(ctx context.Context, c vegav1.GenerateServiceClient, req *vegav1.GenerateRequest) (*vegav1.GenerateResponse, string, error) {
	var md metadata.MD
	resp, err := c.Generate(ctx, req, grpc.Header(&md))
	if v := md.Get(policy.ServedFromHeader); len(v) > 0 {
		return resp, v[0], err
	}
	return resp, "", err
}

func zero() *float64 { z := 0.0; return &z }

// TestHerdOfIdenticalGenerateMakesOneBackendCall is the headline: 100
// concurrent identical calls against a 400 ms backend make exactly one
// backend call; 50 distinct ones make 50. The limit is high enough for 50
// calls at once (the limiter sheds beyond its burst, see TestLimiterShedsABurst).
func TestHerdOfIdenticalGenerateMakesOneBackendCall(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL, "INITIAL_RATE_LIMIT": "1000", "MAX_RATE_LIMIT": "1000"})
	ctx := ctxTimeout(t, 30*time.Second)

	const n = 100
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		texts = map[string]int{}
		from  = map[string]int{}
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// BYPASS of the cache is not wanted here; temperature unset means
			// "not deterministic", so only coalescing can merge the calls.
			resp, sf, err := generateServedFrom(ctx, g.generate(), &vegav1.GenerateRequest{Model: "wait-400", Prompt: "the herd"})
			mu.Lock()
			defer mu.Unlock()
			if assert.NoError(t, err) {
				texts[resp.GetText()]++
				from[sf]++
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(1), ollama.calls.Load(), "exactly one backend call")
	assert.Equal(t, map[string]int{"ollama says: the herd": n}, texts)
	assert.Equal(t, map[string]int{"backend": 1, "coalesced": n - 1}, from)

	ollama.calls.Store(0)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "wait-400", Prompt: fmt.Sprintf("distinct %d", i)})
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(50), ollama.calls.Load(), "distinct requests are not merged")
}

func TestNotifyIsNeverCoalesced(t *testing.T) {
	slack := newFakeSlack(t)
	g := startGateway(t, map[string]string{"SLACK_WEBHOOK_URL": slack.URL + "/hook", "VEGA_NOTIFY_RATE": "1000", "VEGA_NOTIFY_BURST": "100"})
	ctx := ctxTimeout(t, 20*time.Second)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "identical"})
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.Equal(t, 20, slack.count("identical"))
}

func TestGenerateCacheModes(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL})
	ctx := ctxTimeout(t, 20*time.Second)
	call := func(req *vegav1.GenerateRequest) string {
		t.Helper()
		_, sf, err := generateServedFrom(ctx, g.generate(), req)
		require.NoError(t, err)
		return sf
	}
	det := func(prompt string, mode vegav1.CacheMode) *vegav1.GenerateRequest {
		return &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt, Options: &vegav1.SamplingOptions{Temperature: zero()},
			CacheControl: &vegav1.CacheControl{Mode: mode}}
	}

	// AUTO + deterministic: cached.
	assert.Equal(t, "backend", call(det("a", vegav1.CacheMode_CACHE_MODE_AUTO)))
	assert.Equal(t, "cache", call(det("a", vegav1.CacheMode_CACHE_MODE_AUTO)))
	assert.Equal(t, int64(1), ollama.calls.Load())

	// AUTO + not deterministic: never cached.
	nd := &vegav1.GenerateRequest{Model: "llama3", Prompt: "b"}
	assert.Equal(t, "backend", call(nd))
	assert.Equal(t, "backend", call(nd))
	assert.Equal(t, int64(3), ollama.calls.Load())

	// FORCE caches anyway.
	force := &vegav1.GenerateRequest{Model: "llama3", Prompt: "c", CacheControl: &vegav1.CacheControl{Mode: vegav1.CacheMode_CACHE_MODE_FORCE}}
	assert.Equal(t, "backend", call(force))
	assert.Equal(t, "cache", call(force))
	assert.Equal(t, int64(4), ollama.calls.Load())

	// BYPASS skips a cached answer; NO_STORE never stores.
	assert.Equal(t, "backend", call(det("a", vegav1.CacheMode_CACHE_MODE_BYPASS)))
	assert.Equal(t, "backend", call(det("d", vegav1.CacheMode_CACHE_MODE_NO_STORE)))
	assert.Equal(t, "backend", call(det("d", vegav1.CacheMode_CACHE_MODE_AUTO)))
	assert.Equal(t, int64(7), ollama.calls.Load())

	// Streams are cached too: the replay is the same chunk sequence.
	streamReq := &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "s", Options: &vegav1.SamplingOptions{Temperature: zero()}}
	first, err := g.generate().GenerateStream(ctx, streamReq)
	require.NoError(t, err)
	text1, _, n1 := drain(t, first)
	second, err := g.generate().GenerateStream(ctx, streamReq)
	require.NoError(t, err)
	text2, _, n2 := drain(t, second)
	hdr, err := second.Header()
	require.NoError(t, err)
	assert.Equal(t, []string{"cache"}, hdr.Get(policy.ServedFromHeader))
	assert.Equal(t, text1, text2)
	assert.Equal(t, n1, n2)
	assert.Equal(t, int64(8), ollama.calls.Load())

	// Failures are never cached.
	brokenReq := &vegav1.GenerateRequest{Model: "broken", Prompt: "x", Options: &vegav1.SamplingOptions{Temperature: zero()}}
	for range 2 {
		_, err := g.generate().Generate(ctx, brokenReq)
		requireCode(t, err, codes.Unavailable)
	}
	assert.Equal(t, int64(10), ollama.calls.Load())
}

func TestCacheIsScopedToTheTenant(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL, "VEGA_API_KEYS": "ka=alpha,kb=beta"})
	ctx := ctxTimeout(t, 10*time.Second)
	req := &vegav1.GenerateRequest{Model: "llama3", Prompt: "secret plans", Options: &vegav1.SamplingOptions{Temperature: zero()}}
	_, sf, err := generateServedFrom(withKey(ctx, "ka"), g.generate(), req)
	require.NoError(t, err)
	assert.Equal(t, "backend", sf)
	_, sf, err = generateServedFrom(withKey(ctx, "kb"), g.generate(), req)
	require.NoError(t, err)
	assert.Equal(t, "backend", sf, "another tenant never gets alpha's answer")
	_, sf, err = generateServedFrom(withKey(ctx, "ka"), g.generate(), req)
	require.NoError(t, err)
	assert.Equal(t, "cache", sf)
	assert.Equal(t, int64(2), ollama.calls.Load())
}

func TestBreakerOpensOnBackendFailuresOnly(t *testing.T) {
	ollama := newFakeOllama(t)
	// A generous rate limit, so that the limiter stays out of this test's way.
	g := startGateway(t, map[string]string{
		"VEGA_OLLAMA_URL": ollama.URL, "VEGA_ADMIN_API_KEY": "k", "INITIAL_RATE_LIMIT": "100", "MAX_RATE_LIMIT": "100",
	})
	ctx := ctxTimeout(t, 20*time.Second)

	// The caller's own short deadlines are not backend failures.
	for range 8 {
		_, err := g.generate().Generate(ctxTimeout(t, 50*time.Millisecond), &vegav1.GenerateRequest{Model: "slow", Prompt: "x"})
		requireCode(t, err, codes.DeadlineExceeded)
	}
	// Nor is bad input.
	for range 8 {
		_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "llama3"})
		requireCode(t, err, codes.InvalidArgument)
	}
	_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: "still closed"})
	require.NoError(t, err)

	// Five backend failures open it; then calls fail fast without reaching the backend.
	for range 5 {
		_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "broken", Prompt: "x"})
		requireCode(t, err, codes.Unavailable)
	}
	before := ollama.calls.Load()
	for range 20 {
		_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: "x"})
		st := requireCode(t, err, codes.Unavailable)
		assert.Contains(t, st.Message(), "circuit breaker")
		assert.Positive(t, policy.RetryDelay(st))
	}
	assert.Equal(t, before, ollama.calls.Load(), "an open breaker keeps calls off the backend")

	// An operator can force it closed.
	_, err = g.admin().SetBreakerMode(withKey(ctx, "k"), &vegav1.SetBreakerModeRequest{Key: "ollama", Mode: vegav1.BreakerMode_BREAKER_MODE_FORCE_CLOSED})
	require.NoError(t, err)
	_, err = g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: "x"})
	require.NoError(t, err)

	stats, err := g.admin().GetStats(withKey(ctx, "k"), &vegav1.GetStatsRequest{})
	require.NoError(t, err)
	var found bool
	for _, b := range stats.GetStats().GetCircuitBreakers().GetBreakers() {
		if b.GetKey() == "ollama" {
			found = true
			assert.Equal(t, "force-closed", b.GetMode())
			assert.GreaterOrEqual(t, b.GetRejected(), int64(20))
		}
	}
	assert.True(t, found)
}

func TestFetchCachingFollowsTheAnswer(t *testing.T) {
	var hits sync.Map // path → *atomic.Int64
	count := func(p string) int64 {
		v, _ := hits.LoadOrStore(p, new(atomic.Int64))
		return v.(*atomic.Int64).Load()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		switch r.URL.Path {
		case "/nostore":
			w.Header().Set("Cache-Control", "no-store")
		case "/private":
			w.Header().Set("Cache-Control", "private, max-age=60")
		case "/cookie":
			w.Header().Set("Set-Cookie", "a=b")
		case "/error":
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		case "/gone":
			http.Error(w, "gone", http.StatusGone)
			return
		}
		fmt.Fprint(w, "body of "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	g := startGateway(t, map[string]string{"VEGA_FETCH_ALLOW": "127.0.0.1/32"})
	ctx := ctxTimeout(t, 20*time.Second)
	fetch := func(path string, maxBytes int64) string {
		var md metadata.MD
		_, err := g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: srv.URL + path, MaxBytes: maxBytes}, grpc.Header(&md))
		require.NoError(t, err)
		return md.Get(policy.ServedFromHeader)[0]
	}
	for path, wantHits := range map[string]int64{"/plain": 1, "/nostore": 2, "/private": 2, "/cookie": 2, "/error": 2, "/gone": 1} {
		fetch(path, 0)
		fetch(path, 0)
		assert.Equal(t, wantHits, count(path), path)
	}
	assert.Equal(t, "cache", fetch("/plain", 0))
	// A truncated body is never stored.
	fetch("/long", 3)
	fetch("/long", 3)
	assert.Equal(t, int64(2), count("/long"))
}

func TestAdminPurgeAndSections(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL, "VEGA_ADMIN_API_KEY": "k"})
	ctx := ctxTimeout(t, 20*time.Second)
	req := &vegav1.GenerateRequest{Model: "llama3", Prompt: "p", Options: &vegav1.SamplingOptions{Temperature: zero()}}
	for range 3 {
		_, err := g.generate().Generate(ctx, req)
		require.NoError(t, err)
	}
	resp, err := g.admin().GetStats(withKey(ctx, "k"), &vegav1.GetStatsRequest{})
	require.NoError(t, err)
	st := resp.GetStats()
	assert.Equal(t, int64(2), st.GetCache().GetHits())
	assert.Equal(t, int64(1), st.GetCache().GetEntries())
	assert.InDelta(t, 66.7, st.GetCache().GetCacheHitRate(), 0.1)
	assert.Equal(t, int64(1), st.GetRequestCoalescing().GetFlights())
	require.NotEmpty(t, st.GetRateLimiters().GetLimiters())
	assert.Equal(t, "ollama", st.GetRateLimiters().GetLimiters()[0].GetKey())
	assert.Equal(t, int64(1), st.GetConnectionPool().GetRequests())
	require.NotEmpty(t, st.GetConnectionPool().GetHosts())

	purged, err := g.admin().PurgeCache(withKey(ctx, "k"), &vegav1.PurgeCacheRequest{Prefix: "generate/ollama/"})
	require.NoError(t, err)
	assert.Equal(t, int64(1), purged.GetPurged())
	_, sf, err := generateServedFrom(ctx, g.generate(), req)
	require.NoError(t, err)
	assert.Equal(t, "backend", sf)
	assert.Equal(t, int64(2), ollama.calls.Load())
}

// The issue 10 repro through the real gateway with the default
// configuration: 20 distinct calls at once to an idle backend that answers
// in 400 ms are all served (they queue for their turn: 2 OK and 18 refused
// before), and so are 50 at once under a 100/s rate ceiling.
func TestABurstTheBackendCanServeIsServed(t *testing.T) {
	for _, tc := range []struct {
		n   int
		env map[string]string
	}{
		{20, nil},
		{50, map[string]string{"INITIAL_RATE_LIMIT": "100", "MAX_RATE_LIMIT": "100", "VEGA_CONCURRENCY_INITIAL": "16"}},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			ollama := newFakeOllama(t)
			env := map[string]string{"VEGA_OLLAMA_URL": ollama.URL}
			for k, v := range tc.env {
				env[k] = v
			}
			g := startGateway(t, env)
			ctx := ctxTimeout(t, 30*time.Second)
			var wg sync.WaitGroup
			var failed atomic.Int64
			for i := range tc.n {
				wg.Go(func() {
					if _, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "wait-400", Prompt: fmt.Sprintf("burst %d", i)}); err != nil {
						failed.Add(1)
						t.Errorf("call %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			assert.Zero(t, failed.Load())
			assert.Equal(t, int64(tc.n), ollama.calls.Load(), "each call reached the backend once")
		})
	}
}

// A call whose turn cannot come before its deadline is refused at once,
// Trailers-Only, with RetryInfo and grpc-retry-pushback-ms (-1 when no retry
// fits the caller's deadline), and never reaches the backend.
func TestARefusalTellsClientsWhenToRetry(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL,
		"VEGA_CONCURRENCY_INITIAL": "1", "VEGA_CONCURRENCY_MIN": "1", "VEGA_CONCURRENCY_MAX": "1"})
	ctx := ctxTimeout(t, 30*time.Second)
	// One call teaches the limiter the service time (400 ms), one holds the slot.
	_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "wait-400", Prompt: "first"})
	require.NoError(t, err)
	held := make(chan error, 1)
	go func() {
		_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "wait-400", Prompt: "held"})
		held <- err
	}()
	require.Eventually(t, func() bool { return ollama.calls.Load() == 2 }, 5*time.Second, time.Millisecond)

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var header, trailer metadata.MD
	start := time.Now()
	_, err = g.generate().Generate(short, &vegav1.GenerateRequest{Model: "wait-400", Prompt: "late"}, grpc.Header(&header), grpc.Trailer(&trailer))
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	assert.Less(t, time.Since(start), 100*time.Millisecond, "refused at once")
	assert.Positive(t, policy.RetryDelay(status.Convert(err)), "RetryInfo")
	assert.Equal(t, []string{"-1"}, trailer.Get("grpc-retry-pushback-ms"), "no retry fits 200 ms")
	assert.Empty(t, header, "Trailers-Only: no header metadata at all, or stock clients never retry")
	require.NoError(t, <-held)
	assert.Equal(t, int64(2), ollama.calls.Load(), "the refused call never reached the backend")
}
