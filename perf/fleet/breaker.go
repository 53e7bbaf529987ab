package fleet

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Shared breaker state (perf/breaker's Fleet interface). Only hints are
// shared, never the decision: each replica's own breaker decides, and a
// trip seen by one replica holds the others off the backend for the same
// open time. Keys:
//
//	<prefix>:v1:b:<backend>    the breaker is open fleet-wide; value = the replica that opened it, PX = the open time left
//	<prefix>:v1:bp:<backend>   the half-open probe right; value = the replica that probes, PX = probe lease
//
// and notices on the events channel: "bopen" (with the open time left in
// ms, so that no replica's clock matters) and "bclosed". Every step is one
// round trip within the budget, sent by perf/breaker off the callers'
// path; when Redis fails each replica's breakers are local, as without a
// fleet.
const (
	noticeBreakerOpen   = "bopen"
	noticeBreakerClosed = "bclosed"
	// breakerScanMax bounds the keys BreakerStates reads at a
	// resubscription: more open breakers than this are learnt from their
	// next notice.
	breakerScanMax = 1000
)

// openScript stores KEYS[1] = ARGV[1] for ARGV[2] ms, drops the probe
// right KEYS[2] and publishes ARGV[3] on KEYS[3].
var openScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return 1
`)

// closedScript drops the open state KEYS[1] and the probe right KEYS[2]
// and publishes ARGV[1] on KEYS[3].
var closedScript = redis.NewScript(`
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
`)

func (k keys) breaker(backend string) string { return k.base + "b:" + backend }
func (k keys) probe(backend string) string   { return k.base + "bp:" + backend }

// BreakerOpened records that this replica's breaker of backend opened for
// openFor and tells every replica (one script: SET PX, PUBLISH). It
// reports whether Redis took it.
func (f *Fleet) BreakerOpened(ctx context.Context, backend string, openFor time.Duration) bool {
	ms := max(1, openFor.Milliseconds())
	err := f.do(ctx, func(ctx context.Context) error {
		return openScript.Run(ctx, f.rdb, []string{f.keys.breaker(backend), f.keys.probe(backend), f.keys.events},
			f.set.ReplicaID, ms, breakerNotice(noticeBreakerOpen, f.set.ReplicaID, backend, ms)).Err()
	})
	if err == nil {
		f.bstats.breakerSent.Add(1)
	}
	return err == nil
}

// BreakerClosed records that backend's breaker closed (a probe succeeded)
// and tells every replica.
func (f *Fleet) BreakerClosed(ctx context.Context, backend string) bool {
	err := f.do(ctx, func(ctx context.Context) error {
		return closedScript.Run(ctx, f.rdb, []string{f.keys.breaker(backend), f.keys.probe(backend), f.keys.events},
			breakerNotice(noticeBreakerClosed, f.set.ReplicaID, backend, 0)).Err()
	})
	if err == nil {
		f.bstats.breakerSent.Add(1)
	}
	return err == nil
}

// ClaimProbe asks for the fleet's half-open probe right of backend for ttl
// (SET NX PX): won says this replica may probe; ok = false when Redis
// could not answer (the caller then probes alone, as without a fleet).
func (f *Fleet) ClaimProbe(ctx context.Context, backend string, ttl time.Duration) (won, ok bool) {
	err := f.do(ctx, func(ctx context.Context) error {
		var err error
		won, err = f.rdb.SetNX(ctx, f.keys.probe(backend), f.set.ReplicaID, ttl).Result()
		return err
	})
	return won, err == nil
}

// OnBreaker sets the function that receives the other replicas' breaker
// notices: backend, and how long its breaker stays open (0: closed). It
// also receives, each time the subscription is (re)confirmed, the open
// breakers stored in Redis, so a replica that starts later, or whose
// Redis was away, learns the current state once. nil: none.
func (f *Fleet) OnBreaker(fn func(backend string, openFor time.Duration)) {
	if fn == nil {
		f.onBreaker.Store(nil)
		return
	}
	f.onBreaker.Store(&fn)
	if f.stats.subscribed.Load() {
		f.breakerResync() // subscribed before fn was set: read the state now
	}
}

// breakerNotice is kind, sender, backend and the open time in ms,
// separated by NULs.
func breakerNotice(kind, replica, backend string, ms int64) string {
	return kind + "\x00" + replica + "\x00" + backend + "\x00" + strconv.FormatInt(ms, 10)
}

// handleBreaker applies another replica's breaker notice (rest is what
// follows the kind). It reports whether kind was a breaker notice.
func (f *Fleet) handleBreaker(kind, rest string) bool {
	if kind != noticeBreakerOpen && kind != noticeBreakerClosed {
		return false
	}
	from, rest, _ := strings.Cut(rest, "\x00")
	backend, msText, ok := strings.Cut(rest, "\x00")
	ms, err := strconv.ParseInt(msText, 10, 64)
	if !ok || err != nil || from == f.set.ReplicaID || backend == "" {
		return true
	}
	fn := f.onBreaker.Load()
	if fn == nil {
		return true
	}
	var openFor time.Duration
	if kind == noticeBreakerOpen {
		openFor = time.Duration(max(1, ms)) * time.Millisecond
	}
	(*fn)(backend, openFor)
	f.bstats.breakerReceived.Add(1)
	return true
}

// breakerResync reads the open breakers stored in Redis and hands them to
// OnBreaker's function, in a goroutine of its own (the subscriber must not
// wait on it). At most one runs at a time.
func (f *Fleet) breakerResync() {
	if f.onBreaker.Load() == nil || !f.resyncing.CompareAndSwap(false, true) {
		return
	}
	if !f.goAdd() {
		f.resyncing.Store(false)
		return
	}
	go func() {
		defer f.wg.Done()
		defer f.resyncing.Store(false)
		open, ok := f.BreakerStates(f.ctx)
		fn := f.onBreaker.Load()
		if !ok || fn == nil {
			return
		}
		for backend, d := range open {
			(*fn)(backend, d)
		}
	}()
}

// BreakerStates returns the breakers stored open in Redis and how long each
// stays open (SCAN of at most breakerScanMax keys, then their PTTLs and
// owners in one pipeline). Breakers this replica opened itself are left
// out. ok = false when Redis could not answer.
func (f *Fleet) BreakerStates(ctx context.Context) (map[string]time.Duration, bool) {
	prefix := f.keys.breaker("")
	var names []string
	var cursor uint64
	for len(names) < breakerScanMax {
		var batch []string
		err := f.do(ctx, func(ctx context.Context) error {
			var err error
			batch, cursor, err = f.rdb.Scan(ctx, cursor, globEscape(prefix)+"*", 100).Result()
			return err
		})
		if err != nil {
			return nil, false
		}
		names = append(names, batch...)
		if cursor == 0 {
			break
		}
	}
	open := map[string]time.Duration{}
	if len(names) == 0 {
		return open, true
	}
	var ttls []*redis.DurationCmd
	var owners []*redis.StringCmd
	err := f.do(ctx, func(ctx context.Context) error {
		ttls, owners = ttls[:0], owners[:0]
		_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, n := range names {
				ttls = append(ttls, p.PTTL(ctx, n))
				owners = append(owners, p.Get(ctx, n))
			}
			return nil
		})
		if err == redis.Nil {
			err = nil
		}
		return err
	})
	if err != nil {
		return nil, false
	}
	for i, n := range names {
		d, owner := ttls[i].Val(), owners[i].Val()
		if d > 0 && owner != f.set.ReplicaID {
			open[strings.TrimPrefix(n, prefix)] = d
		}
	}
	return open, true
}

// limitCounters are the statistics of the shared breakers and slots.
type limitCounters struct {
	breakerSent, breakerReceived atomic.Int64
	slotLeases                   atomic.Int64
	slotsHeld                    sync.Map // backend → heldLease: this replica's last lease of each backend (a gauge)
}

// heldSlots sums the slots of this replica's leases not yet lapsed.
func (c *limitCounters) heldSlots() int64 {
	var n int64
	now := time.Now()
	c.slotsHeld.Range(func(k, v any) bool {
		if l := v.(heldLease); now.Before(l.until) {
			n += l.n
		} else {
			c.slotsHeld.CompareAndDelete(k, v)
		}
		return true
	})
	return n
}
