package fleet_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// followed is what one follow received.
type followed struct {
	mu     sync.Mutex
	chunks []string
	code   uint32
	msg    string
	err    error
	done   chan struct{}
}

func (r *followed) n() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.chunks) }

// startFollow runs follow on a goroutine of its own.
func startFollow(ctx context.Context, follow func(context.Context, func([]byte) error) (uint32, string, error)) *followed {
	r := &followed{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		code, msg, err := follow(ctx, func(b []byte) error {
			r.mu.Lock()
			r.chunks = append(r.chunks, string(b))
			r.mu.Unlock()
			return nil
		})
		r.mu.Lock()
		r.code, r.msg, r.err = code, msg, err
		r.mu.Unlock()
	}()
	return r
}

func (r *followed) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		t.Fatal("the follow never ended")
	}
}

// leadStream asserts that f leads key's stream flight.
func leadStream(t *testing.T, f *fleet.Fleet, key string) (func([]byte), func(bool, uint32, string)) {
	t.Helper()
	send, end, _ := leadStreamFollowed(t, f, key)
	return send, end
}

// leadStreamFollowed is leadStream with the followed report.
func leadStreamFollowed(t *testing.T, f *fleet.Fleet, key string) (func([]byte), func(bool, uint32, string), func(context.Context) bool) {
	t.Helper()
	send, end, followed, follow := f.LeadStream(context.Background(), key)
	require.NotNil(t, send, "leads")
	require.NotNil(t, end)
	require.NotNil(t, followed)
	require.Nil(t, follow)
	return send, end, followed
}

// joinStream asserts that f finds key's stream flight led elsewhere.
func joinStream(t *testing.T, f *fleet.Fleet, key string) func(context.Context, func([]byte) error) (uint32, string, error) {
	t.Helper()
	send, end, followed, follow := f.LeadStream(context.Background(), key)
	require.Nil(t, send, "the lease is another replica's")
	require.Nil(t, followed)
	require.Nil(t, end)
	require.NotNil(t, follow)
	return follow
}

// TestStreamFollowLiveAndLate: one follower from before the first chunk
// receives the chunks as they are sent (each one before the next is sent);
// a late one, on a third replica, replays them from the first; both get
// the end, OK.
func TestStreamFollowLiveAndLate(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	f3 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r3"})
	key := "generatestream/t1/k"

	send, end := leadStream(t, f1, key)
	live := startFollow(context.Background(), joinStream(t, f2, key))
	want := []string{"one", "two", "three"}
	for i, c := range want {
		send([]byte(c))
		eventually(t, 5*time.Second, func() bool { return live.n() == i+1 }, "chunk %d not followed live", i)
	}
	late := startFollow(context.Background(), joinStream(t, f3, key))
	eventually(t, 5*time.Second, func() bool { return late.n() == 3 }, "the late follower did not replay the chunks sent")
	end(true, 0, "")
	for _, r := range []*followed{live, late} {
		r.wait(t, 5*time.Second)
		require.NoError(t, r.err)
		assert.Equal(t, want, r.chunks, "every chunk, from the first, in order")
		assert.Zero(t, r.code)
	}

	st1, st2 := f1.Stats(), f2.Stats()
	assert.EqualValues(t, 1, st1.StreamsLed)
	assert.EqualValues(t, 1, st2.StreamJoins)
	assert.EqualValues(t, 1, f3.Stats().StreamJoins)
	assert.Zero(t, st2.StreamTakeovers+st1.StreamsBroken+st2.StreamsBroken+st2.StreamsLed)

	// The lease is dropped at the end: the next flight of the key leads.
	eventually(t, 5*time.Second, func() bool {
		send, end, _, follow := f2.LeadStream(context.Background(), key)
		if send != nil {
			end(true, 0, "")
			return true
		}
		if follow != nil {
			_, _, _ = follow(context.Background(), func([]byte) error { return nil })
		}
		return false
	}, "the lease outlived the flight")
	assert.EqualValues(t, 1, f2.Stats().StreamsLed, "led the next flight")
}

// TestStreamOneChunkOrdinary: the ordinary flight, one chunk, one
// follower; the stream key is kept a little after the end, then goes.
func TestStreamOneChunkOrdinary(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	key := "generatestream/t1/one"
	send, end := leadStream(t, f1, key)
	r := startFollow(context.Background(), joinStream(t, f2, key))
	send([]byte("only"))
	end(true, 0, "")
	r.wait(t, 5*time.Second)
	require.NoError(t, r.err)
	assert.Equal(t, []string{"only"}, r.chunks)

	streams := filterPrefix(keysUnder(t, prefix), prefix+":v1:f:"+key+":s:r1:")
	require.Len(t, streams, 1, "one Redis stream for the flight")
	ttl := pttl(t, streams[0])
	assert.Positive(t, ttl, "the stream has a TTL")
	assert.LessOrEqual(t, ttl, 10*time.Second, "kept at most 10s after the end")
	assert.NotContains(t, keysUnder(t, prefix), prefix+":v1:f:"+key, "the lease is dropped")
}

