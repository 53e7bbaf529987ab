package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// TestFlightLeaderWakesWaiters: one replica leads, another waits and is
// woken by the notice (not the 1s tick) with the answer already stored.
func TestFlightLeaderWakesWaiters(t *testing.T) {
	for _, keep := range []bool{true, false} {
		name := map[bool]string{true: "kept in the cache tier", false: "handed to the waiters only"}[keep]
		t.Run(name, func(t *testing.T) {
			prefix := testPrefix(t)
			f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
			f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
			eventually(t, 3*time.Second, func() bool { return f2.Stats().Subscribed }, "no subscription")
			ctx := context.Background()

			_, finish, wait := f1.Lead(ctx, "generate/x/k")
			require.NotNil(t, finish)
			require.Nil(t, wait)
			_, finish2, wait2 := f2.Lead(ctx, "generate/x/k")
			require.Nil(t, finish2)
			require.NotNil(t, wait2, "the lease is r1's")

			type woken struct {
				at  time.Time
				val []byte
				ok  bool
			}
			got := make(chan woken, 1)
			go func() {
				v, ok := wait2(ctx)
				got <- woken{time.Now(), v, ok}
			}()
			time.Sleep(200 * time.Millisecond) // the waiter is waiting
			done := time.Now()
			finish([]byte("the answer"), time.Minute, keep)
			select {
			case w := <-got:
				require.True(t, w.ok, "the flight ended with an answer")
				assert.Less(t, w.at.Sub(done), 500*time.Millisecond, "woken by the tick, not the notice")
				v, cached := f2.Get(ctx, "generate/x/k")
				if keep {
					assert.Nil(t, w.val, "read it from the cache tier")
					require.True(t, cached, "the answer is in the cache tier before the notice")
					assert.Equal(t, "the answer", string(v))
				} else {
					assert.Equal(t, "the answer", string(w.val))
					assert.False(t, cached, "an answer handed over is not kept as cache")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the waiter was never woken")
			}

			_, finish2, wait2 = f2.Lead(ctx, "generate/x/k")
			require.NotNil(t, finish2, "the lease was dropped: a later call leads a new flight")
			require.Nil(t, wait2)
			finish2(nil, 0, false)
			assert.EqualValues(t, 1, f1.Stats().LeasesWon)
			assert.EqualValues(t, 1, f2.Stats().LeasesLost)
			assert.EqualValues(t, 1, f2.Stats().RemoteWaits)
		})
	}
}

// TestFlightTakeoverWhenTheOwnerDies: an owner that stops renewing (here:
// closed mid-flight) loses its lease within 3s; its waiter finds neither
// lease nor answer within 3s + the 1s tick and may lead.
func TestFlightTakeoverWhenTheOwnerDies(t *testing.T) {
	prefix := testPrefix(t)
	owner, err := fleet.New(fleet.Settings{URL: "redis://" + redisAddr, Prefix: prefix, ReplicaID: "owner", Timeout: time.Second})
	require.NoError(t, err)
	waiter := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "waiter"})
	ctx := context.Background()

	_, finish, _ := owner.Lead(ctx, "k")
	require.NotNil(t, finish)
	_, _, wait := waiter.Lead(ctx, "k")
	require.NotNil(t, wait)
	time.Sleep(1500 * time.Millisecond) // renewed once: the lease outlives its first 3s... until the owner dies
	start := time.Now()
	require.NoError(t, owner.Close())         // renewals stop; the lease is not released
	finish([]byte("late"), time.Minute, true) // after Close: not stored, no notice

	got := make(chan bool, 1)
	go func() { _, ok := wait(ctx); got <- ok }()
	select {
	case ok := <-got:
		assert.False(t, ok, "no answer: the owner died")
		assert.Less(t, time.Since(start), 4500*time.Millisecond, "takeover bound: lease TTL 3s + tick 1s")
		assert.Greater(t, time.Since(start), 1000*time.Millisecond, "the renewed lease held until it expired")
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter never took over")
	}
	assert.EqualValues(t, 1, waiter.Stats().Takeovers)
	_, ok := waiter.Get(ctx, "k")
	assert.False(t, ok, "the dead owner's late finish stored nothing")
	_, finish, _ = waiter.Lead(ctx, "k")
	require.NotNil(t, finish, "the waiter leads now")
	finish(nil, 0, false)
}

// TestFlightWithoutRedis: Lead answers neither finish nor wait (behave
// alone) at once.
func TestFlightWithoutRedis(t *testing.T) {
	p := newRedisProxy(t)
	f := newFleet(t, fleet.Settings{URL: p.url(), Prefix: testPrefix(t), Timeout: 100 * time.Millisecond})
	p.Stop()
	start := time.Now()
	call, finish, wait := f.Lead(context.Background(), "k")
	assert.Nil(t, call)
	assert.Nil(t, finish)
	assert.Nil(t, wait)
	assert.Less(t, time.Since(start), time.Second)
}
