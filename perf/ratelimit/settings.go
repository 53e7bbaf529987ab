package ratelimit

import (
	"fmt"
	"math"
	"time"
)

// Settings configures every limiter of a Set. Zero values mean the defaults
// given at each field; rates are in requests per second.
type Settings struct {
	// Initial is the rate a new key starts at (INITIAL_RATE_LIMIT). 0
	// means 10, brought into [Min, Max].
	Initial float64
	// Min is the floor of the rate (MIN_RATE_LIMIT). 0 means 1, or Max if
	// that is lower.
	Min float64
	// Max is the ceiling of the rate (MAX_RATE_LIMIT). 0 means 100.
	Max float64
	// Burst is how many calls may start at once after an idle spell. 0
	// means max(1, ceil(rate/10)), i.e. 100ms worth of the current rate,
	// recomputed as the rate changes.
	Burst int
	// Increase is the most the rate gains per second of successful traffic
	// at full rate once the key's first decrease has ended its slow start
	// (each success adds min(Increase, 5% of the rate before the last
	// decrease)/rate; before the first decrease, each success adds at
	// least 1). 0 means Max/20.
	Increase float64
	// Decrease is the multiplicative factor applied to the rate on an
	// overload or a failure, in (0, 1). 0 means 0.8 (see the package
	// documentation for why not 0.5).
	Decrease float64
	// Cooldown is the least time between two decreases. 0 means 100ms,
	// about a fast backend's round trip: it stops a run of instant
	// failures from dropping the rate to Min within milliseconds.
	// Independently of it, a call scheduled before the last decrease never
	// causes another one: its result speaks for the old rate.
	Cooldown time.Duration
	// MaxWait bounds how long Acquire waits for a token, also when the
	// caller's deadline is later or absent. 0 means one token's time at
	// the current rate (1/rate): near the rate a backend of K workers and
	// service time S sustains (K/S) that is at most S, so waiting at most
	// doubles an admitted call's latency, and a change of the rate takes
	// effect within it (see the package documentation).
	MaxWait time.Duration
	// MaxKeys bounds how many keys' limiters the Set keeps. When a new key
	// would exceed it, the least recently used idle limiters (no call
	// admitted and not yet released, none waiting) are evicted, down to
	// MaxKeys − MaxKeys/8; a key evicted and used again starts afresh at
	// Initial. When too few limiters are idle the new key is let in beyond
	// MaxKeys rather than refused, and counted (KeyStats.Overflows). 0
	// means 10000.
	MaxKeys int
	// Now is the clock of the token bucket and of the rate's adaptation.
	// nil means time.Now. Waiting itself uses real timers.
	Now func() time.Time
}

// Defaults applied to zero Settings fields.
const (
	DefaultInitial  = 10
	DefaultMin      = 1
	DefaultMax      = 100
	DefaultDecrease = 0.8
	DefaultCooldown = 100 * time.Millisecond
	DefaultMaxKeys  = 10000
)

// NewSet returns a Set whose limiters use s. It fails when a setting is out
// of range, naming it by its configuration name.
func NewSet(s Settings) (*Set, error) {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"INITIAL_RATE_LIMIT", s.Initial}, {"MIN_RATE_LIMIT", s.Min}, {"MAX_RATE_LIMIT", s.Max},
		{"rate limit Increase", s.Increase}, {"rate limit Decrease", s.Decrease},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return nil, fmt.Errorf("ratelimit: %s must be a finite number, positive or 0 for the default; got %v", f.name, f.v)
		}
	}
	switch {
	case s.Decrease >= 1:
		return nil, fmt.Errorf("ratelimit: rate limit Decrease must be in (0, 1), got %v", s.Decrease)
	case s.Burst < 0:
		return nil, fmt.Errorf("ratelimit: rate limit Burst must not be negative, got %d", s.Burst)
	case s.Cooldown < 0:
		return nil, fmt.Errorf("ratelimit: rate limit Cooldown must not be negative, got %v", s.Cooldown)
	case s.MaxWait < 0:
		return nil, fmt.Errorf("ratelimit: rate limit MaxWait must not be negative, got %v", s.MaxWait)
	case s.MaxKeys < 0:
		return nil, fmt.Errorf("ratelimit: rate limit MaxKeys must not be negative, got %d", s.MaxKeys)
	}
	if s.Max == 0 {
		s.Max = DefaultMax
	}
	if s.Min == 0 {
		s.Min = min(DefaultMin, s.Max)
	}
	if s.Initial == 0 {
		s.Initial = min(max(DefaultInitial, s.Min), s.Max)
	}
	switch {
	case s.Min > s.Max:
		return nil, fmt.Errorf("ratelimit: MIN_RATE_LIMIT must not exceed MAX_RATE_LIMIT (%v > %v)", s.Min, s.Max)
	case s.Initial < s.Min || s.Initial > s.Max:
		return nil, fmt.Errorf("ratelimit: INITIAL_RATE_LIMIT must be between MIN_RATE_LIMIT and MAX_RATE_LIMIT (%v not in [%v, %v])", s.Initial, s.Min, s.Max)
	}
	if s.Increase == 0 {
		s.Increase = s.Max / 20
	}
	if s.Decrease == 0 {
		s.Decrease = DefaultDecrease
	}
	if s.Cooldown == 0 {
		s.Cooldown = DefaultCooldown
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.MaxKeys == 0 {
		s.MaxKeys = DefaultMaxKeys
	}
	set := &Set{s: s}
	set.limiters.max = s.MaxKeys
	set.limiters.idle = func(l *limiter) (uint64, bool) { return l.used.Load(), l.inflight.Load() <= 0 }
	return set, nil
}
