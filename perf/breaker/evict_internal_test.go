package breaker

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/policy"
)

// A call may look its breaker up just before the breaker is evicted (the
// sweep saw no call in flight) and be admitted on it: its done is harmless,
// and the key's next call gets a fresh breaker.
func TestDoneAfterEviction(t *testing.T) {
	s, err := NewSet(Settings{MaxKeys: 10, ConsecutiveFailures: 1})
	require.NoError(t, err)
	done, err := s.Allow("raced")
	require.NoError(t, err)
	b := s.get("raced")
	b.inflight.Add(-1) // as if the sweep had looked before Allow counted the call
	for i := range 100 {
		d, err := s.Allow(fmt.Sprint(i))
		require.NoError(t, err)
		d(policy.Success)
	}
	require.NotSame(t, b, s.get("raced"), "evicted, then created afresh")
	assert.NotPanics(t, func() { done(policy.Failure) })
	assert.Equal(t, "open", b.state(), "the failure counted on the evicted breaker")

	d, err := s.Allow("raced")
	require.NoError(t, err, "the key's breaker is fresh and closed")
	d(policy.Success)
}
