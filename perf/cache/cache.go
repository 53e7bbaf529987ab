package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
	"golang.org/x/sync/singleflight"
)

// Defaults of the zero Settings.
const (
	DefaultMaxBytes     = 64 << 20
	DefaultTTL          = 60 * time.Second
	DefaultJitter       = 0.1
	DefaultNegativeTTL  = 30 * time.Second
	DefaultMaxRefreshes = 16

	// defaultEntrySize is the entry weight ExpectedEntries 0 assumes.
	defaultEntrySize = 2 << 10
)

// entryOverhead is what one entry costs beyond its key and value bytes: the
// otter node (links, expiry, weight, the key header and the inline entry
// below), its hash-table slot and its share of the frequency sketch.
// BenchmarkBytesPerEntry measures it: 145 B on amd64 (raw otter with a
// pointer value: 129 B). It is rounded up here for the hash table's growth
// steps, so that MaxBytes bounds the real heap, not just the payload.
const entryOverhead = 160

// Settings tunes a Cache. Zero values mean the documented defaults.
type Settings struct {
	// MaxBytes bounds the total weight of the entries: key + value size +
	// a fixed per-entry overhead. 0 means DefaultMaxBytes (64 MiB).
	MaxBytes int64
	// DefaultTTL is how long an entry stored with ttl 0 is fresh. 0 means
	// DefaultTTL (60s).
	DefaultTTL time.Duration
	// Jitter is the fraction of every TTL that is randomised: an entry is
	// fresh for ttl × (1 ± Jitter/2), so entries written together do not
	// expire together. It must be in [0, 1); 0 means DefaultJitter (0.1).
	// Jitter cannot be turned off; a tiny value (1e-9) comes close.
	Jitter float64
	// StaleFor is how long after it expires an entry may still be served,
	// marked stale, while one refresh asks the backend again
	// (stale-while-revalidate). 0 means no stale serving: an expired entry
	// is a miss.
	StaleFor time.Duration
	// NegativeTTL caps the whole lifetime of negative entries ("not found"
	// answers); they are never served stale. 0 means DefaultNegativeTTL
	// (30s).
	NegativeTTL time.Duration
	// MaxRefreshes bounds the background refreshes running at once. 0 means
	// DefaultMaxRefreshes (16).
	MaxRefreshes int
	// ExpectedEntries is about how many entries MaxBytes will hold. It sizes
	// otter's frequency sketch and hash table up front: a sketch that has to
	// grow later restarts its counts, which costs hit ratio while the cache
	// fills (BenchmarkZipfHitRatio). 0 means MaxBytes / 2 KiB; it is capped
	// at what MaxBytes could hold.
	ExpectedEntries int
	// Remote is the fleet's shared tier behind this one (nil: none, the
	// cache is this gateway's alone). A local miss asks it once; every
	// answer stored here is also written there when its encoding is at most
	// RemoteMaxBytes — in the background, except by the leader of a fleet
	// flight (Flights), which writes it, with the hand-off to the other
	// replicas' waiters, before it answers; Purge purges it and, through it,
	// every gateway's local tier.
	Remote Remote
	// RemoteMaxBytes bounds the answers shared through Remote (their
	// encoding). 0 means DefaultRemoteMaxBytes (1 MiB).
	RemoteMaxBytes int
	// Flights coalesces cacheable unary calls across the fleet (nil: each
	// gateway coalesces its own). It needs Remote: the leader's answer
	// reaches the others through it.
	Flights Flights
	// Now is the clock; it is called from several goroutines at once. nil
	// means a monotonic clock read every 10ms (so TTLs are ±10ms). With an
	// injected clock the cache does no periodic clean-up: expired entries
	// are dropped when they are touched or when the cache is written.
	Now func() time.Time
}

