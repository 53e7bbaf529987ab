package outbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vega-gateway/vega/integrations/notify/outbox/pgtest"
)

// The PostgreSQL store's own promises, beyond the contract tests that both
// stores pass: several replicas on one database.

func openPG(t *testing.T, url string, r *receiver, adjust func(*Settings)) *Postgres {
	t.Helper()
	return (&env{kind: "postgres", url: url}).open(t, r, adjust).(*Postgres)
}

func sql(t *testing.T, url, query string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func TestReplicasStartingTogetherMigrateOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	r := newReceiver(t)
	const n = 4
	boxes := make([]*Postgres, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { boxes[i] = openPG(t, url, r, nil) })
	}
	wg.Wait()
	for _, b := range boxes {
		defer closeOutbox(t, b)
	}
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	var versions, distinct int
	if err := boxes[0].pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT version) FROM vega_outbox_schema`).Scan(&versions, &distinct); err != nil {
		t.Fatal(err)
	}
	if versions != len(ms) || distinct != len(ms) {
		t.Fatalf("schema table has %d rows (%d versions) after %d replicas started at once; want %d, each once", versions, distinct, n, len(ms))
	}
	// Any replica accepts and any replica reads.
	rec := submit(t, boxes[1], sub("from replica 1", "k"))
	if got, found, err := boxes[3].Get(context.Background(), rec.ID); err != nil || !found || got.Text != "from replica 1" {
		t.Fatalf("Get on another replica: %+v %v %v", got, found, err)
	}
	if again, replayed, err := boxes[2].Submit(context.Background(), sub("from replica 1", "k")); err != nil || !replayed || again.ID != rec.ID {
		t.Fatalf("same key on another replica: %+v %v %v; want the first", again, replayed, err)
	}
	if _, _, err := boxes[0].Submit(context.Background(), sub("other", "k")); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("other content, same key, another replica: %v", err)
	}
	waitFinished(t, boxes[0], rec.ID)
	if n := r.acceptedCount("from replica 1"); n != 1 {
		t.Fatalf("delivered %d times", n)
	}
}

func TestANewerSchemaIsRefused(t *testing.T) {
	url := pgtest.NewDatabase(t)
	closeOutbox(t, openPG(t, url, newReceiver(t), nil))
	sql(t, url, `INSERT INTO vega_outbox_schema (version, name) VALUES (999, '0999_future.sql')`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := OpenPostgres(ctx, PostgresSettings{URL: url}, Settings{})
	if err == nil || !strings.Contains(err.Error(), "newer than this gateway's") {
		t.Fatalf("open on a newer schema: %v", err)
	}
}

// TestAReplicaThatLostItsLeaseStopsDelivering: when another replica holds
// the channel (here a lease written by hand, as a replica that took over
// would), the old owner stops at its next renewal and writes nothing more;
// when that lease ends, the channel is taken back and delivered.
func TestAReplicaThatLostItsLeaseStopsDelivering(t *testing.T) {
	url := pgtest.NewDatabase(t)
	r := newReceiver(t)
	var up sync.Mutex
	down := true
	r.setAnswer(func(string, int) (int, http.Header) {
		up.Lock()
		defer up.Unlock()
		if down {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusOK, nil
	})
	// A 3 s lease: renewals every second.
	box := (&env{kind: "postgres", url: url, lease: 3 * time.Second}).open(t, r, func(s *Settings) { s.SendTimeout = time.Second })
	p := box.(*Postgres)
	defer closeOutbox(t, box)
	rec := submit(t, box, sub("fenced", ""))
	for box.Stats().Channels["hook"].Retried == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	sql(t, url, `UPDATE vega_outbox_channel SET owner = 'intruder', epoch = epoch + 1, expires_at = now() + interval '1 hour' WHERE channel = 'hook'`)
	time.Sleep(1500 * time.Millisecond) // past the next renewal
	up.Lock()
	down = false
	up.Unlock()
	time.Sleep(1500 * time.Millisecond)
	if n := r.acceptedCount("fenced"); n != 0 {
		t.Fatalf("the replica without the lease delivered %d times", n)
	}
	p.invalidateAggregates()
	if o := box.Stats().Channels["hook"].Owner; o != "intruder" {
		t.Fatalf("owner = %q, want the intruder", o)
	}
	sql(t, url, `UPDATE vega_outbox_channel SET expires_at = now() - interval '1 second' WHERE channel = 'hook'`)
	if got := waitFinished(t, box, rec.ID); got.State != Delivered || r.acceptedCount("fenced") != 1 {
		t.Fatalf("after the intruder's lease ended: %+v, accepted %d", got, r.acceptedCount("fenced"))
	}
}

// TestPacingAndPausesSurviveAChangeOfOwner: a replica that takes a channel
// over goes on with the previous owner's token bucket and Retry-After
// pause instead of starting afresh.
func TestPacingAndPausesSurviveAChangeOfOwner(t *testing.T) {
	t.Run("pacing", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		r := newReceiver(t)
		paced := func(s *Settings) { s.Channels[0].Rate, s.Channels[0].Burst = 1, 3 }
		a := openPG(t, url, r, paced)
		var ids []string
		for i := range 6 {
			ids = append(ids, submit(t, a, sub(fmt.Sprintf("p%d", i), "")).ID)
		}
		for r.acceptedCount("p2") == 0 { // the burst of 3 is spent
			time.Sleep(5 * time.Millisecond)
		}
		closeOutbox(t, a) // hands over at once
		b := openPG(t, url, r, paced)
		defer closeOutbox(t, b)
		for _, id := range ids {
			waitFinished(t, b, id)
		}
		first, last := r.attemptTimes("p0")[0], r.attemptTimes("p5")[0]
		// Burst 3 then 1/s: the sixth goes ≥ 3 s after the first. A new owner
		// with a full bucket would send 3 more at once.
		if span := last.Sub(first); span < 2500*time.Millisecond {
			t.Fatalf("6 messages over %v across a change of owner; 1/s with a burst of 3 needs ≥ 3 s", span)
		}
	})
	t.Run("retry-after", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		r := newReceiver(t)
		r.setAnswer(func(_ string, n int) (int, http.Header) {
			if n == 1 {
				return http.StatusTooManyRequests, http.Header{"Retry-After": {"3"}}
			}
			return http.StatusOK, nil
		})
		a := openPG(t, url, r, nil)
		id := submit(t, a, sub("held", "")).ID
		for a.Stats().Channels["hook"].Retried == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		closeOutbox(t, a)
		b := openPG(t, url, r, nil)
		defer closeOutbox(t, b)
		waitFinished(t, b, id)
		times := r.attemptTimes("held")
		if len(times) != 2 || times[1].Sub(times[0]) < 3*time.Second {
			t.Fatalf("attempts %v: the new owner did not wait out Retry-After: 3", times)
		}
	})
}

func TestNULInTextIsKeptAndNULInAKeyRefused(t *testing.T) {
	url := pgtest.NewDatabase(t)
	r := newReceiver(t)
	box := openPG(t, url, r, nil)
	defer closeOutbox(t, box)
	rec := waitFinished(t, box, submit(t, box, sub("a\x00b", "")).ID)
	if rec.State != Delivered || rec.Text != "a\x00b" || r.acceptedCount("a\x00b") != 1 {
		t.Fatalf("text with NUL: %+v, accepted %d", rec, r.acceptedCount("a\x00b"))
	}
	_, _, err := box.Submit(context.Background(), sub("x", "k\x00"))
	if err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Fatalf("key with NUL: %v, want a clear refusal", err)
	}
}

func TestRedactHidesThePassword(t *testing.T) {
	for _, tc := range []struct{ url, msg string }{
		{"postgres://vega:hunter2@db:5432/vega", "failed to connect to `user=vega password=hunter2`:\n\tdial error"},
		{"postgres://vega:p%40ss@db/vega", "cannot parse postgres://vega:p%40ss@db/vega"},
		{"host=db user=vega password=hunter2 dbname=vega", "failed: password=hunter2"},
	} {
		got := Redact(tc.msg, tc.url)
		if strings.Contains(got, "hunter2") || strings.Contains(got, "p%40ss") || strings.Contains(got, "p@ss") || strings.Contains(got, "\n") {
			t.Errorf("Redact(%q) = %q", tc.msg, got)
		}
	}
}

// TestADatabaseOutageIsRetriedCalmly: while PostgreSQL is gone, Submit
// answers ErrUnavailable at once, the replica retries about once a second
// (no storm of connections while its lease is overdue), and everything
// resumes by itself when the database is back.
func TestADatabaseOutageIsRetriedCalmly(t *testing.T) {
	proxy, url := pgtest.NewProxy(t, pgtest.NewDatabase(t))
	r := newReceiver(t)
	box := (&env{kind: "postgres", url: url, lease: 3 * time.Second}).open(t, r, func(s *Settings) { s.SendTimeout = time.Second })
	defer closeOutbox(t, box)
	waitFinished(t, box, submit(t, box, sub("before", "")).ID)

	proxy.Down()
	if _, _, err := box.Submit(context.Background(), sub("during", "")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Submit while the database is down: %v, want ErrUnavailable", err)
	}
	before := proxy.Dials()
	time.Sleep(4 * time.Second) // past the renewal, and past the lease's end
	if n := proxy.Dials() - before; n > 20 {
		t.Fatalf("%d connection attempts in 4 s of outage: the retries are not paced", n)
	}
	proxy.Up()
	var rec Record
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		if rec, _, err = box.Submit(context.Background(), sub("after", "k-after")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Submit after the database came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := waitFinished(t, box, rec.ID); got.State != Delivered {
		t.Fatalf("after the outage: %+v", got)
	}
	if n := r.acceptedCount("during"); n != 0 {
		t.Fatalf("a refused notification was sent %d times", n)
	}
}

// TestAnyReplicaServesWaitAndRedrive: a notification accepted on a replica
// that does not deliver its channel is waited for there (the other
// replica's delivery wakes it), and a dead letter is re-driven from the
// replica that does not deliver it.
func TestAnyReplicaServesWaitAndRedrive(t *testing.T) {
	url := pgtest.NewDatabase(t)
	r := newReceiver(t)
	r.setAnswer(func(text string, n int) (int, http.Header) {
		if text == "gone" && n == 1 {
			return http.StatusNotFound, nil
		}
		return http.StatusOK, nil
	})
	a := openPG(t, url, r, nil)
	defer closeOutbox(t, a)
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().Channels["hook"].Owner != a.Replica() {
		if time.Now().After(deadline) {
			t.Fatal("the first replica did not take the channel")
		}
		a.invalidateAggregates()
		time.Sleep(20 * time.Millisecond)
	}
	b := openPG(t, url, r, nil)
	defer closeOutbox(t, b)

	start := time.Now()
	rec := waitFinished(t, b, submit(t, b, sub("via b", "")).ID)
	if rec.State != Delivered {
		t.Fatalf("waited on the other replica: %+v", rec)
	}
	t.Logf("accepted on the replica without the channel, delivered by the other, Wait woke after %v", time.Since(start).Round(time.Millisecond))
	if st := b.Stats(); st.Channels["hook"].Owner != a.Replica() || st.Store != "postgres" || st.Replica != b.Replica() {
		t.Fatalf("b's stats = %+v, want the channel owned by %s", st, a.Replica())
	}

	dead := waitFinished(t, a, submit(t, b, sub("gone", "")).ID)
	if dead.State != Dead {
		t.Fatalf("after a 404: %+v", dead)
	}
	if n, err := b.Redrive(context.Background(), "hook", []string{dead.ID}); err != nil || n != 1 {
		t.Fatalf("redrive from the other replica: %d, %v", n, err)
	}
	if got := waitFinished(t, b, dead.ID); got.State != Delivered || r.acceptedCount("gone") != 1 {
		t.Fatalf("after the redrive: %+v, accepted %d", got, r.acceptedCount("gone"))
	}
}

// TestEveryReplicaKnowsAChannelsPause: a Retry-After the owner got holds
// the channel on every replica (Notify answers QUEUED at once there).
func TestEveryReplicaKnowsAChannelsPause(t *testing.T) {
	url := pgtest.NewDatabase(t)
	r := newReceiver(t)
	r.setAnswer(func(string, int) (int, http.Header) {
		return http.StatusTooManyRequests, http.Header{"Retry-After": {"30"}}
	})
	a := openPG(t, url, r, nil)
	defer closeOutbox(t, a)
	submit(t, a, sub("held", ""))
	for a.Stats().Channels["hook"].Retried == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if d := a.PausedFor("hook"); d < 25*time.Second {
		t.Fatalf("the owner's pause = %v, want about 30 s", d)
	}
	b := openPG(t, url, r, nil)
	defer closeOutbox(t, b)
	if d := b.PausedFor("hook"); d < 25*time.Second || d > 31*time.Second {
		t.Fatalf("the other replica's pause = %v, want about 30 s", d)
	}
	if d := b.PausedFor("other"); d != 0 {
		t.Fatalf("a channel without a pause: %v", d)
	}
}
