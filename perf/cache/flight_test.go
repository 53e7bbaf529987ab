package cache

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// fakeFlights plays the fleet's side of a flight from a script: what each
// Lead answers in turn ("lead", "lost", "down") and what each wait returns.
type fakeFlights struct {
	mu       sync.Mutex
	leads    []string // guarded by mu: answers still to give, in order
	waits    []bool   // guarded by mu
	handed   []byte   // guarded by mu: what a wait hands over
	finished [][]byte // guarded by mu: what each finish shared
	ttls     []time.Duration
	kept     []bool
	onWait   func() // runs inside wait (another gateway finishing)
}

func (f *fakeFlights) Lead(ctx context.Context, _ string) (context.Context, func([]byte, time.Duration, bool), func(context.Context) ([]byte, bool)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := "down"
	if len(f.leads) > 0 {
		next, f.leads = f.leads[0], f.leads[1:]
	}
	switch next {
	case "lead":
		return ctx, func(b []byte, ttl time.Duration, keep bool) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.finished = append(f.finished, b)
			f.ttls = append(f.ttls, ttl)
			f.kept = append(f.kept, keep)
		}, nil
	case "lost":
		return nil, nil, f.wait
	}
	return nil, nil, nil
}

func (f *fakeFlights) wait(context.Context) ([]byte, bool) {
	if f.onWait != nil {
		f.onWait()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ok := len(f.waits) > 0 && f.waits[0]
	if len(f.waits) > 0 {
		f.waits = f.waits[1:]
	}
	if ok {
		return f.handed, true
	}
	return nil, false
}

func TestFleetFill(t *testing.T) {
	req := ask("fleet", vegav1.CacheMode_CACHE_MODE_AUTO)
	key, err := policy.HashKey("acme", "/vega.v1.GenerateService/Generate", withoutCacheControl(req))
	require.NoError(t, err)
	setup := func(t *testing.T, fl *fakeFlights) (*harness, *memRemote) {
		t.Helper()
		remote := newMemRemote()
		s := Settings{Remote: remote, Flights: fl, DefaultTTL: time.Minute, StaleFor: 30 * time.Second, Jitter: 1e-9}
		return newHarness(t, s), remote
	}

	t.Run("leader shares through finish", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lead"}}
		h, remote := setup(t, fl)
		r := h.generate(t.Context(), "acme", req)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
		assert.EqualValues(t, 1, h.backend.calls.Load())
		require.Len(t, fl.finished, 1)
		e, err := decodeRemote(fl.finished[0], key, DefaultRemoteMaxBytes)
		require.NoError(t, err, "finish carries the encoded answer")
		assert.Equal(t, r.text, e.value.(*vegav1.GenerateResponse).GetText())
		assert.InDelta(t, float64(90*time.Second), float64(fl.ttls[0]), float64(time.Millisecond))
		assert.True(t, fl.kept[0])
		assert.Empty(t, remote.entries, "no second, asynchronous write")
		assert.Equal(t, policy.FromCache, h.generate(t.Context(), "acme", req).servedFrom, "kept locally too")
	})
	t.Run("waiter answers from the leader's entry", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lost"}, waits: []bool{true}}
		h, remote := setup(t, fl)
		fl.onWait = func() { // the leader, elsewhere, stores its answer
			b, ok := encodeRemote(key, &vegav1.GenerateResponse{Text: "from the leader"}, h.clock.Now().Add(time.Minute).UnixNano(), false)
			require.True(t, ok)
			remote.put(key, b)
		}
		r := h.generate(t.Context(), "acme", req)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromCoalesced, r.servedFrom)
		assert.Equal(t, "from the leader", r.text)
		assert.Zero(t, h.backend.calls.Load(), "no backend call here")
		assert.EqualValues(t, 1, h.cache.Stats().FleetCoalesced)
	})
	t.Run("owner gone: the waiter leads", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lost", "lead"}, waits: []bool{false}}
		h, _ := setup(t, fl)
		r := h.generate(t.Context(), "acme", req)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
		assert.EqualValues(t, 1, h.backend.calls.Load())
		assert.Len(t, fl.finished, 1)
	})
	t.Run("woken with nothing shared, three times: alone", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lost", "lost", "lost"}, waits: []bool{true, true, true}}
		h, remote := setup(t, fl)
		r := h.generate(t.Context(), "acme", req)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
		assert.EqualValues(t, 1, h.backend.calls.Load())
		assert.Len(t, remote.entries, 1, "alone: shared by the ordinary write")
	})
	t.Run("fleet down: alone", func(t *testing.T) {
		fl := &fakeFlights{}
		h, remote := setup(t, fl)
		require.NoError(t, h.generate(t.Context(), "acme", req).err)
		assert.EqualValues(t, 1, h.backend.calls.Load())
		assert.Len(t, remote.entries, 1)
		assert.Empty(t, fl.finished)
	})
	noStore := ask("fleet", vegav1.CacheMode_CACHE_MODE_NO_STORE)
	t.Run("not kept: the leader hands the answer over", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lead"}}
		h, remote := setup(t, fl)
		r := h.generate(t.Context(), "acme", noStore)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
		require.Len(t, fl.finished, 1)
		assert.False(t, fl.kept[0], "handed to the waiters, not kept")
		e, err := decodeRemote(fl.finished[0], key, DefaultRemoteMaxBytes)
		require.NoError(t, err)
		assert.Equal(t, r.text, e.value.(*vegav1.GenerateResponse).GetText())
		assert.Empty(t, remote.entries)
		assert.Zero(t, h.cache.Stats().Entries, "nor kept locally")
	})
	t.Run("not kept: a waiter serves what was handed over", func(t *testing.T) {
		b, ok := encodeRemote(key, &vegav1.GenerateResponse{Text: "handed over"}, 0, false)
		require.True(t, ok)
		fl := &fakeFlights{leads: []string{"lost"}, waits: []bool{true}, handed: b}
		h, _ := setup(t, fl)
		r := h.generate(t.Context(), "acme", noStore)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromCoalesced, r.servedFrom)
		assert.Equal(t, "handed over", r.text)
		assert.Zero(t, h.backend.calls.Load())
		assert.Zero(t, h.cache.Stats().Entries, "not kept")
	})
	t.Run("a bad hand-off is counted and the flight led again", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lost", "lead"}, waits: []bool{true}, handed: []byte("garbage")}
		h, _ := setup(t, fl)
		r := h.generate(t.Context(), "acme", noStore)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
		assert.EqualValues(t, 1, h.cache.Stats().RemoteBad)
	})
}
