package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSubmitDeliversOnceAndRecords(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		o := e.open(t, r, nil)
		defer closeOutbox(t, o)

		var ids []string
		for i := range 5 {
			ids = append(ids, submit(t, o, sub(fmt.Sprintf("m%d", i), "")).ID)
		}
		for i, id := range ids {
			rec := waitFinished(t, o, id)
			if rec.State != Delivered || rec.Attempts != 1 || rec.Finished.IsZero() {
				t.Errorf("record %d = %+v, want delivered after 1 attempt", i, rec)
			}
			if n := r.acceptedCount(fmt.Sprintf("m%d", i)); n != 1 {
				t.Errorf("m%d accepted %d times, want 1", i, n)
			}
		}
		st := o.Stats()
		hook := st.Channels["hook"]
		if hook.Accepted != 5 || hook.Delivered != 5 || hook.QueueDepth != 0 || hook.Retried != 0 {
			t.Errorf("channel stats = %+v", hook)
		}
		if st.Batch.Operations < 10 || st.Batch.Commits < 1 {
			t.Errorf("batch stats = %+v, want ≥10 writes (5 accepts, 5 deliveries)", st.Batch)
		}
	})
}

func TestIdempotencyKeys(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		o := e.open(t, r, nil)
		defer closeOutbox(t, o)

		first := submit(t, o, sub("hello", "k1"))
		waitFinished(t, o, first.ID)

		commits := o.Stats().Batch.Commits
		again, replayed, err := o.Submit(context.Background(), sub("hello", "k1"))
		if err != nil || !replayed || again.ID != first.ID || again.State != Delivered {
			t.Fatalf("same key, same content: rec=%+v replayed=%v err=%v; want the first (delivered) record", again, replayed, err)
		}
		if n := o.Stats().Batch.Commits; n != commits {
			t.Fatalf("a repeat cost %d commits, want none", n-commits)
		}
		if _, _, err := o.Submit(context.Background(), sub("other text", "k1")); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("same key, other content: err = %v, want ErrKeyReused", err)
		}
		other := sub("hello", "k1")
		other.Tenant = "tenant-b"
		if rec, replayed, err := o.Submit(context.Background(), other); err != nil || replayed || rec.ID == first.ID {
			t.Fatalf("same key in another tenant: rec=%+v replayed=%v err=%v; want a new notification", rec, replayed, err)
		} else {
			waitFinished(t, o, rec.ID)
		}
		if n := r.acceptedCount("hello"); n != 2 {
			t.Fatalf("receiver accepted %q %d times, want 2 (one per tenant)", "hello", n)
		}
		if n := r.acceptedCount("other text"); n != 0 {
			t.Fatalf("a refused submission was delivered %d times", n)
		}
	})
}

func TestConcurrentSameKeyRecordsOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		o := e.open(t, r, func(s *Settings) { s.FlushInterval = 5 * time.Millisecond })
		defer closeOutbox(t, o)

		const n = 50
		ids := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				rec, _, err := o.Submit(context.Background(), sub("once", "same-key"))
				if err != nil {
					t.Error(err)
				}
				ids[i] = rec.ID
			})
		}
		wg.Wait()
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Fatalf("concurrent submissions with one key got ids %s and %s", ids[0], id)
			}
		}
		waitFinished(t, o, ids[0])
		if got := r.acceptedCount("once"); got != 1 {
			t.Fatalf("receiver accepted %d messages, want 1", got)
		}
	})
}

func TestRetryAfterIsHonoured(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		r.setAnswer(func(_ string, n int) (int, http.Header) {
			if n == 1 {
				return http.StatusTooManyRequests, http.Header{"Retry-After": {"2"}}
			}
			return http.StatusOK, nil
		})
		o := e.open(t, r, nil)
		defer closeOutbox(t, o)

		rec := waitFinished(t, o, submit(t, o, sub("paced", "")).ID)
		times := r.attemptTimes("paced")
		if rec.State != Delivered || len(times) != 2 {
			t.Fatalf("state %v after %d attempts, want delivered after 2", rec.State, len(times))
		}
		if gap := times[1].Sub(times[0]); gap < 2*time.Second {
			t.Fatalf("retried %v after a 429 with Retry-After: 2", gap)
		}
		if st := o.Stats().Channels["hook"]; st.Retried != 1 || st.Delivered != 1 {
			t.Fatalf("stats = %+v, want 1 retried, 1 delivered", st)
		}
	})
}

