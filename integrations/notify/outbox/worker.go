package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/time/rate"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/notify"
)

// item is a queued notification.
type item struct {
	id     string
	queued time.Time
}

// worker delivers one channel's queue in order.
type worker struct {
	o       *Outbox
	name    string
	sender  Sender // nil: the channel is not configured
	limiter *rate.Limiter
	wake    chan struct{}

	mu          sync.Mutex
	queue       []item    // guarded by mu
	pausedUntil time.Time // guarded by mu
	lastErr     string    // guarded by mu

	failures int // consecutive failed attempts; owned by run

	accepted, delivered, retried, deadLettered atomic.Int64 // counters
	deadDepth                                  atomic.Int64 // gauge
}

func newWorker(o *Outbox, ch Channel) *worker {
	r, b := ch.Rate, ch.Burst
	if r <= 0 {
		r = 1
	}
	if b <= 0 {
		b = 1
	}
	return &worker{o: o, name: ch.Name, sender: ch.Sender, limiter: rate.NewLimiter(r, b), wake: make(chan struct{}, 1)}
}

func (w *worker) push(it item, wake bool) {
	w.mu.Lock()
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	if wake {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *worker) head() (item, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return item{}, false
	}
	return w.queue[0], true
}

func (w *worker) pop(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) > 0 && w.queue[0].id == id {
		w.queue[0] = item{}
		w.queue = w.queue[1:]
	}
}

// requeue moves the head to the back of the queue: a message that keeps
// failing must not hold up the ones behind it.
func (w *worker) requeue(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) > 1 && w.queue[0].id == id {
		it := w.queue[0]
		w.queue[0] = item{}
		w.queue = append(w.queue[1:], it)
	}
}

// pause returns how long the channel must still wait.
func (w *worker) pause() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Until(w.pausedUntil)
}

func (w *worker) run() {
	stop := w.o.stopping
	for {
		it, ok := w.head()
		if !ok {
			select {
			case <-w.wake:
				continue
			case <-stop.Done():
				return
			}
		}
		if d := w.pause(); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-stop.Done():
				t.Stop()
				return
			}
			continue
		}
		if w.limiter.Wait(stop) != nil {
			return
		}
		if !w.attempt(it) {
			return
		}
	}
}

// outcome of one attempt
type outcome int

const (
	delivered outcome = iota
	retry
	dead
)

// attempt sends the head of the queue once and records the outcome. It
// returns false when the worker must stop.
func (w *worker) attempt(it item) bool {
	o := w.o
	rec, found, err := o.Get(context.Background(), it.id)
	if err != nil {
		o.s.Log.Error("outbox read failed", "channel", w.name, "id", it.id, "error", err)
		w.setPause(time.Now().Add(time.Second), err.Error())
		return true
	}
	if !found || rec.State != Pending { // finished elsewhere (cannot happen today; harmless)
		w.pop(it.id)
		o.finish(it.id)
		return true
	}
	sendErr, cut := send(o.sendCtx, &o.s, w.name, w.sender, rec)
	if cut {
		// Cut off by shutdown: the receiver may have the message; it is
		// sent again after the restart (the documented window).
		return false
	}
	next, kind, delay, sendErr := decide(&o.s, rec, sendErr, &w.failures, time.Now())
	if !w.persist(&rec, &next) {
		return false
	}
	switch kind {
	case delivered:
		w.delivered.Add(1)
		w.pop(it.id)
		o.finish(it.id)
		w.setPause(time.Time{}, "")
	case dead:
		w.deadLettered.Add(1)
		w.deadDepth.Add(1)
		w.pop(it.id)
		o.finish(it.id)
		w.setPause(time.Time{}, next.LastError)
		o.s.Log.Warn("notification dead-lettered", "channel", w.name, "id", rec.ID, "attempts", next.Attempts, "error", next.LastError)
	case retry:
		w.retried.Add(1)
		if mayBeTheMessage(sendErr) {
			w.requeue(it.id)
		}
		w.setPause(next.NextAttempt, next.LastError)
		o.s.Log.Info("notification delivery will be retried", "channel", w.name, "id", rec.ID, "attempts", next.Attempts, "in", delay.Round(time.Millisecond), "error", next.LastError)
	}
	return true
}

