package faults

// Rows F1–F13 (faults injected): the real gateway binary, loopback fakes,
// and toxiproxy between the gateway and each backend. This file holds the
// helpers the F rows share and the upstream rows F1, F2, F5, F6 and F13;
// f_limits_test.go holds F3 and F4, f_coalesce_test.go F9 and F10,
// f_notify_test.go F11 and F12, f_fleet_test.go F7 and F8.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// generous bounds a wait for something that must happen (never a speed
// claim): CI runs on a loaded 2-core machine with the race detector.
const generous = 30 * time.Second

// genReq is a deterministic (cacheable) Generate request.
func genReq(model, prompt string) *vegav1.GenerateRequest {
	return &vegav1.GenerateRequest{Model: model, Prompt: prompt, Options: &vegav1.SamplingOptions{Temperature: proto.Float64(0)}}
}

// generate calls Generate as tenant A and returns the answer and how it
// was served (x-vega-served-from).
func generate(ctx context.Context, g *gateway, req *vegav1.GenerateRequest) (*vegav1.GenerateResponse, string, error) {
	var hdr metadata.MD
	resp, err := vegav1.NewGenerateServiceClient(g.Conn()).Generate(ctxWithKey(ctx, keyA), req, grpc.Header(&hdr))
	return resp, first(hdr.Get("x-vega-served-from")), err
}

// fetchURL calls Fetch as tenant A.
func fetchURL(ctx context.Context, g *gateway, url string) (*vegav1.FetchResponse, string, error) {
	var hdr metadata.MD
	resp, err := vegav1.NewFetchServiceClient(g.Conn()).Fetch(ctxWithKey(ctx, keyA), &vegav1.FetchRequest{Url: url}, grpc.Header(&hdr))
	return resp, first(hdr.Get("x-vega-served-from")), err
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// breakerStats is the breaker whose key starts with prefix ("ollama",
// "fetch:"); a zero value when that backend was never called.
func breakerStats(st *vegav1.Stats, prefix string) *vegav1.BreakerStats {
	for _, b := range st.GetCircuitBreakers().GetBreakers() {
		if strings.HasPrefix(b.GetKey(), prefix) {
			return b
		}
	}
	return &vegav1.BreakerStats{}
}

func breakerLine(b *vegav1.BreakerStats) string {
	state := b.GetState()
	if state == "" {
		state = "never called"
	}
	return fmt.Sprintf("breaker %s: %s, %d failures counted (%d in a row), %d refused", b.GetKey(), state,
		b.GetFailures(), b.GetConsecutiveFailures(), b.GetRejected())
}

// breakersLine describes every breaker whose key starts with prefix.
func breakersLine(st *vegav1.Stats, prefix string) string {
	var parts []string
	for _, b := range st.GetCircuitBreakers().GetBreakers() {
		if strings.HasPrefix(b.GetKey(), prefix) {
			parts = append(parts, breakerLine(b))
		}
	}
	return strings.Join(parts, "; ")
}

// limiterStats is the limiter of backend key ("ollama").
func limiterStats(st *vegav1.Stats, key string) *vegav1.LimiterStats {
	for _, l := range st.GetRateLimiters().GetLimiters() {
		if l.GetKey() == key {
			return l
		}
	}
	return &vegav1.LimiterStats{}
}

// poolHost is the gateway's outbound pool's view of host (host:port).
func poolHost(st *vegav1.Stats, host string) *vegav1.HostPoolStats {
	for _, h := range st.GetConnectionPool().GetHosts() {
		if h.GetHost() == host {
			return h
		}
	}
	return &vegav1.HostPoolStats{}
}

// retryDelay is the RetryInfo delay of err, 0 without one.
func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// configFile writes a YAML config for VEGA_CONFIG (for settings that have
// no environment variable, like fetch.timeout).
func configFile(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vega.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// proxyAt is toxiproxy without toxics on a given listen address (to put a
// clean proxy where a faulty one was stopped, so URLs and cache keys stay
// the same); stopped at cleanup.
func proxyAt(t *testing.T, listen, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "clean-"+strings.ReplaceAll(listen, ":", "-"), listen, upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy on %s: %v", listen, err)
	}
	t.Cleanup(p.Stop)
	return p
}

// merge is the union of envs, later ones winning.
func merge(envs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, e := range envs {
		for k, v := range e {
			out[k] = v
		}
	}
	return out
}

// roomy keeps the overload control out of rows that are not about it: a
// high rate ceiling and concurrency, so every call of the row reaches the
// backend and a refusal could only come from the fault.
var roomy = map[string]string{"INITIAL_RATE_LIMIT": "1000", "MAX_RATE_LIMIT": "1000", "VEGA_CONCURRENCY_INITIAL": "32"}

// eventually polls cond every 20 ms until it holds or generous passes.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > generous {
			t.Fatalf("%s: still not true after %s", what, generous)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// concurrently runs n calls at once and waits for them.
func concurrently(n int, call func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { call(i) })
	}
	wg.Wait()
}

