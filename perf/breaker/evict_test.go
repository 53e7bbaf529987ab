package breaker_test

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/policy"
)

func hasKey(s *breaker.Set, key string) bool {
	for _, st := range s.Stats() {
		if st.Key == key {
			return true
		}
	}
	return false
}

// A caller fetching 1000 distinct hosts never grows the Set beyond MaxKeys;
// a key in steady use survives, being the most recently used.
func TestMaxKeysBoundsKeys(t *testing.T) {
	s := newSet(t, breaker.Settings{MaxKeys: 10})
	for i := range 1000 {
		call(t, s, "hot", policy.Success)
		call(t, s, fmt.Sprintf("fetch:host%d", i), policy.Success)
		require.LessOrEqual(t, s.KeyStats().Keys, 10, "after %d keys", i+1)
	}
	assert.Len(t, s.Stats(), 10)
	assert.True(t, hasKey(s, "hot"), "the key in steady use is kept")
	assert.Equal(t, breaker.KeyStats{Keys: 10, Evicted: 1001 - 10}, s.KeyStats())
}

func TestDefaultMaxKeys(t *testing.T) {
	s := newSet(t, breaker.Settings{})
	for i := range breaker.DefaultMaxKeys + 100 {
		call(t, s, fmt.Sprint(i), policy.Success)
	}
	ks := s.KeyStats()
	assert.LessOrEqual(t, ks.Keys, breaker.DefaultMaxKeys)
	assert.Equal(t, int64(breaker.DefaultMaxKeys+100-ks.Keys), ks.Evicted)
}

// Open, half-open and forced breakers, and one with a call in flight,
// survive a flood of new keys; the flood stays within MaxKeys around them.
// When nothing is idle, new keys are let in beyond MaxKeys and counted.
func TestEvictionKeepsBusyAndNotClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, breaker.Settings{MaxKeys: 10, ConsecutiveFailures: 1, OpenTimeout: time.Minute})
		trip(t, s, "half", 1)
		time.Sleep(2 * time.Minute) // "half" is due for a probe: half-open
		require.Equal(t, "half-open", stateOf(t, s, "half").State)
		trip(t, s, "down", 1)
		s.SetMode("forced-open", breaker.ForceOpen)
		s.SetMode("forced-closed", breaker.ForceClosed)
		busy, err := s.Allow("busy")
		require.NoError(t, err)

		for i := range 1000 {
			call(t, s, fmt.Sprint(i), policy.Success)
			require.LessOrEqual(t, s.KeyStats().Keys, 10)
		}
		assert.Equal(t, "half-open", stateOf(t, s, "half").State)
		assert.Equal(t, "open", stateOf(t, s, "down").State)
		_, err = s.Allow("down")
		requireRefused(t, err, time.Minute, `circuit breaker for "down" is open`)
		assert.Equal(t, "force-open", stateOf(t, s, "forced-open").Mode)
		_, err = s.Allow("forced-open")
		requireRefused(t, err, time.Minute, "is forced open")
		assert.Equal(t, "force-closed", stateOf(t, s, "forced-closed").Mode)
		assert.True(t, hasKey(s, "busy"))
		busy(policy.Success)
		assert.Zero(t, s.KeyStats().Overflows)

		// Nothing idle: new keys exceed MaxKeys rather than fail.
		for i := range 7 { // 4 + 7 keys open or forced
			trip(t, s, fmt.Sprint("tripped", i), 1)
		}
		ks := s.KeyStats()
		assert.Equal(t, 11, ks.Keys)
		assert.Equal(t, int64(1), ks.Overflows)

		// Once closed by probes, "half" is idle again and can go.
		call(t, s, "half", policy.Success)
		call(t, s, "half", policy.Success)
		call(t, s, "half", policy.Success)
		require.Equal(t, "closed", stateOf(t, s, "half").State)
		s.SetMode("forced-closed", breaker.Auto)
		for i := range 20 {
			call(t, s, fmt.Sprint("late", i), policy.Success)
		}
		assert.False(t, hasKey(s, "half"))
		assert.False(t, hasKey(s, "forced-closed"), "back to Auto, idle and closed")
		assert.True(t, hasKey(s, "down") && hasKey(s, "forced-open"))
	})
}

// An evicted key's next call gets a fresh, closed breaker with fresh counts.
func TestEvictedKeyStartsAfresh(t *testing.T) {
	s := newSet(t, breaker.Settings{MaxKeys: 10})
	for range 4 {
		call(t, s, "flaky", policy.Failure)
	}
	require.Equal(t, int64(4), stateOf(t, s, "flaky").ConsecutiveFailures)
	for i := range 20 {
		call(t, s, fmt.Sprint(i), policy.Success)
	}
	require.False(t, hasKey(s, "flaky"))
	call(t, s, "flaky", policy.Failure)
	st := stateOf(t, s, "flaky")
	assert.Equal(t, "closed", st.State)
	assert.Equal(t, int64(1), st.ConsecutiveFailures)
	assert.Equal(t, int64(1), st.Requests)
}

// SetMode racing with eviction never forces a breaker that is no longer
// the key's: the forced mode always sticks.
func TestSetModeRacesEviction(t *testing.T) {
	for round := range 50 {
		s := newSet(t, breaker.Settings{MaxKeys: 2})
		key := fmt.Sprint("op", round)
		call(t, s, key, policy.Success)
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 20 {
				call(t, s, fmt.Sprint(i), policy.Success)
			}
		})
		wg.Go(func() { s.SetMode(key, breaker.ForceOpen) })
		wg.Wait()
		for i := range 20 {
			call(t, s, fmt.Sprint("after", i), policy.Success)
		}
		_, err := s.Allow(key)
		requireRefused(t, err, breaker.DefaultOpenTimeout, "is forced open")
	}
}

// Keys come and go under concurrent calls; every done is called, also
// those whose breaker was evicted meanwhile.
func TestEvictionUnderConcurrency(t *testing.T) {
	s := newSet(t, breaker.Settings{MaxKeys: 16, ConsecutiveFailures: 1000, MinRequests: 1000})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				done, err := s.Allow(fmt.Sprint((g*7 + i) % 64))
				if !assert.NoError(t, err) {
					return
				}
				done(policy.Outcome(i % 4))
			}
		})
	}
	wg.Wait()
	ks := s.KeyStats()
	assert.LessOrEqual(t, ks.Keys, 16+8, "at most one key per in-flight call beyond MaxKeys")
	assert.Positive(t, ks.Evicted)
}
