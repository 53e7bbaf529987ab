package outbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vega-gateway/vega/integrations"
)

// ErrUnavailable: the outbox's database cannot be reached (or refused the
// work for lack of resources). Nothing was recorded, or the commit's
// outcome is unknown: a caller retries with the same idempotency key.
var ErrUnavailable = errors.New("the notification outbox's database is unavailable")

// Postgres is the notification outbox of a fleet: every replica records
// into, and delivers from, one PostgreSQL database, so that losing a
// replica loses no notification. It keeps the promises of the bbolt
// Outbox (the same contract tests run against both) and adds:
//
//   - accepted = committed: Submit answers after COMMIT, with
//     synchronous_commit on (set on every connection). Concurrent accepts
//     share one transaction and one commit (group commit: one multi-row
//     INSERT … ON CONFLICT DO NOTHING per batch, batched as in Outbox).
//   - idempotency across the fleet: a unique index on (tenant, key).
//   - one replica at a time delivers a channel: it holds a lease row
//     (vega_outbox_channel) that it renews every LeaseTTL/3; every write
//     of a delivery outcome is fenced by the lease's epoch. Pacing
//     (the token bucket's state), Retry-After pauses, the failure count
//     behind backoff, and the queue order live in the database, so they
//     hold across a change of owner.
//   - takeover: a replica that dies stops renewing; its lease ends
//     LeaseTTL after its last renewal at most, and another replica,
//     trying every second (±20 %), takes the channel within LeaseTTL + 1.2 s.
//
// Why a lease row and not a session advisory lock: a session lock lives on
// one connection, is lost silently behind a transaction-pooling
// PgBouncer, and is released when PostgreSQL notices the connection is
// gone, which for a replica cut off by the network is the TCP keepalive
// (two hours by default): no bound to state. A lease's end is a time in
// the database, so the takeover bound is a number, and the epoch fences a
// replica that wakes up after losing it.
//
// Duplicate window (at-least-once): an attempt whose owner dies or loses
// its lease before recording the outcome is made again by the next owner;
// the receiver may then get the message twice. An owner starts an attempt
// only while its lease covers SendTimeout + 1 s more, so two replicas never
// send to one channel at the same time.
type Postgres struct {
	s       Settings
	pool    *pgxpool.Pool
	replica string

	in chan pgWrite // submissions for the committer; closed by Close
	// commitCtx ends when Close's deadline passes while commits still wait
	// for the database: their callers get an error, never a false OK.
	commitCtx     context.Context
	cancelCommits context.CancelFunc
	counts        batchCounters
	done          chan struct{} // closed when the committer ends

	gate     sync.RWMutex // held for reading while a caller hands the committer a write
	closed   bool         // guarded by gate
	release  chan struct{}
	relOnce  sync.Once
	stopping context.Context
	halt     context.CancelFunc
	sendCtx  context.Context
	abort    context.CancelFunc
	wg       sync.WaitGroup

	mu       sync.Mutex
	workers  map[string]*pgWorker        // configured channels; fixed after Open
	counters map[string]*channelCounters // this replica's figures by channel; guarded by mu
	waiters  map[string]*waiter          // id → closed when the record leaves Pending; guarded by mu
	agg      map[string]channelAggregate // the database's figures, last read; guarded by mu
	aggAt    time.Time                   // when agg was read; guarded by mu
	statsMu  sync.Mutex                  // one reader of the figures at a time
	pauses   map[string]time.Time        // channel → paused until (paused.go); guarded by mu, replaced whole
	pausesAt time.Time                   // when pauses was read; guarded by mu
	pauseMu  sync.Mutex                  // one reader of the pauses at a time
}

type waiter struct {
	ch   chan struct{}
	refs int
}

// PostgresSettings add what the PostgreSQL outbox needs to Settings (whose
// Path it ignores).
type PostgresSettings struct {
	URL string // postgres://user:password@host:5432/db?sslmode=…; the password never reaches logs
	// Replica names this gateway in the channel leases and the stats;
	// default host name, process id and a random suffix.
	Replica string
	// LeaseTTL is how long a channel's lease lasts without renewal: the
	// takeover bound after a replica dies is LeaseTTL + 1.2 s. Default
	// max(15s, SendTimeout + 5s); it must exceed SendTimeout + 1s.
	LeaseTTL time.Duration
	// MaxConns bounds the connection pool; default 8.
	MaxConns int32
}

