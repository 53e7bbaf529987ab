package cache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is the injected clock: tests move time, they never sleep for it.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// newTestCache returns a cache on clk, closed when the test ends.
func newTestCache(t testing.TB, clk *fakeClock, s Settings) *Cache {
	t.Helper()
	s.Now = clk.Now
	c, err := New(s)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// waitFor polls cond; it waits for goroutines, never for TTLs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, time.Millisecond, "timed out waiting for %s", what)
}

func TestNewValidatesSettings(t *testing.T) {
	for _, tc := range []struct {
		s     Settings
		field string
	}{
		{Settings{MaxBytes: -1}, "MaxBytes"},
		{Settings{DefaultTTL: -time.Second}, "DefaultTTL"},
		{Settings{Jitter: -0.1}, "Jitter"},
		{Settings{Jitter: 1}, "Jitter"},
		{Settings{Jitter: math.NaN()}, "Jitter"},
		{Settings{StaleFor: -time.Second}, "StaleFor"},
		{Settings{NegativeTTL: -time.Second}, "NegativeTTL"},
		{Settings{MaxRefreshes: -1}, "MaxRefreshes"},
		{Settings{ExpectedEntries: -1}, "ExpectedEntries"},
		{Settings{RemoteMaxBytes: -1}, "RemoteMaxBytes"},
		{Settings{Flights: &fakeFlights{}}, "Flights"}, // without Remote it could never share an answer
	} {
		_, err := New(tc.s)
		if assert.Error(t, err, "%+v", tc.s) {
			assert.Contains(t, err.Error(), "Settings."+tc.field)
		}
	}

	c, err := New(Settings{})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, Settings{
		MaxBytes: DefaultMaxBytes, DefaultTTL: DefaultTTL, Jitter: DefaultJitter,
		NegativeTTL: DefaultNegativeTTL, MaxRefreshes: DefaultMaxRefreshes,
		ExpectedEntries: DefaultMaxBytes / (2 << 10), RemoteMaxBytes: DefaultRemoteMaxBytes,
	}, c.set)
	assert.Equal(t, int64(DefaultMaxBytes), c.Stats().Capacity)
}

func TestSetGetExpiry(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(t, clk, Settings{DefaultTTL: 10 * time.Second, Jitter: 0.1})

	_, st := c.Get("k")
	assert.Equal(t, Miss, st)

	c.Set("k", "v", 1, 0, false) // DefaultTTL: fresh for 9.5s..10.5s
	v, st := c.Get("k")
	assert.Equal(t, Fresh, st)
	assert.Equal(t, "v", v)

	clk.Advance(9400 * time.Millisecond)
	_, st = c.Get("k")
	assert.Equal(t, Fresh, st, "before the earliest jittered expiry")

	clk.Advance(1200 * time.Millisecond) // 10.6s: past the latest; StaleFor is 0
	v, st = c.Get("k")
	assert.Equal(t, Miss, st)
	assert.Nil(t, v)

	c.Set("k", "w", 1, time.Hour, false) // an explicit ttl wins over DefaultTTL
	clk.Advance(50 * time.Minute)
	v, st = c.Get("k")
	assert.Equal(t, Fresh, st)
	assert.Equal(t, "w", v)

	s := c.Stats()
	assert.Equal(t, int64(3), s.Hits)
	assert.Equal(t, int64(2), s.Misses)
	assert.Equal(t, int64(2), s.Stores)
	assert.InDelta(t, 60.0, s.HitRate(), 1e-9)
}

func TestSetNegativeTTLStoresNothing(t *testing.T) {
	c := newTestCache(t, newFakeClock(), Settings{})
	c.Set("k", "v", 1, time.Minute, false)
	c.Set("k", "w", 1, -time.Second, false)
	_, st := c.Get("k")
	assert.Equal(t, Miss, st, "a refused write drops the answer it replaces")
}

func TestJitterStaysWithinBounds(t *testing.T) {
	const ttl, n = 100 * time.Second, 2000
	for _, jitter := range []float64{1e-9, 0.1, 0.5, 0.99} {
		t.Run(fmt.Sprint(jitter), func(t *testing.T) {
			clk := newFakeClock()
			c := newTestCache(t, clk, Settings{Jitter: jitter})
			now := clk.Now().UnixNano()
			lo, hi := int64(float64(ttl)*(1-jitter/2)), int64(float64(ttl)*(1+jitter/2))
			least, most := int64(math.MaxInt64), int64(0)
			for i := range n {
				key := fmt.Sprint(i)
				c.Set(key, i, 8, ttl, false)
				e, ok := c.store.GetEntryQuietly(key)
				require.True(t, ok)
				got := e.Value.freshUntil - now
				require.GreaterOrEqual(t, got, lo, "key %s", key)
				require.LessOrEqual(t, got, hi, "key %s", key)
				least, most = min(least, got), max(most, got)
			}
			// The draws spread over most of the window, not one point.
			assert.Greater(t, float64(most-least), 0.9*float64(hi-lo))
		})
	}
}

