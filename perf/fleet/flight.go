package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cross-replica flights: one backend call per key for the whole fleet.
// The first replica to take a key's lease ("<prefix>:v1:f:<key>", SET NX
// PX leaseTTL, value = this replica's id and a random token) calls the
// backend, renewing the lease every leaseRenew while the call runs; the
// others wait, woken by a "done" notice on the events channel (or, if one
// is lost, by a check every waitTick), and read the answer — kept in the
// shared cache tier, or handed over under the flight's token (an answer not
// to keep, or the leader's error: the caller's encoding says which) — in
// the check that finds the lease gone: one round trip after the notice.
// The owner finishes with one script: if the lease is still its own, store
// the answer, drop the lease, publish the notice — so the answer is
// visible before the notice. An owner that dies stops renewing:
// its lease expires within leaseTTL and the next check of a waiter finds
// neither lease nor answer and takes the lease over, so a waiter takes
// over within leaseTTL + waitTick (4s) of the owner's death.
//
// The lease is an efficiency lock, not a correctness one: the worst case
// is a second backend call (an owner paused past its lease; a lost notice
// costs at most waitTick).
// (leaseTTL, leaseRenew and the lease itself: lease.go.)
//
// Fleet-wide cancellation: the backend call is cancelled only when the
// last waiter in the fleet has left. Every waiter registers in the key's
// ZSET of waiters ("<prefix>:v1:f:<key>:w", member = a random id, score =
// Redis TIME + waiterTTL) in the same script as each of its checks (no
// round trip of its own), so the registration is renewed every waitTick
// while it waits; it removes itself when its caller leaves (one ZREM), and
// a waiter that dies expires waiterTTL after its last check. When the
// leader's local callers have all left, its call goes on while the ZSET
// has a live member: checked at once, then every holdTick; none, or Redis
// failing, cancels the call (alone, as before). So a held call ends within
// holdTick of the fleet's last waiter leaving, or waiterTTL + holdTick of
// its death; Close cancels it too.
const (
	waitTick  = time.Second
	waiterTTL = 3 * waitTick
	holdTick  = 250 * time.Millisecond
)

// finishScript: if the lease is still ours, store the answer (ARGV[2],
// when given) under KEYS[2] for ARGV[3] ms — the cache tier's key for an
// answer to keep, the flight's hand-off key for one that must not be kept
// — drop the lease and the key's waiters (KEYS[4]; woken, they need no
// registration) and publish the notice. Returns 1 when the lease was ours.
var finishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
`)

// checkScript is a waiter's check, in one round trip: the answer handed to
// the flight (KEYS[1]) and whether the lease (KEYS[3]) is held; while it
// is, the waiter ARGV[1] is registered in the key's waiters (KEYS[4])
// until Redis TIME + ARGV[2] ms; once it is not, the cache tier's entry
// (KEYS[2]) too, so a woken waiter reads a kept answer in the same round
// trip (an entry seen while the lease is held is not the flight's answer:
// it is not read).
var checkScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
  return {redis.call('GET', KEYS[1]), false, 1}
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), 0}
`)

