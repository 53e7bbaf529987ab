package ratelimit

import (
	"fmt"
	"math"
	"time"
)

// Settings configures every limiter of a Set. Zero values mean the defaults
// given at each field; rates are in requests per second.
type Settings struct {
	// Initial is the rate ceiling a new key starts at (INITIAL_RATE_LIMIT).
	// 0 means 10, brought into [Min, Max].
	Initial float64
	// Min is the floor of the rate ceiling (MIN_RATE_LIMIT). 0 means 1, or
	// Max if that is lower.
	Min float64
	// Max is the top of the rate ceiling (MAX_RATE_LIMIT). 0 means 100.
	Max float64
	// Burst is how many calls may start at once after an idle spell, as
	// far as the rate ceiling is concerned. 0 means max(1, ceil(rate/10)),
	// i.e. 100ms worth of the current rate, recomputed as the rate changes.
	// Calls beyond it queue; they are not refused.
	Burst int
	// Increase is the most the rate ceiling gains per second of successful
	// traffic once the key's first decrease has ended its slow start (each
	// success adds min(Increase, 5% of the rate before the last
	// decrease)/rate; before the first decrease, each success adds at
	// least 1). 0 means Max/20.
	Increase float64
	// Decrease is the multiplicative factor applied to the rate ceiling on
	// an overload or a failure, in (0, 1). 0 means 0.8.
	Decrease float64
	// Cooldown is the least time between two decreases of the rate
	// ceiling. 0 means 100ms.
	Cooldown time.Duration

	// InitialConcurrency is the concurrency limit (calls at the backend at
	// once) a new key starts at: the backend's declared parallelism when
	// known (OLLAMA_NUM_PARALLEL, vLLM's max_num_seqs, llama-server's
	// --parallel). 0 means 4, brought into [MinConcurrency, MaxConcurrency].
	InitialConcurrency int
	// MinConcurrency and MaxConcurrency bound the adaptive concurrency
	// limit. 0 means 1 and 64. MinConcurrency = MaxConcurrency fixes it.
	MinConcurrency, MaxConcurrency int

	// QueueTarget is the queue delay above which a queue that does not
	// drain is a standing queue (CoDel's target). 0 means automatic: half
	// the backend's unloaded latency, at least 5ms (5ms until the backend
	// has answered).
	QueueTarget time.Duration
	// MaxQueueWait is the longest a call waits in the queue: the bound for
	// calls without a deadline, and a cap for the others. 0 means 30s.
	MaxQueueWait time.Duration
	// MaxQueue bounds the calls queued for one backend, MaxTenantQueue those
	// of one tenant for one backend; a call beyond either is refused. 0
	// means 1024 and 256.
	MaxQueue, MaxTenantQueue int

	// Fleet, when set, makes the rate ceiling of every backend the fleet's
	// (see fleet.go); nil: this gateway's own.
	Fleet Fleet

	// MaxKeys bounds how many keys' limiters the Set keeps. When a new key
	// would exceed it, the least recently used idle limiters (no call at
	// the backend, none queued) are evicted, down to MaxKeys − MaxKeys/8; a
	// key evicted and used again starts afresh. When too few limiters are
	// idle the new key is let in beyond MaxKeys rather than refused, and
	// counted (KeyStats.Overflows). 0 means 10000.
	MaxKeys int
}

// Defaults applied to zero Settings fields.
const (
	DefaultInitial            = 10
	DefaultMin                = 1
	DefaultMax                = 100
	DefaultDecrease           = 0.8
	DefaultCooldown           = 100 * time.Millisecond
	DefaultInitialConcurrency = 4
	DefaultMinConcurrency     = 1
	DefaultMaxConcurrency     = 64
	DefaultMaxQueueWait       = 30 * time.Second
	DefaultMaxQueue           = 1024
	DefaultMaxTenantQueue     = 256
	DefaultMaxKeys            = 10000
)

