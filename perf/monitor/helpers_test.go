package monitor_test

import (
	"strings"
	"sync"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// parked is a batch of goroutines that each run a function which calls
// started.Done and then waits for release.
type parked struct {
	started, exited sync.WaitGroup
	release         chan struct{}
}

// park starts n goroutines running f and returns once all have started.
func park(n int, f func(*parked)) *parked {
	p := &parked{release: make(chan struct{})}
	p.started.Add(n)
	p.exited.Add(n)
	for range n {
		go func() {
			defer p.exited.Done()
			f(p)
		}()
	}
	p.started.Wait()
	return p
}

// stop releases the batch and waits for its goroutines to return.
func (p *parked) stop() {
	close(p.release)
	p.exited.Wait()
}

// hasFunc reports whether funcs holds a function whose name ends in suffix.
func hasFunc(funcs []string, suffix string) bool {
	for _, f := range funcs {
		if strings.HasSuffix(f, suffix) {
			return true
		}
	}
	return false
}
