package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// fakeFlights plays the fleet's side of a flight from a script: what each
// Lead answers in turn ("lead", "lost", "down") and what each wait returns.
type fakeFlights struct {
	mu       sync.Mutex
	leads    []string   // guarded by mu: answers still to give, in order
	waits    []bool     // guarded by mu
	handed   []byte     // guarded by mu: what a wait hands over
	tier     *memRemote // a wait that hands nothing over returns the tier's entry, as the fleet reads it
	finished [][]byte   // guarded by mu: what each finish shared
	ttls     []time.Duration
	kept     []bool
	onWait   func() // runs inside wait (another gateway finishing)
}

func (f *fakeFlights) Lead(ctx context.Context, key string) (context.Context, func([]byte, time.Duration, bool), func(context.Context) ([]byte, bool, bool)) {
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
		return nil, nil, func(ctx context.Context) ([]byte, bool, bool) { return f.wait(ctx, key) }
	}
	return nil, nil, nil
}

func (f *fakeFlights) wait(_ context.Context, key string) ([]byte, bool, bool) {
	if f.onWait != nil {
		f.onWait()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ok := len(f.waits) > 0 && f.waits[0]
	if len(f.waits) > 0 {
		f.waits = f.waits[1:]
	}
	switch {
	case !ok:
		return nil, false, false
	case f.handed != nil:
		return f.handed, false, true
	}
	if f.tier != nil {
		if b, found := f.tier.Get(context.Background(), key); found {
			return b, true, true
		}
	}
	return nil, false, false // no lease, no answer: nothing shared
}

func TestFleetFill(t *testing.T) {
	req := ask("fleet", vegav1.CacheMode_CACHE_MODE_AUTO)
	key, err := policy.HashKey("acme", "/vega.v1.GenerateService/Generate", withoutCacheControl(req))
	require.NoError(t, err)
	setup := func(t *testing.T, fl *fakeFlights) (*harness, *memRemote) {
		t.Helper()
		remote := newMemRemote()
		fl.tier = remote
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
	t.Run("a caller that may not read the cache is served only a handed-over answer", func(t *testing.T) {
		// The flight ends with its answer kept in the tier; a BYPASS caller
		// must not be served that entry (the same setup serves an AUTO
		// caller from it: "waiter answers from the leader's entry").
		fl := &fakeFlights{leads: []string{"lost", "lead"}, waits: []bool{true}}
		h, remote := setup(t, fl)
		fl.onWait = func() {
			b, ok := encodeRemote(key, &vegav1.GenerateResponse{Text: "from the leader"}, h.clock.Now().Add(time.Minute).UnixNano(), false)
			require.True(t, ok)
			remote.put(key, b)
		}
		r := h.generate(t.Context(), "acme", ask("fleet", vegav1.CacheMode_CACHE_MODE_BYPASS))
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
		assert.NotEqual(t, "from the leader", r.text)
		assert.Contains(t, r.text, "answer #1")
		assert.EqualValues(t, 1, h.backend.calls.Load(), "it led the next flight")
		assert.Zero(t, h.cache.Stats().FleetCoalesced)
		assert.Len(t, fl.finished, 1)
	})

	failure := func() error {
		st, err := status.New(codes.InvalidArgument, "model \"nope\" is not served here").WithDetails(
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "model", Description: "unknown"}}},
			&errdetails.DebugInfo{Detail: "backend-7.internal:11434 stack ..."},
		)
		require.NoError(t, err)
		return st.Err()
	}
	t.Run("the leader hands its error to the waiters", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lead"}}
		h, remote := setup(t, fl)
		h.backend.setFail(failure())
		r := h.generate(t.Context(), "acme", req)
		require.Equal(t, codes.InvalidArgument, status.Code(r.err))
		assert.EqualValues(t, 1, h.backend.calls.Load())
		require.Len(t, fl.finished, 1)
		require.NotNil(t, fl.finished[0], "the error is shared")
		assert.False(t, fl.kept[0], "handed over, never kept")
		assert.Empty(t, remote.entries)
		shared, err := decodeError(fl.finished[0], key, DefaultRemoteMaxBytes)
		require.NoError(t, err)
		st := status.Convert(shared)
		assert.Equal(t, codes.InvalidArgument, st.Code())
		assert.Equal(t, `model "nope" is not served here`, st.Message())
		require.Len(t, st.Details(), 1, "DebugInfo stays with the leader")
		assert.IsType(t, &errdetails.BadRequest{}, st.Details()[0])
	})
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"CANCELED", status.Error(codes.Canceled, "the caller left")},
		{"DEADLINE_EXCEEDED", status.Error(codes.DeadlineExceeded, "too late")},
		{"not a status", errors.New("dial tcp 10.0.0.7:11434: connection refused")},
	} {
		t.Run("not handed over: "+tc.name, func(t *testing.T) {
			fl := &fakeFlights{leads: []string{"lead"}}
			h, _ := setup(t, fl)
			h.backend.setFail(tc.err)
			r := h.generate(t.Context(), "acme", req)
			require.Error(t, r.err)
			require.Len(t, fl.finished, 1)
			assert.Nil(t, fl.finished[0], "nothing shared: the waiters lead again")
		})
	}
	t.Run("a waiter serves the error handed over", func(t *testing.T) {
		st, _ := status.FromError(failure())
		p := st.Proto()
		p.Details = p.Details[:1] // as the leader hands it over
		fl := &fakeFlights{leads: []string{"lost"}, waits: []bool{true}, handed: encodeError(key, p)}
		h, remote := setup(t, fl)
		r := h.generate(t.Context(), "acme", req)
		got := status.Convert(r.err)
		assert.Equal(t, codes.InvalidArgument, got.Code())
		assert.Equal(t, `model "nope" is not served here`, got.Message())
		require.Len(t, got.Details(), 1)
		assert.IsType(t, &errdetails.BadRequest{}, got.Details()[0])
		assert.Zero(t, h.backend.calls.Load(), "no backend call here")
		assert.EqualValues(t, 1, h.cache.Stats().FleetCoalesced)
		assert.Empty(t, remote.entries, "an error is never kept")
		assert.Zero(t, h.cache.Stats().Entries)
	})
	t.Run("an error handed over under another key is bad: led again", func(t *testing.T) {
		fl := &fakeFlights{leads: []string{"lost", "lead"}, waits: []bool{true},
			handed: encodeError("another key", status.New(codes.Unavailable, "down").Proto())}
		h, _ := setup(t, fl)
		r := h.generate(t.Context(), "acme", req)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
		assert.EqualValues(t, 1, h.cache.Stats().RemoteBad)
	})
}

