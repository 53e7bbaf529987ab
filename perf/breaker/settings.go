package breaker

import (
	"fmt"
	"time"
)

// Settings configures every breaker of a Set. Zero values mean the
// defaults given at each field.
type Settings struct {
	// MaxProbes is how many calls half-open admits at a time, and how many
	// successes in a row close the breaker. 0 means 3.
	MaxProbes uint32
	// Interval is the closed-state counting window: the counts are cleared
	// every Interval. 0 means 60s.
	Interval time.Duration
	// OpenTimeout is how long the breaker stays open before it lets probes
	// through (half-open). 0 means 30s.
	OpenTimeout time.Duration
	// ConsecutiveFailures trips the breaker after this many failures in a
	// row. 0 means 5.
	ConsecutiveFailures uint32
	// FailureRatio trips the breaker when failures/(successes+failures)
	// reaches it over at least MinRequests decided calls in one Interval.
	// It must be in (0, 1]; 0 means 0.5.
	FailureRatio float64
	// MinRequests is the smallest sample FailureRatio is judged on. 0
	// means 20.
	MinRequests uint32
	// MaxKeys bounds how many keys' breakers the Set keeps. When a new key
	// would exceed it, the least recently used idle breakers are evicted,
	// down to MaxKeys − MaxKeys/8. Idle means closed, in Auto mode, and
	// with no call in flight: a forced breaker and an open or half-open
	// one are never evicted. A key evicted and used again gets a fresh,
	// closed breaker. When too few breakers are idle the new key is let in
	// beyond MaxKeys rather than refused, and counted
	// (KeyStats.Overflows). 0 means 10000.
	MaxKeys int
	// OnStateChange, if set, receives every state change. It is called
	// with no lock of the Set or of gobreaker held, right after the change,
	// by the goroutine whose call caused it (or by one already delivering
	// that key's events), one event at a time and in order per key; it may
	// call the Set (Stats, SetMode). Keep it short: hand the event to a
	// channel or a logger.
	OnStateChange func(Event)
	// Fleet, when set, shares trips with the other replicas of a fleet
	// (shared.go): a trip here holds the key on every replica, one
	// replica probes for the fleet, and its outcome closes or reopens
	// the key everywhere. The local breakers still decide; when the
	// fleet cannot answer they decide alone. nil: this replica alone.
	Fleet Fleet
}

// Defaults applied to zero Settings fields.
const (
	DefaultMaxProbes           = 3
	DefaultInterval            = 60 * time.Second
	DefaultOpenTimeout         = 30 * time.Second
	DefaultConsecutiveFailures = 5
	DefaultFailureRatio        = 0.5
	DefaultMinRequests         = 20
	DefaultMaxKeys             = 10000
)

// probeRetry is the retry advice given to a call refused because the
// half-open probes are all in flight: they usually settle within one call's
// latency. It is capped by OpenTimeout.
const probeRetry = time.Second

// Event is one state change of the breaker of Key. From and To are
// "closed", "half-open" or "open".
type Event struct {
	Key      string
	From, To string
	At       time.Time
}

// Mode says who decides a breaker's state.
type Mode int32

const (
	// Auto: the breaker follows the calls' outcomes.
	Auto Mode = iota
	// ForceOpen refuses every call, as an open breaker does.
	ForceOpen
	// ForceClosed admits every call. Outcomes still show in Stats but do
	// not reach the automatic breaker, which starts afresh, closed, when
	// the mode returns to Auto.
	ForceClosed
)

func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case ForceOpen:
		return "force-open"
	case ForceClosed:
		return "force-closed"
	}
	return fmt.Sprintf("mode(%d)", int32(m))
}

// NewSet returns a Set whose breakers use s. It fails when a setting is out
// of range, naming it.
func NewSet(s Settings) (*Set, error) {
	switch {
	case s.Interval < 0:
		return nil, fmt.Errorf("breaker: Interval must not be negative, got %v", s.Interval)
	case s.OpenTimeout < 0:
		return nil, fmt.Errorf("breaker: OpenTimeout must not be negative, got %v", s.OpenTimeout)
	case !(s.FailureRatio >= 0 && s.FailureRatio <= 1): // also refuses NaN
		return nil, fmt.Errorf("breaker: FailureRatio must be in (0, 1], got %v", s.FailureRatio)
	case s.MaxKeys < 0:
		return nil, fmt.Errorf("breaker: MaxKeys must not be negative, got %d", s.MaxKeys)
	}
	if s.MaxProbes == 0 {
		s.MaxProbes = DefaultMaxProbes
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.OpenTimeout == 0 {
		s.OpenTimeout = DefaultOpenTimeout
	}
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if s.FailureRatio == 0 {
		s.FailureRatio = DefaultFailureRatio
	}
	if s.MinRequests == 0 {
		s.MinRequests = DefaultMinRequests
	}
	if s.MaxKeys == 0 {
		s.MaxKeys = DefaultMaxKeys
	}
	return &Set{s: s}, nil
}
