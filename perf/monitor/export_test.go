package monitor

import (
	"io"
	"time"
)

// Hooks for the external tests.

var (
	Quantile          = quantile
	PickGCPauseMetric = pickGCPauseMetric
	Sustained         = sustained
	Slope             = slope
)

// SetClock makes l read time from now.
func SetClock(l *SlowLog, now func() time.Time) { l.clock, l.epoch = now, now() }

// SetReader makes d read the heap and the goroutine count from read.
func SetReader(d *LeakDetector, read func() (heap uint64, goroutines int)) { d.read = read }

// SetProfile makes d read goroutine profiles from profile.
func SetProfile(d *LeakDetector, profile func(io.Writer) error) { d.profile = profile }

// ParsedStack is a parsed stack, for tests.
type ParsedStack struct {
	Funcs []string
	N     int64
}

// ParseGoroutineProfile exposes parseGoroutineProfile.
func ParseGoroutineProfile(text string) []ParsedStack {
	var out []ParsedStack
	for _, p := range parseGoroutineProfile([]byte(text)) {
		out = append(out, ParsedStack{Funcs: p.funcs, N: p.n})
	}
	return out
}

// Interned is how many distinct stacks d holds.
func Interned(d *LeakDetector) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.interned)
}

const MaxStacks = maxStacks

// WriteGoroutineProfile exposes writeGoroutineProfile.
var WriteGoroutineProfile = writeGoroutineProfile