// TestF1UpstreamSlow: an upstream slower than the caller's deadline. The
// caller gets DEADLINE_EXCEEDED, the gateway cancels its upstream request,
// the breaker does not count the caller's deadline, nothing is cached.
func TestF1UpstreamSlow(t *testing.T) {
	record(t, Row{ID: "F1",
		Did: "Generate through toxiproxy to the fake Ollama. Ordinary: latency toxic 1 s, deadline 5 s, then the same call again. " +
			"Fault: (a) latency toxic 30 s on the answers, 6 distinct calls at once with 5 s deadlines; (b) a backend that itself takes 30 s " +
			"(no toxic), 6 more; then the toxic removed, (a)'s first prompt again and a new prompt.",
		MustHold: "ordinary: OK, then a cache hit, 1 backend call; fault: every call DEADLINE_EXCEEDED; the gateway closes its upstream " +
			"connections (pool: 0 active) and the slow backend sees every request cancelled; breaker 'ollama' counts 0 failures and stays " +
			"closed after 12 deadline misses (more than the 5 that open it); no cache write: (a)'s prompt reaches the backend again.",
	})
	llm := newFakeLLM(t, llmOpts{})
	p := newProxy(t, hostPort(t, llm.URL))
	g := startGateway(t, merge(roomy, map[string]string{"VEGA_OLLAMA_URL": "http://" + p.Listen}))

	// Ordinary use: slow but within the deadline.
	heal := addToxic(t, p, "latency", "downstream", map[string]any{"latency": 1000})
	_, from, err := generate(ctxFor(t, 5*time.Second), g, genReq("m", "f1-ordinary"))
	if err != nil || from != "backend" {
		t.Fatalf("slow but healthy backend: %v (served from %q)", err, from)
	}
	heal()
	_, from, err = generate(ctxFor(t, 5*time.Second), g, genReq("m", "f1-ordinary"))
	if err != nil || from != "cache" {
		t.Fatalf("the same call again: %v (served from %q), want a cache hit", err, from)
	}
	if n := llm.callsFor("f1-ordinary"); n != 1 {
		t.Fatalf("ordinary prompt reached the backend %d times, want 1", n)
	}
	storesBefore := g.Stats(t).GetCache().GetStores()
	rtBefore := g.Runtime(t)

	// (a) The answers take 30 s to come back through the proxy.
	addToxic(t, p, "latency", "downstream", map[string]any{"latency": 30000})
	var a, b codeTally
	var slowest time.Duration
	var mu sync.Mutex
	concurrently(6, func(i int) {
		start := time.Now()
		_, _, err := generate(ctxFor(t, 5*time.Second), g, genReq("m", fmt.Sprintf("f1-a-%d", i)))
		a.add(err)
		mu.Lock()
		slowest = max(slowest, time.Since(start))
		mu.Unlock()
	})
	if a.get(codes.DeadlineExceeded) != 6 {
		t.Fatalf("(a) latency 30 s: %s, want DeadlineExceeded 6", a.String())
	}
	proxyHost := p.Listen
	closedIn := eventually(t, "the gateway closes its connections to the slow upstream", func() bool {
		return poolHost(g.Stats(t), proxyHost).GetActive() == 0
	})
	// Healed: a clean proxy on the same address (removing a toxic from
	// links the gateway dropped can block toxiproxy v2.5.0 for good).
	p.Stop()
	proxyAt(t, p.Listen, hostPort(t, llm.URL))

	// (b) The backend itself is slow: the request must be cancelled there.
	cancelledBefore := llm.cancelled.Load()
	concurrently(6, func(i int) {
		_, _, err := generate(ctxFor(t, 5*time.Second), g, genReq("slow-30000", fmt.Sprintf("f1-b-%d", i)))
		b.add(err)
	})
	if b.get(codes.DeadlineExceeded) != 6 {
		t.Fatalf("(b) backend taking 30 s: %s, want DeadlineExceeded 6", b.String())
	}
	cancelSeen := eventually(t, "the slow backend sees all 6 requests cancelled", func() bool {
		return llm.cancelled.Load()-cancelledBefore == 6 && llm.inFlight.Load() == 0
	})

	st := g.Stats(t)
	br := breakerStats(st, "ollama")
	if br.GetFailures() != 0 || br.GetState() != "closed" {
		t.Fatalf("the caller's deadline was counted: %s", breakerLine(br))
	}
	if stores := st.GetCache().GetStores(); stores != storesBefore {
		t.Fatalf("cache stores went from %d to %d: a timed-out call was cached", storesBefore, stores)
	}
	// Nothing cached: (a)'s prompt goes to the backend again, and answers.
	_, from, err = generate(ctxFor(t, 10*time.Second), g, genReq("m", "f1-a-0"))
	if err != nil || from != "backend" || llm.callsFor("f1-a-0") != 2 {
		t.Fatalf("(a)'s prompt after healing: %v, served from %q, backend calls %d; want OK from the backend, 2 calls",
			err, from, llm.callsFor("f1-a-0"))
	}
	_, _, err = generate(ctxFor(t, 10*time.Second), g, genReq("m", "f1-after"))
	if err != nil {
		t.Fatalf("a new prompt after the fault: %v", err)
	}
	rtAfter := g.Runtime(t)
	record(t, Row{ID: "F1", Measured: fmt.Sprintf(
		"ordinary: OK from backend then cache, 1 backend call. (a) latency 30 s: %s (slowest %s), gateway's upstream connections "+
			"closed %s after; (b) slow backend: %s, 6 of 6 requests cancelled at the backend %s after the last deadline, 0 in flight. "+
			"%s; cache stores %d → %d; (a)'s prompt after healing: 2nd backend call, OK. Backend calls in all: %d. Gateway %s → %s.",
		a.String(), slowest.Round(time.Millisecond), closedIn.Round(time.Millisecond), b.String(), cancelSeen.Round(time.Millisecond),
		breakerLine(br), storesBefore, st.GetCache().GetStores(), llm.calls.Load(), rtBefore, rtAfter)})
}