func (s Settings) withDefaults() (Settings, error) {
	switch {
	case s.MaxBytes < 0:
		return s, fmt.Errorf("cache: Settings.MaxBytes must not be negative, got %d", s.MaxBytes)
	case s.DefaultTTL < 0:
		return s, fmt.Errorf("cache: Settings.DefaultTTL must not be negative, got %v", s.DefaultTTL)
	case !(s.Jitter >= 0 && s.Jitter < 1): // also refuses NaN
		return s, fmt.Errorf("cache: Settings.Jitter must be in [0, 1), got %v", s.Jitter)
	case s.StaleFor < 0:
		return s, fmt.Errorf("cache: Settings.StaleFor must not be negative, got %v", s.StaleFor)
	case s.NegativeTTL < 0:
		return s, fmt.Errorf("cache: Settings.NegativeTTL must not be negative, got %v", s.NegativeTTL)
	case s.MaxRefreshes < 0:
		return s, fmt.Errorf("cache: Settings.MaxRefreshes must not be negative, got %d", s.MaxRefreshes)
	case s.RemoteMaxBytes < 0:
		return s, fmt.Errorf("cache: Settings.RemoteMaxBytes must not be negative, got %d", s.RemoteMaxBytes)
	case s.ExpectedEntries < 0:
		return s, fmt.Errorf("cache: Settings.ExpectedEntries must not be negative, got %d", s.ExpectedEntries)
	case s.Flights != nil && s.Remote == nil:
		return s, errors.New("cache: Settings.Flights needs Settings.Remote: the leader's answer reaches the other gateways through it")
	}
	if s.MaxBytes == 0 {
		s.MaxBytes = DefaultMaxBytes
	}
	if s.DefaultTTL == 0 {
		s.DefaultTTL = DefaultTTL
	}
	if s.Jitter == 0 {
		s.Jitter = DefaultJitter
	}
	if s.NegativeTTL == 0 {
		s.NegativeTTL = DefaultNegativeTTL
	}
	if s.MaxRefreshes == 0 {
		s.MaxRefreshes = DefaultMaxRefreshes
	}
	if s.RemoteMaxBytes == 0 {
		s.RemoteMaxBytes = DefaultRemoteMaxBytes
	}
	if s.ExpectedEntries == 0 {
		s.ExpectedEntries = int(max(s.MaxBytes/defaultEntrySize, 1))
	}
	s.ExpectedEntries = int(min(int64(s.ExpectedEntries), s.MaxBytes/entryOverhead+1))
	return s, nil
}

// State is what Get found.
type State int

const (
	Miss  State = iota // absent, or expired beyond the stale window
	Fresh              // within its TTL
	Stale              // expired, within StaleFor: serve it and refresh
)

func (s State) String() string {
	switch s {
	case Miss:
		return "miss"
	case Fresh:
		return "fresh"
	case Stale:
		return "stale"
	}
	return "unknown"
}

// entry is what otter stores, inline in its node: 32 bytes on 64-bit.
type entry struct {
	value      any
	freshUntil int64 // unix nanos on the cache's clock
	size       uint32
	negative   bool
}

// Cache is a bounded result cache with per-entry TTL and
// stale-while-revalidate. It is safe for concurrent use.
type Cache struct {
	store    *otter.Cache[string, entry]
	clock    *clock
	set      Settings // with defaults applied; read-only after New
	staleFor int64    // set.StaleFor in nanos
	stats    counters // atomic
	remote   Remote   // set.Remote: nil when the cache is this gateway's alone
	flights  Flights  // set.Flights (Remote is set too)

	remoteGets singleflight.Group // one remote read per key at a time

	mu         sync.Mutex
	refreshing map[string]struct{} // guarded by mu: keys with a running refresh
	closed     bool                // guarded by mu: no refresh starts once set
	running    sync.WaitGroup      // one per running refresh; Add only under mu while !closed
}

