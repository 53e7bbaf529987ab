package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// keyedHook is a webhook receiver that records each delivery's
// Idempotency-Key header with its text, and can drop the answer to the
// first attempt of chosen texts after reading the request (the F12 fault:
// the receiver processed it, the gateway never learns).
type keyedHook struct {
	*httptest.Server
	mu       sync.Mutex
	byKey    map[string][]string // guarded by mu: Idempotency-Key → texts received under it
	byText   map[string]int      // guarded by mu: deliveries per text
	dropOnce map[string]bool     // guarded by mu: texts whose first answer is dropped
	dropped  int                 // guarded by mu
}

func newKeyedHook(t *testing.T) *keyedHook {
	t.Helper()
	h := &keyedHook{byKey: map[string][]string{}, byText: map[string]int{}, dropOnce: map[string]bool{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Text string `json:"text"`
		}
		raw, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &body); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		h.mu.Lock()
		h.byKey[key] = append(h.byKey[key], body.Text)
		h.byText[body.Text]++
		drop := h.dropOnce[body.Text]
		if drop {
			delete(h.dropOnce, body.Text)
			h.dropped++
		}
		h.mu.Unlock()
		if drop {
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *keyedHook) drop(text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropOnce[text] = true
}

// seen is a copy of what arrived under key.
func (h *keyedHook) seen(key string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.byKey[key]...)
}

func (h *keyedHook) deliveries(text string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byText[text]
}

// notifyCall sends one notification as tenant A.
func notifyCall(ctx context.Context, g *gateway, channel, text, key string) (*vegav1.NotifyResponse, error) {
	return vegav1.NewNotifyServiceClient(g.Conn()).Notify(ctxWithKey(ctx, keyA),
		&vegav1.NotifyRequest{Channel: channel, Text: text, IdempotencyKey: key}, grpc.WaitForReady(true))
}

// notificationStatus is GetNotification's view of id.
func notificationStatus(t *testing.T, g *gateway, id string) *vegav1.GetNotificationResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxWithKey(context.Background(), keyA), 10*time.Second)
	defer cancel()
	r, err := vegav1.NewNotifyServiceClient(g.Conn()).GetNotification(ctx, &vegav1.GetNotificationRequest{Id: id}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("GetNotification %s: %v", id, err)
	}
	return r
}

// fastOutbox makes retries quick and pacing out of the way.
var fastOutbox = map[string]string{
	"VEGA_NOTIFY_BACKOFF_BASE": "100ms", "VEGA_NOTIFY_BACKOFF_MAX": "300ms",
	"VEGA_NOTIFY_RATE": "1000", "VEGA_NOTIFY_BURST": "100",
}

