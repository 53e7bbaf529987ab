package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A flight's lease, shared by the unary flights (flight.go) and the stream
// flights (stream.go): "<prefix>:v1:f:<key>" holds "<replica>:<random>"
// (the flight's token), SET NX PX leaseTTL, renewed every leaseRenew while
// the flight runs.
const (
	leaseTTL   = 3 * time.Second
	leaseRenew = time.Second
)

// renewScript extends the lease if it is still ours, and keeps the keys
// that live as long as the flight (KEYS[2…]) for ARGV[3] ms more.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

func (k keys) lease(key string) string { return k.base + "f:" + key }

// takeLease tries to take key's lease with a fresh token. It returns the
// token when the lease is now ours, the holder's token when another flight
// holds it, or the error when Redis could not answer.
func (f *Fleet) takeLease(ctx context.Context, key string) (token, holder string, err error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	token = f.set.ReplicaID + ":" + hex.EncodeToString(b[:])
	err = f.do(ctx, func(ctx context.Context) error {
		var err error
		holder, err = f.rdb.SetArgs(ctx, f.keys.lease(key), token, redis.SetArgs{Mode: "NX", Get: true, TTL: leaseTTL}).Result()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil): // set: ours
		f.stats.leasesWon.Add(1)
		return token, "", nil
	case err != nil:
		return "", "", err
	}
	f.stats.leasesLost.Add(1)
	return "", holder, nil
}

// holdLease renews the lease of key held under token, and keeps the keys
// in also alive for keepFor past each renewal, until stop is called; stop
// waits for the renewals to end. It returns nil when the fleet is closed.
func (f *Fleet) holdLease(key, token string, keepFor time.Duration, also ...string) (stop func()) {
	if !f.goAdd() {
		return nil
	}
	ctx, cancel := context.WithCancel(f.ctx)
	var renewing sync.WaitGroup
	renewing.Add(1)
	go func() {
		defer f.wg.Done()
		defer renewing.Done()
		t := time.NewTicker(leaseRenew)
		defer t.Stop()
		ks := append([]string{f.keys.lease(key)}, also...)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = f.do(ctx, func(ctx context.Context) error {
					return renewScript.Run(ctx, f.rdb, ks, token, leaseTTL.Milliseconds(), keepFor.Milliseconds()).Err()
				})
			}
		}
	}()
	return func() {
		cancel()
		renewing.Wait()
	}
}