// TestStreamEndsWithError: the leader's error status reaches the followers
// as its code and message, after the chunks sent before it.
func TestStreamEndsWithError(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	key := "generatestream/t1/err"
	send, end := leadStream(t, f1, key)
	r := startFollow(context.Background(), joinStream(t, f2, key))
	send([]byte("partial"))
	end(true, 14, "backend unavailable")
	r.wait(t, 5*time.Second)
	require.NoError(t, r.err, "an error status is an end, not a broken flight")
	assert.Equal(t, []string{"partial"}, r.chunks)
	assert.EqualValues(t, 14, r.code)
	assert.Equal(t, "backend unavailable", r.msg)
}

// TestStreamBroken: a flight with nothing to share, or above the entry
// bound, ends its followers with ErrStreamBroken, never as complete.
func TestStreamBroken(t *testing.T) {
	t.Run("nothing to share", func(t *testing.T) {
		prefix := testPrefix(t)
		f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
		f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
		key := "generatestream/t1/abandoned"
		send, end := leadStream(t, f1, key)
		r := startFollow(context.Background(), joinStream(t, f2, key))
		send([]byte("a"))
		end(false, 0, "")
		r.wait(t, 5*time.Second)
		require.ErrorIs(t, r.err, fleet.ErrStreamBroken)
		assert.Equal(t, []string{"a"}, r.chunks)
		assert.EqualValues(t, 1, f1.Stats().StreamsBroken)
	})
	t.Run("above the entry bound", func(t *testing.T) {
		prefix := testPrefix(t)
		f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
		f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
		key := "generatestream/t1/long"
		send, end := leadStream(t, f1, key)
		r := startFollow(context.Background(), joinStream(t, f2, key))
		const bound = 4096
		for i := range bound + 1 {
			send(fmt.Appendf(nil, "c%d", i))
			if i%128 == 127 { // let the writer keep up: this test is about the bound, not the queue
				eventually(t, 10*time.Second, func() bool { return r.n() > i-128 }, "the follower is stuck at %d", r.n())
			}
		}
		end(true, 0, "")
		r.wait(t, 10*time.Second)
		require.ErrorIs(t, r.err, fleet.ErrStreamBroken, "a flight above the bound is broken, not complete")
		assert.LessOrEqual(t, len(r.chunks), bound)
	})
	t.Run("queue overflow", func(t *testing.T) {
		prefix := testPrefix(t)
		proxy := newRedisProxy(t)
		f1 := newFleet(t, fleet.Settings{URL: proxy.url(), Prefix: prefix, ReplicaID: "r1"})
		f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
		key := "generatestream/t1/burst"
		send, end := leadStream(t, f1, key)
		r := startFollow(context.Background(), joinStream(t, f2, key))
		// Every round trip of the leader's writer now takes 200ms or more:
		// 1000 chunks sent at once (microseconds each) overflow its
		// 256-entry queue, since it takes at most 65 of them before its
		// first round trip.
		defer proxy.toxic(t, "latency", `{"latency":200}`)()
		for i := range 1000 {
			send(fmt.Appendf(nil, "c%d", i))
		}
		end(true, 0, "")
		r.wait(t, 10*time.Second)
		require.ErrorIs(t, r.err, fleet.ErrStreamBroken, "never a truncated stream as if complete")
		assert.Less(t, len(r.chunks), 1000)
		assert.EqualValues(t, 1, f1.Stats().StreamsBroken)
	})
}

// TestStreamOwnerDies: the leader's process goes (its Fleet closes with the
// flight unfinished: no terminal entry, no more renewals); the follower
// has its chunk, then ErrOwnerGone once the lease expires, and the key can
// be led again.
func TestStreamOwnerDies(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	key := "generatestream/t1/dies"
	send, _ := leadStream(t, f1, key)
	r := startFollow(context.Background(), joinStream(t, f2, key))
	send([]byte("before"))
	eventually(t, 5*time.Second, func() bool { return r.n() == 1 }, "the chunk was not followed")
	require.NoError(t, f1.Close())
	r.wait(t, 10*time.Second) // lease 3s + a slice
	require.ErrorIs(t, r.err, fleet.ErrOwnerGone)
	assert.Equal(t, []string{"before"}, r.chunks)
	assert.EqualValues(t, 1, f2.Stats().StreamTakeovers)
	send2, end2, _, _ := f2.LeadStream(context.Background(), key)
	require.NotNil(t, send2, "the key is led again")
	end2(true, 0, "")
}

