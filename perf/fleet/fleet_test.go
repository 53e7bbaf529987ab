package fleet_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// redisAddr is the real Redis every test uses (.ci/run starts it), each
// under a prefix of its own.
const redisAddr = "127.0.0.1:6379"

// testPrefix returns a fresh prefix and removes its keys when the test ends.
func testPrefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "vegatest-" + hex.EncodeToString(b[:])
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("Redis at %s is required (.ci/run starts it): %v", redisAddr, err)
	}
	t.Cleanup(func() {
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Unlink(ctx, iter.Val())
		}
	})
	return prefix
}

// keysUnder lists the Redis keys under prefix.
func keysUnder(t testing.TB, prefix string) []string {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), prefix+":*").Result()
	require.NoError(t, err)
	return keys
}

func newFleet(t testing.TB, s fleet.Settings) *fleet.Fleet {
	t.Helper()
	if s.URL == "" {
		s.URL = "redis://" + redisAddr + "/0"
	}
	if s.Timeout == 0 {
		s.Timeout = time.Second // these tests are about semantics; a loaded CI must not fail them on the 50ms budget
	}
	f, err := fleet.New(s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// eventually polls cond every 10ms for up to d.
func eventually(t testing.TB, d time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSettingsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    fleet.Settings
		want string
	}{
		{"no url", fleet.Settings{}, "REDIS_URL: required"},
		{"scheme", fleet.Settings{URL: "http://localhost:6379"}, "REDIS_URL: redis: invalid URL scheme: http"},
		{"unix", fleet.Settings{URL: "unix:///tmp/redis.sock"}, "REDIS_URL: must be redis:// or rediss://"},
		{"db", fleet.Settings{URL: "redis://localhost:6379/x"}, `REDIS_URL: redis: invalid database number: "x"`},
		{"not a url, password not shown", fleet.Settings{URL: "redis://u:s3cret@host:port:x/0"}, "REDIS_URL: not a URL"},
		{"prefix", fleet.Settings{URL: "redis://localhost", Prefix: "a*b"}, "VEGA_REDIS_PREFIX"},
		{"timeout", fleet.Settings{URL: "redis://localhost", Timeout: -time.Second}, "VEGA_REDIS_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fleet.New(tc.s)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "s3cret")
		})
	}
}

func TestOptionsAvoidGoRedisPitfalls(t *testing.T) {
	opt, err := fleet.Options("rediss://user:pw@cache.example:6380/3?max_retries=5&pool_size=500", 50*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, "cache.example:6380", opt.Addr)
	assert.Equal(t, "user", opt.Username)
	assert.Equal(t, "pw", opt.Password)
	assert.Equal(t, 3, opt.DB)
	require.NotNil(t, opt.TLSConfig, "rediss:// is TLS")
	assert.Equal(t, "cache.example", opt.TLSConfig.ServerName)
	assert.True(t, opt.ContextTimeoutEnabled)
	assert.Equal(t, -1, opt.MaxRetries, "the URL's max_retries is overridden")
	assert.Equal(t, 32, opt.PoolSize, "the URL's pool_size is overridden")
	assert.Equal(t, 32, opt.MaxActiveConns)
	assert.Equal(t, 50*time.Millisecond, opt.PoolTimeout)
	assert.Equal(t, 250*time.Millisecond, opt.DialTimeout)
	assert.Equal(t, 1, opt.DialerRetries)
}

