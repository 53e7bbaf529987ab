package outbox

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/time/rate"
)

// Timing of the fleet's delivery workers. Replicas learn of each other's
// writes by polling, not LISTEN/NOTIFY: a transaction that notifies takes a
// database-wide lock at commit (PreCommit_Notify), which would serialize
// every accept's commit with every other notifying one, and LISTEN needs a
// session of its own (none behind a transaction pooler). A notification
// accepted on a replica that does not deliver its channel starts within
// idlePoll; one accepted on the owner, at once.
const (
	acquireEvery = time.Second            // a replica without a channel's lease tries again this often (±20 %)
	idlePoll     = 250 * time.Millisecond // an owner with an empty queue looks again (other replicas' accepts)
	storeRetry   = time.Second            // after a failed query
)

// pgWorker delivers one channel while this replica holds the channel's
// lease, and tries to take the lease while another replica does not renew
// it. Every field is owned by run.
type pgWorker struct {
	p      *Postgres
	name   string
	sender Sender
	rate   rate.Limit
	burst  int
	ttl    time.Duration
	wake   chan struct{}

	owned       bool
	epoch       int64     // the lease's epoch; every write of an outcome is fenced by it
	renewedAt   time.Time // local time when the last acquire or renewal started: the lease is trusted until renewedAt + ttl
	limiter     *rate.Limiter
	failures    int       // failed attempts in a row (stored in the lease row)
	pausedUntil time.Time // Retry-After or backoff (stored in the lease row)
}

func newPGWorker(p *Postgres, ch Channel, ttl time.Duration) *pgWorker {
	r, b := ch.Rate, ch.Burst
	if r <= 0 {
		r = 1
	}
	if b <= 0 {
		b = 1
	}
	return &pgWorker{p: p, name: ch.Name, sender: ch.Sender, rate: r, burst: b, ttl: ttl, wake: make(chan struct{}, 1)}
}

// poke tells the owner that its queue may have grown.
func (w *pgWorker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *pgWorker) run() {
	log := w.p.s.Log.With("channel", w.name, "replica", w.p.replica)
	defer w.resign()
	for w.p.stopping.Err() == nil {
		if !w.owned {
			if !w.acquire(log) {
				w.sleep(jitter(acquireEvery), false)
			}
			continue
		}
		if time.Since(w.renewedAt) >= w.ttl/3 && !w.renew(log) {
			continue
		}
		rec, found, err := w.head()
		if err != nil {
			log.Warn("outbox: reading the channel's queue failed", "error", err)
			w.sleep(storeRetry, false)
			continue
		}
		if !found {
			w.sleep(idlePoll, true)
			continue
		}
		if d := time.Until(w.pausedUntil); d > 0 {
			w.sleep(d, false)
			continue
		}
		if r := w.limiter.Reserve(); r.Delay() > 0 {
			d := r.Delay()
			if d > w.untilRenewal() { // wait in steps, renewing the lease between them
				r.Cancel()
				w.sleep(d, false)
				continue
			}
			if !w.sleep(d, false) {
				return
			}
		}
		// An attempt starts only while the lease covers all of it: no other
		// replica can take the channel before it ends.
		if time.Until(w.renewedAt.Add(w.ttl)) < w.p.s.SendTimeout+time.Second && !w.renew(log) {
			continue
		}
		if !w.attempt(log, rec) {
			return
		}
	}
}

// untilRenewal is how long until the lease must be renewed.
func (w *pgWorker) untilRenewal() time.Duration {
	return time.Until(w.renewedAt.Add(w.ttl / 3))
}

