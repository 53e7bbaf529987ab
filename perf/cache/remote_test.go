package cache

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// memRemote is an in-memory Remote shared by the caches of a test fleet;
// it records what it was asked.
type memRemote struct {
	mu      sync.Mutex
	entries map[string][]byte        // guarded by mu
	ttls    map[string]time.Duration // guarded by mu
	purged  []string                 // guarded by mu
	down    atomic.Bool              // Get misses, Set drops, Purge fails
	gets    atomic.Int64
}

func newMemRemote() *memRemote {
	return &memRemote{entries: map[string][]byte{}, ttls: map[string]time.Duration{}}
}

func (r *memRemote) Get(_ context.Context, key string) ([]byte, bool) {
	r.gets.Add(1)
	if r.down.Load() {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.entries[key]
	return b, ok
}

func (r *memRemote) Set(key string, val []byte, ttl time.Duration) {
	if r.down.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries[key], r.ttls[key] = val, ttl
}

func (r *memRemote) Purge(_ context.Context, prefix string) (int, error) {
	if r.down.Load() {
		return 0, context.DeadlineExceeded
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.purged = append(r.purged, prefix)
	n := 0
	for k := range r.entries {
		if strings.HasPrefix(k, prefix) {
			delete(r.entries, k)
			n++
		}
	}
	return n, nil
}

func (r *memRemote) put(key string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries[key] = b
}

func (r *memRemote) only(t *testing.T) (string, []byte, time.Duration) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Len(t, r.entries, 1)
	for k, v := range r.entries {
		return k, v, r.ttls[k]
	}
	return "", nil, 0
}

func TestRemoteEncodingRoundTrip(t *testing.T) {
	unary := &vegav1.GenerateResponse{Text: "hello", Model: "m", FinishReason: "stop"}
	stream := []proto.Message{&vegav1.GenerateStreamResponse{Text: "a"}, &vegav1.GenerateStreamResponse{Text: "b", Done: true}}
	for _, tc := range []struct {
		name     string
		v        any
		negative bool
	}{
		{"unary", unary, false},
		{"negative", unary, true},
		{"stream", stream, false},
		{"empty stream", []proto.Message{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := encodeRemote("k1", tc.v, 12345, tc.negative)
			require.True(t, ok)
			e, err := decodeRemote(b, "k1", DefaultRemoteMaxBytes)
			require.NoError(t, err)
			assert.Equal(t, int64(12345), e.freshUntil)
			assert.Equal(t, tc.negative, e.negative)
			switch want := tc.v.(type) {
			case proto.Message:
				assert.True(t, proto.Equal(want, e.value.(proto.Message)), "got %v", e.value)
			case []proto.Message:
				got := e.value.([]proto.Message)
				require.Len(t, got, len(want))
				for i := range want {
					assert.True(t, proto.Equal(want[i], got[i]))
				}
			}
		})
	}
	_, ok := encodeRemote("k", "not a message", 1, false)
	assert.False(t, ok)
	_, ok = encodeRemote("k", []proto.Message{&vegav1.GenerateStreamResponse{}, &vegav1.GenerateResponse{}}, 1, false)
	assert.False(t, ok, "a stream of two types is not shared")
}

func TestRemoteBadEntriesAreIgnoredAndCounted(t *testing.T) {
	good, ok := encodeRemote("k", &vegav1.GenerateResponse{Text: "x"}, 1, false)
	require.True(t, ok)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		max  int
	}{
		{"empty", nil, DefaultRemoteMaxBytes},
		{"magic", mut(func(b []byte) []byte { b[0] = 'x'; return b }), DefaultRemoteMaxBytes},
		{"version 2", mut(func(b []byte) []byte { b[3] = 2; return b }), DefaultRemoteMaxBytes},
		{"flags", mut(func(b []byte) []byte { b[4] = 0x80; return b }), DefaultRemoteMaxBytes},
		{"truncated", good[:len(good)-1], DefaultRemoteMaxBytes},
		{"trailing", append(append([]byte(nil), good...), 0), DefaultRemoteMaxBytes},
		{"above the size bound", good, len(good) - 1},
		{"unknown type", mut(func(b []byte) []byte {
			i := strings.Index(string(b), "vega.v1.GenerateResponse")
			b[i] = 'x'
			return b
		}), DefaultRemoteMaxBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRemote(tc.b, "k", tc.max)
			require.ErrorIs(t, err, errBadEntry)
		})
	}
	_, err := decodeRemote(good, "other", DefaultRemoteMaxBytes)
	require.ErrorIs(t, err, errBadEntry, "an entry stored under another key")

	// Through the interceptors: a bad entry is a miss (the backend answers),
	// counted once, and the good answer replaces it.
	remote := newMemRemote()
	h := newHarness(t, Settings{Remote: remote})
	req := ask("bad", vegav1.CacheMode_CACHE_MODE_AUTO)
	key, err := policy.HashKey("acme", vegav1.GenerateService_Generate_FullMethodName, withoutCacheControl(req))
	require.NoError(t, err)
	remote.put(key, mut(func(b []byte) []byte { b[3] = 9; return b }))
	r := h.generate(t.Context(), "acme", req)
	require.NoError(t, r.err)
	assert.Equal(t, policy.FromBackend, r.servedFrom)
	assert.EqualValues(t, 1, h.backend.calls.Load())
	st := h.cache.Stats()
	assert.EqualValues(t, 1, st.RemoteBad)
	assert.Zero(t, st.RemoteHits)
	_, b, _ := remote.only(t)
	_, err = decodeRemote(b, key, DefaultRemoteMaxBytes)
	assert.NoError(t, err, "the backend's answer replaced the bad entry")
}