// TestSharedErrorEncodingIsChecked: what decodeError refuses.
func TestSharedErrorEncodingIsChecked(t *testing.T) {
	good := encodeError("k", status.New(codes.Unavailable, "backend down").Proto())
	err, bad := decodeError(good, "k", DefaultRemoteMaxBytes)
	require.NoError(t, bad)
	assert.Equal(t, codes.Unavailable, status.Code(err))

	debug, _ := status.New(codes.Internal, "x").WithDetails(&errdetails.DebugInfo{Detail: "stack"})
	version := append([]byte(nil), good...)
	version[3] = 2
	for name, b := range map[string][]byte{
		"another key":         encodeError("other", status.New(codes.Unavailable, "x").Proto()),
		"a version not known": version,
		"trailing bytes":      append(append([]byte(nil), good...), 0),
		"truncated":           good[:len(good)-1],
		"CANCELED":            encodeError("k", status.New(codes.Canceled, "x").Proto()),
		"DEADLINE_EXCEEDED":   encodeError("k", status.New(codes.DeadlineExceeded, "x").Proto()),
		"OK":                  encodeError("k", status.New(codes.OK, "").Proto()),
		"code out of range":   encodeError("k", &spb.Status{Code: 99}),
		"DebugInfo":           encodeError("k", debug.Proto()),
		"an answer":           func() []byte { b, _ := encodeRemote("k", &vegav1.GenerateResponse{}, 0, false); return b }(),
	} {
		t.Run(name, func(t *testing.T) {
			_, bad := decodeError(b, "k", DefaultRemoteMaxBytes)
			require.ErrorIs(t, bad, errBadEntry)
		})
	}
	_, bad = decodeError(good, "k", len(good)-1)
	require.ErrorIs(t, bad, errBadEntry, "above the size bound")
}
