package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// dripOllama is an Ollama whose /api/generate streams its first words at
// once, then holds the stream until the test releases it (or the request
// ends), then sends the rest: a generation in progress that late callers
// can be shown to join.
type dripOllama struct {
	*fakeLLM
	first, rest int
	mu          sync.Mutex
	release     chan struct{} // guarded by mu: the gate of the calls that start now
}

func newDripOllama(t *testing.T, first, rest int) *dripOllama {
	t.Helper()
	d := &dripOllama{fakeLLM: &fakeLLM{}, first: first, rest: rest, release: make(chan struct{})}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		gate := d.release // before the call is counted: a test that saw the count and opens the gate opens this one
		d.mu.Unlock()
		d.calls.Add(1)
		var req struct {
			Model  string `json:"model"`
			Prompt string `json:"prompt"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		word := func(i int) {
			_ = enc.Encode(map[string]any{"model": req.Model, "response": fmt.Sprintf(" w%d", i), "done": false})
			w.(http.Flusher).Flush()
		}
		for i := range d.first {
			word(i)
		}
		select {
		case <-gate:
		case <-r.Context().Done():
			d.cancelled.Add(1)
			return
		}
		for i := range d.rest {
			word(d.first + i)
		}
		_ = enc.Encode(map[string]any{"model": req.Model, "response": "", "done": true, "done_reason": "stop",
			"prompt_eval_count": 3, "eval_count": d.first + d.rest})
	}))
	t.Cleanup(d.Close)
	return d
}

// open releases the calls started so far; later ones wait for the next.
func (d *dripOllama) open() {
	d.mu.Lock()
	close(d.release)
	d.release = make(chan struct{})
	d.mu.Unlock()
}

// streamCall is one GenerateStream call read on a goroutine of its own.
type streamCall struct {
	mu     sync.Mutex
	chunks []*vegav1.GenerateStreamResponse
	from   string // x-vega-served-from
	err    error
	done   chan struct{}
}

func startStream(ctx context.Context, c vegav1.GenerateServiceClient, req *vegav1.GenerateStreamRequest) *streamCall {
	s := &streamCall{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		err := func() error {
			stream, err := c.GenerateStream(ctx, req)
			if err != nil {
				return err
			}
			for {
				m, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				s.mu.Lock()
				if len(s.chunks) == 0 {
					if hdr, err := stream.Header(); err == nil {
						s.from = strings.Join(hdr.Get(policy.ServedFromHeader), ",")
					}
				}
				s.chunks = append(s.chunks, m)
				s.mu.Unlock()
			}
		}()
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	return s
}

func (s *streamCall) n() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.chunks) }

func (s *streamCall) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream never ended")
	}
}

func (s *streamCall) text() string {
	var b strings.Builder
	for _, c := range s.chunks {
		b.WriteString(c.GetText())
	}
	return b.String()
}

// fleetStreamKeys lists the prefix's stream-flight keys in Redis.
func fleetStreamKeys(t *testing.T, prefix string) []string {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: fleetRedisAddr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), prefix+":v1:f:*:s:*").Result()
	require.NoError(t, err)
	return keys
}

// TestFleetStreamsJoinAcrossReplicas: a GenerateStream in progress on
// replica 1 is joined by identical calls on all three replicas after its
// first chunks were sent; the backend is called once, every caller gets
// every chunk from the first, identical to the leader's, the others marked
// coalesced.
func TestFleetStreamsJoinAcrossReplicas(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	const first, rest = 4, 6
	ollama := newDripOllama(t, first, rest)
	gws := startRedisFleet(t, newFleetRedisProxy(t), prefix, ollama.fakeLLM, fleetBudget)
	ctx := ctxTimeout(t, 90*time.Second)

	for _, tc := range []struct {
		name string
		req  *vegav1.GenerateStreamRequest
	}{
		{"non-deterministic", &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "the fleet's creative stream"}},
		{"deterministic", &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "the fleet's stream", Options: &vegav1.SamplingOptions{Temperature: zero()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := ollama.calls.Load()
			before := make([]*vegav1.ClusterStats, 3)
			for i, g := range gws {
				before[i] = clusterOf(t, g)
			}
			leader := startStream(ctx, gws[0].generate(), tc.req)
			require.Eventually(t, func() bool { return leader.n() == first }, 20*time.Second, 10*time.Millisecond,
				"the leader's first chunks never came")

			// Late joiners: two per replica, the leader's included.
			var late []*streamCall
			for i := range 6 {
				late = append(late, startStream(ctx, gws[i%3].generate(), tc.req))
			}
			for i, s := range late {
				require.Eventually(t, func() bool { return s.n() == first }, 20*time.Second, 10*time.Millisecond,
					"late caller %d (replica %d) did not replay the chunks sent before it came (%d)", i, i%3+1, s.n())
			}
			assert.Equal(t, calls+1, ollama.calls.Load(), "the late callers joined: no second backend call")
			ollama.open()

			leader.wait(t)
			require.NoError(t, leader.err)
			require.Len(t, leader.chunks, first+rest+1, "every word and the end")
			assert.Equal(t, " w0 w1 w2 w3 w4 w5 w6 w7 w8 w9", leader.text())
			assert.True(t, leader.chunks[len(leader.chunks)-1].GetDone())
			assert.Equal(t, policy.FromBackend, leader.from)
			for i, s := range late {
				s.wait(t)
				require.NoError(t, s.err, "late caller %d", i)
				require.Len(t, s.chunks, len(leader.chunks), "late caller %d", i)
				for j := range s.chunks {
					assert.True(t, proto.Equal(leader.chunks[j], s.chunks[j]), "late caller %d, chunk %d: %v, the leader's %v", i, j, s.chunks[j], leader.chunks[j])
				}
				assert.Equal(t, policy.FromCoalesced, s.from, "late caller %d", i)
			}
			assert.Equal(t, calls+1, ollama.calls.Load(), "one backend call for the whole fleet")
			after := make([]*vegav1.ClusterStats, 3)
			for i, g := range gws {
				after[i] = clusterOf(t, g)
			}
			assert.Equal(t, int64(1), after[0].GetStreamsLed()-before[0].GetStreamsLed(), "replica 1 led")
			for i := 1; i < 3; i++ {
				assert.Equal(t, int64(1), after[i].GetStreamJoins()-before[i].GetStreamJoins(),
					"replica %d followed once (its second caller joined its local flight)", i+1)
				assert.Equal(t, int64(1), after[i].GetFleetCoalesced()-before[i].GetFleetCoalesced(), "replica %d", i+1)
			}
		})
	}
	for i, g := range gws {
		c := clusterOf(t, g)
		assert.Zero(t, c.GetStreamTakeovers()+c.GetStreamsBroken()+c.GetStreamJoinsRefused(), "replica %d: %v", i+1, c)
	}
}

// TestFleetOneStream: the ordinary case in fleet mode: one stream call on
// one replica is served by the backend, whole, and shared in Redis as one
// flight's stream that ends.
func TestFleetOneStream(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	ollama := newFakeOllama(t)
	gws := startRedisFleet(t, newFleetRedisProxy(t), prefix, ollama, fleetBudget)
	ctx := ctxTimeout(t, 30*time.Second)

	s := startStream(ctx, gws[1].generate(), &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "just me"})
	s.wait(t)
	require.NoError(t, s.err)
	assert.Equal(t, "ollama says: just me", s.text())
	assert.True(t, s.chunks[len(s.chunks)-1].GetDone())
	assert.Equal(t, policy.FromBackend, s.from)
	assert.Equal(t, int64(1), ollama.calls.Load())
	// Written behind the callers' backs: soon one Redis stream, ended.
	rdb := redis.NewClient(&redis.Options{Addr: fleetRedisAddr})
	defer rdb.Close()
	require.Eventually(t, func() bool {
		keys := fleetStreamKeys(t, prefix)
		if len(keys) != 1 {
			return false
		}
		last, err := rdb.XRevRangeN(ctx, keys[0], "+", "-", 1).Result()
		return err == nil && len(last) == 1 && last[0].Values["k"] == "e" && last[0].Values["d"] == "0 "
	}, 10*time.Second, 20*time.Millisecond, "the flight was not shared as one Redis stream that ends OK")
	c := clusterOf(t, gws[1])
	assert.Equal(t, int64(1), c.GetStreamsLed())
	assert.Zero(t, c.GetStreamsBroken())
}

// TestFleetStreamsWithoutRedis: Redis gone, identical streams on three
// replicas are served as without a fleet: no caller error, each replica's
// callers share its own backend call.
func TestFleetStreamsWithoutRedis(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	ollama := newDripOllama(t, 2, 3)
	p := newFleetRedisProxy(t)
	gws := startRedisFleet(t, p, prefix, ollama.fakeLLM, faultBudget)
	p.Stop()
	ctx := ctxTimeout(t, 60*time.Second)

	req := &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "no redis"}
	var calls []*streamCall
	for i := range 3 {
		calls = append(calls, startStream(ctx, gws[i].generate(), req))
	}
	for _, s := range calls {
		require.Eventually(t, func() bool { return s.n() == 2 }, 20*time.Second, 10*time.Millisecond, "the first chunks never came")
	}
	for i := range 3 { // a second caller per replica joins its replica's flight
		calls = append(calls, startStream(ctx, gws[i].generate(), req))
	}
	for _, s := range calls[3:] {
		require.Eventually(t, func() bool { return s.n() == 2 }, 20*time.Second, 10*time.Millisecond, "the local joiner did not replay")
	}
	ollama.open()
	for i, s := range calls {
		s.wait(t)
		require.NoError(t, s.err, "caller %d", i)
		assert.Equal(t, " w0 w1 w2 w3 w4", s.text(), "caller %d", i)
	}
	assert.Equal(t, int64(3), ollama.calls.Load(), "one backend call per replica, as without a fleet")
	for i, g := range gws {
		assert.Zero(t, clusterOf(t, g).GetStreamJoins(), "replica %d", i+1)
	}
}

// newPacedOllama is an Ollama whose /api/generate streams words words, one
// every gap: a generation that lasts, so faults land mid-stream.
func newPacedOllama(t *testing.T, words int, gap time.Duration) *fakeLLM {
	t.Helper()
	f := &fakeLLM{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		var req struct {
			Model string `json:"model"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for i := range words {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				f.cancelled.Add(1)
				return
			}
			_ = enc.Encode(map[string]any{"model": req.Model, "response": fmt.Sprintf(" w%d", i), "done": false})
			w.(http.Flusher).Flush()
		}
		_ = enc.Encode(map[string]any{"model": req.Model, "response": "", "done": true, "done_reason": "stop", "eval_count": words})
	}))
	t.Cleanup(f.Close)
	return f
}

