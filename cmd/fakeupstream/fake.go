package main

import (
	"encoding/json"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// settings are the knobs of the fake; all can be changed live.
type settings struct {
	Latency     time.Duration
	Capacity    float64 // requests per second; 0 = unlimited
	RetryAfter  int     // seconds, sent with 429
	Concurrency int     // requests served at once; 0 = unlimited
	Queue       bool    // wait for a worker instead of answering 503
	FailRate    float64 // fraction of requests answered 500
	Outage      bool    // every request gets 503
	OutageFrom  time.Duration
	OutageTo    time.Duration // window after start; OutageTo == 0: none
	Tokens      int           // words in generated answers
}

// fake is the benchmark upstream: its Handler serves the fake APIs and the
// /_fake/ control endpoints, and ConnState counts connections.
type fake struct {
	now   func() time.Time
	start time.Time
	rate  *tokenBucket
	pool  workers

	mu  sync.Mutex
	cfg settings // guarded by mu; Capacity lives in rate

	failSeq   atomic.Int64 // requests seen by the fail-rate check
	requests  atomic.Int64
	inFlight  atomic.Int64
	newConns  atomic.Int64
	openConns atomic.Int64

	statusMu sync.Mutex
	byStatus map[int]int64 // guarded by statusMu
}

func newFake(cfg settings, now func() time.Time) *fake {
	if now == nil {
		now = time.Now
	}
	f := &fake{now: now, start: now(), cfg: cfg, byStatus: map[int]int64{}}
	f.rate = newTokenBucket(cfg.Capacity, now)
	f.pool.set(cfg.Concurrency, cfg.Queue)
	return f
}

func (f *fake) settings() settings {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.cfg
	s.Capacity = f.rate.getRate()
	return s
}

// ConnState is meant for http.Server.ConnState.
func (f *fake) ConnState(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		f.newConns.Add(1)
		f.openConns.Add(1)
	case http.StateClosed, http.StateHijacked:
		f.openConns.Add(-1)
	}
}

func (f *fake) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_fake/stats", f.stats)
	mux.HandleFunc("POST /_fake/reset", f.reset)
	mux.HandleFunc("POST /_fake/config", f.configure)
	mux.HandleFunc("/_fake/", http.NotFound) // reserved; never reaches the upstream counters
	upstream := http.NewServeMux()
	upstream.HandleFunc("POST /api/generate", ollama)
	upstream.HandleFunc("POST /api/chat", ollama)
	upstream.HandleFunc("POST /v1/chat/completions", openAI)
	upstream.HandleFunc("POST /", slack)
	upstream.HandleFunc("GET /", page) // GET covers HEAD too
	mux.Handle("/", f.gate(upstream))
	return mux
}

// statusRecorder remembers the status code for the by_status counter.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if fl, ok := r.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// gate applies, in order: outage (503), fail rate (500), capacity (429),
// concurrency (503 or queue), latency; then serves the request and counts it.
func (f *fake) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		f.inFlight.Add(1)
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			f.inFlight.Add(-1)
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			f.statusMu.Lock()
			f.byStatus[status]++
			f.statusMu.Unlock()
		}()
		cfg := f.settings()
		if f.inOutage(cfg) {
			http.Error(rec, "fakeupstream: outage", http.StatusServiceUnavailable)
			return
		}
		if failNow(f.failSeq.Add(1), cfg.FailRate) {
			http.Error(rec, "fakeupstream: injected failure", http.StatusInternalServerError)
			return
		}
		if !f.rate.allow() {
			rec.Header().Set("Retry-After", strconv.Itoa(cfg.RetryAfter))
			http.Error(rec, "fakeupstream: over capacity", http.StatusTooManyRequests)
			return
		}
		if !f.pool.acquire(r.Context()) {
			http.Error(rec, "fakeupstream: all workers busy", http.StatusServiceUnavailable)
			return
		}
		defer f.pool.release()
		if cfg.Latency > 0 {
			t := time.NewTimer(cfg.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				// The client is gone; 499 in the counters, as nginx would log it.
				rec.status = 499
				return
			}
		}
		next.ServeHTTP(rec, r.WithContext(withTokens(r.Context(), cfg.Tokens)))
	})
}

// failNow fails request n (1-based) when it crosses a multiple of 1/rate,
// so rate 0.5 fails every second request and 0.1 every tenth.
func failNow(n int64, rate float64) bool {
	if rate <= 0 {
		return false
	}
	if rate >= 1 {
		return true
	}
	return math.Floor(float64(n)*rate+1e-9) > math.Floor(float64(n-1)*rate+1e-9)
}

