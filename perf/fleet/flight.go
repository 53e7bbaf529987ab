package fleet

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cross-replica flights: one backend call per key for the whole fleet.
// The first replica to take a key's lease ("<prefix>:v1:f:<key>", SET NX
// PX leaseTTL, value = this replica's id and a random token) calls the
// backend, renewing the lease every leaseRenew while the call runs; the
// others wait, woken by a "done" notice on the events channel (or, if one
// is lost, by a check every waitTick), and read the answer from the shared
// cache tier. The owner finishes with one script: if the lease is still
// its own, store the answer, drop the lease, publish the notice — so the
// answer is visible before the notice. An owner that dies stops renewing:
// its lease expires within leaseTTL and the next check of a waiter finds
// neither lease nor answer and takes the lease over, so a waiter takes
// over within leaseTTL + waitTick (4s) of the owner's death.
//
// The lease is an efficiency lock, not a correctness one: the worst case
// is a second backend call (an owner paused past its lease; a lost notice
// costs at most waitTick).
// (leaseTTL, leaseRenew and the lease itself: lease.go.)
const waitTick = time.Second

// finishScript: if the lease is still ours, store the answer (ARGV[2],
// when given) under KEYS[2] for ARGV[3] ms — the cache tier's key for an
// answer to keep, the flight's hand-off key for one that must not be kept
// — drop the lease and publish the notice. Returns 1 when the lease was
// ours.
var finishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
`)

// handoff is where a flight's answer that must not be kept waits for the
// flight's waiters: keyed by the lease's token, so a later flight of the
// same key never reads it.
func (k keys) handoff(key, token string) string { return k.base + "f:" + key + ":r:" + token }

// handoffTTL is how long an answer that must not be kept stays for the
// waiters of its flight.
const handoffTTL = 30 * time.Second

const noticeDone = "done"

// Lead takes key's lease, or finds who holds it. With the lease it returns
// finish, which must be called once the backend answered: with the
// encoded answer and keep to store it in the cache tier for ttl, with keep
// false to hand it to this flight's waiters only (for 30s, never read as
// cache), or with nil to share nothing; either way the waiters wake.
// Without the lease it returns wait, which waits for the holder's flight.
// Neither means Redis could not answer: behave as a gateway alone.
func (f *Fleet) Lead(ctx context.Context, key string) (finish func(val []byte, ttl time.Duration, keep bool), wait func(context.Context) ([]byte, bool)) {
	token, holder, err := f.takeLease(ctx, key)
	switch {
	case err != nil:
		return nil, nil
	case token == "":
		return nil, func(ctx context.Context) ([]byte, bool) { return f.wait(ctx, key, holder) }
	}
	stopRenew := f.holdLease(key, token, 0)
	if stopRenew == nil {
		return nil, nil
	}
	var once sync.Once
	return func(val []byte, ttl time.Duration, keep bool) {
		once.Do(func() {
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
				return finishScript.Run(ctx, f.rdb, []string{f.keys.lease(key), target, f.keys.events},
					token, val, ms, noticeDone+"\x00"+f.set.ReplicaID+"\x00"+key).Err()
			})
			if err != nil {
				f.stats.writesDropped.Add(1)
			}
		})
	}, nil
}

// wait waits for the flight of key led under token to end. It returns the
// answer handed to the flight's waiters, if any, and true once the flight
// ended with an answer shared (handed over, or in the cache tier: read it
// there); false when there is neither a lease nor an answer (the owner
// died or shared nothing: the caller may lead), when Redis fails, or when
// ctx ends.
func (f *Fleet) wait(ctx context.Context, key, token string) ([]byte, bool) {
	f.stats.remoteWaits.Add(1)
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
		handed, cached, leased, ok := f.flightState(ctx, key, token)
		switch {
		case !ok:
			return nil, false
		case handed != nil:
			return handed, true
		case cached && !leased:
			// The leader stores the answer and drops the lease in one
			// step; an entry seen while the lease is held is an older
			// (stale) one, being refreshed: keep waiting.
			return nil, true
		case !leased:
			f.stats.takeovers.Add(1)
			return nil, false
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-ch: // the flight ended: the next check finds its answer
			ch = make(chan struct{})
			f.waitMu.Lock()
			f.waiters[key] = append(f.waiters[key], ch)
			f.waitMu.Unlock()
		case <-t.C:
		}
	}
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

// flightState reads, in one round trip, the answer handed to the flight led
// under token, whether key's answer is in the cache tier, and whether its
// lease is held.
func (f *Fleet) flightState(ctx context.Context, key, token string) (handed []byte, cached, leased, ok bool) {
	var h *redis.StringCmd
	var c, l *redis.IntCmd
	err := f.do(ctx, func(ctx context.Context) error {
		_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			h = p.Get(ctx, f.keys.handoff(key, token))
			c = p.Exists(ctx, f.keys.cache(key))
			l = p.Exists(ctx, f.keys.lease(key))
			return nil
		})
		if errors.Is(err, redis.Nil) { // no hand-off: GET's answer, not a failure
			err = errors.Join(c.Err(), l.Err())
		}
		return err
	})
	if err != nil {
		return nil, false, false, false
	}
	if b, err := h.Bytes(); err == nil {
		handed = b
	}
	return handed, c.Val() > 0, l.Val() > 0, true
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