// OpenPostgres connects to the database (within ctx), creates or migrates
// the schema, and starts this replica's delivery workers. A database that
// cannot be reached is an error: see the README for why the gateway stops
// then instead of starting without its outbox.
func OpenPostgres(ctx context.Context, ps PostgresSettings, s Settings) (*Postgres, error) {
	s.defaults()
	if ps.LeaseTTL <= 0 {
		ps.LeaseTTL = max(15*time.Second, s.SendTimeout+5*time.Second)
	}
	if ps.LeaseTTL < s.SendTimeout+time.Second {
		return nil, fmt.Errorf("outbox: the lease (%s) must exceed the send timeout (%s) by at least 1s, so that an attempt ends before its lease", ps.LeaseTTL, s.SendTimeout)
	}
	if ps.Replica == "" {
		host, _ := os.Hostname()
		var r [3]byte
		_, _ = rand.Read(r[:])
		ps.Replica = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(r[:]))
	}
	cfg, err := pgxpool.ParseConfig(ps.URL)
	if err != nil {
		return nil, fmt.Errorf("outbox: not a PostgreSQL URL (postgres://user:password@host:5432/database): %s", Redact(err.Error(), ps.URL))
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on" // accepted = committed, whatever the server's default
	cfg.ConnConfig.RuntimeParams["application_name"] = "vega-gateway"
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	cfg.MaxConns = 8
	if ps.MaxConns > 0 {
		cfg.MaxConns = ps.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("outbox: %s", Redact(err.Error(), ps.URL))
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("outbox: cannot reach PostgreSQL at %s: %s", where, Redact(err.Error(), ps.URL))
	}
	applied, err := migrate(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("outbox: schema of PostgreSQL at %s: %s", where, Redact(err.Error(), ps.URL))
	}
	if len(applied) > 0 {
		s.Log.Info("outbox schema migrated", "database", where, "versions", fmt.Sprint(applied))
	}
	p := &Postgres{
		s: s, pool: pool, replica: ps.Replica,
		in: make(chan pgWrite, 4*s.MaxBatch), done: make(chan struct{}), release: make(chan struct{}),
		workers: map[string]*pgWorker{}, counters: map[string]*channelCounters{}, waiters: map[string]*waiter{},
	}
	p.stopping, p.halt = context.WithCancel(context.Background())
	p.sendCtx, p.abort = context.WithCancel(context.Background())
	p.commitCtx, p.cancelCommits = context.WithCancel(context.Background())
	for _, ch := range s.Channels {
		if ch.Sender != nil {
			p.workers[ch.Name] = newPGWorker(p, ch, ps.LeaseTTL)
		}
	}
	go p.commitLoop()
	for _, w := range p.workers {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); w.run() }()
	}
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.pollWaiters() }()
	go func() { defer p.wg.Done(); p.sweepLoop() }()
	s.Log.Info("notification outbox in PostgreSQL", "database", where, "replica", p.replica, "lease_ttl", ps.LeaseTTL.String())
	return p, nil
}