// NewSet returns a Set whose limiters use s. It fails when a setting is out
// of range, naming it by its configuration name.
func NewSet(s Settings) (*Set, error) {
	if err := s.fill(); err != nil {
		return nil, err
	}
	set := &Set{s: s}
	set.limiters.max = s.MaxKeys
	set.limiters.idle = func(l *limiter) (uint64, bool) { return l.used.Load(), l.busy.Load() <= 0 }
	return set, nil
}

// fill checks s and applies the defaults.
func (s *Settings) fill() error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"INITIAL_RATE_LIMIT", s.Initial}, {"MIN_RATE_LIMIT", s.Min}, {"MAX_RATE_LIMIT", s.Max},
		{"rate limit Increase", s.Increase}, {"rate limit Decrease", s.Decrease},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("ratelimit: %s must be a finite number, positive or 0 for the default; got %v", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"rate limit Burst", int64(s.Burst)}, {"rate limit Cooldown", int64(s.Cooldown)},
		{"VEGA_CONCURRENCY_INITIAL", int64(s.InitialConcurrency)}, {"VEGA_CONCURRENCY_MIN", int64(s.MinConcurrency)},
		{"VEGA_CONCURRENCY_MAX", int64(s.MaxConcurrency)}, {"VEGA_QUEUE_TARGET", int64(s.QueueTarget)},
		{"VEGA_QUEUE_MAX_WAIT", int64(s.MaxQueueWait)}, {"queue MaxQueue", int64(s.MaxQueue)},
		{"queue MaxTenantQueue", int64(s.MaxTenantQueue)}, {"rate limit MaxKeys", int64(s.MaxKeys)},
	} {
		if f.v < 0 {
			return fmt.Errorf("ratelimit: %s must not be negative (0 for the default), got %v", f.name, f.v)
		}
	}
	if s.Decrease >= 1 {
		return fmt.Errorf("ratelimit: rate limit Decrease must be in (0, 1), got %v", s.Decrease)
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
		return fmt.Errorf("ratelimit: MIN_RATE_LIMIT must not exceed MAX_RATE_LIMIT (%v > %v)", s.Min, s.Max)
	case s.Initial < s.Min || s.Initial > s.Max:
		return fmt.Errorf("ratelimit: INITIAL_RATE_LIMIT must be between MIN_RATE_LIMIT and MAX_RATE_LIMIT (%v not in [%v, %v])", s.Initial, s.Min, s.Max)
	}
	if s.MaxConcurrency == 0 {
		s.MaxConcurrency = max(DefaultMaxConcurrency, s.MinConcurrency)
	}
	if s.MinConcurrency == 0 {
		s.MinConcurrency = min(DefaultMinConcurrency, s.MaxConcurrency)
	}
	if s.InitialConcurrency == 0 {
		s.InitialConcurrency = min(max(DefaultInitialConcurrency, s.MinConcurrency), s.MaxConcurrency)
	}
	switch {
	case s.MinConcurrency > s.MaxConcurrency:
		return fmt.Errorf("ratelimit: VEGA_CONCURRENCY_MIN must not exceed VEGA_CONCURRENCY_MAX (%d > %d)", s.MinConcurrency, s.MaxConcurrency)
	case s.InitialConcurrency < s.MinConcurrency || s.InitialConcurrency > s.MaxConcurrency:
		return fmt.Errorf("ratelimit: VEGA_CONCURRENCY_INITIAL must be between VEGA_CONCURRENCY_MIN and VEGA_CONCURRENCY_MAX (%d not in [%d, %d])",
			s.InitialConcurrency, s.MinConcurrency, s.MaxConcurrency)
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
	if s.MaxQueueWait == 0 {
		s.MaxQueueWait = DefaultMaxQueueWait
	}
	if s.MaxQueue == 0 {
		s.MaxQueue = DefaultMaxQueue
	}
	if s.MaxTenantQueue == 0 {
		s.MaxTenantQueue = min(DefaultMaxTenantQueue, s.MaxQueue)
	}
	if s.MaxKeys == 0 {
		s.MaxKeys = DefaultMaxKeys
	}
	return nil
}
