package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/time/rate"

	"github.com/vega-gateway/vega/integrations/notify"
)

// Sender delivers one notification; one attempt per call.
type Sender interface {
	Send(ctx context.Context, m notify.Message) error
}

// Channel is a configured destination.
type Channel struct {
	Name   string
	Sender Sender
	Rate   rate.Limit // messages per second; 0 means 1
	Burst  int        // 0 means 1
}

// Settings configure an Outbox. Zero values take the defaults shown.
type Settings struct {
	Path     string    // the database file; its directory is created
	Channels []Channel // destinations; records of other channels wait

	MaxBatch      int           // writes per commit; 128. 1 = one fsync per write
	FlushInterval time.Duration // how long a commit waits for more writes; 0 = commit at once

	Retention           time.Duration // delivered records and idempotency keys; 24h
	DeadLetterRetention time.Duration // dead letters; 7 days (at least Retention)
	MaxAge              time.Duration // a notification failing this long is dead-lettered; Retention

	BackoffBase time.Duration // first retry delay (with jitter); 1s
	BackoffMax  time.Duration // retry delay cap; 5m
	SendTimeout time.Duration // one attempt; 10s

	Log *slog.Logger
	// Observe, when set, hears the outcome of every delivery attempt (nil
	// error for a success), e.g. for backend health figures.
	Observe func(channel string, err error)
}

func (s *Settings) defaults() {
	if s.MaxBatch <= 0 {
		s.MaxBatch = 128
	}
	if s.Retention <= 0 {
		s.Retention = 24 * time.Hour
	}
	if s.DeadLetterRetention < s.Retention {
		s.DeadLetterRetention = max(7*24*time.Hour, s.Retention)
	}
	if s.MaxAge <= 0 {
		s.MaxAge = s.Retention
	}
	if s.BackoffBase <= 0 {
		s.BackoffBase = time.Second
	}
	if s.BackoffMax < s.BackoffBase {
		s.BackoffMax = max(5*time.Minute, s.BackoffBase)
	}
	if s.SendTimeout <= 0 {
		s.SendTimeout = 10 * time.Second
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.Observe == nil {
		s.Observe = func(string, error) {}
	}
}

// Errors of Submit.
var (
	// ErrKeyReused: the idempotency key was used for another notification.
	ErrKeyReused = errors.New("idempotency_key was already used with a different notification")
	// ErrClosed: the outbox is shutting down.
	ErrClosed = errors.New("the notification outbox is shutting down")
)

// Outbox is a durable notification queue with one delivery worker per
// channel.
type Outbox struct {
	s  Settings
	db *bolt.DB
	c  *committer

	gate     sync.RWMutex  // held for reading while a caller hands the committer a write
	closed   bool          // guarded by gate
	release  chan struct{} // closed by Release (or Close): Wait returns at once
	relOnce  sync.Once
	stopping context.Context    // done when Close starts
	halt     context.CancelFunc // ends stopping
	abort    context.CancelFunc // cuts off sends in flight
	sendCtx  context.Context
	wg       sync.WaitGroup

	mu      sync.Mutex
	workers map[string]*worker       // guarded by mu (the map; workers lock themselves)
	waiters map[string]chan struct{} // id → closed when the record leaves Pending; guarded by mu
}

// Open opens (or creates) the store, queues every pending notification
// again, and starts the workers.
func Open(s Settings) (*Outbox, error) {
	s.defaults()
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	db, err := bolt.Open(s.Path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("outbox: %s is locked by another process (is another gateway running with the same VEGA_DATA_DIR?)", s.Path)
		}
		return nil, fmt.Errorf("outbox: open %s: %w", s.Path, err)
	}
	if err := db.Update(createBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("outbox: %w", err)
	}
	o := &Outbox{s: s, db: db, release: make(chan struct{}), workers: map[string]*worker{}, waiters: map[string]chan struct{}{}}
	o.stopping, o.halt = context.WithCancel(context.Background())
	o.sendCtx, o.abort = context.WithCancel(context.Background())
	for _, ch := range s.Channels {
		o.workers[ch.Name] = newWorker(o, ch)
	}
	if err := o.load(); err != nil {
		db.Close()
		return nil, err
	}
	o.c = newCommitter(db, s.MaxBatch, s.FlushInterval)
	for _, w := range o.workers {
		if w.sender != nil {
			o.wg.Add(1)
			go func() { defer o.wg.Done(); w.run() }()
		}
	}
	o.wg.Add(1)
	go func() { defer o.wg.Done(); o.sweepLoop() }()
	return o, nil
}

// load rebuilds the queues from the pending records, oldest first.
func (o *Outbox) load() error {
	return o.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bPending).ForEach(func(k, _ []byte) error {
			r, err := getRecord(tx, string(k))
			if err != nil || r == nil {
				return err
			}
			o.enqueue(r, false)
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bDead).ForEach(func(_, ch []byte) error {
			o.workerFor(string(ch)).deadDepth.Add(1)
			return nil
		})
	})
}