// TestF2UpstreamHung: an upstream that accepts the connection and never
// answers (toxiproxy timeout toxic, timeout 0). The gateway's own bound
// (Fetch's timeout, VEGA_LLM_TIMEOUT for Generate) fires before the
// caller's deadline and the breaker counts it; a caller's shorter deadline
// is not counted.
func TestF2UpstreamHung(t *testing.T) {
	record(t, Row{ID: "F2",
		Did: "Fetch and Generate through toxiproxy; the gateway's fetch timeout 1 s (VEGA_CONFIG fetch.timeout), VEGA_LLM_TIMEOUT 1 s. " +
			"Ordinary: one Fetch of a page, one Generate. Fault: timeout toxic (timeout 0: data held, connection never closed) on both " +
			"proxies; 6 Fetches of distinct pages with 20 s caller deadlines, one after another; one Generate with a 500 ms deadline, " +
			"then 6 with 20 s deadlines.",
		MustHold: "the gateway's own bound fires (DEADLINE_EXCEEDED 'upstream timed out', well before the caller's 20 s) and the breaker " +
			"counts it: open after 5, the 6th refused at once with UNAVAILABLE + RetryInfo without reaching the upstream; the Generate whose " +
			"own 500 ms deadline ends first is DEADLINE_EXCEEDED and not counted; nothing cached.",
	})
	web := newFakeWeb(t)
	llm := newFakeLLM(t, llmOpts{})
	pw := newProxy(t, hostPort(t, web.URL))
	pl := newProxy(t, hostPort(t, llm.URL))
	g := startGateway(t, merge(roomy, web.env(), map[string]string{
		"VEGA_OLLAMA_URL":  "http://" + pl.Listen,
		"VEGA_LLM_TIMEOUT": "1s",
		"VEGA_CONFIG":      configFile(t, "fetch:\n  timeout: 1s\n"),
	}))
	page := func(i int) string { return fmt.Sprintf("http://%s/page?f2=%d", pw.Listen, i) }

	if _, from, err := fetchURL(ctxFor(t, 20*time.Second), g, page(0)); err != nil || from != "backend" {
		t.Fatalf("ordinary Fetch: %v (served from %q)", err, from)
	}
	if _, _, err := generate(ctxFor(t, 20*time.Second), g, genReq("m", "f2-ordinary")); err != nil {
		t.Fatalf("ordinary Generate: %v", err)
	}
	hitsBefore := web.hits.Load()
	storesBefore := g.Stats(t).GetCache().GetStores()
	addToxic(t, pw, "timeout", "upstream", map[string]any{"timeout": 0})
	addToxic(t, pl, "timeout", "upstream", map[string]any{"timeout": 0})

	// hung makes 6 calls with 20 s deadlines: the first 5 must end by the
	// gateway's own bound, the 6th be refused by the open breaker.
	hung := func(what, breakerKey string, call func(i int) error) (c *codeTally, took []string, refusalTook time.Duration, refusal error) {
		c = &codeTally{}
		for i := 1; i <= 6; i++ {
			start := time.Now()
			err := call(i)
			d := time.Since(start)
			c.add(err)
			took = append(took, d.Round(10*time.Millisecond).String())
			if i <= 5 {
				// The gateway's wording (ErrTimeout), never the caller's "deadline exceeded before the backend answered".
				if status.Code(err) != codes.DeadlineExceeded || !strings.HasPrefix(status.Convert(err).Message(), "upstream timed out") {
					t.Fatalf("hung %s %d: %v, want the gateway's own 1 s bound (DEADLINE_EXCEEDED, upstream timed out)", what, i, err)
				}
				continue
			}
			refusal, refusalTook = err, d
		}
		if status.Code(refusal) != codes.Unavailable || retryDelay(refusal) <= 0 {
			t.Fatalf("6th %s after 5 timeouts: %v, want UNAVAILABLE with RetryInfo from the open breaker", what, refusal)
		}
		if br := breakerStats(g.Stats(t), breakerKey); br.GetState() != "open" || br.GetFailures() != 5 {
			t.Fatalf("%s after 5 upstream timeouts: %s, want open with 5 failures", what, breakerLine(br))
		}
		return c, took, refusalTook, refusal
	}
	fetches, took, refusalTook, refusal := hung("Fetch", "fetch:", func(i int) error {
		_, _, err := fetchURL(ctxFor(t, 20*time.Second), g, page(i))
		return err
	})
	brF := breakerStats(g.Stats(t), "fetch:")
	if hits := web.hits.Load(); hits != hitsBefore {
		t.Fatalf("the hung upstream's server saw %d requests, want 0 (the toxic holds them)", hits-hitsBefore)
	}

	// The caller's own deadline, shorter than the bound: not counted.
	_, _, err := generate(ctxFor(t, 500*time.Millisecond), g, genReq("m", "f2-short-deadline"))
	if status.Code(err) != codes.DeadlineExceeded || strings.HasPrefix(status.Convert(err).Message(), "upstream timed out") {
		t.Fatalf("Generate with a 500 ms deadline against a hung upstream: %v, want the caller's DEADLINE_EXCEEDED", err)
	}
	if br := breakerStats(g.Stats(t), "ollama"); br.GetFailures() != 0 {
		t.Fatalf("the caller's own deadline was counted: %s", breakerLine(br))
	}
	callsBefore := llm.calls.Load()
	gens, gtook, grefusalTook, grefusal := hung("Generate", "ollama", func(i int) error {
		_, _, err := generate(ctxFor(t, 20*time.Second), g, genReq("m", fmt.Sprintf("f2-hung-%d", i)))
		return err
	})
	if calls := llm.calls.Load(); calls != callsBefore {
		t.Fatalf("the hung LLM server saw %d requests, want 0 (the toxic holds them)", calls-callsBefore)
	}
	st := g.Stats(t)
	brL := breakerStats(st, "ollama")
	if stores := st.GetCache().GetStores(); stores != storesBefore {
		t.Fatalf("cache stores %d → %d during the hang", storesBefore, stores)
	}
	record(t, Row{ID: "F2", Measured: fmt.Sprintf(
		"Fetch: %s; durations %s (caller deadline 20 s); 6th refused by the open breaker in %s, RetryInfo %s; %s. Generate: the 500 ms "+
			"caller deadline → DeadlineExceeded, not counted; then %s, durations %s; 6th refused in %s, RetryInfo %s; %s. Upstream "+
			"servers saw 0 requests during the hang; cache stores unchanged (%d). Gateway %s.",
		fetches.String(), strings.Join(took, ", "), refusalTook.Round(time.Millisecond), retryDelay(refusal), breakerLine(brF),
		gens.String(), strings.Join(gtook, ", "), grefusalTook.Round(time.Millisecond), retryDelay(grefusal), breakerLine(brL),
		storesBefore, g.Runtime(t))})
}