func TestNegativeEntriesAreCapped(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(t, clk, Settings{NegativeTTL: 5 * time.Second, StaleFor: time.Minute, Jitter: 0.1})

	c.Set("404", "not found", 1, time.Hour, true)
	clk.Advance(4900 * time.Millisecond)
	_, st := c.Get("404")
	assert.Equal(t, Fresh, st)
	clk.Advance(200 * time.Millisecond)
	_, st = c.Get("404")
	assert.Equal(t, Miss, st, "capped at NegativeTTL and never served stale")

	c.Set("410", "gone", 1, 2*time.Second, true) // shorter than the cap: its own (jittered) ttl
	clk.Advance(2200 * time.Millisecond)
	_, st = c.Get("410")
	assert.Equal(t, Miss, st)
}

func TestPurge(t *testing.T) {
	c := newTestCache(t, newFakeClock(), Settings{})
	for _, k := range []string{"a/1", "a/2", "ab", "b/1"} {
		c.Set(k, k, 1, 0, false)
	}
	assert.Equal(t, 2, c.Purge("a/"))
	for k, want := range map[string]State{"a/1": Miss, "a/2": Miss, "ab": Fresh, "b/1": Fresh} {
		_, st := c.Get(k)
		assert.Equal(t, want, st, k)
	}
	assert.Equal(t, 0, c.Purge("a/"))
	assert.Equal(t, 2, c.Purge(""))
	s := c.Stats()
	assert.Equal(t, int64(4), s.Purged)
	assert.Equal(t, int64(0), s.Entries)
	assert.Equal(t, int64(0), s.Bytes)
}

func TestMaxBytesIsRespected(t *testing.T) {
	const maxBytes, size, n = 64 << 10, 100, 10_000
	c := newTestCache(t, newFakeClock(), Settings{MaxBytes: maxBytes})
	for i := range n {
		c.Set(fmt.Sprintf("key-%05d", i), i, size, 0, false)
	}
	s := c.Stats()
	assert.LessOrEqual(t, s.Bytes, int64(maxBytes))
	assert.Positive(t, s.Evictions)
	assert.Equal(t, int64(n), s.Stores)
	perEntry := int64(len("key-00000") + size + entryOverhead)
	assert.Equal(t, s.Entries*perEntry, s.Bytes, "every entry weighs key + size + overhead")
	assert.Greater(t, s.Entries, int64(maxBytes)/perEntry/2, "most of the budget is in use")
}

func TestOversizedEntryIsNotStored(t *testing.T) {
	c := newTestCache(t, newFakeClock(), Settings{MaxBytes: 1 << 10})
	c.Set("k", "small", 10, 0, false)
	c.Set("k", "huge", 1<<10, 0, false)
	_, st := c.Get("k")
	assert.Equal(t, Miss, st, "neither the huge answer nor the one it replaces")
	assert.Equal(t, int64(1), c.Stats().Stores)
}

func TestStaleWhileRevalidate(t *testing.T) {
	const readers = 50
	clk := newFakeClock()
	c := newTestCache(t, clk, Settings{DefaultTTL: 10 * time.Second, StaleFor: 30 * time.Second})
	c.Set("k", "v1", 2, 0, false)
	clk.Advance(11 * time.Second) // expired (≤ 10.5s), within StaleFor

	var calls atomic.Int32
	started, release, finished := make(chan struct{}), make(chan struct{}), make(chan struct{})
	refresh := func(ctx context.Context) {
		defer close(finished)
		calls.Add(1)
		close(started)
		<-release
		c.Set("k", "v2", 2, 0, false)
	}

	var wg sync.WaitGroup
	var began atomic.Int32
	for range readers {
		wg.Go(func() {
			v, st := c.Get("k")
			if assert.Equal(t, Stale, st) && assert.Equal(t, "v1", v) {
				if c.TryRefresh(context.Background(), "k", time.Minute, refresh) {
					began.Add(1)
				}
			}
		})
	}
	wg.Wait()
	<-started
	assert.Equal(t, int32(1), began.Load(), "one refresh for many stale readers")
	v, st := c.Get("k")
	assert.Equal(t, Stale, st, "still stale while the refresh runs")
	assert.Equal(t, "v1", v)

	close(release)
	<-finished
	v, st = c.Get("k")
	assert.Equal(t, Fresh, st)
	assert.Equal(t, "v2", v)
	assert.Equal(t, int32(1), calls.Load())

	clk.Advance(11 * time.Second)
	_, st = c.Get("k")
	assert.Equal(t, Stale, st)
	clk.Advance(30 * time.Second) // past freshUntil + StaleFor
	_, st = c.Get("k")
	assert.Equal(t, Miss, st)

	s := c.Stats()
	assert.Equal(t, int64(1), s.Refreshes)
	assert.Equal(t, int64(readers+2), s.StaleHits)
	assert.Equal(t, int64(1), s.Hits)
	assert.Equal(t, int64(1), s.Misses)
}

