package fleet

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// keys names the fleet's Redis keys (see the package doc).
type keys struct {
	base    string // "<prefix>:v1:"
	members string // ZSET of live replicas
	events  string // the pub/sub channel
}

func newKeys(prefix string) keys {
	base := prefix + ":v1:"
	return keys{base: base, members: base + "m", events: base + "evt"}
}

func (k keys) cache(key string) string      { return k.base + "c:" + key }
func (k keys) member(replica string) string { return k.base + "m:" + replica }

// globEscape quotes SCAN MATCH's special characters.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Get returns the value stored under the cache key, or false when there is
// none or Redis could not answer within the budget (a failure is counted,
// never returned). It makes at most one round trip.
func (f *Fleet) Get(ctx context.Context, key string) ([]byte, bool) {
	var b []byte
	err := f.do(ctx, func(ctx context.Context) error {
		var err error
		b, err = f.rdb.Get(ctx, f.keys.cache(key)).Bytes()
		return err
	})
	return b, err == nil
}

type write struct {
	key string
	val []byte
	ttl time.Duration
}

// Set queues val to be stored under the cache key for ttl (the hard TTL:
// fresh + stale window) and returns at once. A full queue drops the write;
// so does a write that fails. ttl ≤ 0 stores nothing.
func (f *Fleet) Set(key string, val []byte, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	select {
	case f.writes <- write{key: key, val: val, ttl: ttl}:
	default:
		f.stats.writesDropped.Add(1)
	}
}

func (f *Fleet) writer(ctx context.Context) {
	defer f.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case w := <-f.writes:
			err := f.do(ctx, func(ctx context.Context) error {
				return f.rdb.Set(ctx, f.keys.cache(w.key), w.val, w.ttl).Err()
			})
			if err != nil {
				f.stats.writesDropped.Add(1)
			}
		}
	}
}

// Purge bounds: one SCAN asks for this many keys, and a purge stops after
// this long (what it did not reach expires with its TTL).
const (
	purgeScanCount = 1000
	purgeBound     = 5 * time.Second
)

// errPurgeBound: the purge stopped at purgeBound.
var errPurgeBound = errors.New("fleet: purge stopped after " + purgeBound.String())

// Purge removes the cache keys that start with prefix ("" all of them) from
// Redis — SCAN and UNLINK, one batch of at most 1000 at a time, each within
// the budget, for at most 5s — then tells every other replica to purge its
// local tier. It returns how many Redis keys it removed and the first
// failure; the notice is published even after one (a replica's local tier
// must not outlive the purge).
func (f *Fleet) Purge(ctx context.Context, prefix string) (int, error) {
	pattern := f.keys.cache(globEscape(prefix)) + "*"
	var (
		cursor  uint64
		removed int64
		first   error
	)
	deadline := time.Now().Add(purgeBound)
	for {
		var batch []string
		err := f.do(ctx, func(ctx context.Context) error {
			var err error
			batch, cursor, err = f.rdb.Scan(ctx, cursor, pattern, purgeScanCount).Result()
			return err
		})
		if err == nil && len(batch) > 0 {
			err = f.do(ctx, func(ctx context.Context) error {
				n, err := f.rdb.Unlink(ctx, batch...).Result()
				removed += n
				return err
			})
		}
		if err != nil {
			first = err
			break
		}
		if cursor == 0 {
			break
		}
		if time.Now().After(deadline) {
			first = errPurgeBound
			break
		}
	}
	f.stats.keysPurged.Add(removed)
	err := f.do(ctx, func(ctx context.Context) error {
		return f.rdb.Publish(ctx, f.keys.events, purgeNotice(f.set.ReplicaID, prefix)).Err()
	})
	if err == nil {
		f.stats.purgesSent.Add(1)
	}
	if first == nil {
		first = err
	}
	if first != nil {
		f.set.Log.Warn("redis: the fleet-wide purge is incomplete; entries left in Redis expire with their TTL", "prefix", prefix, "err", first)
	}
	return int(removed), first
}

// OnPurge sets the function that purges this replica's local tier when
// another replica purges the fleet (nil: none).
func (f *Fleet) OnPurge(fn func(prefix string)) {
	if fn == nil {
		f.onPurge.Store(nil)
		return
	}
	f.onPurge.Store(&fn)
}

// A purge notice on the events channel: "purge", the sender, the prefix,
// separated by NULs.
const noticePurge = "purge"

func purgeNotice(replica, prefix string) string {
	return noticePurge + "\x00" + replica + "\x00" + prefix
}

func (f *Fleet) handle(payload string) {
	kind, rest, _ := strings.Cut(payload, "\x00")
	if f.handleBreaker(kind, rest) {
		return
	}
	from, prefix, ok := strings.Cut(rest, "\x00")
	if kind == noticeDone && ok {
		f.wake(prefix) // the flight's key
		return
	}
	if kind != noticePurge || !ok || from == f.set.ReplicaID {
		return
	}
	if fn := f.onPurge.Load(); fn != nil {
		(*fn)(prefix)
	}
	f.stats.purgesReceived.Add(1) // after the purge: a reader of the count sees it applied
}

// subscribeIdle is how long the subscriber waits for a message before it
// pings, to find a connection that died silently.
const subscribeIdle = 5 * time.Second

// subscribe keeps one subscription to the events channel, reconnecting with
// a capped, jittered back-off (100ms doubling to 2s), so a dead Redis costs
// this goroutine one dial per back-off, not a loop of them.
func (f *Fleet) subscribe(ctx context.Context) {
	defer f.wg.Done()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		ps := f.rdb.Subscribe(ctx, f.keys.events)
		f.psMu.Lock()
		f.ps = ps
		f.psMu.Unlock()
		if ctx.Err() == nil { // else Close may have missed ps
			f.receive(ctx, ps, &backoff)
		}
		f.stats.subscribed.Store(false)
		_ = ps.Close()
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// receive reads the subscription until it fails or ctx ends.
func (f *Fleet) receive(ctx context.Context, ps *redis.PubSub, backoff *time.Duration) {
	for {
		msg, err := ps.ReceiveTimeout(ctx, subscribeIdle)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() && f.stats.subscribed.Load() {
				pctx, cancel := context.WithTimeout(ctx, f.set.Timeout+time.Second)
				err = ps.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				f.stats.subscribed.Store(true)
				*backoff = 100 * time.Millisecond
				f.breakerResync() // notices missed while unsubscribed
			}
		case *redis.Message:
			f.handle(m.Payload)
		}
	}
}