// streamAll reads a GenerateStream to its end: the text received, whether
// a done chunk came, and the stream's final error (nil for a clean end).
func streamAll(ctx context.Context, g *gateway, model, prompt string) (text string, done bool, err error) {
	s, err := vegav1.NewGenerateServiceClient(g.Conn()).GenerateStream(ctxWithKey(ctx, keyA),
		&vegav1.GenerateStreamRequest{Model: model, Prompt: prompt})
	if err != nil {
		return "", false, err
	}
	var b strings.Builder
	for {
		m, err := s.Recv()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b.String(), done, err
		}
		b.WriteString(m.GetText())
		done = done || m.GetDone()
	}
}

// TestF5ResetMidBody: the upstream's answer is cut mid-body. The caller
// gets an error, never a short answer passed off as complete, and nothing
// partial is cached.
func TestF5ResetMidBody(t *testing.T) {
	record(t, Row{ID: "F5",
		Did: "Fetch of a 100 KB page (Content-Length) and Generate/GenerateStream of a ~120 KB answer through toxiproxy. Ordinary: the " +
			"100 KB page in full. Fault: limit_data 1 KB on the answers (the connection closes after 1 KB); for Fetch also bandwidth " +
			"100 KB/s + reset_peer after 300 ms (RST mid-body). Then clean proxies in place of the faulty ones and the same requests again.",
		MustHold: "every cut call is UNAVAILABLE (a stream ends with UNAVAILABLE, never a clean end); no truncated OK; cache stores unchanged " +
			"by the faults; after healing the same requests reach the backend again and return the whole body.",
	})
	web := newFakeWeb(t)
	llm := newFakeLLM(t, llmOpts{Words: 20000})
	// One proxy per fault, its toxics never removed (see TestF6SlowDrip);
	// healing = a clean proxy on the faulty one's address.
	pw := newProxy(t, hostPort(t, web.URL))
	pr := newProxy(t, hostPort(t, web.URL))
	pl := newProxy(t, hostPort(t, llm.URL))
	g := startGateway(t, merge(roomy, web.env(), map[string]string{"VEGA_OLLAMA_URL": "http://" + pl.Listen}))
	const size = 100 << 10
	big := func(tag string) string { return fmt.Sprintf("http://%s/big?n=%d&f5=%s", pw.Listen, size, tag) }

	resp, _, err := fetchURL(ctxFor(t, 20*time.Second), g, big("ordinary"))
	if err != nil || len(resp.GetBody()) != size || resp.GetTruncated() {
		t.Fatalf("ordinary 100 KB Fetch: %v, %d bytes, truncated %v", err, len(resp.GetBody()), resp.GetTruncated())
	}
	storesBefore := g.Stats(t).GetCache().GetStores()
	hitsBefore := web.hits.Load()

	var fetches, gens, streams codeTally
	addToxic(t, pw, "limit_data", "downstream", map[string]any{"bytes": 1024})
	resp, _, err = fetchURL(ctxFor(t, 20*time.Second), g, big("cut"))
	if fetches.add(err) != codes.Unavailable {
		t.Fatalf("Fetch cut at 1 KB: %v (%d bytes), want UNAVAILABLE", err, len(resp.GetBody()))
	}
	addToxic(t, pr, "bandwidth", "downstream", map[string]any{"rate": 100})
	addToxic(t, pr, "reset_peer", "downstream", map[string]any{"timeout": 300})
	resp, _, err = fetchURL(ctxFor(t, 20*time.Second), g, fmt.Sprintf("http://%s/big?n=%d&f5=reset", pr.Listen, size))
	if fetches.add(err) != codes.Unavailable {
		t.Fatalf("Fetch reset mid-body: %v (%d bytes), want UNAVAILABLE", err, len(resp.GetBody()))
	}

	addToxic(t, pl, "limit_data", "downstream", map[string]any{"bytes": 1024})
	gr, _, err := generate(ctxFor(t, 20*time.Second), g, genReq("m", "f5-unary"))
	if gens.add(err) != codes.Unavailable {
		t.Fatalf("Generate cut at 1 KB: %v (%d bytes of text), want UNAVAILABLE", err, len(gr.GetText()))
	}
	text, done, err := streamAll(ctxFor(t, 20*time.Second), g, "m", "f5-stream")
	if streams.add(err) != codes.Unavailable || done {
		t.Fatalf("GenerateStream cut at 1 KB: %v, done=%v after %d bytes, want UNAVAILABLE and no done", err, done, len(text))
	}
	streamedBeforeCut := len(text)
	pw.Stop()
	proxyAt(t, pw.Listen, hostPort(t, web.URL))
	pl.Stop()
	proxyAt(t, pl.Listen, hostPort(t, llm.URL))

	st := g.Stats(t)
	if stores := st.GetCache().GetStores(); stores != storesBefore {
		t.Fatalf("cache stores %d → %d: a cut answer was cached", storesBefore, stores)
	}
	// Healed: the same requests go to the backends again and come whole.
	resp, from, err := fetchURL(ctxFor(t, 20*time.Second), g, big("cut"))
	if err != nil || from != "backend" || len(resp.GetBody()) != size {
		t.Fatalf("the cut page after healing: %v, from %q, %d bytes; want the whole page from the backend", err, from, len(resp.GetBody()))
	}
	gr, from, err = generate(ctxFor(t, 20*time.Second), g, genReq("m", "f5-unary"))
	if err != nil || from != "backend" || llm.callsFor("f5-unary") != 2 || len(gr.GetText()) < size {
		t.Fatalf("the cut Generate after healing: %v, from %q, %d backend calls, %d bytes", err, from, llm.callsFor("f5-unary"), len(gr.GetText()))
	}
	record(t, Row{ID: "F5", Measured: fmt.Sprintf(
		"Fetch (limit_data 1 KB; RST after 300 ms at 100 KB/s): %s; Generate cut at 1 KB: %s; GenerateStream cut at 1 KB: %s after %d bytes "+
			"of text streamed, no done chunk. Cache stores %d → %d. Healed: the cut page from the backend in full (%d bytes), the cut prompt's "+
			"2nd backend call OK (%d bytes). Fetch server requests %d, LLM calls %d; %s.",
		fetches.String(), gens.String(), streams.String(), streamedBeforeCut, storesBefore, st.GetCache().GetStores(), len(resp.GetBody()),
		len(gr.GetText()), web.hits.Load()-hitsBefore+1, llm.calls.Load(), breakersLine(st, "fetch:"))})
}