// TestFleetStreamsRedisTroubleIsInvisible: identical streams on the three
// replicas at once, each lasting 500 ms, followed across replicas, while
// Redis goes down, then slow (500 ms), then resets connections: no caller
// sees an error or a short stream.
func TestFleetStreamsRedisTroubleIsInvisible(t *testing.T) {
	prefix := fleetRedisPrefix(t)
	const words = 10
	ollama := newPacedOllama(t, words, 50*time.Millisecond)
	p := newFleetRedisProxy(t)
	gws := startRedisFleet(t, p, prefix, ollama, faultBudget)
	ctx := ctxTimeout(t, 90*time.Second)
	var want strings.Builder
	for i := range words {
		fmt.Fprintf(&want, " w%d", i)
	}

	var (
		begin = time.Now()
		mu    sync.Mutex
		calls int
		errs  []string // guarded by mu
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	// Three workers; each asks a prompt of its own on the three replicas
	// at once, again and again: one replica leads, two follow.
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req := &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: fmt.Sprintf("s-%d-%d", w, i)}
				var round []*streamCall
				start := time.Now()
				for _, g := range gws {
					round = append(round, startStream(ctx, g.generate(), req))
				}
				for r, s := range round {
					<-s.done
					mu.Lock()
					calls++
					switch {
					case s.err != nil:
						errs = append(errs, fmt.Sprintf("%v (%q, replica %d, started at %v, ended at %v)", s.err, req.Prompt, r+1, start.Sub(begin), time.Since(begin)))
					case s.text() != want.String():
						errs = append(errs, "short stream: "+s.text())
					}
					mu.Unlock()
				}
			}
		})
	}
	phase := func(name string, fault func() (heal func())) {
		t.Logf("phase %s at %v", name, time.Since(begin))
		heal := fault()
		time.Sleep(1500 * time.Millisecond)
		heal()
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	phase("redis down", func() func() {
		p.Stop()
		return func() { require.NoError(t, p.Start()) }
	})
	phase("redis slow (500ms)", func() func() {
		_, err := p.Toxics.AddToxicJson(strings.NewReader(`{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":500}}`))
		require.NoError(t, err)
		return func() { require.NoError(t, p.Toxics.RemoveToxic(context.Background(), "slow")) }
	})
	phase("connections reset", func() func() {
		_, err := p.Toxics.AddToxicJson(strings.NewReader(`{"name":"reset","type":"reset_peer","stream":"downstream","attributes":{"timeout":0}}`))
		require.NoError(t, err)
		return func() { require.NoError(t, p.Toxics.RemoveToxic(context.Background(), "reset")) }
	})
	close(stop)
	wg.Wait()

	var joins, broken, takeovers int64
	for i, g := range gws {
		c := clusterOf(t, g)
		t.Logf("replica %d: %v", i+1, c)
		joins, broken, takeovers = joins+c.GetStreamJoins(), broken+c.GetStreamsBroken(), takeovers+c.GetStreamTakeovers()
	}
	t.Logf("%d streams, %d backend calls, %d follows, %d broken, %d takeovers", calls, ollama.calls.Load(), joins, broken, takeovers)
	assert.Empty(t, errs, "callers saw errors or short streams")
	assert.GreaterOrEqual(t, calls, 18, "too little traffic to mean anything")
	assert.GreaterOrEqual(t, joins, int64(6), "too few streams followed across replicas: the fleet path was not exercised")
}