// TestF12ResponseLost: the webhook receiver processes a delivery and then
// drops the connection before answering. The gateway retries; the
// duplicate carries the same Idempotency-Key (the notification's id) and
// is counted; nothing is lost.
func TestF12ResponseLost(t *testing.T) {
	record(t, Row{ID: "F12",
		Did: "20 Notify calls (distinct texts and idempotency keys) to a generic webhook; the receiver reads the first attempt of 5 of " +
			"them, then closes the connection without answering. Backoff 100–300 ms.",
		MustHold: "every Notify answers DELIVERED with its id; the 15 undisturbed arrive once; each of the 5 arrives exactly twice, both " +
			"times with Idempotency-Key = its notification id (the receiver can drop the second); 0 lost; duplicates = the 5 lost answers, no others.",
	})
	hook := newKeyedHook(t)
	g := startGateway(t, merge(fastOutbox, map[string]string{"VEGA_WEBHOOK_URL": hook.URL}))
	const n, dropped = 20, 5
	for i := range dropped {
		hook.drop(fmt.Sprintf("f12-%02d", i))
	}
	ids := make([]string, n)
	var c codeTally
	var notDelivered []string
	var mu sync.Mutex
	concurrently(n, func(i int) {
		resp, err := notifyCall(ctxFor(t, 20*time.Second), g, "webhook", fmt.Sprintf("f12-%02d", i), fmt.Sprintf("f12-key-%02d", i))
		c.add(err)
		mu.Lock()
		defer mu.Unlock()
		ids[i] = resp.GetId()
		if err == nil && resp.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
			notDelivered = append(notDelivered, fmt.Sprintf("%d: %v %s", i, resp.GetStatus(), resp.GetLastError()))
		}
	})
	if c.get(codes.OK) != n {
		t.Fatalf("Notify: %s, want OK %d", c.String(), n)
	}
	// A call may answer QUEUED if its retry outlived its wait; the outbox
	// still delivers it.
	for i, id := range ids {
		eventually(t, "notification delivered", func() bool {
			return notificationStatus(t, g, id).GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED
		})
		text := fmt.Sprintf("f12-%02d", i)
		got := hook.seen(id)
		want := 1
		if i < dropped {
			want = 2
		}
		if len(got) != want || hook.deliveries(text) != want {
			t.Fatalf("%s (id %s): %d deliveries under its id (%v), %d in all; want %d", text, id, len(got), got, hook.deliveries(text), want)
		}
		for _, txt := range got {
			if txt != text {
				t.Fatalf("id %s carried %q, want only %q", id, txt, text)
			}
		}
	}
	if keyless := hook.seen(""); len(keyless) != 0 {
		t.Fatalf("%d deliveries without an Idempotency-Key", len(keyless))
	}
	attempts := 0
	for i := range n {
		attempts += hook.deliveries(fmt.Sprintf("f12-%02d", i))
	}
	ch := g.Stats(t).GetBatch().GetChannels()["webhook"]
	record(t, Row{ID: "F12", Measured: fmt.Sprintf(
		"Notify: %s (%d answered DELIVERED at once, the rest QUEUED then delivered); receiver: %d requests for 20 notifications, 5 answers "+
			"dropped; lost 0; duplicates %d, each of the 5 twice under its own id (Idempotency-Key = notification id), the 15 others once; "+
			"outbox stats: %d delivered.",
		c.String(), n-len(notDelivered), attempts, attempts-n, ch.GetDelivered())})
}