// waitersScript drops the expired waiters of KEYS[1] and counts the rest.
var waitersScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
`)

// waiters is the ZSET of the fleet's waiters for key's flight.
func (k keys) waiters(key string) string { return k.base + "f:" + key + ":w" }

// handoff is where a flight's answer that must not be kept waits for the
// flight's waiters: keyed by the lease's token, so a later flight of the
// same key never reads it.
func (k keys) handoff(key, token string) string { return k.base + "f:" + key + ":r:" + token }

// handoffTTL is how long an answer that must not be kept stays for the
// waiters of its flight.
const handoffTTL = 30 * time.Second

const noticeDone = "done"

// Lead takes key's lease, or finds who holds it.
//
// With the lease it returns call, the context the backend call must run
// with, and finish, which must be called once the backend answered: with
// the encoded answer and keep to store it in the cache tier for ttl, with
// keep false to hand it to this flight's waiters only (for 30s, never read
// as cache), or with nil to share nothing; either way the waiters wake.
// call has ctx's values; it ends when ctx has ended and no waiter is left
// in the fleet (checked when ctx ends, then every holdTick; Redis failing
// counts as none), when the Fleet closes, or at finish.
//
// Without the lease it returns wait, which waits for the holder's flight
// (see Fleet.wait). Neither means Redis could not answer: behave as a
// gateway alone.
func (f *Fleet) Lead(ctx context.Context, key string) (call context.Context, finish func(val []byte, ttl time.Duration, keep bool), wait func(context.Context) (answer []byte, kept, ok bool)) {
	token, holder, err := f.takeLease(ctx, key)
	switch {
	case err != nil:
		return nil, nil, nil
	case token == "":
		return nil, nil, func(ctx context.Context) ([]byte, bool, bool) { return f.wait(ctx, key, holder) }
	}
	stopRenew := f.holdLease(key, token, 0)
	if stopRenew == nil {
		return nil, nil, nil
	}
	call, endCall := context.WithCancel(context.WithoutCancel(ctx))
	ended := make(chan struct{}) // closed by finish: the hold, if any, stops
	stopHold := context.AfterFunc(ctx, func() {
		if !f.goAdd() {
			endCall()
			return
		}
		defer f.wg.Done()
		f.hold(key, ended, endCall)
	})
	var once sync.Once
	return call, func(val []byte, ttl time.Duration, keep bool) {
		once.Do(func() {
			stopHold()
			close(ended)
			endCall()
			stopRenew()
			target := f.keys.cache(key)
			if !keep {
				target, ttl = f.keys.handoff(key, token), handoffTTL
			}
			ms := ttl.Milliseconds()
			if val == nil || ms <= 0 {
				val, ms = nil, 0
			}
			err := f.do(context.Background(), func(ctx context.Context) error {
				return finishScript.Run(ctx, f.rdb, []string{f.keys.lease(key), target, f.keys.events, f.keys.waiters(key)},
					token, val, ms, noticeDone+"\x00"+f.set.ReplicaID+"\x00"+key).Err()
			})
			if err != nil {
				f.stats.writesDropped.Add(1)
			}
		})
	}, nil
}

// hold runs once the leader's local callers have all left: it keeps the
// flight's backend call going while the fleet has waiters of key, and
// cancels it (endCall) once there are none, Redis fails or the Fleet
// closes. It returns at once when the flight has ended.
func (f *Fleet) hold(key string, ended <-chan struct{}, endCall context.CancelFunc) {
	t := time.NewTicker(holdTick)
	defer t.Stop()
	for held := false; ; held = true {
		select {
		case <-ended:
			return
		default:
		}
		var n int64
		err := f.do(f.ctx, func(ctx context.Context) error {
			var err error
			n, err = waitersScript.Run(ctx, f.rdb, []string{f.keys.waiters(key)}).Int64()
			return err
		})
		if err != nil || n == 0 {
			endCall()
			return
		}
		if !held {
			f.stats.held.Add(1)
		}
		select {
		case <-ended:
			return
		case <-f.ctx.Done():
			endCall()
			return
		case <-t.C:
		}
	}
}

// randomID is 16 hex digits from crypto/rand.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// wait waits for the flight of key led under token to end. Once the flight
// ended with an answer shared it returns ok and the answer: the one handed
// to the flight's waiters, or (kept) the cache tier's entry for key, read
// in the same round trip as the end of the lease — the caller decides
// whether it may serve that entry and whether it is fresh. It returns not
// ok when there is neither a lease nor an answer (the owner died or shared
// nothing: the caller may lead), when Redis fails, or when ctx ends. While
// it waits it is registered in key's waiters, so the leader keeps the
// backend call going; it leaves them when ctx ends.
func (f *Fleet) wait(ctx context.Context, key, token string) (answer []byte, kept, ok bool) {
	f.stats.remoteWaits.Add(1)
	me := f.set.ReplicaID + ":" + randomID()
	ch := make(chan struct{})
	f.waitMu.Lock()
	f.waiters[key] = append(f.waiters[key], ch)
	f.waitMu.Unlock()
	defer func() { f.unregister(key, ch) }() // ch as it is then: woken waits re-register
	t := time.NewTicker(waitTick)
	defer t.Stop()
	for {
		// Registered first, then checked: a notice published before the
		// check is not missed.
		handed, cached, leased, ok := f.check(ctx, key, token, me)
		switch {
		case !ok:
			f.leave(ctx, key, me)
			return nil, false, false
		case handed != nil:
			return handed, false, true
		case cached != nil:
			// The leader stores the answer and drops the lease in one
			// step, so the entry is read only once the lease is gone; one
			// seen while it is held is an older (stale) one, being
			// refreshed: keep waiting.
			return cached, true, true
		case !leased:
			f.stats.takeovers.Add(1)
			return nil, false, false
		}
		select {
		case <-ctx.Done():
			f.leave(ctx, key, me)
			return nil, false, false
		case <-ch: // the flight ended: the next check finds its answer
			ch = make(chan struct{})
			f.waitMu.Lock()
			f.waiters[key] = append(f.waiters[key], ch)
			f.waitMu.Unlock()
		case <-t.C:
		}
	}
}

// leave removes the waiter me from key's waiters (best effort: it expires
// anyway), when its caller left.
func (f *Fleet) leave(ctx context.Context, key, me string) {
	if ctx.Err() == nil {
		return // Redis failed: the registration expires
	}
	_ = f.do(context.WithoutCancel(ctx), func(ctx context.Context) error {
		return f.rdb.ZRem(ctx, f.keys.waiters(key), me).Err()
	})
}

func (f *Fleet) unregister(key string, ch chan struct{}) {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	list := f.waiters[key]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(f.waiters, key)
	} else {
		f.waiters[key] = list
	}
}

// check reads, in one round trip, the answer handed to the flight led
// under token and whether key's lease is held; while it is, the waiter me
// is registered (or renewed) in key's waiters; once it is not, key's entry
// in the cache tier, if any.
func (f *Fleet) check(ctx context.Context, key, token, me string) (handed, cached []byte, leased, ok bool) {
	var res []any
	err := f.do(ctx, func(ctx context.Context) error {
		var err error
		res, err = checkScript.Run(ctx, f.rdb,
			[]string{f.keys.handoff(key, token), f.keys.cache(key), f.keys.lease(key), f.keys.waiters(key)},
			me, waiterTTL.Milliseconds()).Slice()
		return err
	})
	if err != nil || len(res) != 3 {
		return nil, nil, false, false
	}
	if s, isStr := res[0].(string); isStr {
		handed = []byte(s)
	}
	if s, isStr := res[1].(string); isStr {
		cached = []byte(s)
	}
	l, _ := res[2].(int64)
	return handed, cached, l > 0, true
}

// wake wakes this replica's waiters of key (a "done" notice).
func (f *Fleet) wake(key string) {
	f.waitMu.Lock()
	list := f.waiters[key]
	delete(f.waiters, key)
	f.waitMu.Unlock()
	for _, ch := range list {
		close(ch)
	}
}