func TestTryRefresh(t *testing.T) {
	c := newTestCache(t, newFakeClock(), Settings{MaxRefreshes: 2})
	release := make(chan struct{})
	var running sync.WaitGroup
	block := func(context.Context) { running.Done(); <-release }

	running.Add(2)
	assert.True(t, c.TryRefresh(context.Background(), "a", 0, block))
	assert.True(t, c.TryRefresh(context.Background(), "b", 0, block))
	running.Wait()
	assert.False(t, c.TryRefresh(context.Background(), "a", 0, block), "a refresh of a is running")
	assert.False(t, c.TryRefresh(context.Background(), "c", 0, block), "MaxRefreshes are running")
	close(release)
	waitFor(t, "the refreshes to end", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.refreshing) == 0
	})

	t.Run("detached and bounded", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "carried"))
		cancel()
		type seen struct {
			err      error
			deadline time.Time
			bounded  bool
			value    any
		}
		got := make(chan seen, 1)
		require.True(t, c.TryRefresh(parent, "d", time.Minute, func(ctx context.Context) {
			deadline, ok := ctx.Deadline()
			got <- seen{ctx.Err(), deadline, ok, ctx.Value(ctxKey{})}
		}))
		s := <-got
		assert.NoError(t, s.err, "the caller's cancellation does not reach the refresh")
		assert.True(t, s.bounded)
		assert.WithinDuration(t, time.Now().Add(time.Minute), s.deadline, 5*time.Second)
		assert.Equal(t, "carried", s.value)
	})

	t.Run("a panic is contained", func(t *testing.T) {
		defer slog.SetDefault(slog.Default())
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
		done := make(chan struct{})
		require.True(t, c.TryRefresh(context.Background(), "p", 0, func(context.Context) {
			defer close(done)
			panic("boom")
		}))
		<-done
		waitFor(t, "the key to be released", func() bool {
			return c.TryRefresh(context.Background(), "p", 0, func(context.Context) {})
		})
	})
}

type ctxKey struct{}

func TestCloseWaitsForRefreshes(t *testing.T) {
	c, err := New(Settings{Now: newFakeClock().Now})
	require.NoError(t, err)
	started, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	require.True(t, c.TryRefresh(context.Background(), "k", 0, func(context.Context) {
		close(started)
		<-release
		finished.Store(true)
	}))
	<-started
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	waitFor(t, "Close to mark the cache closed", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.closed
	})
	select {
	case <-closed:
		t.Fatal("Close returned while a refresh was running")
	default:
	}
	assert.False(t, c.TryRefresh(context.Background(), "other", 0, func(context.Context) {}), "no refresh starts after Close")
	close(release)
	<-closed
	assert.True(t, finished.Load())
}

func TestResetStats(t *testing.T) {
	c := newTestCache(t, newFakeClock(), Settings{})
	c.Set("k", "v", 1, 0, false)
	c.Get("k")
	c.Get("x")
	c.noteRejected()
	c.ResetStats()
	s := c.Stats()
	assert.Equal(t, Stats{Entries: 1, Bytes: s.Bytes, Capacity: DefaultMaxBytes}, s)
	assert.Equal(t, 0.0, s.HitRate())
}

func TestZipfHitRatio(t *testing.T) {
	// A tenth of BenchmarkZipfHitRatio's trace, to stay quick under -race.
	trace := zipfTrace(zipfRequests/10, zipfKeys/10, 1)
	ours := zipfHitRatio(t, "ours", zipfCapacity/10, trace)
	raw := zipfHitRatio(t, "otter", zipfCapacity/10, trace)
	t.Logf("hit%%: ours %.2f, otter %.2f", ours, raw)
	assert.Greater(t, ours, 50.0, "room for a tenth of the keys holds most of the traffic")
	assert.GreaterOrEqual(t, ours, raw-1, "the same policy with the same entry budget")
}
