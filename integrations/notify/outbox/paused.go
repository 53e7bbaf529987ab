package outbox

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// PausedFor returns how long deliveries to channel are still held back by a
// receiver's Retry-After or by the backoff after failures (0: not paused).
// Notify uses it to answer QUEUED at once rather than wait for a delivery
// that cannot come in time.
func (o *Outbox) PausedFor(channel string) time.Duration {
	o.mu.Lock()
	w := o.workers[channel]
	o.mu.Unlock()
	if w == nil {
		return 0
	}
	return max(0, w.pause())
}

// PausedFor is Outbox.PausedFor for the fleet: the pause stored with the
// channel's lease, so that a replica which does not deliver the channel
// knows it too. The owner's own pauses are known at once; the others' are
// read from the database at most once a second (and not at all more often
// while it cannot be reached), apart from the fleet figures that accepts
// invalidate: every Notify asks, and must not cost a query.
func (p *Postgres) PausedFor(channel string) time.Duration {
	return max(0, time.Until(p.channelPauses()[channel]))
}

func (p *Postgres) channelPauses() map[string]time.Time {
	p.pauseMu.Lock()
	defer p.pauseMu.Unlock()
	p.mu.Lock()
	m, at := p.pauses, p.pausesAt
	p.mu.Unlock()
	if m != nil && time.Since(at) < aggregateTTL {
		return m
	}
	fresh, err := p.readPauses()
	if err != nil {
		p.s.Log.Debug("outbox: reading the channels' pauses failed", "error", err)
		fresh = m // keep what was known; ask again in a second
		if fresh == nil {
			fresh = map[string]time.Time{}
		}
	}
	p.mu.Lock()
	p.pauses, p.pausesAt = fresh, time.Now()
	p.mu.Unlock()
	return fresh
}

func (p *Postgres) readPauses() (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(p.stopping, time.Second)
	defer cancel()
	rows, err := p.pool.Query(ctx, `SELECT channel, paused_until - now() FROM vega_outbox_channel WHERE paused_until > now()`)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := map[string]time.Time{}
	var (
		name string
		left time.Duration
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &left}, func() error {
		out[name] = now.Add(left) // measured on the database's clock, kept on ours
		return nil
	})
	return out, err
}

// notePause records the owner's own pause of a channel, known before any
// query could tell.
func (p *Postgres) notePause(channel string, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pauses == nil || p.pauses[channel].Equal(until) {
		return // read on first use, or nothing changed (most deliveries)
	}
	m := make(map[string]time.Time, len(p.pauses)+1) // readers hold the old map
	for k, v := range p.pauses {
		m[k] = v
	}
	m[channel] = until
	p.pauses = m
}
