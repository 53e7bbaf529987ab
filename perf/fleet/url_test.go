package fleet_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// TestSentinelAndClusterURLsRefused: a REDIS_URL for Sentinel, Cluster or
// several hosts is refused with one clear message (never the password),
// rather than parsed into a host name that never resolves.
func TestSentinelAndClusterURLsRefused(t *testing.T) {
	for _, url := range []string{
		"redis://u:s3cret@h1:6379,h2:6379/0",
		"redis-sentinel://u:s3cret@h1:26379,h2:26379/0",
		"redis+sentinel://h1:26379/mymaster",
		"redis+cluster://h1:6379",
		"redis://u:s3cret@h1:26379/0?master_name=mymaster",
		"redis://h1:26379/0?master_name=mymaster&addr=h2:26379",
		"rediss://u:s3cret@h1:6379/0?addr=h2:6379&addr=h3:6379",
		"redis://h1:6379?route_randomly=true",
	} {
		t.Run(url, func(t *testing.T) {
			_, err := fleet.Options(url, 50*time.Millisecond)
			require.Error(t, err)
			assert.Equal(t, "REDIS_URL: one Redis server only (redis:// or rediss://, one host:port): Redis Sentinel and Redis Cluster are not supported", err.Error())
			_, err = fleet.New(fleet.Settings{URL: url})
			require.Error(t, err, "New refuses it too")
			assert.NotContains(t, err.Error(), "s3cret")
		})
	}
	// One server, with go-redis's own parameters, is fine.
	opt, err := fleet.Options("rediss://u:s3cret@redis.internal:6380/2?dial_timeout=3s&client_name=vega", 50*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, "redis.internal:6380", opt.Addr)
}
