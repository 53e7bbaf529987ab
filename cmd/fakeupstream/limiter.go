package main

import (
	"context"
	"sync"
	"time"
)

// tokenBucket admits up to rate requests per second with a burst of one
// second's worth (at least one). A rate of 0 admits everything.
type tokenBucket struct {
	now func() time.Time

	mu     sync.Mutex
	rate   float64 // guarded by mu
	tokens float64 // guarded by mu
	last   time.Time
}

func newTokenBucket(rate float64, now func() time.Time) *tokenBucket {
	b := &tokenBucket{now: now}
	b.setRate(rate)
	return b
}

func burstOf(rate float64) float64 { return max(1, rate) }

// refill adds the tokens earned since the last call; the caller holds mu.
func (b *tokenBucket) refill() {
	now := b.now()
	if b.rate > 0 {
		b.tokens = min(burstOf(b.rate), b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
}

func (b *tokenBucket) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true
	}
	b.refill()
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// setRate changes the rate live. Tokens already saved are kept, but never
// more than the new burst, so halving the capacity takes effect at once.
func (b *tokenBucket) setRate(rate float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	if b.rate <= 0 {
		b.tokens = burstOf(rate) // from unlimited: start full
	}
	b.rate = max(0, rate)
	b.tokens = min(b.tokens, burstOf(b.rate))
}

func (b *tokenBucket) getRate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate
}

// workers bounds the requests served at once. Beyond the limit a request
// is refused, or waits in FIFO order when queueing is on (like an
// overloaded LLM server whose queue has no bound). A limit of 0 is unlimited.
type workers struct {
	mu      sync.Mutex
	limit   int         // guarded by mu
	queue   bool        // guarded by mu
	active  int         // guarded by mu
	waiters []chan bool // guarded by mu; each gets true (a slot) or false (refused)
}

func (w *workers) set(limit int, queue bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.limit, w.queue = max(0, limit), queue
	for len(w.waiters) > 0 && (w.limit == 0 || w.active < w.limit) {
		w.active++
		w.waiters[0] <- true
		w.waiters = w.waiters[1:]
	}
	if !queue { // refuse those still waiting
		for _, ch := range w.waiters {
			ch <- false
		}
		w.waiters = nil
	}
}

// acquire reports whether the request may be served; if so, release must
// be called when it is done.
func (w *workers) acquire(ctx context.Context) bool {
	w.mu.Lock()
	if w.limit == 0 || w.active < w.limit {
		w.active++
		w.mu.Unlock()
		return true
	}
	if !w.queue {
		w.mu.Unlock()
		return false
	}
	ch := make(chan bool, 1)
	w.waiters = append(w.waiters, ch)
	w.mu.Unlock()
	select {
	case ok := <-ch:
		return ok
	case <-ctx.Done():
		w.mu.Lock()
		for i, c := range w.waiters {
			if c == ch {
				w.waiters = append(w.waiters[:i], w.waiters[i+1:]...)
				w.mu.Unlock()
				return false
			}
		}
		w.mu.Unlock()
		if <-ch { // a slot was handed over while we gave up
			w.release()
		}
		return false
	}
}

func (w *workers) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waiters) > 0 && (w.limit == 0 || w.active <= w.limit) {
		w.waiters[0] <- true // hand the slot over; active stays
		w.waiters = w.waiters[1:]
		return
	}
	w.active--
}

func (w *workers) inUse() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active
}