// workerFor returns the worker of a channel, adding an idle one for a
// channel that is not configured (its records wait for it).
func (o *Outbox) workerFor(channel string) *worker {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.workers[channel]
	if !ok {
		w = newWorker(o, Channel{Name: channel})
		o.workers[channel] = w
		o.s.Log.Warn("notifications wait for a channel that is not configured", "channel", channel)
	}
	return w
}

// Submission is a notification to record.
type Submission struct {
	Tenant, Channel, IdempotencyKey string
	Fingerprint                     []byte // identifies the content, for the idempotency check
	Text                            string
	Payload                         []byte // a JSON object, or nil
}

// Submit records a notification durably and queues it. With an
// idempotency key already used for the same content it returns the stored
// record and replayed = true; for other content, ErrKeyReused.
func (o *Outbox) Submit(ctx context.Context, sub Submission) (rec Record, replayed bool, err error) {
	var (
		out      *Record
		conflict bool
		isReplay bool
		now      = time.Now()
	)
	// The record is queued by the committer once it is durable, so that a
	// caller who gives up while the commit runs cannot leave it unqueued.
	queue := func() {
		if out == nil || isReplay || conflict {
			return
		}
		o.enqueue(out, true)
	}
	// A key seen before is answered from a read transaction: a repeat costs
	// no fsync. The check is made again inside the write for concurrent
	// first uses of one key.
	if sub.IdempotencyKey != "" {
		err := o.db.View(func(tx *bolt.Tx) error {
			var err error
			out, conflict, err = lookupKey(tx, sub)
			return err
		})
		switch {
		case err != nil:
			return Record{}, false, err
		case conflict:
			return Record{}, false, ErrKeyReused
		case out != nil:
			return *out, true, nil
		}
	}
	err = o.write(ctx, queue, func(tx *bolt.Tx) error {
		out, conflict, isReplay = nil, false, false
		if sub.IdempotencyKey != "" {
			prev, clash, err := lookupKey(tx, sub)
			if err != nil || clash || prev != nil {
				out, conflict, isReplay = prev, clash, prev != nil
				return err
			}
		}
		id, err := newID(tx)
		if err != nil {
			return err
		}
		r := &Record{
			ID: id, Tenant: sub.Tenant, Channel: sub.Channel, IdemKey: sub.IdempotencyKey, Fingerprint: sub.Fingerprint,
			Text: sub.Text, Payload: sub.Payload, State: Pending, Created: now, Queued: now,
		}
		if sub.IdempotencyKey != "" {
			if err := tx.Bucket(bIdem).Put(idemKey(sub.Tenant, sub.IdempotencyKey), []byte(id)); err != nil {
				return err
			}
		}
		out = r
		return putRecord(tx, nil, r)
	})
	switch {
	case err != nil:
		return Record{}, false, err
	case conflict:
		return Record{}, false, ErrKeyReused
	case isReplay:
		return *out, true, nil
	}
	return *out, false, nil
}

// lookupKey finds the notification recorded under sub's idempotency key:
// nil when the key is free, conflict when it holds other content.
func lookupKey(tx *bolt.Tx, sub Submission) (prev *Record, conflict bool, err error) {
	id := tx.Bucket(bIdem).Get(idemKey(sub.Tenant, sub.IdempotencyKey))
	if id == nil {
		return nil, false, nil
	}
	prev, err = getRecord(tx, string(id))
	if err != nil || prev == nil {
		return nil, false, err
	}
	if !bytes.Equal(prev.Fingerprint, sub.Fingerprint) {
		return nil, true, nil
	}
	return prev, false, nil
}

// enqueue hands a durable pending record to its channel's worker. accepted
// counts it as newly accepted (not for a redrive).
func (o *Outbox) enqueue(r *Record, accepted bool) {
	w := o.workerFor(r.Channel)
	o.mu.Lock()
	o.waiters[r.ID] = make(chan struct{})
	o.mu.Unlock()
	if accepted {
		w.accepted.Add(1)
	}
	w.push(item{id: r.ID, queued: r.Queued}, true)
}

// write hands apply to the committer and waits for the commit; after (may
// be nil) runs once the write is durable. When ctx ends first the caller
// gets ctx's error, but a write already handed over still commits and its
// after still runs.
func (o *Outbox) write(ctx context.Context, after func(), apply func(tx *bolt.Tx) error) error {
	o.gate.RLock()
	if o.closed {
		o.gate.RUnlock()
		return ErrClosed
	}
	w := write{apply: apply, after: after, done: make(chan error, 1)}
	select {
	case o.c.in <- w:
	case <-ctx.Done():
		o.gate.RUnlock()
		return ctx.Err()
	}
	o.gate.RUnlock()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait waits until the notification is delivered or dead-lettered, ctx
// ends, or Release or Close is called, and returns the record as it stands.
func (o *Outbox) Wait(ctx context.Context, id string) (Record, bool, error) {
	o.mu.Lock()
	ch := o.waiters[id]
	o.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		case <-o.release:
		}
	}
	return o.Get(ctx, id)
}

