package fleet

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// beat refreshes this replica's heartbeat and counts the live ones, on
// Redis's clock (TIME), so replicas' clock skew does not matter:
// KEYS[1] the members ZSET, KEYS[2] this replica's key; ARGV[1] the
// replica, ARGV[2] the heartbeat TTL in ms. It returns the live count.
var beat = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], now, 'PX', ttl)
return redis.call('ZCARD', KEYS[1])
`)

// heartbeat says every HeartbeatInterval that this replica is alive. It is
// also what probes a Redis that failed when no traffic does: through the
// breaker, it is the half-open probe that brings the replica back.
func (f *Fleet) heartbeat(ctx context.Context) {
	defer f.wg.Done()
	ttl := 3 * f.set.HeartbeatInterval
	for {
		var n int64
		err := f.do(ctx, func(ctx context.Context) error {
			var err error
			n, err = beat.Run(ctx, f.rdb, []string{f.keys.members, f.keys.member(f.set.ReplicaID)},
				f.set.ReplicaID, ttl.Milliseconds()).Int64()
			return err
		})
		if err == nil {
			f.stats.replicas.Store(n)
		}
		t := time.NewTimer(jitter(f.set.HeartbeatInterval))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// jitter spreads d by ±10%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}