// TestF6SlowDrip: an answer that trickles in (bandwidth 1 KB/s; slicer
// with delays). Fetch's overall timeout fires; nothing is cached.
func TestF6SlowDrip(t *testing.T) {
	record(t, Row{ID: "F6",
		Did: "Fetch through toxiproxy, the gateway's fetch timeout 2 s (VEGA_CONFIG). Ordinary: a small page at 1 KB/s. Fault: a 100 KB page " +
			"at 1 KB/s (bandwidth); a 100 KB page in 64±32-byte slices 20 ms apart (slicer, ~32 s in all); Generate of a ~120 KB answer at " +
			"1 KB/s with a 3 s deadline. Then a clean proxy in place of the first and the first page again.",
		MustHold: "the small page is served; each drip ends with DEADLINE_EXCEEDED from the gateway's overall bound ('upstream timed out', " +
			"not the caller's 20 s deadline), the Generate at its caller's deadline; no partial answer; nothing cached (the page reaches " +
			"the server again after healing).",
	})
	web := newFakeWeb(t)
	llm := newFakeLLM(t, llmOpts{Words: 20000})
	// One proxy per drip, its toxic never removed: toxiproxy v2.5.0 can
	// block for good when a toxic is added to or removed from a proxy
	// whose link the gateway dropped mid-drip.
	pw := newProxy(t, hostPort(t, web.URL))
	ps := newProxy(t, hostPort(t, web.URL))
	pl := newProxy(t, hostPort(t, llm.URL))
	g := startGateway(t, merge(roomy, web.env(), map[string]string{
		"VEGA_OLLAMA_URL": "http://" + pl.Listen,
		"VEGA_CONFIG":     configFile(t, "fetch:\n  timeout: 2s\n"),
	}))
	big := func(p *toxiproxy.Proxy, tag string) string {
		return fmt.Sprintf("http://%s/big?n=%d&f6=%s", p.Listen, 100<<10, tag)
	}

	addToxic(t, pw, "bandwidth", "downstream", map[string]any{"rate": 1})
	addToxic(t, ps, "slicer", "downstream", map[string]any{"average_size": 64, "size_variation": 32, "delay": 20000})
	addToxic(t, pl, "bandwidth", "downstream", map[string]any{"rate": 1})
	start := time.Now()
	if _, _, err := fetchURL(ctxFor(t, 20*time.Second), g, "http://"+pw.Listen+"/page"); err != nil {
		t.Fatalf("a small page at 1 KB/s: %v", err)
	}
	smallTook := time.Since(start)
	storesBefore := g.Stats(t).GetCache().GetStores()

	var drips codeTally
	var took []string
	expectTimeout := func(what string, err error, d time.Duration) {
		t.Helper()
		drips.add(err)
		took = append(took, what+" "+d.Round(10*time.Millisecond).String())
		if status.Code(err) != codes.DeadlineExceeded || !strings.HasPrefix(status.Convert(err).Message(), "upstream timed out") {
			t.Fatalf("%s: %v, want the gateway's own timeout (DEADLINE_EXCEEDED, 'upstream timed out')", what, err)
		}
	}
	start = time.Now()
	_, _, err := fetchURL(ctxFor(t, 20*time.Second), g, big(pw, "bandwidth"))
	expectTimeout("bandwidth", err, time.Since(start))
	start = time.Now()
	_, _, err = fetchURL(ctxFor(t, 20*time.Second), g, big(ps, "slicer"))
	expectTimeout("slicer", err, time.Since(start))

	var gens codeTally
	_, _, err = generate(ctxFor(t, 3*time.Second), g, genReq("m", "f6-drip"))
	if gens.add(err) != codes.DeadlineExceeded {
		t.Fatalf("Generate at 1 KB/s with a 3 s deadline: %v, want DEADLINE_EXCEEDED", err)
	}

	st := g.Stats(t)
	if stores := st.GetCache().GetStores(); stores != storesBefore {
		t.Fatalf("cache stores %d → %d: a dripped answer was cached", storesBefore, stores)
	}
	// Healed: the drip's proxy goes, a clean one takes its address, and
	// the same URL must reach the server again.
	pw.Stop()
	proxyAt(t, pw.Listen, hostPort(t, web.URL))
	hits := web.hits.Load()
	resp, from, err := fetchURL(ctxFor(t, 20*time.Second), g, big(pw, "bandwidth"))
	if err != nil || from != "backend" || len(resp.GetBody()) != 100<<10 || web.hits.Load() != hits+1 {
		t.Fatalf("the dripped page after healing: %v, from %q, %d bytes", err, from, len(resp.GetBody()))
	}
	record(t, Row{ID: "F6", Measured: fmt.Sprintf(
		"small page at 1 KB/s: OK in %s. Drips: %s (%s; caller deadline 20 s); Generate at 1 KB/s: %s at its 3 s deadline; %s; "+
			"%s. Cache stores %d → %d; after healing the page came whole from the server (%d bytes).",
		smallTook.Round(time.Millisecond), drips.String(), strings.Join(took, ", "), gens.String(),
		breakersLine(st, "fetch:"), breakerLine(breakerStats(st, "ollama")), storesBefore, st.GetCache().GetStores(),
		len(resp.GetBody()))})
}