// Release makes every Wait return at once, now and later, while delivery
// goes on: a server that starts shutting down answers its waiting Notify
// calls QUEUED instead of holding its graceful stop.
func (o *Outbox) Release() {
	o.relOnce.Do(func() { close(o.release) })
}

// Get returns a stored notification. A read of the local file does not
// block, so ctx is not consulted.
func (o *Outbox) Get(_ context.Context, id string) (Record, bool, error) {
	var r *Record
	err := o.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = getRecord(tx, id)
		return err
	})
	if err != nil || r == nil {
		return Record{}, false, err
	}
	return *r, true, nil
}

// Redrive queues dead letters again with a fresh attempt count: those of
// channel (all channels when empty), limited to ids when given. It returns
// how many were queued.
func (o *Outbox) Redrive(ctx context.Context, channel string, ids []string) (int, error) {
	var moved []*Record
	now := time.Now()
	queue := func() {
		sort.Slice(moved, func(i, j int) bool { return moved[i].ID < moved[j].ID })
		for _, r := range moved {
			o.workerFor(r.Channel).deadDepth.Add(-1)
			o.enqueue(r, false)
		}
	}
	err := o.write(ctx, queue, func(tx *bolt.Tx) error {
		moved = moved[:0]
		var candidates []string
		if len(ids) > 0 {
			candidates = ids
		} else {
			_ = tx.Bucket(bDead).ForEach(func(k, _ []byte) error {
				candidates = append(candidates, string(k))
				return nil
			})
		}
		for _, id := range candidates {
			prev, err := getRecord(tx, id)
			if err != nil {
				return err
			}
			if prev == nil || prev.State != Dead || (channel != "" && prev.Channel != channel) {
				continue
			}
			r := *prev
			r.State, r.Attempts, r.Finished, r.NextAttempt, r.Queued = Pending, 0, time.Time{}, time.Time{}, now
			if err := putRecord(tx, prev, &r); err != nil {
				return err
			}
			moved = append(moved, &r)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(moved), nil
}

// finish wakes the waiters of a record that left Pending.
func (o *Outbox) finish(id string) {
	o.mu.Lock()
	if ch, ok := o.waiters[id]; ok {
		close(ch)
		delete(o.waiters, id)
	}
	o.mu.Unlock()
}

// sweepLoop removes expired records and keys once a minute.
func (o *Outbox) sweepLoop() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := o.Sweep(time.Now()); err != nil && !errors.Is(err, ErrClosed) {
			o.s.Log.Error("outbox sweep failed", "error", err)
		}
		select {
		case <-t.C:
		case <-o.stopping.Done():
			return
		}
	}
}

// Sweep removes delivered records (and their idempotency keys) finished
// more than Retention before now, and dead letters older than
// DeadLetterRetention.
func (o *Outbox) Sweep(now time.Time) error {
	const chunk = 1000
	var due bool // only write when something expired: a write joins a commit
	_ = o.db.View(func(tx *bolt.Tx) error {
		due = len(o.expired(tx, now, 1)) > 0
		return nil
	})
	if !due {
		return nil
	}
	for {
		var (
			removed int
			dead    []string // channels of the dead letters removed
		)
		forget := func() {
			for _, ch := range dead {
				o.workerFor(ch).deadDepth.Add(-1)
			}
		}
		err := o.write(context.Background(), forget, func(tx *bolt.Tx) error {
			removed, dead = 0, dead[:0]
			for _, id := range o.expired(tx, now, chunk) {
				r, err := getRecord(tx, id)
				if err != nil || r == nil {
					return err
				}
				if err := deleteRecord(tx, r); err != nil {
					return err
				}
				if r.State == Dead {
					dead = append(dead, r.Channel)
				}
				removed++
			}
			return nil
		})
		if err != nil || removed < chunk {
			return err
		}
	}
}

// expired lists up to max ids of finished records due for removal at now:
// delivered ones finished before Retention, dead letters before
// DeadLetterRetention.
func (o *Outbox) expired(tx *bolt.Tx, now time.Time, max int) []string {
	var ids []string
	cutoff, deadCutoff := now.Add(-o.s.Retention), now.Add(-o.s.DeadLetterRetention)
	cur := tx.Bucket(bFinished).Cursor()
	for k, v := cur.First(); k != nil && len(ids) < max; k, v = cur.Next() {
		t := finishedTime(k)
		if !t.Before(cutoff) {
			break
		}
		if State(v[0]) == Dead && !t.Before(deadCutoff) {
			continue
		}
		ids = append(ids, string(k[8:]))
	}
	return ids
}

// Close stops taking notifications, lets sends in flight finish until ctx
// ends (then cuts them off: they are sent again after a restart), records
// their outcome, and closes the store. Everything not delivered stays
// queued for the next Open.
func (o *Outbox) Close(ctx context.Context) error {
	o.gate.Lock()
	if o.closed {
		o.gate.Unlock()
		return nil
	}
	o.closed = true
	o.gate.Unlock()
	o.Release()
	o.halt()
	done := make(chan struct{})
	go func() { o.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		o.abort()
		<-done
	}
	o.abort()
	o.c.stop()
	return o.db.Close()
}
