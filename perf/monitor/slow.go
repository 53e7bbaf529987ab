package monitor

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/status"
)

// Defaults of NewSlowLog.
const (
	DefaultSlowThreshold = time.Second
	DefaultSlowKeep      = 32
)

// SlowRPC is one RPC that took at least the SlowLog's threshold.
type SlowRPC struct {
	Method   string        // full method name, "/vega.v1.GenerateService/Generate"
	Code     string        // status code name, "OK", "Unavailable" …
	Duration time.Duration // from the interceptor's entry to the handler's return
	Time     time.Time     // when it finished
}

// SlowLog counts the RPCs slower than a threshold and keeps the most recent
// of them in a bounded ring. Its interceptors time every call with two clock
// reads and take the mutex only to record a slow one. A SlowLog is safe for
// concurrent use.
type SlowLog struct {
	threshold time.Duration    // read-only
	epoch     time.Time        // read-only: the origin of elapsed's readings
	clock     func() time.Time // read-only: nil means the real clock; tests set it

	mu    sync.Mutex
	count int64     // guarded by mu: slow RPCs since start or Reset
	ring  []SlowRPC // guarded by mu: len = keep; ring[next-1] is the newest
	next  int       // guarded by mu: where the next slow RPC goes
}

// NewSlowLog returns a SlowLog that records RPCs taking threshold or more
// (0 means DefaultSlowThreshold, 1s) and keeps the newest keep of them (0
// means DefaultSlowKeep, 32). It panics if either is negative.
func NewSlowLog(threshold time.Duration, keep int) *SlowLog {
	if threshold < 0 {
		panic(fmt.Sprintf("monitor: NewSlowLog threshold must not be negative, got %v", threshold))
	}
	if keep < 0 {
		panic(fmt.Sprintf("monitor: NewSlowLog keep must not be negative, got %d", keep))
	}
	if threshold == 0 {
		threshold = DefaultSlowThreshold
	}
	if keep == 0 {
		keep = DefaultSlowKeep
	}
	return &SlowLog{threshold: threshold, epoch: time.Now(), ring: make([]SlowRPC, keep)}
}

// elapsed is the time since l.epoch. On the real clock it reads only the
// monotonic clock: half the cost of time.Now, which reads the wall clock
// too.
func (l *SlowLog) elapsed() time.Duration {
	if l.clock != nil {
		return l.clock().Sub(l.epoch)
	}
	return time.Since(l.epoch)
}

// wallNow is the wall time, without a monotonic reading.
func (l *SlowLog) wallNow() time.Time {
	if l.clock != nil {
		return l.clock().Round(0)
	}
	return time.Now().Round(0)
}

// Threshold returns the duration from which an RPC counts as slow.
func (l *SlowLog) Threshold() time.Duration { return l.threshold }

// record adds one slow RPC of method that took took and returned err.
func (l *SlowLog) record(method string, err error, took time.Duration) {
	r := SlowRPC{Method: method, Code: status.Code(err).String(), Duration: took, Time: l.wallNow()}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	l.ring[l.next] = r
	l.next = (l.next + 1) % len(l.ring)
}

// Snapshot returns the number of slow RPCs since start (or the last Reset),
// the threshold, and the most recent slow RPCs, newest first.
func (l *SlowLog) Snapshot() (count int64, threshold time.Duration, recent []SlowRPC) {
	l.mu.Lock()
	defer l.mu.Unlock()
	recent = make([]SlowRPC, min(l.count, int64(len(l.ring))))
	for i := range recent {
		recent[i] = l.ring[(l.next-1-i+len(l.ring))%len(l.ring)]
	}
	return l.count, l.threshold, recent
}

// Reset forgets the slow RPCs recorded so far and zeroes the count.
func (l *SlowLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.ring)
	l.count, l.next = 0, 0
}
