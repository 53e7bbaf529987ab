package fleet

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// rateScript is a backend's rate ceiling for the whole fleet: a GCRA on
// Redis's clock (TIME, so the replicas' clocks do not matter) in one hash,
// "<prefix>:v1:r:<backend>" {tat (µs), rate, rate_at (µs)}. It grants up to
// n tokens at once (a replica takes a small batch, so that Redis is asked
// once per batch rather than once per call) and, when it grants none, says
// how long until the next token.
//
// Overload evidence is shared through the hash too: a replica that lowered
// its rate (a 429, a failure) stores that rate, and for the next 10 s every
// replica's tokens are granted at no more than it, and each replica learns
// it from its next answer (the third value, in milli-requests/s; 0 when no
// recent decrease is stored).
//
// So is a backend's Retry-After: a replica told to hold off stores the end
// of the hold ("hold", µs on Redis's clock, kept as the latest end any
// replica reported); until it passes no replica is granted a token, and
// each learns how long the hold lasts from its next answer (the fourth
// value, µs; 0 when none).
//
// ARGV: rate (requests/s), burst, n, lowered ("1" or "0"), hold (µs; 0:
// none).
var rateScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'tat', 'rate', 'rate_at', 'hold')
local tat = tonumber(h[1]) or now
local frate = tonumber(h[2])
local frate_at = tonumber(h[3]) or 0
local hold = tonumber(h[4]) or 0
local asked = tonumber(ARGV[5]) or 0
if asked > 0 and now + asked > hold then
  hold = now + asked
  redis.call('HSET', KEYS[1], 'hold', string.format('%.0f', hold))
end
local held = math.max(0, hold - now)
if ARGV[4] == '1' then
  frate = rate
  frate_at = now
  redis.call('HSET', KEYS[1], 'rate', string.format('%.6f', frate), 'rate_at', string.format('%.0f', frate_at))
end
local recent = frate ~= nil and now - frate_at < 10000000
if recent and frate < rate then rate = frate end
local interval = math.max(1, math.floor(1000000 / rate))
if tat < now then tat = now end
local k = math.min(n, math.floor(burst - (tat - now) / interval))
local wait = 0
if held > 0 then
  k = 0
  wait = held
elseif k <= 0 then
  k = 0
  wait = math.max(1, tat - (burst - 1) * interval - now)
else
  tat = tat + k * interval
  redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat))
end
redis.call('PEXPIRE', KEYS[1], math.max(60000, math.ceil(held / 1000) + 1000))
local fr = 0
if recent then fr = math.floor(frate * 1000) end
return {k, wait, fr, held}
`)

// Take asks the fleet's rate ceiling of backend (rate requests/s, burst)
// for up to n tokens. It returns how many it granted now; when none, how
// long until one will be; the fleet's rate when a replica lowered it in the
// last 10 s (0 otherwise); and ok = false when Redis could not answer within
// the budget (the caller then falls back to its local share). lowered says
// this replica has just lowered its rate to rate: the fleet's tokens are
// then granted at no more than it. hold > 0 says the backend asked this
// replica to hold off that long (Retry-After): no replica is granted a
// token before it passes. held is how long the fleet's hold of backend
// still lasts (0: none).
func (f *Fleet) Take(ctx context.Context, backend string, n int, rate float64, burst int, lowered bool, hold time.Duration) (granted int, wait time.Duration, fleetRate float64, held time.Duration, ok bool) {
	var res []int64
	err := f.do(ctx, func(ctx context.Context) error {
		low := "0"
		if lowered {
			low = "1"
		}
		var err error
		res, err = rateScript.Run(ctx, f.rdb, []string{f.keys.base + "r:" + backend},
			strconv.FormatFloat(rate, 'f', 6, 64), burst, n, low, max(0, hold.Microseconds())).Int64Slice()
		return err
	})
	if err != nil || len(res) != 4 {
		return 0, 0, 0, 0, false
	}
	return int(res[0]), time.Duration(res[1]) * time.Microsecond, float64(res[2]) / 1000, time.Duration(res[3]) * time.Microsecond, true
}

// Replicas is how many replicas the last heartbeat saw alive (at least 1:
// this one).
func (f *Fleet) Replicas() int { return max(1, int(f.stats.replicas.Load())) }