// TestFleetStreamLeaderKilled pins the fallback rule with real processes:
// the replica leading a stream is killed (SIGKILL) mid-flight. A follower
// that has sent its callers chunks ends them with UNAVAILABLE and never
// calls the backend (no second generation spliced on the first); one that
// has sent nothing takes the flight over and serves the whole stream from
// its own backend call.
func TestFleetStreamLeaderKilled(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first int // chunks sent before the backend holds
	}{
		{"chunks sent: unavailable", 3},
		{"nothing sent: taken over", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fleetRedisPrefix(t)
			ollama := newDripOllama(t, tc.first, 2)
			p := newFleetRedisProxy(t)
			procs := make([]*serverProcess, 2)
			var wg sync.WaitGroup
			for i := range procs {
				env := map[string]string{
					"REDIS_URL": "redis://" + p.Listen + "/0", "VEGA_REDIS_PREFIX": prefix, "VEGA_REDIS_TIMEOUT": fleetBudget.String(),
					"VEGA_OLLAMA_URL": ollama.URL, "VEGA_DATA_DIR": t.TempDir(), "VEGA_ADMIN_API_KEY": fleetAdminKey,
				}
				wg.Go(func() { procs[i] = startServerProcess(t, env) })
			}
			wg.Wait()
			ctx := ctxTimeout(t, 60*time.Second)
			req := &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "the leader dies mid-stream"}
			joins := func() int64 {
				st, err := vegav1.NewPerfAdminServiceClient(procs[1].conn).GetStats(withKey(ctx, fleetAdminKey),
					&vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_CLUSTER}})
				require.NoError(t, err)
				return st.GetStats().GetCluster().GetStreamJoins()
			}

			leader := startStream(ctx, vegav1.NewGenerateServiceClient(procs[0].conn), req)
			require.Eventually(t, func() bool { return ollama.calls.Load() == 1 && leader.n() == tc.first }, 20*time.Second, 5*time.Millisecond, "the leader never called")
			follower := startStream(ctx, vegav1.NewGenerateServiceClient(procs[1].conn), req)
			require.Eventually(t, func() bool { return joins() == 1 && follower.n() == tc.first }, 20*time.Second, 10*time.Millisecond, "replica 2 never followed")
			procs[0].kill9(t)
			killed := time.Now()
			leader.wait(t)
			require.Error(t, leader.err, "the leader's own caller loses its connection")

			if tc.first > 0 {
				follower.wait(t)
				requireCode(t, follower.err, codes.Unavailable)
				assert.Len(t, follower.chunks, tc.first, "what it had, nothing after")
				assert.EqualValues(t, 1, ollama.calls.Load(), "no second generation")
			} else {
				require.Eventually(t, func() bool { return ollama.calls.Load() == 2 }, 20*time.Second, 10*time.Millisecond, "replica 2 never took over")
				ollama.open()
				follower.wait(t)
				require.NoError(t, follower.err)
				assert.Equal(t, " w0 w1", follower.text())
				assert.Equal(t, policy.FromBackend, follower.from)
			}
			t.Logf("the follower ended %v after the kill", time.Since(killed))
		})
	}
}

