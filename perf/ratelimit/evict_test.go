package ratelimit_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/policy"
	"github.com/vega-gateway/vega/perf/ratelimit"
)

func hasKey(s *ratelimit.Set, key string) bool {
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
	s := newSet(t, ratelimit.Settings{MaxKeys: 10, Initial: 1e6, Max: 1e6})
	for i := range 1000 {
		acquire(t, s, "hot").Release(policy.Result{Outcome: policy.Success})
		acquire(t, s, fmt.Sprintf("fetch:host%d", i)).Release(policy.Result{Outcome: policy.Success})
		require.LessOrEqual(t, s.KeyStats().Keys, 10, "after %d keys", i+1)
	}
	assert.Len(t, s.Stats(), 10)
	assert.True(t, hasKey(s, "hot"), "the key in steady use is kept")
	assert.Equal(t, ratelimit.KeyStats{Keys: 10, Evicted: 1001 - 10}, s.KeyStats())
}

func TestDefaultMaxKeys(t *testing.T) {
	s := newSet(t, ratelimit.Settings{Initial: 1e9, Max: 1e9})
	for i := range ratelimit.DefaultMaxKeys + 100 {
		acquire(t, s, fmt.Sprint(i)).Release(policy.Result{Outcome: policy.Success})
	}
	ks := s.KeyStats()
	assert.LessOrEqual(t, ks.Keys, ratelimit.DefaultMaxKeys)
	assert.Equal(t, int64(ratelimit.DefaultMaxKeys+100-ks.Keys), ks.Evicted)
}

// A key with a call in flight (admitted, not yet released) is not evicted;
// when nothing is idle the Set lets new keys in beyond MaxKeys, counting
// them, rather than refusing calls.
func TestInFlightKeysAreKept(t *testing.T) {
	s := newSet(t, ratelimit.Settings{MaxKeys: 10})
	busy := acquire(t, s, "busy")
	for i := range 1000 {
		acquire(t, s, fmt.Sprint(i)).Release(policy.Result{Outcome: policy.Success})
		require.LessOrEqual(t, s.KeyStats().Keys, 10)
	}
	assert.True(t, hasKey(s, "busy"))
	busy.Release(policy.Result{Outcome: policy.Success})

	var held []ratelimit.Permit
	for i := range 15 {
		held = append(held, acquire(t, s, fmt.Sprint("held", i)))
	}
	ks := s.KeyStats()
	assert.Equal(t, 15, ks.Keys, "every key has a call in flight")
	assert.Equal(t, int64(5), ks.Overflows)
	for _, p := range held {
		p.Release(policy.Result{Outcome: policy.Success})
	}
	acquire(t, s, "after").Release(policy.Result{Outcome: policy.Success})
	assert.LessOrEqual(t, s.KeyStats().Keys, 10, "idle again, the keys are evicted")
}

// An evicted key's next call gets a fresh limiter: Initial rate, no
// Retry-After hold.
func TestEvictedKeyStartsAfresh(t *testing.T) {
	s := newSet(t, ratelimit.Settings{MaxKeys: 10})
	p := acquire(t, s, "slow")
	p.Release(policy.Result{Outcome: policy.Overload, RetryAfter: time.Hour})
	st := statsOf(t, s, "slow")
	require.Less(t, st.Rate, 10.0)
	require.False(t, st.BlockedUntil.IsZero())

	for i := range 20 {
		acquire(t, s, fmt.Sprint(i)).Release(policy.Result{Outcome: policy.Success})
	}
	require.False(t, hasKey(s, "slow"), "the least recently used key was evicted")
	acquire(t, s, "slow").Release(policy.Result{Outcome: policy.Neutral})
	st = statsOf(t, s, "slow")
	assert.Equal(t, 10.0, st.Rate)
	assert.True(t, st.BlockedUntil.IsZero())
	assert.Equal(t, int64(1), st.Admitted)
}

// Keys come and go under concurrent calls; every Permit is released, also
// those whose limiter was evicted meanwhile.
func TestEvictionUnderConcurrency(t *testing.T) {
	s := newSet(t, ratelimit.Settings{MaxKeys: 16, Initial: 1e9, Max: 1e9})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				p, err := s.Acquire(t.Context(), fmt.Sprint((g*7+i)%64), "")
				if !assert.NoError(t, err) {
					return
				}
				p.Release(policy.Result{Outcome: policy.Outcome(i % 4)})
			}
		})
	}
	wg.Wait()
	ks := s.KeyStats()
	assert.LessOrEqual(t, ks.Keys, 16+8, "at most one key per in-flight call beyond MaxKeys")
	assert.Positive(t, ks.Evicted)
}
