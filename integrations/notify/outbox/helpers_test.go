package outbox

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/vega-gateway/vega/integrations/notify"
)

// receiver is a webhook receiver that counts what it accepted, by text.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	answer   func(text string, n int) (status int, header http.Header) // n: attempts for this text so far, 1-based
	attempts map[string][]time.Time
	accepted map[string]int
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{attempts: map[string][]time.Time{}, accepted: map[string]int{}}
	r.answer = func(string, int) (int, http.Header) { return http.StatusOK, nil }
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body struct{ Text string }
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.attempts[body.Text] = append(r.attempts[body.Text], time.Now())
		status, h := r.answer(body.Text, len(r.attempts[body.Text]))
		if status/100 == 2 {
			r.accepted[body.Text]++
		}
		r.mu.Unlock()
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setAnswer(f func(text string, n int) (int, http.Header)) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

func (r *receiver) acceptedCount(text string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted[text]
}

func (r *receiver) attemptTimes(text string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.attempts[text]...)
}

func (r *receiver) sender(t *testing.T) Sender {
	t.Helper()
	s, err := notify.NewWebhook("hook", r.srv.URL, r.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// open opens an outbox in dir with one channel "hook" posting to r. The
// defaults suit tests: no pacing, millisecond backoff.
func open(t *testing.T, dir string, r *receiver, adjust func(*Settings)) *Outbox {
	t.Helper()
	s := Settings{
		Path:        filepath.Join(dir, "outbox.db"),
		Channels:    []Channel{{Name: "hook", Sender: r.sender(t), Rate: rate.Inf}},
		BackoffBase: time.Millisecond,
		BackoffMax:  20 * time.Millisecond,
		SendTimeout: 5 * time.Second,
	}
	if adjust != nil {
		adjust(&s)
	}
	o, err := Open(s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func closeOutbox(t *testing.T, o *Outbox) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func sub(text, key string) Submission {
	fp := sha256.Sum256([]byte("hook\x00" + text))
	return Submission{Channel: "hook", Text: text, IdempotencyKey: key, Fingerprint: fp[:]}
}

func submit(t *testing.T, o *Outbox, s Submission) Record {
	t.Helper()
	rec, _, err := o.Submit(context.Background(), s)
	if err != nil {
		t.Fatalf("Submit(%q): %v", s.Text, err)
	}
	return rec
}

// waitFinished waits (up to 30 s) until the record leaves Pending.
func waitFinished(t *testing.T, o *Outbox, id string) Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, ok, err := o.Wait(ctx, id)
	if err != nil || !ok {
		t.Fatalf("Wait(%s): found=%v err=%v", id, ok, err)
	}
	if rec.State == Pending {
		t.Fatalf("notification %s still pending after 30 s (attempts %d, last error %q)", id, rec.Attempts, rec.LastError)
	}
	return rec
}
