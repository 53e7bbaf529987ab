package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
				at       time.Time
				val      []byte
				kept, ok bool
			}
			got := make(chan woken, 1)
			go func() {
				v, kept, ok := wait2(ctx)
				got <- woken{time.Now(), v, kept, ok}
			}()
			time.Sleep(200 * time.Millisecond) // the waiter is waiting
			done := time.Now()
			finish([]byte("the answer"), time.Minute, keep)
			select {
			case w := <-got:
				require.True(t, w.ok, "the flight ended with an answer")
				assert.Less(t, w.at.Sub(done), 500*time.Millisecond, "woken by the tick, not the notice")
				v, cached := f2.Get(ctx, "generate/x/k")
				assert.Equal(t, keep, w.kept)
				assert.Equal(t, "the answer", string(w.val), "the check that found the lease gone read the answer")
				if keep {
					require.True(t, cached, "the answer is in the cache tier before the notice")
					assert.Equal(t, "the answer", string(v))
				} else {
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
	go func() { _, _, ok := wait(ctx); got <- ok }()
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

// TestFlightStaleEntryDoesNotEndTheWait: an older (stale) answer in the
// cache tier while the leader holds the lease is the entry being refreshed,
// not the flight's answer: the waiter keeps waiting past its checks and
// ends with the fresh answer the leader stores.
func TestFlightStaleEntryDoesNotEndTheWait(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	eventually(t, 3*time.Second, func() bool { return f2.Stats().Subscribed }, "no subscription")
	ctx := context.Background()
	f1.Set("k", []byte("stale"), time.Minute)
	eventually(t, 2*time.Second, func() bool { _, ok := f2.Get(ctx, "k"); return ok }, "the stale entry never landed")

	_, finish, _ := f1.Lead(ctx, "k") // the refresh leads the key's flight
	require.NotNil(t, finish)
	_, _, wait := f2.Lead(ctx, "k")
	require.NotNil(t, wait)
	type woken struct {
		val      []byte
		kept, ok bool
	}
	got := make(chan woken, 1)
	go func() { v, kept, ok := wait(ctx); got <- woken{v, kept, ok} }()
	select {
	case <-got:
		t.Fatal("the wait ended on the stale entry while the lease was held")
	case <-time.After(2500 * time.Millisecond): // two 1s checks saw the entry and the lease
	}
	finish([]byte("fresh"), time.Minute, true)
	select {
	case w := <-got:
		require.True(t, w.ok)
		assert.True(t, w.kept)
		assert.Equal(t, "fresh", string(w.val), "the wait ended with the leader's answer, not the stale entry")
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was never woken")
	}
	v, ok := f2.Get(ctx, "k")
	require.True(t, ok)
	assert.Equal(t, "fresh", string(v))
}

// TestFlightCallOutlivesItsCallersWhileTheFleetWaits: the leader's callers
// leaving does not cancel its backend call while a waiter on another
// replica waits; the waiter leaving does, within the hold's checks, and the
// waiter left the fleet's waiters behind it.
func TestFlightCallOutlivesItsCallersWhileTheFleetWaits(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	leaderCtx, leaderLeaves := context.WithCancel(context.Background())
	defer leaderLeaves()
	call, finish, _ := f1.Lead(leaderCtx, "k")
	require.NotNil(t, finish)
	defer finish(nil, 0, false)

	waiterCtx, waiterLeaves := context.WithCancel(context.Background())
	defer waiterLeaves()
	_, _, wait := f2.Lead(waiterCtx, "k")
	require.NotNil(t, wait)
	waited := make(chan bool, 1)
	go func() { _, _, ok := wait(waiterCtx); waited <- ok }()
	eventually(t, 3*time.Second, func() bool { return waitersOf(t, prefix, "k") == 1 }, "the waiter never registered")

	leaderLeaves()
	eventually(t, 3*time.Second, func() bool { return f1.Stats().Held == 1 }, "the call was not held for the waiter")
	time.Sleep(time.Second) // four hold checks
	require.NoError(t, call.Err(), "the call was cancelled while another replica waits")

	waiterLeaves()
	require.False(t, <-waited)
	assert.Zero(t, waitersOf(t, prefix, "k"), "the waiter left the fleet's waiters")
	select {
	case <-call.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the call outlived the fleet's last waiter")
	}
}

// TestFlightCallEndsWithItsCallersWhenNobodyWaits: the ordinary case: no
// other replica waits, so the leader's callers leaving cancels the call as
// it would on a gateway alone; and a call whose callers stay is never
// cancelled by the fleet.
func TestFlightCallEndsWithItsCallersWhenNobodyWaits(t *testing.T) {
	prefix := testPrefix(t)
	f := newFleet(t, fleet.Settings{Prefix: prefix})
	ctx, leave := context.WithCancel(context.Background())
	call, finish, _ := f.Lead(ctx, "k")
	require.NotNil(t, finish)
	defer finish(nil, 0, false)
	stay, finishStay, _ := f.Lead(context.Background(), "other")
	require.NotNil(t, finishStay)

	leave()
	select {
	case <-call.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the call outlived its callers with nobody waiting")
	}
	assert.Zero(t, f.Stats().Held)
	require.NoError(t, stay.Err())
	finishStay([]byte("answer"), time.Minute, true)
	require.Error(t, stay.Err(), "finish ends the call's context")
}

// TestFlightCallEndsWhenRedisFailsWhileHeld: Redis failing while the call
// is held for other replicas means this replica is alone: the call ends.
func TestFlightCallEndsWhenRedisFailsWhileHeld(t *testing.T) {
	prefix := testPrefix(t)
	p := newRedisProxy(t)
	f1 := newFleet(t, fleet.Settings{URL: p.url(), Prefix: prefix, ReplicaID: "r1", Timeout: 250 * time.Millisecond})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	leaderCtx, leaderLeaves := context.WithCancel(context.Background())
	call, finish, _ := f1.Lead(leaderCtx, "k")
	require.NotNil(t, finish)
	defer finish(nil, 0, false)
	waiterCtx, waiterLeaves := context.WithCancel(context.Background())
	defer waiterLeaves()
	_, _, wait := f2.Lead(waiterCtx, "k")
	require.NotNil(t, wait)
	waited := make(chan bool, 1)
	go func() { _, _, ok := wait(waiterCtx); waited <- ok }()
	defer func() { waiterLeaves(); <-waited }()
	eventually(t, 3*time.Second, func() bool { return waitersOf(t, prefix, "k") == 1 }, "the waiter never registered")

	leaderLeaves()
	eventually(t, 3*time.Second, func() bool { return f1.Stats().Held == 1 }, "the call was not held for the waiter")
	p.Stop()
	select {
	case <-call.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the call was still held with Redis gone")
	}
}

// waitersOf counts the live registrations in key's waiters.
func waitersOf(t testing.TB, prefix, key string) int64 {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	n, err := rdb.ZCard(context.Background(), prefix+":v1:f:"+key+":w").Result()
	require.NoError(t, err)
	return n
}

// TestFlightCallEndsWhenTheLastWaiterDies: a waiter whose replica dies
// never says it left; its registration expires 3s after its last check
// and the held call ends then.
func TestFlightCallEndsWhenTheLastWaiterDies(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2, err := fleet.New(fleet.Settings{URL: "redis://" + redisAddr, Prefix: prefix, ReplicaID: "r2", Timeout: time.Second})
	require.NoError(t, err)
	leaderCtx, leaderLeaves := context.WithCancel(context.Background())
	call, finish, _ := f1.Lead(leaderCtx, "k")
	require.NotNil(t, finish)
	defer finish(nil, 0, false)
	_, _, wait := f2.Lead(context.Background(), "k")
	require.NotNil(t, wait)
	waited := make(chan bool, 1)
	go func() { _, _, ok := wait(context.Background()); waited <- ok }()
	eventually(t, 3*time.Second, func() bool { return waitersOf(t, prefix, "k") == 1 }, "the waiter never registered")
	leaderLeaves()
	eventually(t, 3*time.Second, func() bool { return f1.Stats().Held == 1 }, "the call was not held for the waiter")

	require.NoError(t, f2.Close()) // the waiter's replica dies: its wait fails, it never leaves
	require.False(t, <-waited)
	select {
	case <-call.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the call was held for a dead waiter past its registration")
	}
}