// New returns a Cache, or an error naming the first invalid setting.
func New(s Settings) (*Cache, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cache{
		clock:      newClock(s.Now),
		set:        s,
		staleFor:   int64(s.StaleFor),
		remote:     s.Remote,
		refreshing: make(map[string]struct{}),
	}
	c.flights = s.Flights
	c.store, err = otter.New(&otter.Options[string, entry]{
		MaximumWeight:   uint64(s.MaxBytes),
		InitialCapacity: s.ExpectedEntries,
		Weigher:         func(key string, e entry) uint32 { return weight(len(key), e.size) },
		// The deadline is absolute, so the duration is measured from the
		// time otter reads for this write (SnapshotAtNano).
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, entry]) time.Duration {
			return time.Duration(c.deadline(e.Value) - e.SnapshotAtNano)
		}),
		OnAtomicDeletion: c.stats.onDeletion,
		Clock:            c.clock.forOtter(),
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return c, nil
}

// weight is an entry's share of MaxBytes, saturated to otter's uint32.
func weight(keyLen int, size uint32) uint32 {
	w := uint64(keyLen) + uint64(size) + entryOverhead
	return uint32(min(w, math.MaxUint32))
}

// deadline is when otter drops e: the end of its stale window.
func (c *Cache) deadline(e entry) int64 {
	if e.negative {
		return e.freshUntil
	}
	return e.freshUntil + c.staleFor
}

// Get returns the value stored under key and whether it is fresh or stale.
// A stale value may be served while one TryRefresh of key runs.
func (c *Cache) Get(key string) (v any, st State) {
	return c.lookup(key, true)
}

// lookup is Get for a caller that cannot refresh (withStale false): a stale
// entry is then a Miss, and counted as one.
func (c *Cache) lookup(key string, withStale bool) (any, State) {
	e, ok := c.store.GetIfPresent(key)
	if !ok {
		c.stats.misses.Add(1)
		return nil, Miss
	}
	now := c.clock.NowNano()
	switch {
	case now < e.freshUntil:
		c.stats.hits.Add(1)
		return e.value, Fresh
	case withStale && now < c.deadline(e):
		c.stats.staleHits.Add(1)
		return e.value, Stale
	}
	c.stats.misses.Add(1)
	return nil, Miss
}

// fresh is Get without stats or eviction-policy side effects, for the
// second look inside a flight: the caller's Get already counted.
func (c *Cache) fresh(key string) (any, bool) {
	e, ok := c.store.GetEntryQuietly(key)
	if !ok || e.SnapshotAtNano >= e.Value.freshUntil {
		return nil, false
	}
	return e.Value.value, true
}

// Set stores v under key. v is shared by every reader and must not be
// modified afterwards. size is v's size in bytes (its share of MaxBytes).
// The entry is fresh for ttl (0: DefaultTTL) randomised by Jitter; a
// negative entry lives at most NegativeTTL and is never served stale. A
// negative ttl, or an entry heavier than MaxBytes, stores nothing (and
// drops what key held, which the new answer replaces).
func (c *Cache) Set(key string, v any, size int, ttl time.Duration, negative bool) {
	if freshUntil, ok := c.setLocal(key, v, size, ttl, negative); ok {
		c.remoteSet(key, v, size, freshUntil, negative)
	}
}

// setLocal is Set without the remote tier; it returns the entry's fresh
// deadline and whether it stored it.
func (c *Cache) setLocal(key string, v any, size int, ttl time.Duration, negative bool) (int64, bool) {
	if ttl < 0 || int64(len(key))+int64(size)+entryOverhead > c.set.MaxBytes {
		c.store.Invalidate(key)
		return 0, false
	}
	if ttl == 0 {
		ttl = c.set.DefaultTTL
	}
	ttl = time.Duration(float64(ttl) * (1 + c.set.Jitter*(rand.Float64()-0.5)))
	if negative {
		ttl = min(ttl, c.set.NegativeTTL)
	}
	freshUntil := c.clock.NowNano() + int64(ttl)
	c.store.Set(key, entry{
		value:      v,
		freshUntil: freshUntil,
		size:       uint32(min(int64(max(size, 0)), math.MaxUint32)),
		negative:   negative,
	})
	c.stats.stores.Add(1)
	return freshUntil, true
}