// persist records next over prev, retrying while the store fails (the outcome must
// not be lost). It returns false when the outbox stops first.
func (w *worker) persist(prev, next *Record) bool {
	for {
		// prev is still the stored version: only a channel's worker writes
		// its pending records (Redrive and Sweep touch finished ones).
		err := w.o.c.do(func(tx *bolt.Tx) error { return putRecord(tx, prev, next) })
		if err == nil {
			return true
		}
		w.o.s.Log.Error("outbox write failed; retrying", "channel", w.name, "id", next.ID, "error", err)
		select {
		case <-time.After(time.Second):
		case <-w.o.stopping.Done():
			return false
		}
	}
}

func (w *worker) setPause(until time.Time, lastErr string) {
	w.mu.Lock()
	w.pausedUntil, w.lastErr = until, lastErr
	w.mu.Unlock()
}

// send makes one attempt to deliver rec through sender. cut reports an
// attempt cut off by shutdown (sendCtx ended): its outcome is unknown.
func send(sendCtx context.Context, s *Settings, channel string, sender Sender, rec Record) (err error, cut bool) {
	msg := notify.Message{ID: rec.ID, Text: rec.Text}
	if len(rec.Payload) > 0 {
		if err := json.Unmarshal(rec.Payload, &msg.Payload); err != nil {
			return fmt.Errorf("%w: stored payload is not a JSON object", integrations.ErrInvalidRequest), false // permanent: a dead letter
		}
	}
	ctx, cancel := context.WithTimeout(sendCtx, s.SendTimeout)
	err = sender.Send(ctx, msg)
	cancel()
	if err != nil && sendCtx.Err() != nil {
		return err, true
	}
	s.Observe(channel, err)
	return err, false
}

// decide turns the error of an attempt on rec into the record's next
// version, the kind of outcome and, for a retry, the channel's pause.
// failures is the channel's count of failed attempts in a row; decide
// updates it. Both stores' workers decide through it.
func decide(s *Settings, rec Record, sendErr error, failures *int, now time.Time) (next Record, kind outcome, delay time.Duration, err error) {
	next = rec
	next.Attempts++
	kind, delay = classify(sendErr)
	if kind == delivered {
		*failures = 0
	} else {
		*failures++
	}
	if kind == retry {
		if now.Sub(rec.Queued) >= s.MaxAge {
			kind = dead
			sendErr = fmt.Errorf("gave up after %d attempts over %s: %w", next.Attempts, now.Sub(rec.Queued).Round(time.Second), sendErr)
		} else if delay <= 0 {
			delay = backoff(s.BackoffBase, s.BackoffMax, *failures)
		}
	}
	next.LastError = ""
	if sendErr != nil {
		next.LastError = sendErr.Error()
	}
	switch kind {
	case delivered:
		next.State, next.Finished, next.NextAttempt = Delivered, now, time.Time{}
	case dead:
		next.State, next.Finished, next.NextAttempt = Dead, now, time.Time{}
	case retry:
		next.NextAttempt = now.Add(delay)
	}
	return next, kind, delay, sendErr
}

// classify sorts an attempt's error: nil is delivered; 429, 408, 5xx,
// timeouts and network errors are retried (after Retry-After when the
// receiver gave one); other answers are permanent.
func classify(err error) (outcome, time.Duration) {
	if err == nil {
		return delivered, 0
	}
	var se *integrations.StatusError
	if errors.As(err, &se) {
		switch {
		case se.StatusCode == http.StatusTooManyRequests, se.StatusCode == http.StatusRequestTimeout, se.StatusCode >= 500:
			return retry, se.RetryAfter
		default:
			return dead, 0
		}
	}
	if errors.Is(err, integrations.ErrInvalidRequest) || errors.Is(err, integrations.ErrBlocked) {
		return dead, 0
	}
	return retry, 0 // unreachable, timed out, malformed answer, attempt timeout
}

// mayBeTheMessage tells a failure that may be this message's own (a 500:
// the receiver may choke on this payload) from one of the whole channel
// (429, 502, 503, 504, 408, timeouts, network errors: the receiver is
// limited or down). Only the first moves the message behind the others;
// the second keeps the order.
func mayBeTheMessage(err error) bool {
	var se *integrations.StatusError
	if !errors.As(err, &se) {
		return false
	}
	switch se.StatusCode {
	case http.StatusTooManyRequests, http.StatusRequestTimeout,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return false
	}
	return true
}

// backoff is the delay after the channel's attempt-th failure in a row: exponential
// from base, capped at limit, with "equal jitter" (between half and all of
// it) so that channels do not retry in step.
func backoff(base, limit time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ { // doubling stops at limit: no overflow
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}