func TestTierRoundTrip(t *testing.T) {
	prefix := testPrefix(t)
	f := newFleet(t, fleet.Settings{Prefix: prefix})
	other := newFleet(t, fleet.Settings{Prefix: testPrefix(t)})
	ctx := context.Background()

	_, ok := f.Get(ctx, "generate/sim/abc")
	require.False(t, ok, "nothing stored yet")
	f.Set("generate/sim/abc", []byte("answer"), time.Minute)
	eventually(t, 2*time.Second, func() bool { _, ok := f.Get(ctx, "generate/sim/abc"); return ok }, "the write never landed")
	v, _ := f.Get(ctx, "generate/sim/abc")
	assert.Equal(t, "answer", string(v))
	_, ok = other.Get(ctx, "generate/sim/abc")
	assert.False(t, ok, "another fleet's prefix sees nothing of this one")
	assert.Equal(t, []string{prefix + ":v1:c:generate/sim/abc"}, filterPrefix(keysUnder(t, prefix), prefix+":v1:c:"))

	st := f.Stats()
	assert.Equal(t, fleet.ModeRedis, st.Mode)
	assert.Zero(t, st.Errors)
	assert.Positive(t, st.RTTP50)
	assert.GreaterOrEqual(t, st.RTTP99, st.RTTP50)
}

func filterPrefix(keys []string, p string) []string {
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, p) {
			out = append(out, k)
		}
	}
	return out
}

func TestPurgeReachesEveryReplica(t *testing.T) {
	prefix := testPrefix(t)
	type rec struct {
		mu   sync.Mutex
		seen []string
	}
	var r1, r2 rec
	f1 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{Prefix: prefix, ReplicaID: "r2"})
	f1.OnPurge(func(p string) { r1.mu.Lock(); r1.seen = append(r1.seen, p); r1.mu.Unlock() })
	f2.OnPurge(func(p string) { r2.mu.Lock(); r2.seen = append(r2.seen, p); r2.mu.Unlock() })
	eventually(t, 3*time.Second, func() bool { return f1.Stats().Subscribed && f2.Stats().Subscribed }, "subscriptions not confirmed")

	for _, k := range []string{"fetch/a.example/1", "fetch/a.example/2", "fetch/b.example/1", "fetch/a*example/1"} {
		f1.Set(k, []byte(k), time.Minute)
	}
	eventually(t, 2*time.Second, func() bool { return len(filterPrefix(keysUnder(t, prefix), prefix+":v1:c:")) == 4 }, "writes did not land")

	n, err := f1.Purge(context.Background(), "fetch/a.example/")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.ElementsMatch(t, []string{prefix + ":v1:c:fetch/b.example/1", prefix + ":v1:c:fetch/a*example/1"},
		filterPrefix(keysUnder(t, prefix), prefix+":v1:c:"), "only the prefix's keys go; the glob in another key is not a wildcard")
	eventually(t, 2*time.Second, func() bool { r2.mu.Lock(); defer r2.mu.Unlock(); return len(r2.seen) == 1 }, "replica 2 was not told")
	assert.Equal(t, []string{"fetch/a.example/"}, r2.seen)
	assert.Empty(t, r1.seen, "the purging replica does not hear its own notice")
	assert.EqualValues(t, 1, f2.Stats().PurgesReceived)
	assert.EqualValues(t, 1, f1.Stats().PurgesSent)

	n, err = f2.Purge(context.Background(), "")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Empty(t, filterPrefix(keysUnder(t, prefix), prefix+":v1:c:"))
}

func TestHeartbeatCountsReplicas(t *testing.T) {
	prefix := testPrefix(t)
	s := fleet.Settings{URL: "redis://" + redisAddr, Prefix: prefix, Timeout: time.Second, HeartbeatInterval: 50 * time.Millisecond}
	f1 := newFleet(t, s)
	f2, err := fleet.New(s)
	require.NoError(t, err)
	eventually(t, 2*time.Second, func() bool { return f1.Stats().ReplicasSeen == 2 }, "f1 sees %d replicas", f1.Stats().ReplicasSeen)
	assert.Contains(t, keysUnder(t, prefix), prefix+":v1:m:"+f1.ReplicaID())
	require.NoError(t, f2.Close())
	eventually(t, 2*time.Second, func() bool { return f1.Stats().ReplicasSeen == 1 }, "a closed replica still counted")
}