// Purge removes the entries whose key starts with prefix ("" removes all)
// and returns how many it removed. With a Remote, it purges the fleet: the
// remote tier's keys (counted in the result too) and, through it, every
// other gateway's local tier; a remote failure leaves those to their TTL. A
// refresh already running for a purged key may store its answer afterwards.
func (c *Cache) Purge(prefix string) int {
	n := c.purgeLocal(prefix)
	if c.remote != nil {
		ctx, cancel := context.WithTimeout(context.Background(), remotePurgeTimeout)
		defer cancel()
		r, _ := c.remote.Purge(ctx, prefix) // the remote logs and counts its failures
		n += r
	}
	return n
}

func (c *Cache) purgeLocal(prefix string) int {
	n := 0
	for key := range c.store.Keys() {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		if _, ok := c.store.Invalidate(key); ok {
			n++
		}
	}
	c.stats.purged.Add(int64(n))
	return n
}

// TryRefresh starts fn in the background unless a refresh of key is already
// running, MaxRefreshes are running or the cache is closed, and reports
// whether it started. fn gets a context detached from ctx's cancellation
// (it keeps ctx's values) and bounded by timeout (≤ 0: unbounded). A panic
// in fn is logged, not propagated: no caller is left to receive it.
func (c *Cache) TryRefresh(ctx context.Context, key string, timeout time.Duration, fn func(ctx context.Context)) bool {
	c.mu.Lock()
	if _, busy := c.refreshing[key]; busy || c.closed || len(c.refreshing) >= c.set.MaxRefreshes {
		c.mu.Unlock()
		return false
	}
	c.refreshing[key] = struct{}{}
	c.running.Add(1)
	c.mu.Unlock()
	c.stats.refreshes.Add(1)

	go c.refresh(context.WithoutCancel(ctx), key, timeout, fn)
	return true
}

func (c *Cache) refresh(ctx context.Context, key string, timeout time.Duration, fn func(ctx context.Context)) {
	defer c.running.Done()
	defer func() {
		c.mu.Lock()
		delete(c.refreshing, key)
		c.mu.Unlock()
	}()
	defer func() {
		if r := recover(); r != nil {
			slog.Error("cache: refresh panicked", "key", key, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	fn(ctx)
}

// Close waits for the running refreshes and stops the cache's clean-up
// goroutine. No refresh starts after Close; Get, Set and Purge still work.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.running.Wait()
	c.store.StopAllGoroutines()
	c.clock.stop()
}

// clockResolution is how often the default clock reads the time, instead
// of a time.Now per lookup on the hit path; TTLs of seconds do not notice
// 10ms.
const clockResolution = 10 * time.Millisecond

// clock is otter's time source and ours, so that the deadlines Set computes
// and the times Get compares them with come from one clock.
type clock struct {
	now    func() time.Time   // injected, or nil
	coarse *otter.CoarseClock // the default when now is nil: monotonic, read every clockResolution
}

func newClock(now func() time.Time) *clock {
	if now != nil {
		return &clock{now: now}
	}
	return &clock{coarse: otter.NewCoarseClock(clockResolution)}
}

// NowNano implements otter.Clock: nanoseconds since the Unix epoch.
func (c *clock) NowNano() int64 {
	if c.coarse != nil {
		return c.coarse.NowNano()
	}
	return c.now().UnixNano()
}

// Tick implements otter.Clock for an injected clock, which gets no ticks:
// its time is not real time.
func (c *clock) Tick(time.Duration) <-chan time.Time { return nil }

// forOtter is the clock to give otter: the coarse clock itself, which otter
// knows how to tick, or c.
func (c *clock) forOtter() otter.Clock {
	if c.coarse != nil {
		return c.coarse
	}
	return c
}

// stop ends the coarse clock's goroutine; the clock stays usable.
func (c *clock) stop() {
	if c.coarse != nil {
		c.coarse.Stop()
	}
}
