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
	"github.com/vega-gateway/vega/integrations/notify/outbox/pgtest"
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

// store is what the contract tests use of an outbox; both stores have it.
type store interface {
	Submit(ctx context.Context, sub Submission) (Record, bool, error)
	Wait(ctx context.Context, id string) (Record, bool, error)
	Get(ctx context.Context, id string) (Record, bool, error)
	Redrive(ctx context.Context, channel string, ids []string) (int, error)
	Sweep(now time.Time) error
	Stats() Stats
	ResetStats()
	Release()
	Close(ctx context.Context) error
}

var (
	_ store = (*Outbox)(nil)
	_ store = (*Postgres)(nil)
)

// env is where a store lives: a directory (bbolt) or a database of its own
// (PostgreSQL). Opening twice in one env finds what the first left.
type env struct {
	kind  string // "bbolt" or "postgres"
	dir   string
	url   string
	lease time.Duration // PostgreSQL: the channel lease; 0 = the default
}

// forEachStore runs the contract test f against both stores.
func forEachStore(t *testing.T, f func(t *testing.T, e *env)) {
	for _, kind := range []string{"bbolt", "postgres"} {
		t.Run("store="+kind, func(t *testing.T) { f(t, newEnv(t, kind)) })
	}
}

func newEnv(t *testing.T, kind string) *env {
	t.Helper()
	e := &env{kind: kind}
	if kind == "postgres" {
		e.url = pgtest.NewDatabase(t)
	} else {
		e.dir = t.TempDir()
	}
	return e
}

// fresh is another, empty env of the same kind.
func (e *env) fresh(t *testing.T) *env { return newEnv(t, e.kind) }

// open opens a store in e with one channel "hook" posting to r. The
// defaults suit tests: no pacing, millisecond backoff.
func (e *env) open(t *testing.T, r *receiver, adjust func(*Settings)) store {
	t.Helper()
	s := Settings{
		Path:        filepath.Join(e.dir, "outbox.db"),
		Channels:    []Channel{{Name: "hook", Sender: r.sender(t), Rate: rate.Inf}},
		BackoffBase: time.Millisecond,
		BackoffMax:  20 * time.Millisecond,
		SendTimeout: 5 * time.Second,
	}
	if adjust != nil {
		adjust(&s)
	}
	if e.kind == "postgres" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p, err := OpenPostgres(ctx, PostgresSettings{URL: e.url, LeaseTTL: e.lease}, s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	o, err := Open(s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// open opens a bbolt outbox in dir (the tests of the bbolt store alone).
func open(t *testing.T, dir string, r *receiver, adjust func(*Settings)) *Outbox {
	t.Helper()
	return (&env{kind: "bbolt", dir: dir}).open(t, r, adjust).(*Outbox)
}

func closeOutbox(t *testing.T, o store) {
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

func submit(t *testing.T, o store, s Submission) Record {
	t.Helper()
	rec, _, err := o.Submit(context.Background(), s)
	if err != nil {
		t.Fatalf("Submit(%q): %v", s.Text, err)
	}
	return rec
}

// waitFinished waits (up to 30 s) until the record leaves Pending.
func waitFinished(t *testing.T, o store, id string) Record {
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