// TestRemoteTierSharesAnswers is two gateways of one fleet: an answer one
// stored is a hit on the other, with no backend call there, and then a
// local hit that asks the remote nothing.
func TestRemoteTierSharesAnswers(t *testing.T) {
	remote := newMemRemote()
	clk := newFakeClock()
	s := Settings{Remote: remote, DefaultTTL: time.Minute, StaleFor: 30 * time.Second, Jitter: 1e-9}
	g1, g2 := newHarnessOn(t, s, clk), newHarnessOn(t, s, clk)

	req := ask("shared", vegav1.CacheMode_CACHE_MODE_AUTO)
	r1 := g1.generate(t.Context(), "acme", req)
	require.NoError(t, r1.err)
	assert.Equal(t, policy.FromBackend, r1.servedFrom)
	_, _, ttl := remote.only(t)
	assert.InDelta(t, float64(90*time.Second), float64(ttl), float64(time.Millisecond), "hard TTL = fresh TTL + stale window")

	gets := remote.gets.Load()
	r2 := g2.generate(t.Context(), "acme", req)
	require.NoError(t, r2.err)
	assert.Equal(t, policy.FromCache, r2.servedFrom)
	assert.Equal(t, r1.text, r2.text)
	assert.Zero(t, g2.backend.calls.Load(), "the second gateway did not call its backend")
	assert.Equal(t, gets+1, remote.gets.Load(), "a local miss costs one remote round trip")
	assert.EqualValues(t, 1, g2.cache.Stats().RemoteHits)

	gets = remote.gets.Load()
	r3 := g2.generate(t.Context(), "acme", req)
	assert.Equal(t, policy.FromCache, r3.servedFrom)
	assert.Equal(t, gets, remote.gets.Load(), "a local hit asks the remote nothing")

	// Another tenant's identical request is another key: a miss everywhere.
	r4 := g2.generate(t.Context(), "globex", req)
	assert.Equal(t, policy.FromBackend, r4.servedFrom)
	assert.EqualValues(t, 1, g2.backend.calls.Load())

	// Streams are shared too.
	sreq := &vegav1.GenerateStreamRequest{Model: "m", Prompt: "streamed"}
	s1 := g1.generateStream(t.Context(), sreq)
	require.NoError(t, s1.err)
	s2 := g2.generateStream(t.Context(), sreq)
	require.NoError(t, s2.err)
	assert.Equal(t, policy.FromCache, s2.servedFrom)
	assert.Equal(t, s1.chunks, s2.chunks)
	assert.Zero(t, g2.backend.streams.Load())
}

// TestRemoteStaleWhileRevalidate: an entry past its TTL but within the
// stale window is served stale by a gateway that never had it, while one
// refresh asks the backend; past the window it is a miss.
func TestRemoteStaleWhileRevalidate(t *testing.T) {
	remote := newMemRemote()
	clk := newFakeClock()
	s := Settings{Remote: remote, DefaultTTL: time.Minute, StaleFor: 30 * time.Second, Jitter: 1e-9}
	g1, g2, g3 := newHarnessOn(t, s, clk), newHarnessOn(t, s, clk), newHarnessOn(t, s, clk)
	req := ask("aging", vegav1.CacheMode_CACHE_MODE_AUTO)
	require.NoError(t, g1.generate(t.Context(), "acme", req).err)

	clk.Advance(70 * time.Second)
	r := g2.generate(t.Context(), "acme", req)
	require.NoError(t, r.err)
	assert.Equal(t, policy.FromStale, r.servedFrom)
	waitFor(t, "the refresh", func() bool { return g2.backend.calls.Load() == 1 })

	clk.Advance(25 * time.Second) // 95s: past g1's stale window; g2's refresh stored a new answer
	r = g3.generate(t.Context(), "acme", req)
	assert.Equal(t, policy.FromCache, r.servedFrom, "the refreshed answer was shared")
	assert.Zero(t, g3.backend.calls.Load())
}

func TestRemoteDownIsALocalCache(t *testing.T) {
	remote := newMemRemote()
	remote.down.Store(true)
	h := newHarness(t, Settings{Remote: remote})
	req := ask("down", vegav1.CacheMode_CACHE_MODE_AUTO)
	for range 3 {
		require.NoError(t, h.generate(t.Context(), "acme", req).err)
	}
	assert.EqualValues(t, 1, h.backend.calls.Load(), "the local tier still serves")
	assert.EqualValues(t, 1, h.cache.Stats().RemoteMisses)
	assert.Equal(t, 1, h.cache.Purge(""), "a failed remote purge still purges locally")
}

func TestPurgeReachesTheRemote(t *testing.T) {
	remote := newMemRemote()
	c := newTestCache(t, newFakeClock(), Settings{Remote: remote})
	c.Set("fetch/a/1", &vegav1.GenerateResponse{Text: "1"}, 1, 0, false)
	c.Set("fetch/b/1", &vegav1.GenerateResponse{Text: "2"}, 1, 0, false)
	assert.Equal(t, 2, c.Purge("fetch/a/"), "one local entry and one remote key")
	assert.Equal(t, []string{"fetch/a/"}, remote.purged)
	assert.Equal(t, 1, c.PurgeLocal("fetch/b/"))
	assert.Equal(t, []string{"fetch/a/"}, remote.purged, "PurgeLocal stays local")
	key, _, _ := remote.only(t)
	assert.Equal(t, "fetch/b/1", key)

	// Above RemoteMaxBytes: kept local.
	small := newTestCache(t, newFakeClock(), Settings{Remote: newMemRemote(), RemoteMaxBytes: 10})
	small.Set("k", &vegav1.GenerateResponse{Text: strings.Repeat("x", 100)}, 102, 0, false)
	assert.EqualValues(t, 1, small.Stats().RemoteSkipped)
}