// Redact removes the password of rawURL from msg (error texts of drivers
// may quote the connection string) and puts msg on one line.
func Redact(msg, rawURL string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	u, err := url.Parse(rawURL)
	if err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
			msg = strings.ReplaceAll(msg, url.QueryEscape(pw), "xxxxx")
		}
	}
	if i := strings.Index(rawURL, "password="); i >= 0 { // key=value form
		pw, _, _ := strings.Cut(rawURL[i+len("password="):], " ")
		pw, _, _ = strings.Cut(pw, "&")
		if pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// Replica is this gateway's name in the leases and the stats.
func (p *Postgres) Replica() string { return p.replica }

// pgErr sorts a database error: connection trouble, shortage and
// cancellation by the server become ErrUnavailable (the caller may retry);
// other errors of the server stay what they are.
func pgErr(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "53", "57", "58", "40": // connection, resources, operator intervention, system, rollback
			return fmt.Errorf("%w: %s (SQLSTATE %s)", ErrUnavailable, pe.Message, pe.Code)
		}
		return fmt.Errorf("outbox: postgres: %w", err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// ctxErr prefers the caller's own cancellation to the database error it
// caused.
func ctxErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return pgErr(err)
}

const recordColumns = `id, tenant, channel, coalesce(idem_key, ''), fingerprint, text, payload, state, attempts, last_error,
	created_at, queued_at, next_attempt_at, finished_at`

func scanRecord(row pgx.Row) (Record, error) {
	var (
		r            Record
		state        int16
		text         []byte
		next, finish *time.Time
	)
	if err := row.Scan(&r.ID, &r.Tenant, &r.Channel, &r.IdemKey, &r.Fingerprint, &text, &r.Payload, &state, &r.Attempts, &r.LastError,
		&r.Created, &r.Queued, &next, &finish); err != nil {
		return Record{}, err
	}
	r.State, r.Text = State(state), string(text)
	if next != nil {
		r.NextAttempt = *next
	}
	if finish != nil {
		r.Finished = *finish
	}
	if len(r.Payload) == 0 {
		r.Payload = nil
	}
	return r, nil
}

// checkStorable refuses what PostgreSQL's text cannot hold (NUL) in the
// names and keys (the service refuses NUL in keys for both stores; the
// message text is stored as bytes and may hold anything).
func checkStorable(sub Submission) error {
	for _, f := range []struct{ name, v string }{{"channel", sub.Channel}, {"idempotency_key", sub.IdempotencyKey}, {"tenant", sub.Tenant}} {
		if strings.IndexByte(f.v, 0) >= 0 {
			return fmt.Errorf("%w: %s contains a NUL character", errInvalid, f.name)
		}
	}
	return nil
}

// Submit records a notification (committed) and queues it, as
// Outbox.Submit does. A database that cannot be reached is ErrUnavailable:
// nothing is claimed that was not committed.
func (p *Postgres) Submit(ctx context.Context, sub Submission) (Record, bool, error) {
	if err := checkStorable(sub); err != nil {
		return Record{}, false, err
	}
	// A key seen before is answered by a read: a repeat costs no commit.
	// The unique index decides between concurrent first uses, on any
	// replica.
	if sub.IdempotencyKey != "" {
		prev, found, err := p.lookupKey(ctx, sub.Tenant, sub.IdempotencyKey)
		switch {
		case err != nil:
			return Record{}, false, ctxErr(ctx, err)
		case found && !bytes.Equal(prev.Fingerprint, sub.Fingerprint):
			return Record{}, false, ErrKeyReused
		case found:
			return prev, true, nil
		}
	}
	var r [8]byte
	_, _ = rand.Read(r[:])
	w := pgWrite{sub: sub, suffix: hex.EncodeToString(r[:]), done: make(chan pgResult, 1)}
	p.gate.RLock()
	if p.closed {
		p.gate.RUnlock()
		return Record{}, false, ErrClosed
	}
	select {
	case p.in <- w:
	case <-ctx.Done():
		p.gate.RUnlock()
		return Record{}, false, ctx.Err()
	}
	p.gate.RUnlock()
	select {
	case res := <-w.done:
		return res.rec, res.replayed, res.err
	case <-ctx.Done():
		return Record{}, false, ctx.Err()
	}
}

func (p *Postgres) lookupKey(ctx context.Context, tenant, key string) (Record, bool, error) {
	rec, err := scanRecord(p.pool.QueryRow(ctx, `SELECT `+recordColumns+` FROM vega_outbox WHERE tenant = $1 AND idem_key = $2`, tenant, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	return rec, err == nil, err
}

// Get returns a stored notification, from whichever replica accepted it.
func (p *Postgres) Get(ctx context.Context, id string) (Record, bool, error) {
	rec, err := scanRecord(p.pool.QueryRow(ctx, `SELECT `+recordColumns+` FROM vega_outbox WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, ctxErr(ctx, err)
	}
	return rec, true, nil
}

// Wait waits until the notification is delivered or dead-lettered (by any
// replica), ctx ends, or Release or Close is called, and returns the
// record as it stands.
func (p *Postgres) Wait(ctx context.Context, id string) (Record, bool, error) {
	rec, ok, err := p.Get(ctx, id)
	if err != nil || !ok || rec.State != Pending {
		return rec, ok, err
	}
	ch := p.watch(id)
	defer p.unwatch(id)
	select {
	case <-ch:
	case <-ctx.Done():
	case <-p.release:
	}
	// The caller's deadline may have passed: read with a short one of our own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	return p.Get(rctx, id)
}

func (p *Postgres) watch(id string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.waiters[id]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		p.waiters[id] = w
	}
	w.refs++
	return w.ch
}

func (p *Postgres) unwatch(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.waiters[id]; w != nil {
		if w.refs--; w.refs <= 0 {
			delete(p.waiters, id)
		}
	}
}

// finish wakes the waiters of a record that left Pending.
func (p *Postgres) finish(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.waiters[id]; w != nil {
		select {
		case <-w.ch:
		default:
			close(w.ch)
		}
	}
}

// pollWaiters wakes the waiters whose notification another replica
// finished: one query every 200 ms for all of them, whatever their number.
// (Local finishes wake at once.)
func (p *Postgres) pollWaiters() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.stopping.Done():
			return
		}
		p.mu.Lock()
		ids := make([]string, 0, len(p.waiters))
		for id, w := range p.waiters {
			select {
			case <-w.ch:
			default:
				ids = append(ids, id)
			}
		}
		p.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(p.stopping, 2*time.Second)
		rows, err := p.pool.Query(ctx, `SELECT id FROM vega_outbox WHERE id = ANY($1) AND state <> 1`, ids)
		if err == nil {
			finished, err2 := pgx.CollectRows(rows, pgx.RowTo[string])
			err = err2
			for _, id := range finished {
				p.finish(id)
			}
		}
		cancel()
		// A record that was swept away is finished too: its Get says not found.
		if err != nil && p.stopping.Err() == nil {
			p.s.Log.Debug("outbox: polling for finished notifications failed", "error", err)
		}
	}
}

// Release makes every Wait return at once, now and later, while delivery
// goes on.
func (p *Postgres) Release() { p.relOnce.Do(func() { close(p.release) }) }

// Redrive queues dead letters again with a fresh attempt count, at the back
// of their channel's queue: those of channel (all when empty), limited to
// ids when given. Any replica may call it; the channel's owner delivers.
func (p *Postgres) Redrive(ctx context.Context, channel string, ids []string) (int, error) {
	if ids == nil {
		ids = []string{}
	}
	start := time.Now()
	rows, err := p.pool.Query(ctx, `
		WITH picked AS (
			SELECT seq FROM vega_outbox
			WHERE state = 3 AND ($1 = '' OR channel = $1) AND (cardinality($2::text[]) = 0 OR id = ANY($2))
			ORDER BY seq FOR UPDATE),
		numbered AS (SELECT seq, nextval('vega_outbox_seq') AS pos FROM picked)
		UPDATE vega_outbox o SET state = 1, attempts = 0, finished_at = NULL, next_attempt_at = NULL, queued_at = $3, pos = n.pos
		FROM numbered n WHERE o.seq = n.seq
		RETURNING o.channel`, channel, ids, start)
	if err != nil {
		return 0, ctxErr(ctx, err)
	}
	chans, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, ctxErr(ctx, err)
	}
	if len(chans) > 0 {
		p.counts.record(len(chans), flushIdle, time.Since(start))
	}
	for _, ch := range chans {
		if w := p.workers[ch]; w != nil {
			w.poke()
		}
	}
	p.invalidateAggregates()
	return len(chans), nil
}

// sweepLoop removes expired records once a minute. Every replica sweeps;
// their deletes do not conflict (a row deleted twice is deleted once).
func (p *Postgres) sweepLoop() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := p.Sweep(time.Now()); err != nil && p.stopping.Err() == nil {
			p.s.Log.Error("outbox sweep failed", "error", err)
		}
		select {
		case <-t.C:
		case <-p.stopping.Done():
			return
		}
	}
}

// Sweep removes delivered records (and with them their idempotency keys)
// finished more than Retention before now, and dead letters finished more
// than DeadLetterRetention before now, 1000 at a time. A sweep that finds
// nothing writes nothing.
func (p *Postgres) Sweep(now time.Time) error {
	const chunk = 1000
	for {
		ctx, cancel := context.WithTimeout(p.stopping, 30*time.Second)
		start := time.Now()
		tag, err := p.pool.Exec(ctx, `
			DELETE FROM vega_outbox WHERE seq IN (
				SELECT seq FROM vega_outbox
				WHERE (state = 2 AND finished_at < $1) OR (state = 3 AND finished_at < $2)
				LIMIT $3)`, now.Add(-p.s.Retention), now.Add(-p.s.DeadLetterRetention), chunk)
		cancel()
		if err != nil {
			return pgErr(err)
		}
		n := tag.RowsAffected()
		if n > 0 {
			p.counts.record(int(n), flushIdle, time.Since(start))
			p.invalidateAggregates()
		}
		if n < chunk {
			return nil
		}
	}
}

// Close stops taking notifications, lets sends in flight finish until ctx
// ends (then cuts them off), records their outcome, gives up this
// replica's leases (another replica takes the channels within a second),
// and closes the pool. Everything not delivered stays queued in the
// database.
func (p *Postgres) Close(ctx context.Context) error {
	p.gate.Lock()
	if p.closed {
		p.gate.Unlock()
		return nil
	}
	p.closed = true
	close(p.in)
	p.gate.Unlock()
	p.Release()
	select { // the committer answers what was handed to it
	case <-p.done:
	case <-ctx.Done():
		p.cancelCommits()
		<-p.done
	}
	p.cancelCommits()
	p.halt()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.abort()
		<-done
	}
	p.abort()
	p.pool.Close()
	return nil
}

// errInvalid marks input a store cannot hold (INVALID_ARGUMENT at the edge).
var errInvalid = integrations.ErrInvalidRequest
