package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgWrite is one submission waiting for the committer.
type pgWrite struct {
	sub    Submission
	suffix string // the id's random half; also finds the row among RETURNING's
	done   chan pgResult
}

type pgResult struct {
	rec      Record
	replayed bool
	err      error
}

// commitLoop commits submissions in groups, as the bbolt committer does:
// what is waiting when a commit starts (up to MaxBatch) goes into it, and
// FlushInterval, when set, holds a batch open for more.
func (p *Postgres) commitLoop() {
	defer close(p.done)
	batch := make([]pgWrite, 0, p.s.MaxBatch)
	for first := range p.in {
		batch = append(batch[:0], first)
		reason := collect(p.in, &batch, p.s.MaxBatch, p.s.FlushInterval)
		p.commitBatch(batch, reason)
		clear(batch)
	}
}

// collect adds what is waiting on in to batch, up to max, and when interval
// is set waits that long for more. It returns why the batch ends.
func collect[T any](in <-chan T, batch *[]T, max int, interval time.Duration) int {
	for waiting := true; waiting && len(*batch) < max; {
		select {
		case w, ok := <-in:
			if !ok {
				return flushIdle
			}
			*batch = append(*batch, w)
		default:
			waiting = false
		}
	}
	if len(*batch) >= max {
		return flushSize
	}
	if interval <= 0 {
		return flushIdle
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	for len(*batch) < max {
		select {
		case w, ok := <-in:
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

func (p *Postgres) commitBatch(batch []pgWrite, reason int) {
	start := time.Now()
	results, err := p.insert(batch)
	p.counts.record(len(batch), reason, time.Since(start))
	if err != nil && len(batch) > 1 && !errors.Is(err, ErrUnavailable) {
		// Something in the batch was refused: each alone, so that the others
		// are not refused for it.
		for _, w := range batch {
			start := time.Now()
			res, err := p.insert([]pgWrite{w})
			p.counts.record(1, reason, time.Since(start))
			if err != nil {
				w.done <- pgResult{err: err}
			} else {
				p.deliverResults([]pgWrite{w}, res)
			}
		}
		return
	}
	if err != nil {
		for _, w := range batch {
			w.done <- pgResult{err: err}
		}
		return
	}
	p.deliverResults(batch, results)
}

func (p *Postgres) deliverResults(batch []pgWrite, results []pgResult) {
	woken := map[string]bool{}
	for i, w := range batch {
		res := results[i]
		if res.err == nil && !res.replayed {
			p.channelCounters(res.rec.Channel).accepted.Add(1)
			if wk := p.workers[res.rec.Channel]; wk != nil && !woken[res.rec.Channel] {
				woken[res.rec.Channel] = true
				wk.poke()
			}
		}
		w.done <- res
	}
	if len(woken) > 0 {
		p.invalidateAggregates()
	}
}

// insert commits one batch: one INSERT of every row (one statement, one
// implicit transaction, one commit), ON CONFLICT on the idempotency index
// DO NOTHING; the rows it skipped are read back after it and answered as
// replays or ErrKeyReused. Answers are in batch order.
func (p *Postgres) insert(batch []pgWrite) ([]pgResult, error) {
	ctx, cancel := context.WithTimeout(p.commitCtx, 10*time.Second)
	defer cancel()
	now := time.Now()
	n := len(batch)
	tenants, channels, suffixes := make([]string, n), make([]string, n), make([]string, n)
	texts := make([][]byte, n)
	keys := make([]*string, n)
	fps, payloads := make([][]byte, n), make([][]byte, n)
	for i, w := range batch {
		s := w.sub
		tenants[i], channels[i], texts[i], suffixes[i] = s.Tenant, s.Channel, []byte(s.Text), w.suffix
		if s.IdempotencyKey != "" {
			keys[i] = &batch[i].sub.IdempotencyKey
		}
		fps[i], payloads[i] = s.Fingerprint, s.Payload
		if fps[i] == nil {
			fps[i] = []byte{}
		}
	}
	results := make([]pgResult, n)
	err := func() error {
		// One statement, so one implicit transaction: the commit costs no
		// round trips of its own (BEGIN and COMMIT would cost two).
		rows, err := p.pool.Query(ctx, `
			INSERT INTO vega_outbox (seq, id, tenant, channel, idem_key, fingerprint, text, payload, state, pos, created_at, queued_at)
			SELECT s, lpad(to_hex(s), 16, '0') || suffix, tenant, channel, idem_key, fp, body, payload, 1, s, $8, $8
			FROM (SELECT nextval('vega_outbox_seq') AS s, i.*
			      FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::bytea[], $7::text[])
			           AS i(tenant, channel, idem_key, fp, body, payload, suffix)) AS x
			ON CONFLICT (tenant, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
			RETURNING id`, tenants, channels, keys, fps, texts, payloads, suffixes, now)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		inserted := make(map[string]string, len(ids)) // suffix → id
		for _, id := range ids {
			inserted[id[16:]] = id
		}
		var ckTenants, ckKeys []string
		for i, w := range batch {
			if id, ok := inserted[w.suffix]; ok {
				s := w.sub
				results[i].rec = Record{
					ID: id, Tenant: s.Tenant, Channel: s.Channel, IdemKey: s.IdempotencyKey, Fingerprint: s.Fingerprint,
					Text: s.Text, Payload: s.Payload, State: Pending, Created: now, Queued: now,
				}
				continue
			}
			ckTenants, ckKeys = append(ckTenants, w.sub.Tenant), append(ckKeys, w.sub.IdempotencyKey)
		}
		if len(ckKeys) == 0 {
			return nil
		}
		// Keys taken before (by any replica, or earlier in this batch): their
		// rows are committed, so a read after the INSERT's commit finds them.
		rows, err = p.pool.Query(ctx, `SELECT `+recordColumns+` FROM vega_outbox
			WHERE (tenant, idem_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, ckTenants, ckKeys)
		if err != nil {
			return err
		}
		prev := map[string]Record{}
		for rows.Next() {
			r, err := scanRecord(rows)
			if err != nil {
				rows.Close()
				return err
			}
			prev[r.Tenant+"\x00"+r.IdemKey] = r
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for i, w := range batch {
			if _, ok := inserted[w.suffix]; ok {
				continue
			}
			r, ok := prev[w.sub.Tenant+"\x00"+w.sub.IdempotencyKey]
			switch {
			case !ok: // cannot happen: the conflict was on this key
				results[i].err = fmt.Errorf("outbox: idempotency key conflict without a record")
			case !bytes.Equal(r.Fingerprint, w.sub.Fingerprint):
				results[i].err = ErrKeyReused
			default:
				results[i].rec, results[i].replayed = r, true
			}
		}
		return nil
	}()
	if err != nil {
		return nil, pgErr(err)
	}
	return results, nil
}
