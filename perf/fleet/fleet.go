package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// Defaults of the zero Settings.
const (
	DefaultPrefix            = "vega"
	DefaultTimeout           = 50 * time.Millisecond
	DefaultHeartbeatInterval = time.Second
	DefaultBreakerTimeout    = time.Second
)

// Client bounds (see the package doc).
const (
	poolSize           = 32
	maxConcurrentDials = 4
	dialTimeout        = 250 * time.Millisecond
	maxInFlight        = 256
	writeQueue         = 1024
	writers            = 2
)

// Settings configure a Fleet. Zero values mean the documented defaults.
type Settings struct {
	// URL is REDIS_URL: redis://[user:password@]host:port/db, or rediss://
	// for TLS. Required. Its query parameters (dial_timeout, pool_size …)
	// are parsed by go-redis, then the bounds above override theirs.
	URL string
	// Prefix names the fleet: every key starts with "<Prefix>:v1:".
	// VEGA_REDIS_PREFIX; 0 means DefaultPrefix ("vega").
	Prefix string
	// Timeout is every Redis operation's budget, VEGA_REDIS_TIMEOUT; 0
	// means DefaultTimeout (50ms).
	Timeout time.Duration
	// ReplicaID names this replica in the heartbeats; "" means
	// "<hostname>-<pid>-<random>".
	ReplicaID string
	// HeartbeatInterval is how often this replica says it is alive; its
	// heartbeat lives three intervals. 0 means 1s.
	HeartbeatInterval time.Duration
	// BreakerTimeout is how long the breaker stays open before one
	// operation probes Redis again. 0 means 1s.
	BreakerTimeout time.Duration
	// Log receives state changes (local only / using Redis). nil: discard.
	Log *slog.Logger
}

func (s Settings) withDefaults() (Settings, error) {
	switch {
	case s.URL == "":
		return s, errors.New("REDIS_URL: required")
	case s.Timeout < 0:
		return s, fmt.Errorf("VEGA_REDIS_TIMEOUT: must not be negative, got %v", s.Timeout)
	case s.HeartbeatInterval < 0 || s.BreakerTimeout < 0:
		return s, errors.New("fleet: HeartbeatInterval and BreakerTimeout must not be negative")
	case strings.ContainsAny(s.Prefix, "*?[]\\ \t\r\n"):
		return s, fmt.Errorf("VEGA_REDIS_PREFIX: %q must not contain spaces or any of *?[]\\", s.Prefix)
	}
	if s.Prefix == "" {
		s.Prefix = DefaultPrefix
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.HeartbeatInterval == 0 {
		s.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if s.BreakerTimeout == 0 {
		s.BreakerTimeout = DefaultBreakerTimeout
	}
	if s.ReplicaID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		s.ReplicaID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Options returns the go-redis options New uses for a one-server url and
// budget: the URL's, with the bounds of the package doc. A Sentinel URL
// takes FailoverOptions (url.go).
func Options(url string, budget time.Duration) (*redis.Options, error) {
	switch sentinel, err := topology(url); {
	case err != nil:
		return nil, err
	case sentinel:
		return nil, errors.New("REDIS_URL: names Sentinels (master_name): not one server")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, urlError(err)
	}
	if opt.Network != "tcp" {
		return nil, errors.New("REDIS_URL: must be redis:// or rediss://")
	}
	opt.ContextTimeoutEnabled = true // a deadline bounds the read, not only the pool wait
	opt.MaxRetries = -1              // never ask a dead node twice
	opt.DialTimeout = dialTimeout
	opt.DialerRetries = 1
	opt.ReadTimeout, opt.WriteTimeout = budget, budget
	opt.PoolSize, opt.MaxActiveConns = poolSize, poolSize
	opt.MaxConcurrentDials = maxConcurrentDials
	opt.PoolTimeout = budget
	opt.MinIdleConns = 0
	// A new connection is a dial and nothing else before its first command
	// (no HELLO, no CLIENT SETINFO; AUTH and SELECT only when the URL has
	// them): it has to fit in one operation's budget.
	opt.Protocol = 2
	opt.DisableIdentity = true
	return opt, nil
}

// Fleet is one replica's Redis connection. It is safe for concurrent use.
type Fleet struct {
	set     Settings
	rdb     *redis.Client
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	keys    keys
	stats   counters
	rtt     rttWindow

	inflight atomic.Int64
	onPurge  atomic.Pointer[func(prefix string)]
	// Shared breakers and slots (breaker.go, slots.go): the notices'
	// receiver, whether a resync is running, and their counts.
	onBreaker atomic.Pointer[func(backend string, openFor time.Duration)]
	resyncing atomic.Bool
	bstats    limitCounters
	writes    chan write

	streams streamState // stream flights (stream.go)

	waitMu  sync.Mutex
	waiters map[string][]chan struct{} // guarded by waitMu: this replica's waiters per flight key, closed by a "done" notice

	psMu sync.Mutex
	ps   *redis.PubSub // guarded by psMu: the current subscription, closed by Close to end its read

	ctx    context.Context // ends at Close: the goroutines' and lease renewals' parent
	stop   context.CancelFunc
	wg     sync.WaitGroup // the goroutines, lease renewals included
	mu     sync.Mutex
	closed bool // guarded by mu: no goroutine starts (wg.Add) once set
}

// New connects nothing yet: it builds the client and starts the heartbeat,
// the subscriber and the writers, which connect as they run. A Redis that
// is down at start costs nothing but the fallback: New fails only on bad
// settings.
func New(s Settings) (*Fleet, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &Fleet{set: s, keys: newKeys(s.Prefix), writes: make(chan write, writeQueue), waiters: map[string][]chan struct{}{}}
	var sentinels *redis.FailoverOptions
	var where string
	f.rdb, sentinels, where, err = newClient(s, func(err error) {
		f.stats.dials.Add(1)
		if err != nil {
			f.stats.dialErrors.Add(1)
		}
	})
	if err != nil {
		return nil, err
	}
	f.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "redis",
		MaxRequests: 1,
		Interval:    5 * time.Second,
		Timeout:     s.BreakerTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= 5 || (c.Requests >= 20 && 2*c.TotalFailures >= c.Requests)
		},
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, redis.Nil) },
		IsExcluded:   func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			switch to {
			case gobreaker.StateOpen:
				f.stats.breakerOpens.Add(1)
				if from == gobreaker.StateClosed {
					s.Log.Warn("redis: failing, this replica runs on its local tier", "redis_addr", where, "prefix", s.Prefix)
				}
			case gobreaker.StateClosed:
				s.Log.Info("redis: back, this replica uses the fleet's shared tier again", "redis_addr", where, "prefix", s.Prefix)
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	f.ctx, f.stop = ctx, cancel
	f.wg.Add(2 + writers)
	go f.heartbeat(ctx)
	go f.subscribe(ctx)
	if sentinels != nil {
		f.wg.Add(1)
		go f.followFailovers(ctx, sentinels)
	}
	for range writers {
		go f.writer(ctx)
	}
	return f, nil
}

// ReplicaID is this replica's name in the fleet.
func (f *Fleet) ReplicaID() string { return f.set.ReplicaID }

// Prefix is the fleet's name, the first part of every key.
func (f *Fleet) Prefix() string { return f.set.Prefix }

// Close stops the goroutines, removes this replica's heartbeat (best
// effort) and closes the connections. Queued writes not yet sent are
// dropped.
func (f *Fleet) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.stop()
	f.psMu.Lock()
	if f.ps != nil {
		_ = f.ps.Close()
	}
	f.psMu.Unlock()
	f.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), f.set.Timeout)
	defer cancel()
	_ = f.do(ctx, func(ctx context.Context) error {
		_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, f.keys.members, f.set.ReplicaID)
			p.Del(ctx, f.keys.member(f.set.ReplicaID))
			return nil
		})
		return err
	})
	return f.rdb.Close()
}