// TestStreamFollowLeaves: a follower whose caller leaves returns its
// context's error and frees its place.
func TestStreamFollowLeaves(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	key := "generatestream/t1/leaves"
	_, end := leadStream(t, f1, key)
	defer end(true, 0, "")
	ctx, cancel := context.WithCancel(context.Background())
	r := startFollow(ctx, joinStream(t, f2, key))
	cancel()
	r.wait(t, 5*time.Second)
	require.ErrorIs(t, r.err, context.Canceled)
}

// TestStreamJoinsBounded: at most 8 follows at once per replica; the 9th
// caller is told to go alone, and a place freed is taken again.
func TestStreamJoinsBounded(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	key := "generatestream/t1/many"
	send, end := leadStream(t, f1, key)
	var rs []*followed
	for range 8 {
		rs = append(rs, startFollow(context.Background(), joinStream(t, f2, key)))
	}
	s, e, fd, follow := f2.LeadStream(context.Background(), key)
	assert.True(t, s == nil && e == nil && fd == nil && follow == nil, "the 9th follow is refused: alone")
	assert.EqualValues(t, 1, f2.Stats().StreamJoinsRefused)
	send([]byte("x"))
	end(true, 0, "")
	for _, r := range rs {
		r.wait(t, 5*time.Second)
		require.NoError(t, r.err)
		assert.Equal(t, []string{"x"}, r.chunks)
	}
}

// TestStreamRedisDown: no Redis, no stream flight: the caller is alone.
func TestStreamRedisDown(t *testing.T) {
	f := newFleet(t, fleet.Settings{URL: "redis://127.0.0.1:1/0", Prefix: testPrefix(t), Timeout: 50 * time.Millisecond})
	send, end, followed, follow := f.LeadStream(context.Background(), "generatestream/t1/k")
	assert.True(t, send == nil && end == nil && followed == nil && follow == nil)
}

// pttl is key's remaining lifetime.
func pttl(t *testing.T, key string) time.Duration {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	d, err := rdb.PTTL(context.Background(), key).Result()
	require.NoError(t, err)
	return d
}

// TestStreamLeaderRedisBlip: the leader's Redis goes away for a moment
// while chunks are sent: its writer tries again and the follower gets
// every chunk and the end, no error.
func TestStreamLeaderRedisBlip(t *testing.T) {
	prefix := testPrefix(t)
	proxy := newRedisProxy(t)
	f1 := newFleet(t, fleet.Settings{URL: proxy.url(), Prefix: prefix, ReplicaID: "r1", Timeout: 250 * time.Millisecond})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	key := "generatestream/t1/blip"
	send, end := leadStream(t, f1, key)
	r := startFollow(context.Background(), joinStream(t, f2, key))
	send([]byte("a"))
	send([]byte("b"))
	eventually(t, 5*time.Second, func() bool { return r.n() == 2 }, "the first chunks were not followed")
	proxy.Stop()
	send([]byte("c"))
	send([]byte("d"))
	end(true, 0, "")
	eventually(t, 5*time.Second, func() bool { return f1.Stats().WritesDropped > 0 }, "no append failed: the blip was not seen")
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, proxy.Start())
	r.wait(t, 10*time.Second)
	require.NoError(t, r.err)
	assert.Equal(t, []string{"a", "b", "c", "d"}, r.chunks)
	assert.Zero(t, f1.Stats().StreamsBroken)
}

// TestStreamFollowersAreSeen: the leader sees a follower while it reads,
// and none once it has returned (what keeps a flight going after the
// leader's own callers left).
func TestStreamFollowersAreSeen(t *testing.T) {
	prefix := testPrefix(t)
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	key := "generatestream/t1/followed"
	send, end, followed := leadStreamFollowed(t, f1, key)
	ctx := context.Background()
	assert.False(t, followed(ctx), "no follower yet")
	r := startFollow(ctx, joinStream(t, f2, key))
	send([]byte("a"))
	eventually(t, 5*time.Second, func() bool { return r.n() == 1 }, "the chunk was not followed")
	assert.True(t, followed(ctx), "a follower reading")
	end(true, 0, "")
	r.wait(t, 5*time.Second)
	require.NoError(t, r.err)
	assert.False(t, followed(ctx), "the follower left")
}