func TestInjected500sEachDeliveredOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		var mu sync.Mutex
		rng := rand.New(rand.NewPCG(1, 2))
		failures := 0
		r.setAnswer(func(string, int) (int, http.Header) {
			mu.Lock()
			defer mu.Unlock()
			if rng.Float64() < 0.05 {
				failures++
				return http.StatusInternalServerError, nil
			}
			return http.StatusOK, nil
		})
		o := e.open(t, r, nil)
		defer closeOutbox(t, o)

		const n = 1000
		ids := make([]string, n)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					ids[i] = submit(t, o, sub(fmt.Sprintf("n%04d", i), "")).ID
				}
			})
		}
		wg.Wait()
		for _, id := range ids {
			if rec := waitFinished(t, o, id); rec.State != Delivered {
				t.Fatalf("%s: %v (%s)", id, rec.State, rec.LastError)
			}
		}
		for i := range n {
			if got := r.acceptedCount(fmt.Sprintf("n%04d", i)); got != 1 {
				t.Errorf("n%04d accepted %d times, want 1", i, got)
			}
		}
		st := o.Stats().Channels["hook"]
		mu.Lock()
		defer mu.Unlock()
		if failures == 0 || st.Retried != int64(failures) || st.Delivered != n {
			t.Fatalf("injected %d failures; stats retried=%d delivered=%d", failures, st.Retried, st.Delivered)
		}
		t.Logf("1000 notifications, %d injected 500s, %d commits for %d writes", failures, o.Stats().Batch.Commits, o.Stats().Batch.Operations)
	})
}

func TestNotFoundIsDeadLetteredAndRedriven(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		r.setAnswer(func(string, int) (int, http.Header) { return http.StatusNotFound, nil })
		o := e.open(t, r, nil)
		defer closeOutbox(t, o)

		id := submit(t, o, sub("lost webhook", "")).ID
		rec := waitFinished(t, o, id)
		if rec.State != Dead || rec.Attempts != 1 || rec.LastError == "" {
			t.Fatalf("after a 404: %+v, want dead after 1 attempt with a reason", rec)
		}
		st := o.Stats().Channels["hook"]
		if st.DeadLettered != 1 || st.DeadLetterDepth != 1 || st.QueueDepth != 0 {
			t.Fatalf("stats = %+v", st)
		}
		// A later notification is not held up by the dead letter.
		r.setAnswer(func(string, int) (int, http.Header) { return http.StatusOK, nil })
		if rec := waitFinished(t, o, submit(t, o, sub("next", "")).ID); rec.State != Delivered {
			t.Fatalf("next notification: %v", rec.State)
		}

		if n, err := o.Redrive(context.Background(), "other-channel", nil); err != nil || n != 0 {
			t.Fatalf("redrive of another channel: %d, %v", n, err)
		}
		if n, err := o.Redrive(context.Background(), "hook", nil); err != nil || n != 1 {
			t.Fatalf("redrive: %d, %v; want 1", n, err)
		}
		rec = waitFinished(t, o, id)
		if rec.State != Delivered || r.acceptedCount("lost webhook") != 1 {
			t.Fatalf("after redrive: %+v, accepted %d", rec, r.acceptedCount("lost webhook"))
		}
		if st := o.Stats().Channels["hook"]; st.DeadLetterDepth != 0 {
			t.Fatalf("dead letters kept after redrive = %d", st.DeadLetterDepth)
		}
	})
}

func TestRestartResumesDelivery(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		r.setAnswer(func(string, int) (int, http.Header) { return http.StatusServiceUnavailable, nil })
		o := e.open(t, r, func(s *Settings) { s.BackoffBase, s.BackoffMax = 50*time.Millisecond, 50*time.Millisecond })
		var ids []string
		for i := range 20 {
			ids = append(ids, submit(t, o, sub(fmt.Sprintf("r%d", i), fmt.Sprintf("key%d", i))).ID)
		}
		closeOutbox(t, o)

		r.setAnswer(func(string, int) (int, http.Header) { return http.StatusOK, nil })
		o = e.open(t, r, nil)
		defer closeOutbox(t, o)
		if d := o.Stats().Channels["hook"].QueueDepth; d == 0 {
			t.Fatal("nothing queued after the restart")
		}
		for i, id := range ids {
			if rec := waitFinished(t, o, id); rec.State != Delivered {
				t.Fatalf("%s: %v", id, rec.State)
			}
			if n := r.acceptedCount(fmt.Sprintf("r%d", i)); n != 1 {
				t.Fatalf("r%d accepted %d times", i, n)
			}
		}
		// Idempotency keys survived the restart too.
		if rec, replayed, err := o.Submit(context.Background(), sub("r3", "key3")); err != nil || !replayed || rec.ID != ids[3] {
			t.Fatalf("key after restart: %+v %v %v", rec, replayed, err)
		}
	})
}