// TestF4RetryAfter: an upstream answers 429 with Retry-After: 7. Nothing
// is sent to it before the 7 s are over, the limiter lowers its rate, and
// a Notify job paused by it stays in the outbox and is delivered.
func TestF4RetryAfter(t *testing.T) {
	record(t, Row{ID: "F4",
		Did: "Generate: the fake Ollama answers one 429 with Retry-After: 7, then is healthy; calls with 2 s deadlines every 500 ms for 4.5 s, " +
			"and one call with a 20 s deadline. Notify: the webhook answers the first attempt 429 with Retry-After: 7, then 200.",
		MustHold: "the 429 reaches the caller as RESOURCE_EXHAUSTED with RetryInfo 7 s; no call reaches the backend before the 7 s are over " +
			"(short-deadline calls refused at once with RetryInfo, the long one waits and is served after them); the limiter records a " +
			"decrease; the notification is QUEUED, still in the outbox during the pause, delivered once ≥ 7 s after the 429.",
	})
	var genLine, notifyLine string
	t.Run("generate", func(t *testing.T) {
		t.Parallel()
		llm := newFakeLLM(t, llmOpts{RetryAfter: 7})
		g := startGateway(t, merge(roomy, llm.env()))
		llm.setMode(llm429)
		_, _, err := generate(ctxFor(t, 5*time.Second), g, genReq("m", "f4-first"))
		at429 := time.Now()
		if status.Code(err) != codes.ResourceExhausted || retryDelay(err) != 7*time.Second {
			t.Fatalf("429 with Retry-After 7: %v (RetryInfo %s), want RESOURCE_EXHAUSTED with 7s", err, retryDelay(err))
		}
		llm.setMode(llmOK)
		long := startCaller(t, g, genReq("m", "f4-long"))
		var short codeTally
		var minAdvice time.Duration = time.Hour
		// Until 4.5 s: a 2 s deadline cannot fit the rest of the pause, so
		// these are refused at once (later ones may rightly wait and go).
		for i := 0; time.Since(at429) < 4500*time.Millisecond; i++ {
			_, _, err := generate(ctxFor(t, 2*time.Second), g, genReq("m", fmt.Sprintf("f4-short-%d", i)))
			if short.add(err) == codes.ResourceExhausted {
				minAdvice = min(minAdvice, retryDelay(err))
			}
			if calls := llm.calls.Load(); calls != 1 {
				t.Fatalf("a call reached the backend %s after its Retry-After: 7 (calls %d)", time.Since(at429), calls)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if short.get(codes.ResourceExhausted) != short.total() {
			t.Fatalf("short-deadline calls during the pause: %s, want all RESOURCE_EXHAUSTED", short.String())
		}
		resp, err := long.wait(t)
		servedAfter := time.Since(at429)
		if err != nil || resp.GetText() == "" {
			t.Fatalf("the long-deadline call: %v", err)
		}
		// A retry on the gateway's own backoff would come within a second;
		// the margin only absorbs when the test took its timestamps.
		if servedAfter < 7*time.Second-500*time.Millisecond {
			t.Fatalf("the long call was served %s after the 429: before its Retry-After", servedAfter)
		}
		lim := limiterStats(g.Stats(t), "ollama")
		if lim.GetDecreases() < 1 {
			t.Fatalf("the limiter did not lower its rate: %+v", lim)
		}
		genLine = fmt.Sprintf("Generate: the 429 → RESOURCE_EXHAUSTED, RetryInfo %s; during the pause %s (RetryInfo ≥ %s), 0 reached the "+
			"backend; the 20 s call served %s after the 429; backend calls %d (the 429 + the long call); limiter 'ollama': %d decreases, "+
			"rate %.1f/s, concurrency limit %d", 7*time.Second, short.String(), minAdvice.Round(time.Second),
			servedAfter.Round(time.Millisecond), llm.calls.Load(), lim.GetDecreases(), lim.GetCurrentRate(), lim.GetConcurrencyLimit())
	})
	t.Run("notify", func(t *testing.T) {
		t.Parallel()
		hook := newFakeHook(t)
		hook.retryAfter.Store(7)
		hook.setMode(hook429)
		g := startGateway(t, merge(fastOutbox, hook.webhookEnv()))
		// When the receiver answers the 429, to within 5 ms; then it heals.
		seen429 := make(chan time.Time, 1)
		go func() {
			for start := time.Now(); hook.counts().Attempts == 0 && time.Since(start) < generous; {
				time.Sleep(5 * time.Millisecond)
			}
			at := time.Now()
			hook.setMode(hookOK)
			seen429 <- at
		}()
		sent := time.Now()
		resp, err := notifyCall(ctxFor(t, 20*time.Second), g, "webhook", "f4-notify", "f4-key")
		answered := time.Since(sent)
		if err != nil || resp.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED {
			t.Fatalf("Notify to a 429 receiver: %v, %v; want QUEUED", err, resp.GetStatus())
		}
		var at429 time.Time
		select {
		case at429 = <-seen429:
		case <-time.After(generous):
			t.Fatal("the receiver never saw the first attempt")
		}
		time.Sleep(time.Second)
		mid := notificationStatus(t, g, resp.GetId())
		if mid.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED || hook.counts().Attempts != 1 {
			t.Fatalf("1 s into the pause: %v after %d attempts, want QUEUED after 1", mid.GetStatus(), hook.counts().Attempts)
		}
		eventually(t, "delivery after the pause", func() bool {
			return notificationStatus(t, g, resp.GetId()).GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED
		})
		times := hook.deliveryTimes()
		if len(times) != 1 || hook.count("f4-notify") != 1 {
			t.Fatalf("deliveries: %d, want exactly 1", hook.count("f4-notify"))
		}
		after := times[0].Sub(at429)
		// at429 is when the test saw the attempt (≤ 5 ms late, more on a
		// loaded machine), so the pause the gateway kept is a little longer;
		// a retry on the outbox's backoff (100–300 ms here) would be far
		// earlier than this margin.
		if after < 7*time.Second-500*time.Millisecond {
			t.Fatalf("delivered %s after the 429: before its Retry-After: 7", after)
		}
		final := notificationStatus(t, g, resp.GetId())
		c := hook.counts()
		notifyLine = fmt.Sprintf("Notify: QUEUED after %s; 1 s into the pause still QUEUED with 1 attempt; delivered %s after the 429, %d "+
			"attempts (receiver: %d requests, %d answered 429), delivered once, lost 0",
			answered.Round(time.Millisecond), after.Round(time.Millisecond), final.GetAttempts(), c.Attempts, c.Limited)
	})
	t.Cleanup(func() {
		if genLine != "" && notifyLine != "" {
			record(t, Row{ID: "F4", Measured: genLine + ". " + notifyLine + "."})
		}
	})
}

// healthWatch polls g's health every 25 ms until the process is gone, and
// reports when it first said NOT_SERVING.
func healthWatch(g *gateway) (stop func() (notServingAt time.Time, statuses string)) {
	var mu sync.Mutex
	var first time.Time
	seen := map[string]int{}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		hc := healthpb.NewHealthClient(g.Conn())
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			mu.Lock()
			if err != nil {
				seen[status.Code(err).String()]++
			} else {
				seen[r.GetStatus().String()]++
				if r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING && first.IsZero() {
					first = time.Now()
				}
			}
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return func() (time.Time, string) {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		keys := make([]string, 0, len(seen))
		for k := range seen {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s %d", k, seen[k])
		}
		return first, strings.Join(parts, ", ")
	}
}

// streamCall is one GenerateStream running in the background.
type streamCall struct {
	done chan struct{}
	text string
	fin  bool // a done chunk arrived
	err  error
}

func startStream(t *testing.T, g *gateway, model, prompt string) *streamCall {
	s := &streamCall{done: make(chan struct{})}
	ctx := ctxFor(t, generous)
	go func() {
		defer close(s.done)
		s.text, s.fin, s.err = streamAll(ctx, g, model, prompt)
	}()
	return s
}

func (s *streamCall) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(generous):
		t.Fatalf("a stream did not end within %s", generous)
	}
}

