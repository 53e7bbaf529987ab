package fleet_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/fleet"
)

// TestClusterURLsRefused: a REDIS_URL for Cluster, or with several hosts in
// one authority, is refused with one clear message (never the password),
// rather than parsed into a host name that never resolves.
func TestClusterURLsRefused(t *testing.T) {
	for _, url := range []string{
		"redis://u:s3cret@h1:6379,h2:6379/0",
		"redis-sentinel://u:s3cret@h1:26379,h2:26379/0",
		"redis+sentinel://h1:26379/mymaster",
		"redis+cluster://h1:6379",
		"rediss://u:s3cret@h1:6379/0?addr=h2:6379&addr=h3:6379",
		"redis://h1:6379?route_randomly=true",
		"redis://h1:26379/0?master_name=primary&replica_only=true",
	} {
		t.Run(url, func(t *testing.T) {
			err := fleet.CheckURL(url, 50*time.Millisecond)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "REDIS_URL: one Redis server (redis://host:6379/0) or Sentinels")
			assert.Contains(t, err.Error(), "Redis Cluster and several hosts in one URL are not supported")
			_, err = fleet.New(fleet.Settings{URL: url})
			require.Error(t, err, "New refuses it too")
			assert.NotContains(t, err.Error(), "s3cret")
		})
	}
}

// TestSentinelURLOptions: master_name makes a URL a Sentinel one, with the
// same bounds as a one-server URL's.
func TestSentinelURLOptions(t *testing.T) {
	url := "rediss://sentinel-user:s3cret@sentinel1:26379/2?master_name=primary&addr=sentinel2:26379&username=vega&password=s3cret2&max_retries=5&pool_size=500"
	require.NoError(t, fleet.CheckURL(url, 50*time.Millisecond))
	opt, err := fleet.FailoverOptions(url, 50*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, "primary", opt.MasterName)
	assert.Equal(t, []string{"sentinel1:26379", "sentinel2:26379"}, opt.SentinelAddrs)
	assert.Equal(t, "sentinel-user", opt.SentinelUsername)
	assert.Equal(t, "vega", opt.Username)
	assert.Equal(t, 2, opt.DB)
	require.NotNil(t, opt.TLSConfig)
	assert.Equal(t, -1, opt.MaxRetries, "the URL's max_retries is overridden")
	assert.Equal(t, 32, opt.PoolSize, "the URL's pool_size is overridden")
	assert.Equal(t, 50*time.Millisecond, opt.PoolTimeout)
	assert.Equal(t, 250*time.Millisecond, opt.DialTimeout)
	assert.True(t, opt.ContextTimeoutEnabled)

	_, err = fleet.Options(url, 50*time.Millisecond)
	require.Error(t, err, "not one server")
	_, err = fleet.FailoverOptions("redis://h1:6379/0", 50*time.Millisecond)
	require.Error(t, err, "not a Sentinel URL")
	err = fleet.CheckURL("redis://u:s3cret@h1:26379/0?master_name=", 50*time.Millisecond)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret")
	err = fleet.CheckURL("redis://u:s3cret@h1:26379/0?master_name=p&bogus=1", 50*time.Millisecond)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "REDIS_URL: ")
	assert.NotContains(t, err.Error(), "s3cret")
}