func TestCloseCutsOffAHungSendAndKeepsItQueued(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		release := make(chan struct{})
		hung := make(chan struct{}, 1)
		r.setAnswer(func(string, int) (int, http.Header) {
			hung <- struct{}{}
			<-release
			return http.StatusOK, nil
		})
		defer close(release)
		o := e.open(t, r, nil)
		id := submit(t, o, sub("hung", "")).ID
		<-hung
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := o.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, err := o.Submit(context.Background(), sub("late", "")); !errors.Is(err, ErrClosed) {
			t.Fatalf("Submit after Close: %v, want ErrClosed", err)
		}

		o = e.open(t, newReceiver(t), nil) // a receiver that answers
		defer closeOutbox(t, o)
		if rec := waitFinished(t, o, id); rec.State != Delivered {
			t.Fatalf("after restart: %v", rec.State)
		}
	})
}

func TestSweepForgetsOldRecordsAndKeys(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		o := e.open(t, r, func(s *Settings) { s.Retention = time.Hour })
		defer closeOutbox(t, o)
		first := submit(t, o, sub("old", "k"))
		waitFinished(t, o, first.ID)

		if err := o.Sweep(time.Now().Add(30 * time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := o.Get(context.Background(), first.ID); !found {
			t.Fatal("record removed before its retention ended")
		}
		if err := o.Sweep(time.Now().Add(61 * time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := o.Get(context.Background(), first.ID); found {
			t.Fatal("record kept after its retention ended")
		}
		again, replayed, err := o.Submit(context.Background(), sub("new content", "k"))
		if err != nil || replayed || again.ID == first.ID {
			t.Fatalf("expired key: %+v %v %v; want a new notification", again, replayed, err)
		}
		waitFinished(t, o, again.ID)
	})
}

func TestGroupCommitFlushesOnSizeAndInterval(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		r.setAnswer(func(string, int) (int, http.Header) { return http.StatusServiceUnavailable, nil })
		// No channels: the records just wait, so the only writes are accepts.
		o := e.open(t, r, func(s *Settings) {
			s.Channels, s.MaxBatch, s.FlushInterval = nil, 8, time.Hour
		})
		defer closeOutbox(t, o)

		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() { submit(t, o, sub(fmt.Sprintf("g%d", i), "")) })
		}
		wg.Wait() // with a one-hour interval, only full batches can have committed
		b := o.Stats().Batch
		if b.Commits != 2 || b.Operations != 16 || b.FlushedOnSize != 2 || b.MaxBatchSize != 8 {
			t.Fatalf("batch stats = %+v, want two full batches of 8", b)
		}

		o2 := e.fresh(t).open(t, r, func(s *Settings) { s.Channels, s.FlushInterval = nil, 20*time.Millisecond })
		defer closeOutbox(t, o2)
		start := time.Now()
		submit(t, o2, sub("alone", ""))
		if b := o2.Stats().Batch; b.FlushedOnInterval != 1 || b.Commits != 1 || time.Since(start) < 20*time.Millisecond {
			t.Fatalf("a lone write: %+v after %v, want one commit on the interval", b, time.Since(start))
		}
		if st := o2.Stats().Channels["hook"]; !st.Unconfigured || st.QueueDepth != 1 {
			t.Fatalf("unconfigured channel stats = %+v", st)
		}
	})
}

func TestAFailingMessageDoesNotHoldUpTheChannel(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		r.setAnswer(func(text string, _ int) (int, http.Header) {
			if text == "poison" {
				return http.StatusInternalServerError, nil
			}
			return http.StatusOK, nil
		})
		o := e.open(t, r, nil)
		defer closeOutbox(t, o)

		poison := submit(t, o, sub("poison", ""))
		for i := range 5 {
			if rec := waitFinished(t, o, submit(t, o, sub(fmt.Sprintf("after-%d", i), "")).ID); rec.State != Delivered {
				t.Fatalf("after-%d: %v", i, rec.State)
			}
		}
		rec, _, _ := o.Get(context.Background(), poison.ID)
		if rec.State != Pending || rec.Attempts < 1 || rec.LastError == "" {
			t.Fatalf("the failing message: %+v, want pending with attempts and a reason", rec)
		}
	})
}

func TestSecondOpenOfTheSameStoreIsRefused(t *testing.T) {
	dir := t.TempDir()
	r := newReceiver(t)
	o := open(t, dir, r, nil)
	defer closeOutbox(t, o)
	_, err := Open(Settings{Path: filepath.Join(dir, "outbox.db")})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open: %v, want a clear 'locked' error", err)
	}
}

