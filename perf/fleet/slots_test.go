package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// threeReplicas starts three replicas of one fleet and waits until each
// has seen the three heartbeats.
func threeReplicas(t *testing.T) []*fleet.Fleet {
	t.Helper()
	prefix := testPrefix(t)
	var fs []*fleet.Fleet
	for range 3 {
		fs = append(fs, newFleet(t, fleet.Settings{Prefix: prefix}))
	}
	for _, f := range fs {
		eventually(t, 5*time.Second, func() bool { return f.Stats().ReplicasSeen == 3 }, "the replicas never saw each other")
	}
	return fs
}

// lease asks for f's lease and fails the test when Redis does not answer.
func lease(t *testing.T, f *fleet.Fleet, want int) int {
	t.Helper()
	n, ok := f.Lease(context.Background(), "ollama", want, 0, 1, 30)
	require.True(t, ok)
	return n
}

// Three replicas that all want every slot of a cap of 30: the leases never
// sum to more than 30, whatever the order of the asks, and after a round
// of renewals each holds a third.
func TestLeasesStayWithinTheCap(t *testing.T) {
	fs := threeReplicas(t)
	held := make([]int, 3)
	for round := range 3 {
		for i, f := range fs {
			held[i] = lease(t, f, 30)
			assert.LessOrEqual(t, held[0]+held[1]+held[2], 30, "round %d, replica %d: %v", round, i, held)
		}
	}
	assert.Equal(t, []int{10, 10, 10}, held)
	assert.EqualValues(t, 3, fs[0].Stats().SlotLeases)
	assert.EqualValues(t, 10, fs[0].Stats().SlotsLeased)
}

// Ordinary use: an idle fleet holds the cap in equal parts, so a burst on
// any replica finds slots at once; a replica with a queue leases what the
// idle ones do not use, and gives it back when it goes idle.
func TestLeasesFollowDemand(t *testing.T) {
	fs := threeReplicas(t)
	for range 2 {
		for _, f := range fs {
			lease(t, f, 0)
		}
	}
	assert.Equal(t, 10, lease(t, fs[0], 0), "idle: a third each")

	busy := 0
	for range 2 {
		busy = lease(t, fs[0], 30)
		for _, f := range fs[1:] {
			assert.Equal(t, 1, lease(t, f, 0), "an idle replica keeps the minimum")
		}
	}
	assert.Equal(t, 28, busy, "the busy replica leases what the others do not use")

	for range 2 {
		busy = lease(t, fs[0], 2)
		for _, f := range fs[1:] {
			lease(t, f, 0)
		}
	}
	assert.Equal(t, 10, busy, "back to a third once idle")
}

// A lease that shrinks while its calls are at the backend keeps their
// slots recorded until its next ask: the others are not granted them yet.
func TestAShrunkLeaseKeepsItsBusySlots(t *testing.T) {
	fs := threeReplicas(t)
	ctx := context.Background()
	n, ok := fs[0].Lease(ctx, "ollama", 30, 0, 1, 30)
	require.True(t, ok)
	require.Equal(t, 28, n, "alone in wanting")
	for _, f := range fs[1:] {
		lease(t, f, 30) // they want all too: fs[0]'s share falls
	}
	n, ok = fs[0].Lease(ctx, "ollama", 30, 28, 1, 30) // but 28 calls are still at the backend
	require.True(t, ok)
	assert.Less(t, n, 28)
	assert.Equal(t, 1, lease(t, fs[1], 30), "the busy slots are not granted again")
	n, ok = fs[0].Lease(ctx, "ollama", 30, 0, 1, 30) // its calls ended
	require.True(t, ok)
	assert.Equal(t, 10, n)
	assert.Equal(t, 10, lease(t, fs[1], 30))
}

// A replica that stops renewing gives its slots back within LeaseTTL.
func TestALapsedLeaseIsGivenBack(t *testing.T) {
	fs := threeReplicas(t)
	for range 2 {
		for _, f := range fs[:2] {
			lease(t, f, 30)
		}
	}
	require.Equal(t, 14, lease(t, fs[0], 30), "two busy replicas and one holding none (min reserved)")
	time.Sleep(fleet.LeaseTTL + 200*time.Millisecond) // fs[1] stops renewing
	assert.Equal(t, 28, lease(t, fs[0], 30))
}

// Without Redis, Lease says so at once.
func TestLeaseWithoutRedis(t *testing.T) {
	f := newFleet(t, fleet.Settings{URL: "redis://127.0.0.1:1/0", Prefix: testPrefix(t)})
	start := time.Now()
	_, ok := f.Lease(context.Background(), "ollama", 4, 0, 1, 30)
	assert.False(t, ok)
	assert.Less(t, time.Since(start), 3*time.Second)
}
