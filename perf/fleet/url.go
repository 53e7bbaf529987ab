package fleet

import (
	"errors"
	neturl "net/url"
	"strings"
)

// errTopology refuses a REDIS_URL that names more than one server or asks
// for Redis Sentinel or Redis Cluster. The fleet's scripts touch several
// keys of one flight at once (lease, answer, waiters, channel), which
// Cluster would need in one hash slot, and a Sentinel failover would need
// tests against a real Sentinel: neither is supported yet, and a URL
// asking for them is refused at start rather than half-understood (go-redis
// reads "h1:6379,h2:6379" as one host name, which never resolves, so the
// gateway would run alone without a word).
var errTopology = errors.New("REDIS_URL: one Redis server only (redis:// or rediss://, one host:port): Redis Sentinel and Redis Cluster are not supported")

// topologyOptions are the URL parameters go-redis reads only for Sentinel
// (ParseFailoverURL) or Cluster (ParseClusterURL).
var topologyOptions = map[string]bool{
	"addr": true, "master_name": true, "sentinel_username": true, "sentinel_password": true,
	"max_redirects": true, "read_only": true, "replica_only": true, "route_by_latency": true,
	"route_by_latency_tolerance": true, "route_randomly": true, "use_disconnected_replicas": true,
}

// singleServer refuses URLs for Sentinel, Cluster or several hosts; a URL
// it cannot parse is left to redis.ParseURL, which says why.
func singleServer(url string) error {
	u, err := neturl.Parse(url)
	if err != nil {
		return nil
	}
	if strings.Contains(u.Scheme, "sentinel") || strings.Contains(u.Scheme, "cluster") || strings.Contains(u.Host, ",") {
		return errTopology
	}
	for k := range u.Query() {
		if topologyOptions[k] {
			return errTopology
		}
	}
	return nil
}
