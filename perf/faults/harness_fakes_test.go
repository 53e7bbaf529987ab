package faults

// The loopback fakes of the harness (see the API at the top of
// harness_test.go): an Ollama-like LLM server, a web site for Fetch and a
// Slack/webhook receiver. Each is an httptest server in the test process,
// so a row reads exact counts and switches modes live.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// llmMode is what the fake LLM does with every call (a model name can
// override it per call).
type llmMode int32

const (
	llmOK   llmMode = iota // answer after the latency, queueing beyond the concurrency
	llm5xx                 // 500 at once
	llm429                 // 429 with Retry-After at once
	llmHang                // never answer; wait until the caller goes away
)

// llmOpts configure newFakeLLM; all zero = unlimited concurrency, no latency.
type llmOpts struct {
	Concurrency int           // calls served at once; beyond it calls queue (like Ollama); 0 = unlimited
	Latency     time.Duration // service time of one call once it has a slot
	RetryAfter  int           // seconds sent with 429; default 1
	Words       int           // words in an answer; default 8
}

// fakeLLM is an Ollama-like server: POST /api/generate and /api/chat,
// JSON or NDJSON stream. Model names choose behaviour per call: "hang",
// "fail-500", "fail-429", "slow-<ms>" (that latency instead); any other
// model follows the fake's mode.
type fakeLLM struct {
	*httptest.Server
	sem        chan struct{} // nil = unlimited
	words      int
	latency    atomic.Int64 // time.Duration
	mode       atomic.Int32 // llmMode
	retryAfter atomic.Int64

	calls       atomic.Int64 // requests that reached the fake
	served      atomic.Int64 // answered 200 in full
	inFlight    atomic.Int64 // holding a slot now
	maxInFlight atomic.Int64
	queued      atomic.Int64 // waiting for a slot now
	cancelled   atomic.Int64 // gave up because the gateway cancelled (queued, serving or hung)

	mu       sync.Mutex
	byPrompt map[string]int // guarded by mu: calls per prompt
}

