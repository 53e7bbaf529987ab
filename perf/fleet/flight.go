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
const (
	leaseTTL   = 3 * time.Second
	leaseRenew = time.Second
	waitTick   = time.Second
)

// renewScript extends the lease if it is still ours.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// finishScript: if the lease is still ours, store the answer (when given:
// ARGV[2] the encoded answer, ARGV[3] its TTL in ms), drop the lease and
// publish the notice. Returns 1 when the lease was ours.
var finishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
`)

func (k keys) lease(key string) string { return k.base + "f:" + key }

const noticeDone = "done"

// Lead tries to take key's lease. With the lease, it returns finish, which
// must be called once the backend answered: with the encoded answer and its
// TTL to share it through the cache tier, or with nil to share nothing (an
// error, an answer that must not be kept); either way the fleet's waiters
// wake. Without it, lost says another replica holds it (Wait for it);
// neither means Redis could not answer (behave as a gateway alone).
func (f *Fleet) Lead(ctx context.Context, key string) (finish func(val []byte, ttl time.Duration), lost bool) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := f.set.ReplicaID + ":" + hex.EncodeToString(b[:])
	var won bool
	err := f.do(ctx, func(ctx context.Context) error {
		var err error
		won, err = f.rdb.SetNX(ctx, f.keys.lease(key), token, leaseTTL).Result()
		return err
	})
	switch {
	case err != nil:
		return nil, false
	case !won:
		f.stats.leasesLost.Add(1)
		return nil, true
	}
	f.stats.leasesWon.Add(1)
	renewCtx, stopRenew := context.WithCancel(f.ctx)
	var renewing sync.WaitGroup
	if !f.goAdd() {
		stopRenew()
		return nil, false
	}
	renewing.Add(1)
	go func() {
		defer f.wg.Done()
		defer renewing.Done()
		t := time.NewTicker(leaseRenew)
		defer t.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-t.C:
				_ = f.do(renewCtx, func(ctx context.Context) error {
					return renewScript.Run(ctx, f.rdb, []string{f.keys.lease(key)}, token, leaseTTL.Milliseconds()).Err()
				})
			}
		}
	}()
	var once sync.Once
	return func(val []byte, ttl time.Duration) {
		once.Do(func() {
			stopRenew()
			renewing.Wait()
			ms := ttl.Milliseconds()
			if val == nil || ms <= 0 {
				val, ms = nil, 0
			}
			err := f.do(context.Background(), func(ctx context.Context) error {
				return finishScript.Run(ctx, f.rdb, []string{f.keys.lease(key), f.keys.cache(key), f.keys.events},
					token, val, ms, noticeDone+"\x00"+f.set.ReplicaID+"\x00"+key).Err()
			})
			if err != nil {
				f.stats.writesDropped.Add(1)
			}
		})
	}, false
}

// Wait waits for key's flight on another replica to end. It returns true
// when the answer may be in the cache tier now (a notice, or the entry is
// there), false when there is neither a lease nor an answer (the owner
// died or shared nothing: the caller may Lead), when Redis fails, or when
// ctx ends.
func (f *Fleet) Wait(ctx context.Context, key string) bool {
	f.stats.remoteWaits.Add(1)
	ch := make(chan struct{})
	f.waitMu.Lock()
	f.waiters[key] = append(f.waiters[key], ch)
	f.waitMu.Unlock()
	defer func() {
		f.waitMu.Lock()
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
		f.waitMu.Unlock()
	}()
	t := time.NewTicker(waitTick)
	defer t.Stop()
	for {
		// Registered first, then checked: a notice published before the
		// check is not missed.
		answer, leased, ok := f.flightState(ctx, key)
		switch {
		case !ok:
			return false
		case answer:
			return true
		case !leased:
			f.stats.takeovers.Add(1)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-ch:
			return true
		case <-t.C:
		}
	}
}

// flightState reads, in one round trip, whether key's answer is in the
// cache tier and whether its lease is held.
func (f *Fleet) flightState(ctx context.Context, key string) (answer, leased, ok bool) {
	var a, l *redis.IntCmd
	err := f.do(ctx, func(ctx context.Context) error {
		_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			a = p.Exists(ctx, f.keys.cache(key))
			l = p.Exists(ctx, f.keys.lease(key))
			return nil
		})
		return err
	})
	if err != nil {
		return false, false, false
	}
	return a.Val() > 0, l.Val() > 0, true
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