func TestACallerWhoGivesUpDuringTheCommitLosesNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		o := e.open(t, r, func(s *Settings) { s.FlushInterval = 100 * time.Millisecond })
		defer closeOutbox(t, o)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if _, _, err := o.Submit(ctx, sub("impatient", "")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Submit: %v, want the caller's deadline", err)
		}
		// The write was handed over before the deadline: it commits and is
		// delivered anyway (the caller's retry with an idempotency key would
		// find it).
		deadline := time.Now().Add(10 * time.Second)
		for r.acceptedCount("impatient") == 0 {
			if time.Now().After(deadline) {
				t.Fatal("a committed notification was never delivered")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestOrderIsKeptThroughAnOutage(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		var mu sync.Mutex
		var order []string
		up := false
		r.setAnswer(func(text string, _ int) (int, http.Header) {
			mu.Lock()
			defer mu.Unlock()
			if !up {
				return http.StatusServiceUnavailable, nil
			}
			order = append(order, text)
			return http.StatusOK, nil
		})
		o := e.open(t, r, func(s *Settings) { s.BackoffBase, s.BackoffMax = 5*time.Millisecond, 5*time.Millisecond })
		defer closeOutbox(t, o)
		var ids []string
		for i := range 5 {
			ids = append(ids, submit(t, o, sub(fmt.Sprintf("o%d", i), "")).ID)
		}
		for o.Stats().Channels["hook"].Retried < 5 { // several failed probes
			time.Sleep(5 * time.Millisecond)
		}
		for i := 1; i < 5; i++ { // (the receiver takes r.mu, then mu: check before taking mu)
			if n := len(r.attemptTimes(fmt.Sprintf("o%d", i))); n != 0 {
				t.Fatalf("o%d was tried %d times during the outage: only the head may be", i, n)
			}
		}
		mu.Lock()
		up = true
		mu.Unlock()
		for _, id := range ids {
			waitFinished(t, o, id)
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(order) != "[o0 o1 o2 o3 o4]" {
			t.Fatalf("delivered in order %v after an outage of 503s", order)
		}
	})
}

func TestGivesUpAfterMaxAge(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		r.setAnswer(func(string, int) (int, http.Header) { return http.StatusBadGateway, nil })
		// A second: many retries fit (backoff 1-20 ms) even when the first
		// attempt comes late on a loaded machine (100 ms flaked: the
		// PostgreSQL worker's first look can come after that).
		o := e.open(t, r, func(s *Settings) { s.MaxAge = time.Second })
		defer closeOutbox(t, o)

		rec := waitFinished(t, o, submit(t, o, sub("never answered", "")).ID)
		if rec.State != Dead || rec.Attempts < 2 || !strings.Contains(rec.LastError, "gave up after") || !strings.Contains(rec.LastError, "502") {
			t.Fatalf("after MaxAge of failures: %+v, want a dead letter saying it gave up", rec)
		}
		if st := o.Stats().Channels["hook"]; st.DeadLetterDepth != 1 {
			t.Fatalf("stats = %+v", st)
		}
	})
}

func TestAnUnreadablePayloadIsADeadLetter(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		o := e.open(t, r, nil)
		defer closeOutbox(t, o)
		s := sub("odd payload", "")
		s.Payload = []byte(`[1, 2]`) // not an object: cannot become a message
		rec := waitFinished(t, o, submit(t, o, s).ID)
		if rec.State != Dead || rec.Attempts != 1 || !strings.Contains(rec.LastError, "not a JSON object") {
			t.Fatalf("%+v, want a dead letter after one attempt", rec)
		}
		if n := r.acceptedCount("odd payload"); n != 0 {
			t.Fatalf("sent %d times", n)
		}
	})
}

func TestSweepKeepsDeadLettersWithoutWriting(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		r := newReceiver(t)
		r.setAnswer(func(string, int) (int, http.Header) { return http.StatusNotFound, nil })
		o := e.open(t, r, func(s *Settings) { s.Retention = time.Hour })
		defer closeOutbox(t, o)
		id := submit(t, o, sub("gone", "")).ID
		waitFinished(t, o, id)

		commits := o.Stats().Batch.Commits
		for range 3 { // past Retention, within DeadLetterRetention (7 days)
			if err := o.Sweep(time.Now().Add(2 * time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if _, found, _ := o.Get(context.Background(), id); !found {
			t.Fatal("a dead letter was removed before DeadLetterRetention")
		}
		if n := o.Stats().Batch.Commits - commits; n != 0 {
			t.Fatalf("sweeps that removed nothing cost %d commits", n)
		}
		if err := o.Sweep(time.Now().Add(8 * 24 * time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := o.Get(context.Background(), id); found {
			t.Fatal("a dead letter was kept past DeadLetterRetention")
		}
	})
}