func (f *fake) inOutage(cfg settings) bool {
	if cfg.Outage {
		return true
	}
	if cfg.OutageTo <= 0 {
		return false
	}
	since := f.now().Sub(f.start)
	return since >= cfg.OutageFrom && since < cfg.OutageTo
}

type statsJSON struct {
	Requests          int64            `json:"requests"`
	ByStatus          map[string]int64 `json:"by_status"`
	NewConnections    int64            `json:"new_connections"`
	ActiveConnections int64            `json:"active_connections"`
	InFlight          int64            `json:"in_flight"`
	Workers           int              `json:"workers_busy"`
	Capacity          float64          `json:"capacity"`
	LatencyMS         float64          `json:"latency_ms"`
	Concurrency       int              `json:"concurrency"`
	Queue             bool             `json:"queue"`
	FailRate          float64          `json:"fail_rate"`
	Outage            bool             `json:"outage"`
	UptimeMS          int64            `json:"uptime_ms"`
}

func (f *fake) snapshot() statsJSON {
	cfg := f.settings()
	s := statsJSON{
		Requests:          f.requests.Load(),
		ByStatus:          map[string]int64{},
		NewConnections:    f.newConns.Load(),
		ActiveConnections: f.openConns.Load(),
		InFlight:          f.inFlight.Load(),
		Workers:           f.pool.inUse(),
		Capacity:          cfg.Capacity,
		LatencyMS:         float64(cfg.Latency) / float64(time.Millisecond),
		Concurrency:       cfg.Concurrency,
		Queue:             cfg.Queue,
		FailRate:          cfg.FailRate,
		Outage:            f.inOutage(cfg),
		UptimeMS:          f.now().Sub(f.start).Milliseconds(),
	}
	f.statusMu.Lock()
	for code, n := range f.byStatus {
		s.ByStatus[strconv.Itoa(code)] = n
	}
	f.statusMu.Unlock()
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fake) stats(w http.ResponseWriter, _ *http.Request) { writeJSON(w, f.snapshot()) }

// reset zeroes the counters; gauges (in flight, open connections) stay.
func (f *fake) reset(w http.ResponseWriter, _ *http.Request) {
	f.requests.Store(0)
	f.newConns.Store(0)
	f.failSeq.Store(0)
	f.statusMu.Lock()
	f.byStatus = map[int]int64{}
	f.statusMu.Unlock()
	writeJSON(w, f.snapshot())
}

// configChange is the body of POST /_fake/config; absent fields stay.
type configChange struct {
	Capacity    *float64 `json:"capacity"`
	LatencyMS   *float64 `json:"latency_ms"`
	RetryAfter  *int     `json:"retry_after"`
	Concurrency *int     `json:"concurrency"`
	Queue       *bool    `json:"queue"`
	FailRate    *float64 `json:"fail_rate"`
	Outage      *bool    `json:"outage"`
	Tokens      *int     `json:"tokens"`
}

func (f *fake) configure(w http.ResponseWriter, r *http.Request) {
	var c configChange
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		http.Error(w, "fakeupstream: bad config: "+err.Error(), http.StatusBadRequest)
		return
	}
	if (c.Capacity != nil && *c.Capacity < 0) || (c.LatencyMS != nil && *c.LatencyMS < 0) ||
		(c.RetryAfter != nil && *c.RetryAfter < 0) || (c.Concurrency != nil && *c.Concurrency < 0) ||
		(c.FailRate != nil && (*c.FailRate < 0 || *c.FailRate > 1)) || (c.Tokens != nil && *c.Tokens < 1) {
		http.Error(w, "fakeupstream: bad config: a value is out of range", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	if c.LatencyMS != nil {
		f.cfg.Latency = time.Duration(*c.LatencyMS * float64(time.Millisecond))
	}
	if c.RetryAfter != nil {
		f.cfg.RetryAfter = *c.RetryAfter
	}
	if c.Concurrency != nil {
		f.cfg.Concurrency = *c.Concurrency
	}
	if c.Queue != nil {
		f.cfg.Queue = *c.Queue
	}
	if c.FailRate != nil {
		f.cfg.FailRate = *c.FailRate
	}
	if c.Outage != nil {
		f.cfg.Outage = *c.Outage
		if !*c.Outage {
			f.cfg.OutageTo = 0 // stopping an outage by hand ends the window too
		}
	}
	if c.Tokens != nil {
		f.cfg.Tokens = *c.Tokens
	}
	if c.Capacity != nil {
		f.rate.setRate(*c.Capacity)
	}
	f.pool.set(f.cfg.Concurrency, f.cfg.Queue)
	f.mu.Unlock()
	writeJSON(w, f.snapshot())
}