// TestF13DNSFailure: Fetch of a host name that does not exist (NXDOMAIN
// from the machine's resolver for *.invalid, RFC 6761). The caller's
// mistake: INVALID_ARGUMENT, never counted by the host's breaker.
func TestF13DNSFailure(t *testing.T) {
	record(t, Row{ID: "F13",
		Did: "Fetch http://vega-faults-f13.invalid/ (NXDOMAIN from the system resolver) 8 times, one after another; a Fetch of a real " +
			"(loopback) page before and after.",
		MustHold: "INVALID_ARGUMENT every time, naming the missing host without its URL; the breaker for that host counts 0 failures and " +
			"never opens (8 > the 5 that would open it); the ordinary Fetch is served.",
	})
	web := newFakeWeb(t)
	g := startGateway(t, merge(web.env()))
	if _, _, err := fetchURL(ctxFor(t, 20*time.Second), g, web.URL+"/page"); err != nil {
		t.Fatalf("ordinary Fetch: %v", err)
	}
	var c codeTally
	var msg string
	for range 8 {
		_, _, err := fetchURL(ctxFor(t, 20*time.Second), g, "http://vega-faults-f13.invalid/secret-path")
		if c.add(err) != codes.InvalidArgument {
			t.Fatalf("NXDOMAIN: %v, want INVALID_ARGUMENT", err)
		}
		msg = status.Convert(err).Message()
	}
	if strings.Contains(msg, "secret-path") {
		t.Fatalf("the error repeats the URL: %q", msg)
	}
	st := g.Stats(t)
	br := breakerStats(st, "fetch:vega-faults-f13.invalid")
	if br.GetFailures() != 0 || br.GetState() == "open" {
		t.Fatalf("NXDOMAIN was counted: %s", breakerLine(br))
	}
	if _, _, err := fetchURL(ctxFor(t, 20*time.Second), g, web.URL+"/page?after"); err != nil {
		t.Fatalf("ordinary Fetch after: %v", err)
	}
	record(t, Row{ID: "F13", Measured: fmt.Sprintf("%s; message %q; %s; ordinary Fetch before and after: OK.", c.String(), msg, breakerLine(br))})
}