// sleep waits d, cut short when the lease falls due for renewal (not
// when it is overdue: then the database is failing, and the wait paces the
// retries), by a poke when wakeable, or by Close; it returns false on
// Close.
func (w *pgWorker) sleep(d time.Duration, wakeable bool) bool {
	if u := w.untilRenewal(); w.owned && u > 0 {
		d = min(d, u)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var wake chan struct{}
	if wakeable {
		wake = w.wake
	}
	select {
	case <-t.C:
	case <-wake:
	case <-w.p.stopping.Done():
		return false
	}
	return true
}

func jitter(d time.Duration) time.Duration {
	return d*8/10 + rand.N(d*4/10+1)
}

func (w *pgWorker) ttlMillis() int64 { return w.ttl.Milliseconds() }

// acquire takes the channel's lease when nobody holds it or its holder's
// lease has ended (by the database's clock), and loads the state the
// previous owner left: pause, pacing and failures in a row.
func (w *pgWorker) acquire(log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) bool {
	ctx, cancel := context.WithTimeout(w.p.stopping, 5*time.Second)
	defer cancel()
	start := time.Now()
	var (
		epoch         int64
		paused, tat   *time.Time
		failures      int
		dbNow         time.Time
		previousOwner string
	)
	err := w.p.pool.QueryRow(ctx, `
		WITH prev AS (SELECT coalesce(owner, '') AS owner FROM vega_outbox_channel WHERE channel = $1)
		INSERT INTO vega_outbox_channel AS c (channel, owner, epoch, expires_at)
		VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')
		ON CONFLICT (channel) DO UPDATE SET owner = excluded.owner, epoch = c.epoch + 1, expires_at = excluded.expires_at
		WHERE c.owner IS NULL OR c.expires_at IS NULL OR c.expires_at <= now()
		RETURNING c.epoch, c.paused_until, c.pace_tat, c.failures, now(), coalesce((SELECT owner FROM prev), '')`,
		w.name, w.p.replica, w.ttlMillis()).Scan(&epoch, &paused, &tat, &failures, &dbNow, &previousOwner)
	if errors.Is(err, pgx.ErrNoRows) {
		return false // held by another replica
	}
	if err != nil {
		if w.p.stopping.Err() == nil {
			log.Warn("outbox: taking the channel's lease failed", "error", pgErr(err))
		}
		return false
	}
	w.owned, w.epoch, w.renewedAt, w.failures = true, epoch, start, failures
	w.pausedUntil = time.Time{}
	if paused != nil && paused.After(dbNow) {
		w.pausedUntil = time.Now().Add(paused.Sub(dbNow))
	}
	w.limiter = rate.NewLimiter(w.rate, w.burst)
	if tat != nil && tat.After(dbNow) && w.rate != rate.Inf {
		// The bucket is full again at tat: the previous owner spent this many
		// tokens that have not come back yet.
		spent := int(math.Ceil(tat.Sub(dbNow).Seconds() * float64(w.rate)))
		w.limiter.ReserveN(time.Now(), min(spent, w.burst))
	}
	log.Info("outbox: this replica delivers the channel now", "epoch", epoch, "previous_owner", previousOwner)
	w.p.invalidateAggregates()
	return true
}

// renew extends the lease; a lease another replica took (a new epoch) is
// given up at once, one that cannot be renewed is trusted until it ends.
func (w *pgWorker) renew(log interface{ Warn(string, ...any) }) bool {
	ctx, cancel := context.WithTimeout(w.p.stopping, min(5*time.Second, w.ttl/3))
	defer cancel()
	start := time.Now()
	tag, err := w.p.pool.Exec(ctx, `UPDATE vega_outbox_channel SET expires_at = now() + $4 * interval '1 millisecond'
		WHERE channel = $1 AND owner = $2 AND epoch = $3`, w.name, w.p.replica, w.epoch, w.ttlMillis())
	switch {
	case err != nil:
		if time.Now().After(w.renewedAt.Add(w.ttl)) {
			w.owned = false
			if w.p.stopping.Err() == nil {
				log.Warn("outbox: the channel's lease ended while the database was unreachable", "error", pgErr(err))
			}
		} else { // retry within the lease: at most once a second, and once more as it ends
			w.sleep(min(storeRetry, time.Until(w.renewedAt.Add(w.ttl))+time.Millisecond), false)
		}
		return false
	case tag.RowsAffected() == 0:
		w.owned = false
		log.Warn("outbox: another replica took the channel's lease")
		return false
	}
	w.renewedAt = start
	return true
}

// resign gives the lease up (on Close), so that another replica takes the
// channel within a second instead of a lease time.
func (w *pgWorker) resign() {
	if !w.owned {
		return
	}
	w.owned = false
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = w.p.pool.Exec(ctx, `UPDATE vega_outbox_channel SET owner = NULL, expires_at = NULL
		WHERE channel = $1 AND owner = $2 AND epoch = $3`, w.name, w.p.replica, w.epoch)
}

// head reads the first notification of the channel's queue.
func (w *pgWorker) head() (Record, bool, error) {
	ctx, cancel := context.WithTimeout(w.p.stopping, 5*time.Second)
	defer cancel()
	rec, err := scanRecord(w.p.pool.QueryRow(ctx, `SELECT `+recordColumns+` FROM vega_outbox
		WHERE channel = $1 AND state = 1 ORDER BY pos LIMIT 1`, w.name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, pgErr(err)
	}
	return rec, true, nil
}

// attempt sends rec once and records the outcome. It returns false when
// the worker must stop.
func (w *pgWorker) attempt(log interface {
	Info(string, ...any)
	Warn(string, ...any)
}, rec Record) bool {
	p := w.p
	sendErr, cut := send(p.sendCtx, &p.s, w.name, w.sender, rec)
	if cut {
		return false // the next owner sends it again (the documented window)
	}
	now := time.Now()
	next, kind, delay, sendErr := decide(&p.s, rec, sendErr, &w.failures, now)
	w.pausedUntil = time.Time{}
	if kind == retry {
		w.pausedUntil = next.NextAttempt
	}
	p.notePause(w.name, w.pausedUntil)
	requeue := kind == retry && mayBeTheMessage(sendErr)
	switch ok, err := w.persist(next, requeue, now); {
	case err != nil:
		return false // closing
	case !ok:
		w.owned = false
		log.Warn("outbox: lost the channel's lease before recording an attempt; the next owner repeats it", "id", rec.ID)
		return true
	}
	c := p.channelCounters(w.name)
	switch kind {
	case delivered:
		c.delivered.Add(1)
		p.finish(rec.ID)
	case dead:
		c.deadLettered.Add(1)
		p.finish(rec.ID)
		log.Warn("notification dead-lettered", "id", rec.ID, "attempts", next.Attempts, "error", next.LastError)
	case retry:
		c.retried.Add(1)
		log.Info("notification delivery will be retried", "id", rec.ID, "attempts", next.Attempts, "in", delay.Round(time.Millisecond), "error", next.LastError)
	}
	p.invalidateAggregates()
	return true
}

// persist records an attempt's outcome and the channel's state in one
// statement, fenced by the lease: ok is false when another replica holds
// the channel now. It retries while the database cannot be reached, and
// returns an error only when the outbox closes first.
func (w *pgWorker) persist(next Record, requeue bool, now time.Time) (ok bool, err error) {
	var paused, nextAt, finished, tat *time.Time
	if !w.pausedUntil.IsZero() {
		paused = &w.pausedUntil
	}
	if !next.NextAttempt.IsZero() {
		nextAt = &next.NextAttempt
	}
	if !next.Finished.IsZero() {
		finished = &next.Finished
	}
	if w.rate != rate.Inf {
		if missing := float64(w.burst) - w.limiter.TokensAt(now); missing > 0 {
			t := now.Add(time.Duration(missing / float64(w.rate) * float64(time.Second)))
			tat = &t
		}
	}
	for {
		ctx, cancel := context.WithTimeout(w.p.stopping, 5*time.Second)
		start := time.Now()
		tag, err := w.p.pool.Exec(ctx, `
			WITH ch AS (
				UPDATE vega_outbox_channel SET paused_until = $4, pace_tat = $5, failures = $6, last_error = $7
				WHERE channel = $1 AND owner = $2 AND epoch = $3 RETURNING 1)
			UPDATE vega_outbox SET state = $9, attempts = $10, last_error = $7, next_attempt_at = $11, finished_at = $12,
				pos = CASE WHEN $13 THEN nextval('vega_outbox_seq') ELSE pos END
			WHERE id = $8 AND state = 1 AND EXISTS (SELECT 1 FROM ch)`,
			w.name, w.p.replica, w.epoch, paused, tat, w.failures, next.LastError,
			next.ID, int16(next.State), next.Attempts, nextAt, finished, requeue)
		cancel()
		if err == nil {
			w.p.counts.record(1, flushIdle, time.Since(start))
			return tag.RowsAffected() == 1, nil
		}
		if w.p.stopping.Err() != nil {
			return false, w.p.stopping.Err()
		}
		w.p.s.Log.Error("outbox write failed; retrying", "channel", w.name, "id", next.ID, "error", pgErr(err))
		if !w.sleep(storeRetry, false) {
			return false, w.p.stopping.Err()
		}
	}
}
