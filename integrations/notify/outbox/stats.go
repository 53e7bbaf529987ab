package outbox

import (
	"time"
)

// ChannelStats describe one channel's queue.
type ChannelStats struct {
	QueueDepth       int
	OldestPendingAge time.Duration
	Accepted         int64 // counters since start or reset
	Delivered        int64
	Retried          int64
	DeadLettered     int64
	DeadLetterDepth  int64 // dead letters kept now
	LastError        string
	PausedFor        time.Duration // until the next attempt may start
	Rate             float64
	Burst            int
	Unconfigured     bool
	// Owner is the replica delivering the channel (PostgreSQL store; "" when
	// no lease is held); the bbolt store leaves it empty.
	Owner string
}

// Stats are the outbox's figures.
type Stats struct {
	Store    string // "bbolt" or "postgres"
	Replica  string // this gateway's name in the leases (PostgreSQL store)
	Batch    BatchStats
	Channels map[string]ChannelStats
}

// Stats returns the current figures.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	workers := make([]*worker, 0, len(o.workers))
	for _, w := range o.workers {
		workers = append(workers, w)
	}
	o.mu.Unlock()
	now := time.Now()
	st := Stats{Store: "bbolt", Batch: o.c.stats(), Channels: make(map[string]ChannelStats, len(workers))}
	for _, w := range workers {
		w.mu.Lock()
		cs := ChannelStats{
			QueueDepth: len(w.queue), LastError: w.lastErr,
			Rate: float64(w.limiter.Limit()), Burst: w.limiter.Burst(), Unconfigured: w.sender == nil,
		}
		for _, it := range w.queue { // not always the head: failed messages go to the back
			cs.OldestPendingAge = max(cs.OldestPendingAge, now.Sub(it.queued))
		}
		if d := w.pausedUntil.Sub(now); d > 0 {
			cs.PausedFor = d
		}
		w.mu.Unlock()
		cs.Accepted, cs.Delivered, cs.Retried = w.accepted.Load(), w.delivered.Load(), w.retried.Load()
		cs.DeadLettered, cs.DeadLetterDepth = w.deadLettered.Load(), w.deadDepth.Load()
		st.Channels[w.name] = cs
	}
	return st
}

// ResetStats zeroes the counters; gauges (queue depths, dead letters kept)
// stay.
func (o *Outbox) ResetStats() {
	o.c.reset()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.workers {
		w.accepted.Store(0)
		w.delivered.Store(0)
		w.retried.Store(0)
		w.deadLettered.Store(0)
	}
}