// TestFleetStreamLeadersCallerLeaves: the leader's own caller leaves while
// a follower on another replica reads the stream (with chunks sent or
// not yet): the leader's backend stream goes on for the follower, which
// gets all of it, with one backend call.
func TestFleetStreamLeadersCallerLeaves(t *testing.T) {
	for _, first := range []int{3, 0} {
		t.Run(fmt.Sprintf("%d chunks sent", first), func(t *testing.T) {
			prefix := fleetRedisPrefix(t)
			ollama := newDripOllama(t, first, 2)
			gws := startRedisFleet(t, newFleetRedisProxy(t), prefix, ollama.fakeLLM, fleetBudget)
			ctx := ctxTimeout(t, 60*time.Second)
			req := &vegav1.GenerateStreamRequest{Model: "llama3", Prompt: "the leader's caller leaves"}

			leaderCtx, leave := context.WithCancel(ctx)
			defer leave()
			leader := startStream(leaderCtx, gws[0].generate(), req)
			require.Eventually(t, func() bool { return ollama.calls.Load() == 1 && leader.n() == first }, 20*time.Second, 5*time.Millisecond, "the leader never called")
			follower := startStream(ctx, gws[1].generate(), req)
			require.Eventually(t, func() bool { return clusterOf(t, gws[1]).GetStreamJoins() == 1 && follower.n() == first }, 20*time.Second, 10*time.Millisecond, "replica 2 never followed")
			leave()
			leader.wait(t)
			requireCode(t, leader.err, codes.Canceled)
			time.Sleep(500 * time.Millisecond) // the leader's flight has seen its callers go (and its follower)
			ollama.open()

			follower.wait(t)
			require.NoError(t, follower.err)
			want := ""
			for i := range first + 2 {
				want += fmt.Sprintf(" w%d", i)
			}
			assert.Equal(t, want, follower.text(), "the whole stream")
			assert.Equal(t, policy.FromCoalesced, follower.from)
			assert.EqualValues(t, 1, ollama.calls.Load(), "the leader's call went on for the follower")
			assert.Zero(t, ollama.cancelled.Load())
			assert.Zero(t, clusterOf(t, gws[0]).GetStreamsBroken())
		})
	}
}
