package fleet_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// notices records the breaker notices a replica receives.
type notices struct {
	mu   sync.Mutex
	list []string
	open map[string]time.Duration
}

func listen(f *fleet.Fleet) *notices {
	n := &notices{open: map[string]time.Duration{}}
	f.OnBreaker(func(backend string, openFor time.Duration) {
		n.mu.Lock()
		defer n.mu.Unlock()
		if openFor > 0 {
			n.list = append(n.list, "open "+backend)
			n.open[backend] = openFor
		} else {
			n.list = append(n.list, "closed "+backend)
			delete(n.open, backend)
		}
	})
	return n
}

// snapshot lists the notices received, repeats folded: the resync at a
// subscription may read a trip its notice also brings (a repeated hold is
// idempotent).
func (n *notices) snapshot() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Compact(slices.Clone(n.list))
}

func subscribed(t *testing.T, fs ...*fleet.Fleet) {
	t.Helper()
	for _, f := range fs {
		eventually(t, 5*time.Second, func() bool { return f.Stats().Subscribed }, "never subscribed")
	}
}

// A trip published by one replica reaches the others with its open time,
// is stored for the open time, and its close reaches them too; the sender
// hears nothing of its own.
func TestBreakerNoticesReachTheFleet(t *testing.T) {
	prefix := testPrefix(t)
	a := newFleet(t, fleet.Settings{Prefix: prefix})
	b := newFleet(t, fleet.Settings{Prefix: prefix})
	na, nb := listen(a), listen(b)
	subscribed(t, a, b)

	require.True(t, a.BreakerOpened(context.Background(), "ollama", 30*time.Second))
	eventually(t, 5*time.Second, func() bool { return len(nb.snapshot()) == 1 }, "b never heard of the trip")
	assert.Equal(t, []string{"open ollama"}, nb.snapshot())
	nb.mu.Lock()
	assert.InDelta(t, float64(30*time.Second), float64(nb.open["ollama"]), float64(time.Second))
	nb.mu.Unlock()
	assert.Contains(t, keysUnder(t, prefix), prefix+":v1:b:ollama")

	require.True(t, a.BreakerClosed(context.Background(), "ollama"))
	eventually(t, 5*time.Second, func() bool { return len(nb.snapshot()) == 2 }, "b never heard of the close")
	assert.Equal(t, []string{"open ollama", "closed ollama"}, nb.snapshot())
	assert.NotContains(t, keysUnder(t, prefix), prefix+":v1:b:ollama")
	assert.Empty(t, na.snapshot(), "a replica ignores its own notices")
	assert.EqualValues(t, 2, a.Stats().BreakerNoticesSent)
	assert.EqualValues(t, 2, b.Stats().BreakerNoticesReceived, "notices, not resyncs, are counted")
}

// One replica of three wins the probe right; a new trip frees it.
func TestClaimProbeHasOneWinner(t *testing.T) {
	prefix := testPrefix(t)
	var fs []*fleet.Fleet
	for range 3 {
		fs = append(fs, newFleet(t, fleet.Settings{Prefix: prefix}))
	}
	ctx := context.Background()
	require.True(t, fs[0].BreakerOpened(ctx, "ollama", time.Minute))
	wins := 0
	for _, f := range fs {
		won, ok := f.ClaimProbe(ctx, "ollama", 5*time.Second)
		require.True(t, ok)
		if won {
			wins++
		}
	}
	assert.Equal(t, 1, wins)
	require.True(t, fs[1].BreakerOpened(ctx, "ollama", time.Minute)) // the probe failed
	won, ok := fs[2].ClaimProbe(ctx, "ollama", 5*time.Second)
	assert.True(t, ok)
	assert.True(t, won, "a reopen frees the probe right")
}

// A replica that starts after a trip learns it once it is subscribed.
func TestALateReplicaReadsTheOpenBreakers(t *testing.T) {
	prefix := testPrefix(t)
	a := newFleet(t, fleet.Settings{Prefix: prefix})
	require.True(t, a.BreakerOpened(context.Background(), "ollama", 20*time.Second))
	late, err := fleet.New(fleet.Settings{URL: "redis://" + redisAddr + "/0", Prefix: prefix, Timeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = late.Close() })
	n := listen(late) // set before the subscription is confirmed, as main does
	eventually(t, 5*time.Second, func() bool { return len(n.snapshot()) == 1 }, "the late replica never read the state")
	assert.Equal(t, []string{"open ollama"}, n.snapshot())
	n.mu.Lock()
	defer n.mu.Unlock()
	assert.InDelta(t, float64(20*time.Second), float64(n.open["ollama"]), float64(2*time.Second))
}

// Without Redis every step says so at once.
func TestBreakerStepsWithoutRedis(t *testing.T) {
	f := newFleet(t, fleet.Settings{URL: "redis://127.0.0.1:1/0", Prefix: testPrefix(t)})
	ctx := context.Background()
	start := time.Now()
	assert.False(t, f.BreakerOpened(ctx, "ollama", time.Second))
	assert.False(t, f.BreakerClosed(ctx, "ollama"))
	_, ok := f.ClaimProbe(ctx, "ollama", time.Second)
	assert.False(t, ok)
	assert.Less(t, time.Since(start), 3*time.Second)
}
