package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/policy"
)

// A call may look its limiter up just before the limiter is evicted (the
// sweep saw no call in flight) and be admitted on it: releasing that
// Permit is harmless, and the key's next call gets a fresh limiter.
func TestReleaseAfterEviction(t *testing.T) {
	s, err := NewSet(Settings{MaxKeys: 10})
	require.NoError(t, err)
	l := s.get("raced") // Acquire's lookup, then the sweep, then admission
	for i := range 100 {
		p, err := s.Acquire(context.Background(), fmt.Sprint(i), "")
		require.NoError(t, err)
		p.Release(policy.Result{Outcome: policy.Success})
	}
	require.NotSame(t, l, s.get("raced"), "evicted, then created afresh")

	l.mu.Lock()
	p := l.dispatchLocked(l.tenantLocked("", time.Now()), time.Now(), 0, time.Time{}, false)
	l.mu.Unlock()
	assert.NotPanics(t, func() {
		p.Release(policy.Result{Outcome: policy.Overload, RetryAfter: time.Hour})
	})

	fresh, err := s.Acquire(context.Background(), "raced", "")
	require.NoError(t, err, "the hold was on the evicted limiter only")
	fresh.Release(policy.Result{Outcome: policy.Neutral})
	for _, st := range s.Stats() {
		if st.Key == "raced" {
			assert.Equal(t, float64(DefaultInitial), st.Rate)
			assert.True(t, st.BlockedUntil.IsZero())
		}
	}
}