func newFakeLLM(t testing.TB, o llmOpts) *fakeLLM {
	t.Helper()
	f := &fakeLLM{byPrompt: map[string]int{}, words: o.Words}
	if o.Concurrency > 0 {
		f.sem = make(chan struct{}, o.Concurrency)
	}
	if f.words <= 0 {
		f.words = 8
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 1
	}
	f.latency.Store(int64(o.Latency))
	f.retryAfter.Store(int64(o.RetryAfter))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/generate", f.serve)
	mux.HandleFunc("POST /api/chat", f.serve)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// env points the gateway's default backend at the fake.
func (f *fakeLLM) env() map[string]string { return map[string]string{"VEGA_OLLAMA_URL": f.URL} }

func (f *fakeLLM) setMode(m llmMode)          { f.mode.Store(int32(m)) }
func (f *fakeLLM) setLatency(d time.Duration) { f.latency.Store(int64(d)) }

// callsFor is how many calls reached the fake with this prompt.
func (f *fakeLLM) callsFor(prompt string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byPrompt[prompt]
}

// countPrompts is how many distinct prompts reached the fake, and how many
// calls they made.
func (f *fakeLLM) countPrompts() (distinct, calls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.byPrompt {
		calls += n
	}
	return len(f.byPrompt), calls
}

// maxCallsWithPrefix is the most calls any one prompt starting with
// prefix made ("" = every prompt).
func (f *fakeLLM) maxCallsWithPrefix(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := 0
	for p, n := range f.byPrompt {
		if strings.HasPrefix(p, prefix) {
			m = max(m, n)
		}
	}
	return m
}

func (f *fakeLLM) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	var req struct {
		Model    string `json:"model"`
		Prompt   string `json:"prompt"`
		Stream   *bool  `json:"stream"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
		return
	}
	prompt := req.Prompt
	if len(req.Messages) > 0 {
		prompt = req.Messages[len(req.Messages)-1].Content
	}
	f.mu.Lock()
	f.byPrompt[prompt]++
	f.mu.Unlock()

	mode, latency := llmMode(f.mode.Load()), time.Duration(f.latency.Load())
	switch {
	case req.Model == "hang":
		mode = llmHang
	case req.Model == "fail-500":
		mode = llm5xx
	case req.Model == "fail-429":
		mode = llm429
	case strings.HasPrefix(req.Model, "slow-"):
		ms, _ := strconv.Atoi(strings.TrimPrefix(req.Model, "slow-"))
		latency = time.Duration(ms) * time.Millisecond
	}
	switch mode {
	case llm5xx:
		http.Error(w, `{"error":"fake outage"}`, http.StatusInternalServerError)
		return
	case llm429:
		w.Header().Set("Retry-After", strconv.FormatInt(f.retryAfter.Load(), 10))
		http.Error(w, `{"error":"slow down"}`, http.StatusTooManyRequests)
		return
	case llmHang:
		<-r.Context().Done()
		f.cancelled.Add(1)
		return
	}
	if f.sem != nil {
		f.queued.Add(1)
		select {
		case f.sem <- struct{}{}:
			f.queued.Add(-1)
		case <-r.Context().Done():
			f.queued.Add(-1)
			f.cancelled.Add(1)
			return
		}
		defer func() { <-f.sem }()
	}
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxInFlight.Load()
		if n <= m || f.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if latency > 0 {
		timer := time.NewTimer(latency)
		select {
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			f.cancelled.Add(1)
			return
		}
	}
	words := make([]string, f.words)
	words[0] = "fake says:"
	for i := 1; i < len(words); i++ {
		words[i] = fmt.Sprintf("w%d", i)
	}
	chat := r.URL.Path == "/api/chat"
	line := func(text string, done bool) map[string]any {
		m := map[string]any{"model": req.Model, "done": done}
		if chat {
			m["message"] = map[string]any{"role": "assistant", "content": text}
		} else {
			m["response"] = text
		}
		if done {
			m["done_reason"] = "stop"
			m["prompt_eval_count"] = len(strings.Fields(prompt))
			m["eval_count"] = len(words)
		}
		return m
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if req.Stream == nil || *req.Stream { // Ollama streams unless told not to
		for i, word := range words {
			if i > 0 {
				word = " " + word
			}
			_ = enc.Encode(line(word, false))
			w.(http.Flusher).Flush()
		}
		_ = enc.Encode(line("", true))
	} else {
		_ = enc.Encode(line(strings.Join(words, " "), true))
	}
	f.served.Add(1)
}

// fakeWeb serves pages for Fetch: /page (small HTML), /big?n=BYTES,
// /slow?ms=MS (answers after that long) and /hang (never answers).
type fakeWeb struct {
	*httptest.Server
	hits atomic.Int64
}

func newFakeWeb(t testing.TB) *fakeWeb {
	t.Helper()
	f := &fakeWeb{}
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!DOCTYPE html><html><body>hello from the fake web</body></html>")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := []byte(strings.Repeat("x", 4096))
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "<html><body>slow page</body></html>")
	})
	mux.HandleFunc("/hang", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// env lets the gateway fetch from loopback (exempt from the SSRF guard).
func (f *fakeWeb) env() map[string]string {
	return map[string]string{"VEGA_FETCH_ALLOW": "127.0.0.1/32"}
}

// hookMode is what the fake receiver answers.
type hookMode int32

const (
	hookOK   hookMode = iota // 200 "ok"
	hook5xx                  // 500
	hook429                  // 429 with Retry-After
	hookDrop                 // read the request, then close the connection: the sender never learns
)

// fakeHook is a Slack incoming webhook or generic JSON webhook receiver.
// Deliveries are counted per message text (the gateway sends no
// idempotency header: rows put a unique id in the text). A request the
// receiver processed counts as delivered: a 2xx, or hookDrop (processed,
// response lost: the F12 duplicate window).
type fakeHook struct {
	*httptest.Server
	mode       atomic.Int32 // hookMode
	retryAfter atomic.Int64 // seconds, with 429
	dropNext   atomic.Int64 // the next n requests are processed and then dropped, whatever the mode

	mu        sync.Mutex
	attempts  int            // guarded by mu: every request
	limited   int            // guarded by mu: answered 429 (mode or rate limit)
	delivered map[string]int // guarded by mu: per text
	order     []string       // guarded by mu: texts in delivery order
	times     []time.Time    // guarded by mu: when each delivery landed
	log       []hookAttempt  // guarded by mu: every request, in order
	bucket    *bucket        // guarded by mu; nil = no rate limit
}

func newFakeHook(t testing.TB) *fakeHook {
	t.Helper()
	f := &fakeHook{delivered: map[string]int{}}
	f.retryAfter.Store(1)
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeHook) slackEnv() map[string]string { return map[string]string{"SLACK_WEBHOOK_URL": f.URL} }
func (f *fakeHook) webhookEnv() map[string]string {
	return map[string]string{"VEGA_WEBHOOK_URL": f.URL}
}
func (f *fakeHook) setMode(m hookMode) { f.mode.Store(int32(m)) }

// limit makes the receiver accept at most rate per second (burst 1, like
// Slack's ~1/s per channel) and answer 429 with Retry-After beyond it.
func (f *fakeHook) limit(rate float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bucket = &bucket{rate: rate, tokens: 1, last: time.Now()}
}

func (f *fakeHook) serve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text string `json:"text"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.attempts++
	at := time.Now()
	drop := f.dropNext.Load() > 0 && f.dropNext.Add(-1) >= 0
	mode := hookMode(f.mode.Load())
	if drop {
		mode = hookDrop
	}
	limited := mode == hook429 || (mode == hookOK && f.bucket != nil && !f.bucket.take(time.Now()))
	answer := http.StatusOK
	switch {
	case limited:
		answer = http.StatusTooManyRequests
	case mode == hook5xx:
		answer = http.StatusInternalServerError
	case mode == hookDrop:
		answer = 0
	}
	f.log = append(f.log, hookAttempt{At: at, Text: body.Text, Status: answer})
	switch {
	case limited:
		f.limited++
	case mode == hookOK || mode == hookDrop:
		f.delivered[body.Text]++
		f.order = append(f.order, body.Text)
		f.times = append(f.times, time.Now())
	}
	f.mu.Unlock()
	switch {
	case limited:
		w.Header().Set("Retry-After", strconv.FormatInt(f.retryAfter.Load(), 10))
		http.Error(w, "rate_limited", http.StatusTooManyRequests)
	case mode == hook5xx:
		http.Error(w, "internal", http.StatusInternalServerError)
	case mode == hookDrop:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	default:
		fmt.Fprint(w, "ok")
	}
}

// count is how many times text was delivered.
func (f *fakeHook) count(text string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delivered[text]
}

// hookCounts are the receiver's totals.
type hookCounts struct {
	Attempts, Limited, Deliveries, Distinct, Duplicates int
}

func (f *fakeHook) counts() hookCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := hookCounts{Attempts: f.attempts, Limited: f.limited, Distinct: len(f.delivered)}
	for _, n := range f.delivered {
		c.Deliveries += n
		c.Duplicates += n - 1
	}
	return c
}

// deliveryTimes is when each delivery landed, in order.
func (f *fakeHook) deliveryTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times...)
}

// hookAttempt is one request the receiver saw: when, which text, and the
// status it answered (0: dropped without an answer).
type hookAttempt struct {
	At     time.Time
	Text   string
	Status int
}

// attemptLog is every request the receiver saw, in order.
func (f *fakeHook) attemptLog() []hookAttempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]hookAttempt(nil), f.log...)
}

// bucket is a token bucket of capacity 1 (not safe for concurrent use).
type bucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time) bool {
	b.tokens = math.Min(1, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}
