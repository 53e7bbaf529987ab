package outbox

import "time"

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
// channel's lease, as read from the database at most once a second (the
// figures PerfAdmin shows), so that a replica which does not deliver the
// channel knows it too.
func (p *Postgres) PausedFor(channel string) time.Duration {
	a, ok := p.aggregates()[channel]
	if !ok {
		return 0
	}
	return max(0, time.Until(a.pausedUntil))
}