// goAdd counts one more goroutine in wg unless the fleet is closed.
func (f *Fleet) goAdd() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
}

// errLocal is what do returns when the operation was not sent: the breaker
// is open or too many operations are in flight. Callers treat it as any
// failure: fall back to local.
var errLocal = errors.New("fleet: running on the local tier")

// errCallerGone marks a failure caused by the caller leaving (its context
// ended before the budget): it says nothing about Redis.
var errCallerGone = errors.New("fleet: caller gone")

// do runs op with the operation budget, through the in-flight bound and the
// breaker, and records its round trip and outcome.
func (f *Fleet) do(ctx context.Context, op func(ctx context.Context) error) error {
	return f.doFor(ctx, f.set.Timeout, op)
}

// doFor is do with its own budget: a blocking read's (XREAD BLOCK) is the
// time it may block plus the operation budget.
func (f *Fleet) doFor(ctx context.Context, budget time.Duration, op func(ctx context.Context) error) error {
	if f.inflight.Add(1) > maxInFlight {
		f.inflight.Add(-1)
		f.stats.fallbacks.Add(1)
		return errLocal
	}
	defer f.inflight.Add(-1)
	done, err := f.breaker.Allow()
	if err != nil {
		f.stats.fallbacks.Add(1)
		return errLocal
	}
	opCtx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	start := time.Now()
	err = op(opCtx)
	took := time.Since(start)
	f.stats.ops.Add(1)
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		if budget == f.set.Timeout { // a blocking read's time is no round trip
			f.rtt.add(took)
		}
	case ctx.Err() != nil:
		err = fmt.Errorf("%w: %w", errCallerGone, err)
	default:
		f.stats.errors.Add(1)
	}
	done(err)
	return err
}

// usingRedis reports whether operations are being sent (the breaker is not
// open).
func (f *Fleet) usingRedis() bool { return f.breaker.State() != gobreaker.StateOpen }
