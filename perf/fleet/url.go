package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// REDIS_URL names one Redis server (redis:// or rediss://), or the primary
// that a set of Redis Sentinels watches: go-redis's failover URL, the
// Sentinels' address as host:port (more with addr=…), the primary's name as
// master_name=…, the Sentinels' user and password in the URL's userinfo and
// the primary's as username=… and password=…. Through Sentinel the client
// asks the Sentinels for the primary at each new connection and drops its
// connections to a demoted one (go-redis's failover client); its Pub/Sub
// connection it does not drop, so followFailovers closes the fleet's
// subscription when a Sentinel announces a new primary, and the subscriber
// subscribes again, on the new one (without this, purge and flight notices
// published on the new primary were lost: the waiters fell back to their
// 1s check, the purges never reached the other replicas).
//
// Redis Cluster is not supported: a flight's scripts touch several keys at
// once (lease, answer, waiters), which Cluster would need in one hash slot.
// A URL asking for Cluster, or naming several hosts in one authority (which
// go-redis would read as one host name that never resolves, so the gateway
// would run alone without a word), is refused at start.
var errTopology = errors.New("REDIS_URL: one Redis server (redis://host:6379/0) or Sentinels (redis://sentinel:26379/0?master_name=…&addr=sentinel2:26379); Redis Cluster and several hosts in one URL are not supported")

// clusterOptions are the URL parameters go-redis reads only for Cluster
// clients (ParseClusterURL, or a failover client routing to replicas).
var clusterOptions = map[string]bool{
	"max_redirects": true, "read_only": true, "replica_only": true, "route_by_latency": true,
	"route_by_latency_tolerance": true, "route_randomly": true, "use_disconnected_replicas": true,
}

// topology tells a Sentinel URL (master_name) from a one-server one, and
// refuses the others; a URL it cannot parse is left to go-redis's parser,
// which says why.
func topology(url string) (sentinel bool, err error) {
	u, err := neturl.Parse(url)
	if err != nil {
		return false, nil
	}
	if strings.Contains(u.Scheme, "sentinel") || strings.Contains(u.Scheme, "cluster") || strings.Contains(u.Host, ",") {
		return false, errTopology
	}
	q := u.Query()
	for k := range q {
		if clusterOptions[k] {
			return false, errTopology
		}
	}
	sentinel = q.Has("master_name")
	if !sentinel && q.Has("addr") {
		return false, errTopology // several servers without a primary's name: a Cluster URL
	}
	return sentinel, nil
}

// CheckURL reports what is wrong with url as REDIS_URL, naming REDIS_URL
// and never the password.
func CheckURL(url string, budget time.Duration) error {
	sentinel, err := topology(url)
	switch {
	case err != nil:
		return err
	case sentinel:
		_, err = FailoverOptions(url, budget)
	default:
		_, err = Options(url, budget)
	}
	return err
}

// FailoverOptions returns the go-redis options New uses for a Sentinel
// url and budget: the URL's, with the bounds of the package doc (they
// apply to the connections to the Sentinels too).
func FailoverOptions(url string, budget time.Duration) (*redis.FailoverOptions, error) {
	sentinel, err := topology(url)
	switch {
	case err != nil:
		return nil, err
	case !sentinel:
		return nil, errors.New("REDIS_URL: not a Sentinel URL (master_name=… missing)")
	}
	opt, err := redis.ParseFailoverURL(url)
	if err != nil {
		return nil, urlError(err)
	}
	if opt.MasterName == "" {
		return nil, errors.New("REDIS_URL: master_name must not be empty")
	}
	opt.ContextTimeoutEnabled = true
	opt.MaxRetries = -1
	opt.DialTimeout = dialTimeout
	opt.DialerRetries = 1
	opt.ReadTimeout, opt.WriteTimeout = budget, budget
	opt.PoolSize, opt.MaxActiveConns = poolSize, poolSize
	opt.MaxConcurrentDials = maxConcurrentDials
	opt.PoolTimeout = budget
	opt.MinIdleConns = 0
	opt.Protocol = 2
	opt.DisableIdentity = true
	return opt, nil
}

// urlError translates go-redis's parse errors: its messages name the
// scheme, path or parameter, never the password; url.Parse's quote the
// whole URL, so they are not passed on.
func urlError(err error) error {
	if _, isURL := errors.AsType[*neturl.Error](err); isURL {
		return errors.New("REDIS_URL: not a URL (redis://[user:password@]host:6379/0)")
	}
	return fmt.Errorf("REDIS_URL: %w", err)
}

// newClient builds the client for s.URL — one server, or the primary the
// Sentinels name (then sentinels is its options, for followFailovers) —
// whose every dial is reported to dialed, and says where it connects, for
// the log.
func newClient(s Settings, dialed func(err error)) (rdb *redis.Client, sentinels *redis.FailoverOptions, where string, err error) {
	count := func(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			dialed(err)
			return c, err
		}
	}
	sentinel, err := topology(s.URL)
	if err != nil {
		return nil, nil, "", err
	}
	if sentinel {
		fo, err := FailoverOptions(s.URL, s.Timeout)
		if err != nil {
			return nil, nil, "", err
		}
		fo.Dialer = count(redis.NewDialer(&redis.Options{Network: "tcp", DialTimeout: fo.DialTimeout, TLSConfig: fo.TLSConfig}))
		return redis.NewFailoverClient(fo), fo, "primary " + fo.MasterName + " via Sentinels " + strings.Join(fo.SentinelAddrs, ","), nil
	}
	opt, err := Options(s.URL, s.Timeout)
	if err != nil {
		return nil, nil, "", err
	}
	opt.Dialer = count(redis.NewDialer(opt))
	return redis.NewClient(opt), nil, opt.Addr, nil
}

// followFailovers listens to the Sentinels' "+switch-master" announcements
// (one Sentinel at a time, the next one when it fails) and, when the
// fleet's primary changes, closes the fleet's subscription so that the
// subscriber subscribes again, on the new primary. It returns when ctx
// ends.
func (f *Fleet) followFailovers(ctx context.Context, fo *redis.FailoverOptions) {
	defer f.wg.Done()
	for i := 0; ctx.Err() == nil; i++ {
		sc := redis.NewSentinelClient(&redis.Options{
			Addr: fo.SentinelAddrs[i%len(fo.SentinelAddrs)], Username: fo.SentinelUsername, Password: fo.SentinelPassword,
			TLSConfig: fo.TLSConfig, Dialer: fo.Dialer, DialTimeout: fo.DialTimeout, DialerRetries: 1, MaxRetries: -1,
			ContextTimeoutEnabled: true, Protocol: 2, DisableIdentity: true,
		})
		ps := sc.Subscribe(ctx, "+switch-master")
		stop := context.AfterFunc(ctx, func() { _ = ps.Close() }) // ends a blocked read
		f.watchSwitches(ctx, ps, fo.MasterName)
		stop()
		_ = ps.Close()
		_ = sc.Close()
		t := time.NewTimer(jitter(time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// watchSwitches handles one Sentinel's announcements until its
// subscription fails or ctx ends.
func (f *Fleet) watchSwitches(ctx context.Context, ps *redis.PubSub, master string) {
	for {
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil {
			return
		}
		// "<master name> <old ip> <old port> <new ip> <new port>"
		if name, _, _ := strings.Cut(msg.Payload, " "); name != master {
			continue
		}
		f.psMu.Lock()
		if f.ps != nil {
			_ = f.ps.Close()
		}
		f.psMu.Unlock()
	}
}