// submitQueued sends n notifications that must be accepted (QUEUED or
// DELIVERED) and returns their ids by text.
func submitQueued(t *testing.T, g *gateway, prefix string, n int) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for i := range n {
		text := fmt.Sprintf("%s-%02d", prefix, i)
		resp, err := notifyCall(ctxFor(t, 10*time.Second), g, "webhook", text, "key-"+text)
		if err != nil {
			t.Fatalf("Notify %s: %v", text, err)
		}
		ids[text] = resp.GetId()
	}
	return ids
}

// deliveredOnce waits until every text arrived at hook, and returns the
// number lost (never arrived) and duplicated (arrived more than once).
func deliveredAll(t *testing.T, hook *fakeHook, ids map[string]string) (lost, dups int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for text := range ids {
		for hook.count(text) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		switch n := hook.count(text); {
		case n == 0:
			lost++
		case n > 1:
			dups += n - 1
		}
	}
	return lost, dups
}

// TestF11Restart: SIGTERM during long Generate streams with Notify jobs
// pending, then kill -9 with deliveries in progress, with the bbolt outbox
// and with the PostgreSQL one.
func TestF11Restart(t *testing.T) {
	slow(t)
	record(t, Row{ID: "F11",
		Did: "(a) SIGTERM (drain delay 1 s, shutdown timeout 4 s) while 2 streams wait 2 s for a backend, 1 stream hangs on it, and 10 " +
			"notifications are pending (receiver answering 500); restart on the same data dir, receiver healthy. (b) kill -9 while 30 " +
			"notifications are being delivered at 5/s (bbolt outbox); restart. (c) the same with VEGA_POSTGRES_URL (lease TTL 3 s).",
		MustHold: "(a) health NOT_SERVING before the process stops; exit within drain + timeout; the 2 streams complete (done chunk), the " +
			"hung one ends UNAVAILABLE, none CANCELED or clean-but-short; the 10 notifications delivered after the restart; (b), (c): every " +
			"accepted notification delivered after the restart, 0 lost, duplicates ≤ 1 (the attempt in flight at the kill: the documented window).",
	})
	var lines []string

	// (a) SIGTERM mid-stream.
	llm := newFakeLLM(t, llmOpts{})
	hook := newFakeHook(t)
	hook.setMode(hook5xx)
	g := startGateway(t, merge(roomy, fastOutbox, llm.env(), hook.webhookEnv(), map[string]string{
		"VEGA_DRAIN_DELAY": "1s", "VEGA_SHUTDOWN_TIMEOUT": "4s", "VEGA_NOTIFY_MAX_WAIT": "0s",
	}))
	ids := submitQueued(t, g, "f11-term", 10)
	s1 := startStream(t, g, "slow-2000", "f11-stream-1")
	s2 := startStream(t, g, "slow-2000", "f11-stream-2")
	s3 := startStream(t, g, "hang", "f11-stream-hang")
	eventually(t, "the three streams reach the backend", func() bool { return llm.calls.Load() == 3 })
	stopHealth := healthWatch(g)
	termAt := time.Now()
	stopErr := g.Stop()
	stopTook := time.Since(termAt)
	notServing, healthSeen := stopHealth()
	for _, s := range []*streamCall{s1, s2, s3} {
		s.wait(t)
	}
	if stopErr != nil {
		t.Fatalf("SIGTERM: the gateway exited with %v", stopErr)
	}
	if notServing.IsZero() || notServing.After(termAt.Add(stopTook)) {
		t.Fatalf("health never said NOT_SERVING while stopping (seen: %s)", healthSeen)
	}
	if stopTook > 1*time.Second+4*time.Second+generous {
		t.Fatalf("the stop took %s", stopTook)
	}
	for i, s := range []*streamCall{s1, s2} {
		if s.err != nil || !s.fin {
			t.Fatalf("stream %d (2 s backend, within the shutdown timeout): %v, done=%v; want it completed", i+1, s.err, s.fin)
		}
	}
	if status.Code(s3.err) != codes.Unavailable {
		t.Fatalf("the hung stream at shutdown: %v, want UNAVAILABLE", s3.err)
	}
	hook.setMode(hookOK)
	restartAt := time.Now()
	g.Restart(t)
	lost, dups := deliveredAll(t, hook, ids)
	if lost != 0 || dups != 0 {
		t.Fatalf("after SIGTERM and restart: %d lost, %d duplicated (every attempt before was refused: none may repeat)", lost, dups)
	}
	lines = append(lines, fmt.Sprintf("(a) SIGTERM: health NOT_SERVING %s after the signal (polls: %s); exit 0 after %s; streams: 2 completed, "+
		"the hung one %s; 10 pending notifications: all delivered %s after the restart, lost 0, duplicated 0",
		notServing.Sub(termAt).Round(time.Millisecond), healthSeen, stopTook.Round(time.Millisecond), status.Code(s3.err),
		time.Since(restartAt).Round(time.Millisecond)))

	// (b), (c) kill -9 while deliveries are in progress.
	for _, store := range []string{"bbolt", "postgres"} {
		hook := newFakeHook(t)
		env := merge(hook.webhookEnv(), map[string]string{
			"VEGA_NOTIFY_RATE": "5", "VEGA_NOTIFY_BURST": "1", "VEGA_NOTIFY_MAX_WAIT": "0s",
			"VEGA_NOTIFY_BACKOFF_BASE": "100ms", "VEGA_NOTIFY_BACKOFF_MAX": "300ms",
		})
		if store == "postgres" {
			env = merge(env, map[string]string{"VEGA_POSTGRES_URL": pgDatabase(t),
				"VEGA_OUTBOX_LEASE_TTL": "3s", "VEGA_NOTIFY_SEND_TIMEOUT": "1s"})
		}
		g := startGateway(t, env)
		ids := submitQueued(t, g, "f11-kill-"+store, 30)
		eventually(t, "some deliveries before the kill", func() bool { return hook.counts().Deliveries >= 5 })
		g.Kill()
		before := hook.counts().Deliveries
		restartAt := time.Now()
		g.Restart(t)
		lost, dups := deliveredAll(t, hook, ids)
		if lost != 0 || dups > 1 {
			t.Fatalf("%s: after kill -9 and restart: %d lost, %d duplicated; want 0 lost, at most 1 duplicate", store, lost, dups)
		}
		for text, id := range ids {
			if st := notificationStatus(t, g, id).GetStatus(); st != vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
				t.Fatalf("%s: %s is %v after its delivery", store, text, st)
			}
		}
		lines = append(lines, fmt.Sprintf("(%s) kill -9 (%s outbox) after %d of 30 delivered: all 30 delivered %s after the restart, lost 0, "+
			"duplicated %d", map[string]string{"bbolt": "b", "postgres": "c"}[store], store, before,
			time.Since(restartAt).Round(time.Millisecond), dups))
	}
	record(t, Row{ID: "F11", Measured: strings.Join(lines, "; ") + "."})
}
