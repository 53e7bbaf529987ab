package outbox

import (
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A write is one change to the store. apply must be safe to run twice: when
// a batch fails, each of its writes is tried again alone. apply returns an
// error only when the store fails; outcomes such as "this key is taken" are
// left in the caller's variables.
type write struct {
	apply func(tx *bolt.Tx) error
	after func()     // optional; runs once the write is durable, whether or not its caller still waits
	done  chan error // buffered; receives the commit's result
}

// flush reasons
const (
	flushIdle = iota
	flushSize
	flushInterval
)

// committer makes writes durable in groups: one bbolt transaction (one
// fsync) per batch.
type committer struct {
	db       *bolt.DB
	in       chan write
	maxBatch int
	interval time.Duration
	stopped  chan struct{}
	counts   batchCounters
}

// batchCounters are the figures of a store's commits; both stores keep
// them, so that PerfAdmin's batch section reads the same for either.
type batchCounters struct {
	commits, ops, maxSeen       atomic.Int64
	byReason                    [3]atomic.Int64
	commitNanos, maxCommitNanos atomic.Int64
	resetMu                     sync.Mutex // serialises Reset with updates of the max figures
}

func newCommitter(db *bolt.DB, maxBatch int, interval time.Duration) *committer {
	c := &committer{db: db, in: make(chan write, 4*maxBatch), maxBatch: maxBatch, interval: interval, stopped: make(chan struct{})}
	go c.run()
	return c
}

// do makes apply durable with the next batch and reports the result. The
// caller must not call it after stop.
func (c *committer) do(apply func(tx *bolt.Tx) error) error {
	w := write{apply: apply, done: make(chan error, 1)}
	c.in <- w
	return <-w.done
}

// stop commits what is waiting and ends the committer.
func (c *committer) stop() {
	close(c.in)
	<-c.stopped
}

func (c *committer) run() {
	defer close(c.stopped)
	batch := make([]write, 0, c.maxBatch)
	for first := range c.in {
		batch = append(batch[:0], first)
		open := c.drain(&batch)
		reason := flushIdle
		switch {
		case len(batch) >= c.maxBatch:
			reason = flushSize
		case c.interval > 0 && open:
			reason = c.wait(&batch)
		}
		c.commit(batch, reason)
		for i := range batch {
			batch[i] = write{}
		}
	}
}

// drain takes the writes already waiting, up to maxBatch. It reports false
// when the input is closed.
func (c *committer) drain(batch *[]write) bool {
	for len(*batch) < c.maxBatch {
		select {
		case w, ok := <-c.in:
			if !ok {
				return false
			}
			*batch = append(*batch, w)
		default:
			return true
		}
	}
	return true
}

// wait collects writes until the batch is full or the interval has passed.
func (c *committer) wait(batch *[]write) int {
	t := time.NewTimer(c.interval)
	defer t.Stop()
	for len(*batch) < c.maxBatch {
		select {
		case w, ok := <-c.in:
			if !ok {
				return flushInterval
			}
			*batch = append(*batch, w)
		case <-t.C:
			return flushInterval
		}
	}
	return flushSize
}

func (c *committer) commit(batch []write, reason int) {
	start := time.Now()
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, w := range batch {
			if err := w.apply(tx); err != nil {
				return err
			}
		}
		return nil
	})
	c.counts.record(len(batch), reason, time.Since(start))
	if err == nil || len(batch) == 1 {
		for _, w := range batch {
			w.finish(err)
		}
		return
	}
	// One write failed the batch: give each its own transaction so that
	// the others are not refused for it.
	for _, w := range batch {
		start := time.Now()
		err := c.db.Update(w.apply)
		c.counts.record(1, reason, time.Since(start))
		w.finish(err)
	}
}

func (w write) finish(err error) {
	if err == nil && w.after != nil {
		w.after()
	}
	w.done <- err
}

func (c *batchCounters) record(n, reason int, took time.Duration) {
	c.commits.Add(1)
	c.ops.Add(int64(n))
	c.byReason[reason].Add(1)
	c.commitNanos.Add(int64(took))
	c.resetMu.Lock()
	if int64(n) > c.maxSeen.Load() {
		c.maxSeen.Store(int64(n))
	}
	if int64(took) > c.maxCommitNanos.Load() {
		c.maxCommitNanos.Store(int64(took))
	}
	c.resetMu.Unlock()
}

// BatchStats are the committer's figures since start or reset.
type BatchStats struct {
	Commits, Operations, MaxBatchSize             int64
	FlushedOnSize, FlushedOnInterval, FlushedIdle int64
	CommitTime, MaxCommitTime                     time.Duration // total and slowest
	MaxBatch                                      int
	FlushInterval                                 time.Duration
}

func (c *committer) stats() BatchStats { return c.counts.stats(c.maxBatch, c.interval) }

func (c *batchCounters) stats(maxBatch int, interval time.Duration) BatchStats {
	return BatchStats{
		Commits: c.commits.Load(), Operations: c.ops.Load(), MaxBatchSize: c.maxSeen.Load(),
		FlushedOnSize: c.byReason[flushSize].Load(), FlushedOnInterval: c.byReason[flushInterval].Load(), FlushedIdle: c.byReason[flushIdle].Load(),
		CommitTime: time.Duration(c.commitNanos.Load()), MaxCommitTime: time.Duration(c.maxCommitNanos.Load()),
		MaxBatch: maxBatch, FlushInterval: interval,
	}
}

func (c *committer) reset() { c.counts.reset() }

func (c *batchCounters) reset() {
	c.resetMu.Lock()
	defer c.resetMu.Unlock()
	c.commits.Store(0)
	c.ops.Store(0)
	c.maxSeen.Store(0)
	for i := range c.byReason {
		c.byReason[i].Store(0)
	}
	c.commitNanos.Store(0)
	c.maxCommitNanos.Store(0)
}
