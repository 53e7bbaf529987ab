package monitor

import (
	"fmt"
	"time"
)

// LeakSettings configures a LeakDetector. Zero values mean the defaults
// given at each field.
type LeakSettings struct {
	// Interval is the sampling period of Run. 0 means 10s.
	Interval time.Duration
	// Window is how far back the trend is measured. It must hold 4 to 360
	// Intervals. 0 means 5m.
	Window time.Duration
	// MinGoroutineGrowth is how much the goroutine count must grow over the
	// window, steadily, to be suspected. 0 means 100.
	MinGoroutineGrowth int
	// MinHeapGrowth is how much the live heap must grow over the window,
	// steadily, to be suspected. 0 means 64 MiB.
	MinHeapGrowth uint64
	// Now is the clock. nil means time.Now.
	Now func() time.Time
}

// Defaults applied to zero LeakSettings fields.
const (
	DefaultLeakInterval       = 10 * time.Second
	DefaultLeakWindow         = 5 * time.Minute
	DefaultMinGoroutineGrowth = 100
	DefaultMinHeapGrowth      = 64 << 20
)

// maxWindowSamples bounds Window/Interval, and so the samples (and their
// stacks) a LeakDetector holds.
const maxWindowSamples = 360

func (s LeakSettings) withDefaults() (LeakSettings, error) {
	switch {
	case s.Interval < 0:
		return s, fmt.Errorf("monitor: LeakSettings.Interval must not be negative, got %v", s.Interval)
	case s.Window < 0:
		return s, fmt.Errorf("monitor: LeakSettings.Window must not be negative, got %v", s.Window)
	case s.MinGoroutineGrowth < 0:
		return s, fmt.Errorf("monitor: LeakSettings.MinGoroutineGrowth must not be negative, got %d", s.MinGoroutineGrowth)
	}
	if s.Interval == 0 {
		s.Interval = DefaultLeakInterval
	}
	if s.Window == 0 {
		s.Window = DefaultLeakWindow
	}
	if s.MinGoroutineGrowth == 0 {
		s.MinGoroutineGrowth = DefaultMinGoroutineGrowth
	}
	if s.MinHeapGrowth == 0 {
		s.MinHeapGrowth = DefaultMinHeapGrowth
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if n := s.Window / s.Interval; n < minSamples-1 || n > maxWindowSamples {
		return s, fmt.Errorf("monitor: LeakSettings.Window must hold %d to %d Intervals (%v), got %v",
			minSamples-1, maxWindowSamples, s.Interval, s.Window)
	}
	return s, nil
}
