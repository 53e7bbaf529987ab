package fleet_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// sentinelSet is a primary, its replica and one Sentinel watching them:
// three redis-server processes of this test's own (never the shared Redis,
// which a failover would demote).
type sentinelSet struct {
	name                      string
	primary, replica, watcher int // ports
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startRedisServer(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("redis-server", args...)
	require.NoError(t, cmd.Start(), "redis-server is required")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

func waitRedis(t *testing.T, port int, ready func(*redis.Client) bool, msg string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	defer rdb.Close()
	eventually(t, 15*time.Second, func() bool { return ready(rdb) }, "%s", msg)
}

func newSentinelSet(t *testing.T) *sentinelSet {
	t.Helper()
	s := &sentinelSet{name: "vegatest-" + strconv.Itoa(os.Getpid()), primary: freePort(t), replica: freePort(t), watcher: freePort(t)}
	common := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}
	startRedisServer(t, append([]string{"--port", strconv.Itoa(s.primary)}, common...)...)
	startRedisServer(t, append([]string{"--port", strconv.Itoa(s.replica), "--replicaof", "127.0.0.1", strconv.Itoa(s.primary)}, common...)...)
	conf := filepath.Join(t.TempDir(), "sentinel.conf") // Sentinel rewrites its config
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil,
		"port %d\nbind 127.0.0.1\nsentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\n",
		s.watcher, s.name, s.primary, s.name, s.name), 0o600))
	startRedisServer(t, conf, "--sentinel")
	waitRedis(t, s.watcher, func(c *redis.Client) bool {
		r, err := c.Do(context.Background(), "SENTINEL", "REPLICAS", s.name).Slice()
		return err == nil && len(r) == 1
	}, "the Sentinel never saw the replica")
	return s
}

func (s *sentinelSet) url() string {
	return fmt.Sprintf("redis://127.0.0.1:%d/0?master_name=%s", s.watcher, s.name)
}

// TestFleetThroughSentinel: a fleet whose REDIS_URL names a Sentinel
// shares its tier, flights and notices through the primary the Sentinel
// names, and follows a failover: after SENTINEL FAILOVER it writes to the
// promoted replica (a write to the old primary, now a replica, would be
// refused) and its notices flow again.
func TestFleetThroughSentinel(t *testing.T) {
	s := newSentinelSet(t)
	prefix := "vegatest"
	f1 := newFleet(t, fleet.Settings{URL: s.url(), Prefix: prefix, ReplicaID: "r1"})
	f2 := newFleet(t, fleet.Settings{URL: s.url(), Prefix: prefix, ReplicaID: "r2"})
	var mu sync.Mutex
	var purged []string
	f2.OnPurge(func(p string) { mu.Lock(); purged = append(purged, p); mu.Unlock() })
	eventually(t, 5*time.Second, func() bool { return f1.Stats().Subscribed && f2.Stats().Subscribed }, "no subscription")
	ctx := context.Background()

	share := func(key string) {
		t.Helper()
		f1.Set(key, []byte("through the primary"), time.Minute)
		eventually(t, 10*time.Second, func() bool { v, ok := f2.Get(ctx, key); return ok && string(v) == "through the primary" },
			"replica 2 never read replica 1's %s", key)
		_, finish, _ := f1.Lead(ctx, key+"/flight")
		require.NotNil(t, finish)
		_, _, wait := f2.Lead(ctx, key+"/flight")
		require.NotNil(t, wait, "the lease is r1's")
		got := make(chan string, 1)
		go func() { v, _, _ := wait(ctx); got <- string(v) }()
		finish([]byte("handed"), 0, false)
		select {
		case v := <-got:
			assert.Equal(t, "handed", v)
		case <-time.After(5 * time.Second):
			t.Fatal("the waiter was never woken")
		}
	}
	start := time.Now()
	share("before")
	t.Logf("shared before the failover in %v", time.Since(start))
	primary := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.primary)})
	defer primary.Close()
	v, err := primary.Get(ctx, prefix+":v1:c:before").Result()
	require.NoError(t, err)
	assert.Equal(t, "through the primary", v, "written to the primary the Sentinel names")

	sentinel := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.watcher)})
	defer sentinel.Close()
	var failoverErr error
	eventually(t, 20*time.Second, func() bool { // NOGOODSLAVE until the Sentinel has the replica's state
		failoverErr = sentinel.Do(ctx, "SENTINEL", "FAILOVER", s.name).Err()
		return failoverErr == nil
	}, "SENTINEL FAILOVER: %v", &failoverErr)
	failover := time.Now()
	eventually(t, 20*time.Second, func() bool {
		addr, err := sentinel.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.name).StringSlice()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(s.replica)
	}, "the failover never promoted the replica")

	promoted := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.replica)})
	defer promoted.Close()
	eventually(t, 20*time.Second, func() bool {
		key := fmt.Sprintf("after-%d", time.Now().UnixNano())
		f1.Set(key, []byte("through the primary"), time.Minute)
		time.Sleep(100 * time.Millisecond)
		return promoted.Get(ctx, prefix+":v1:c:"+key).Err() == nil
	}, "the fleet never wrote to the promoted replica")
	t.Logf("the fleet wrote to the promoted replica %v after SENTINEL FAILOVER", time.Since(failover))
	share("after")
	v, err = promoted.Get(ctx, prefix+":v1:c:after").Result()
	require.NoError(t, err)
	assert.Equal(t, "through the primary", v, "written to the new primary")

	eventually(t, 10*time.Second, func() bool { return f1.Stats().Subscribed && f2.Stats().Subscribed }, "not subscribed again")
	eventually(t, 10*time.Second, func() bool {
		_, _ = f1.Purge(ctx, "after")
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return len(purged) > 0
	}, "a purge notice never reached replica 2 after the failover")
	t.Logf("a purge notice reached replica 2 %v after SENTINEL FAILOVER", time.Since(failover))
}
