package fleet

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Concurrency slots: VEGA_CONCURRENCY_MAX is the fleet's cap on a
// backend's calls at once, shared out as leases. One hash per backend,
// "<prefix>:v1:s:<backend>", holds each replica's lease as
// "slots:expiry:want" (expiry in ms on Redis's clock). A replica asks
// (Lease) when it starts using a backend and renews about every second
// while it does; a lease lives leaseTTL, so a replica that stops using the
// backend, or dies, gives its slots back within it.
//
// The share (one script, on Redis's clock): every live replica (a heartbeat
// in the members ZSET) is reserved min; the replicas holding a lease share
// the rest by their wants — when the wants fit, each gets its want plus an
// equal part of what is left (so an idle fleet holds max/N each and a
// burst on any replica finds slots at once); when they do not, max-min
// fairness (water-filling: nobody gets more than it wants, the rest is
// split evenly). The grant is also bounded by what the other leases leave
// (max minus their slots minus min per live replica holding none), so
// the sum of the leases stays within max when min × replicas ≤ max. A
// lease that shrinks is recorded at no less than the calls its replica
// had at the backend when it asked (they keep their slots until they
// end), so the slots it gives back are granted only once free; a
// replica whose share grew gets it as the others renew and shrink (within
// a renewal). A grant is never below min: with min × replicas > max, the
// fleet runs at min each, above max.
const LeaseTTL = 3 * time.Second

// leaseScript: KEYS[1] the backend's lease hash, KEYS[2] the members ZSET;
// ARGV: replica, want, min, max, TTL (ms), busy (calls this replica has at
// the backend now). Returns the slots granted; the lease records the
// larger of that and busy, since calls sent under a larger lease still
// hold their slots until they end.
var leaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local mn = tonumber(ARGV[3])
local mx = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local want = math.max(mn, math.min(mx, tonumber(ARGV[2])))
local busy = tonumber(ARGV[6])
local live = redis.call('ZCOUNT', KEYS[2], now, '+inf')
local h = redis.call('HGETALL', KEYS[1])
local wants = {want}
local held = 0
for i = 1, #h, 2 do
  if h[i] ~= me then
    local s, e, w = string.match(h[i + 1], '^(%d+):(%d+):(%d+)$')
    if s == nil or tonumber(e) <= now then
      redis.call('HDEL', KEYS[1], h[i])
    else
      held = held + tonumber(s)
      wants[#wants + 1] = math.max(mn, tonumber(w))
    end
  end
end
local n = #wants
local idle = math.max(0, live - n)
local budget = mx - idle * mn
local sum = 0
for _, w in ipairs(wants) do sum = sum + w end
local share = want
if sum <= budget then
  share = want + math.floor((budget - sum) / (n + idle))
else
  table.sort(wants)
  local left = budget
  for i, w in ipairs(wants) do
    local fair = math.floor(left / (n - i + 1))
    if w > fair then
      share = math.min(want, fair)
      break
    end
    left = left - w
  end
end
local grant = math.max(mn, math.min(share, mx - held - idle * mn))
redis.call('HSET', KEYS[1], me, string.format('%d:%d:%d', math.max(grant, busy), now + ttl, want))
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return grant
`)

func (k keys) slots(backend string) string { return k.base + "s:" + backend }

// Lease asks for this replica's lease of backend's concurrency slots for
// LeaseTTL: want is how many it would use (0 when idle), busy how many
// calls it has at the backend now, min and max the limits
// (VEGA_CONCURRENCY_MIN, _MAX, max being the fleet's cap). It returns the
// slots granted (at least min), or ok = false when Redis could not answer
// within the budget (the caller then uses max / replicas).
func (f *Fleet) Lease(ctx context.Context, backend string, want, busy, min, max int) (slots int, ok bool) {
	var n int64
	err := f.do(ctx, func(ctx context.Context) error {
		var err error
		n, err = leaseScript.Run(ctx, f.rdb, []string{f.keys.slots(backend), f.keys.members},
			f.set.ReplicaID, want, min, max, LeaseTTL.Milliseconds(), busy).Int64()
		return err
	})
	if err != nil {
		f.bstats.slotsHeld.Delete(backend)
		return 0, false
	}
	f.bstats.slotLeases.Add(1)
	f.bstats.slotsHeld.Store(backend, heldLease{n: n, until: time.Now().Add(LeaseTTL)})
	return int(n), true
}

// heldLease is one backend's lease in the SlotsLeased gauge.
type heldLease struct {
	n     int64
	until time.Time
}
