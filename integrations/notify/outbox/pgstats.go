package outbox

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// channelCounters are one replica's figures for a channel since start or
// reset.
type channelCounters struct {
	accepted, delivered, retried, deadLettered atomic.Int64
}

func (p *Postgres) channelCounters(name string) *channelCounters {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counters[name]
	if c == nil {
		c = &channelCounters{}
		p.counters[name] = c
	}
	return c
}

// channelAggregate is what the database says of a channel, for the whole
// fleet.
type channelAggregate struct {
	queued, dead int64
	oldest       time.Time // the oldest queued notification's acceptance or redrive
	owner        string    // the lease holder while the lease lasts
	pausedUntil  time.Time
	lastErr      string
}

// aggregateTTL: figures read from the database are reused this long, so
// that many watchers of PerfAdmin cost one query a second.
const aggregateTTL = time.Second

func (p *Postgres) invalidateAggregates() {
	p.mu.Lock()
	p.aggAt = time.Time{}
	p.mu.Unlock()
}

// aggregates reads the fleet's figures (queue depths, dead letters,
// owners), or returns the last ones read when that was under aggregateTTL
// ago, or when the database cannot be reached (then it asks again after
// aggregateTTL).
func (p *Postgres) aggregates() map[string]channelAggregate {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	p.mu.Lock()
	agg, at := p.agg, p.aggAt
	p.mu.Unlock()
	if agg != nil && time.Since(at) < aggregateTTL {
		return agg
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fresh := map[string]channelAggregate{}
	err := func() error {
		rows, err := p.pool.Query(ctx, `
			SELECT channel, count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 3),
			       min(queued_at) FILTER (WHERE state = 1)
			FROM vega_outbox WHERE state IN (1, 3) GROUP BY channel`)
		if err != nil {
			return err
		}
		var (
			name         string
			queued, dead int64
			oldest       *time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&name, &queued, &dead, &oldest}, func() error {
			a := channelAggregate{queued: queued, dead: dead}
			if oldest != nil {
				a.oldest = *oldest
			}
			fresh[name] = a
			return nil
		})
		if err != nil {
			return err
		}
		rows, err = p.pool.Query(ctx, `
			SELECT channel, CASE WHEN expires_at > now() THEN coalesce(owner, '') ELSE '' END, paused_until, last_error
			FROM vega_outbox_channel`)
		if err != nil {
			return err
		}
		var (
			owner, lastErr string
			paused         *time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&name, &owner, &paused, &lastErr}, func() error {
			a := fresh[name]
			a.owner, a.lastErr = owner, lastErr
			if paused != nil {
				a.pausedUntil = *paused
			}
			fresh[name] = a
			return nil
		})
		return err
	}()
	if err != nil {
		p.s.Log.Debug("outbox: reading the fleet's figures failed", "error", err)
		fresh = agg // keep what was known; ask again in a second, not at every call
		if fresh == nil {
			fresh = map[string]channelAggregate{}
		}
	}
	p.mu.Lock()
	p.agg, p.aggAt = fresh, time.Now()
	p.mu.Unlock()
	return fresh
}

// Stats returns the same figures as Outbox.Stats: the group commits and
// counters of this replica, and each channel's queue as the database has
// it (the whole fleet's), with the replica that holds the channel.
func (p *Postgres) Stats() Stats {
	agg := p.aggregates()
	now := time.Now()
	st := Stats{Store: "postgres", Replica: p.replica, Batch: p.counts.stats(p.s.MaxBatch, p.s.FlushInterval), Channels: map[string]ChannelStats{}}
	p.mu.Lock()
	counters := make(map[string]*channelCounters, len(p.counters))
	for k, v := range p.counters {
		counters[k] = v
	}
	p.mu.Unlock()
	names := map[string]bool{}
	for n := range agg {
		names[n] = true
	}
	for n := range counters {
		names[n] = true
	}
	for n := range p.workers {
		names[n] = true
	}
	for name := range names {
		a := agg[name]
		cs := ChannelStats{QueueDepth: int(a.queued), DeadLetterDepth: a.dead, LastError: a.lastErr, Owner: a.owner}
		if !a.oldest.IsZero() {
			cs.OldestPendingAge = max(0, now.Sub(a.oldest))
		}
		if d := a.pausedUntil.Sub(now); d > 0 {
			cs.PausedFor = d
		}
		if w := p.workers[name]; w != nil {
			cs.Rate, cs.Burst = float64(w.rate), w.burst
		} else {
			cs.Unconfigured = true
			cs.Rate, cs.Burst = 1, 1
		}
		if c := counters[name]; c != nil {
			cs.Accepted, cs.Delivered, cs.Retried, cs.DeadLettered = c.accepted.Load(), c.delivered.Load(), c.retried.Load(), c.deadLettered.Load()
		}
		st.Channels[name] = cs
	}
	return st
}

// ResetStats zeroes this replica's counters; gauges stay.
func (p *Postgres) ResetStats() {
	p.counts.reset()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.counters {
		c.accepted.Store(0)
		c.delivered.Store(0)
		c.retried.Store(0)
		c.deadLettered.Store(0)
	}
}
