package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a manual clock so that the token bucket and the outage window
// are deterministic.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestFake(s settings) (*fake, *clock) {
	if s.Tokens == 0 {
		s.Tokens = 16
	}
	if s.RetryAfter == 0 {
		s.RetryAfter = 1
	}
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	return newFake(s, c.now), c
}

func do(t *testing.T, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	return doCtx(t, context.Background(), h, method, path, body)
}

func doCtx(t *testing.T, ctx context.Context, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func statsOf(t *testing.T, h http.Handler) statsJSON {
	t.Helper()
	rec := do(t, h, http.MethodGet, "/_fake/stats", "")
	require.Equal(t, http.StatusOK, rec.Code)
	var s statsJSON
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &s))
	return s
}

type ollamaLine struct {
	Model    string `json:"model"`
	Response string `json:"response"`
	Message  *struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"message"`
	Done       bool   `json:"done"`
	DoneReason string `json:"done_reason"`
	EvalCount  int    `json:"eval_count"`
}

func TestOllamaGenerateJSON(t *testing.T) {
	f, _ := newTestFake(settings{Tokens: 7})
	h := f.Handler()
	body := `{"model":"llama3","prompt":"why is the sky blue","stream":false}`
	rec := do(t, h, http.MethodPost, "/api/generate", body)
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Header().Get("Content-Type"), "application/json")
	dec := json.NewDecoder(rec.Body)
	var got ollamaLine
	require.NoError(t, dec.Decode(&got))
	assert.False(t, dec.More(), "one JSON object only")
	assert.True(t, got.Done)
	assert.Equal(t, "stop", got.DoneReason)
	assert.Equal(t, "llama3", got.Model)
	assert.Len(t, strings.Fields(got.Response), 7)
	assert.Equal(t, 7, got.EvalCount)

	again := do(t, h, http.MethodPost, "/api/generate", body)
	var got2 ollamaLine
	require.NoError(t, json.Unmarshal(again.Body.Bytes(), &got2))
	assert.Equal(t, got.Response, got2.Response, "text is deterministic from the prompt")
	other := do(t, h, http.MethodPost, "/api/generate", `{"model":"llama3","prompt":"something else","stream":false}`)
	assert.NotEqual(t, rec.Body.String(), other.Body.String())
}

func TestOllamaChatNDJSON(t *testing.T) {
	f, _ := newTestFake(settings{Tokens: 5})
	rec := do(t, f.Handler(), http.MethodPost, "/api/chat",
		`{"model":"llama3","messages":[{"role":"user","content":"hi there"}]}`) // streams by default
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/x-ndjson", rec.Header().Get("Content-Type"))
	var lines []ollamaLine
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		var l ollamaLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), sc.Text())
		lines = append(lines, l)
	}
	require.Len(t, lines, 6)
	var text strings.Builder
	for i, l := range lines {
		require.NotNil(t, l.Message)
		assert.Equal(t, "assistant", l.Message.Role)
		assert.Equal(t, i == len(lines)-1, l.Done, "only the last line is done")
		text.WriteString(l.Message.Content)
	}
	assert.Len(t, strings.Fields(text.String()), 5)
	assert.Equal(t, 5, lines[5].EvalCount)
}

func TestOpenAIJSON(t *testing.T) {
	f, _ := newTestFake(settings{Tokens: 4})
	rec := do(t, f.Handler(), http.MethodPost, "/v1/chat/completions",
		`{"model":"gpt","messages":[{"role":"user","content":"hello"}]}`)
	require.Equal(t, http.StatusOK, rec.Code)
	var got struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	assert.Equal(t, "chat.completion", got.Object)
	assert.Equal(t, "gpt", got.Model)
	require.Len(t, got.Choices, 1)
	assert.Equal(t, "assistant", got.Choices[0].Message.Role)
	assert.Equal(t, "stop", got.Choices[0].FinishReason)
	assert.Len(t, strings.Fields(got.Choices[0].Message.Content), 4)
	assert.Equal(t, 1, got.Usage.PromptTokens)
	assert.Equal(t, 4, got.Usage.CompletionTokens)

	bad := do(t, f.Handler(), http.MethodPost, "/v1/chat/completions", `{"model":"gpt"}`)
	assert.Equal(t, http.StatusBadRequest, bad.Code)
}

func TestOpenAISSE(t *testing.T) {
	f, _ := newTestFake(settings{Tokens: 3})
	rec := do(t, f.Handler(), http.MethodPost, "/v1/chat/completions",
		`{"model":"gpt","stream":true,"messages":[{"role":"user","content":"hello"}]}`)
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "text/event-stream", rec.Header().Get("Content-Type"))
	var events []string
	for _, block := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n\n") {
		data, ok := strings.CutPrefix(block, "data: ")
		require.True(t, ok, block)
		events = append(events, data)
	}
	require.NotEmpty(t, events)
	assert.Equal(t, "[DONE]", events[len(events)-1])
	var text strings.Builder
	finished := false
	for _, e := range events[:len(events)-1] {
		var chunk struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		require.NoError(t, json.Unmarshal([]byte(e), &chunk), e)
		assert.Equal(t, "chat.completion.chunk", chunk.Object)
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
			if c.FinishReason != nil && *c.FinishReason == "stop" {
				finished = true
			}
		}
	}
	assert.True(t, finished)
	assert.Len(t, strings.Fields(text.String()), 3)
}

func TestSlackAndPages(t *testing.T) {
	f, _ := newTestFake(settings{})
	h := f.Handler()
	rec := do(t, h, http.MethodPost, "/services/T000/B000/XXXX", `{"text":"hi"}`)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "ok", rec.Body.String())

	rec = do(t, h, http.MethodGet, "/some/page?q=1", "")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Header().Get("Content-Type"), "text/html")
	assert.Contains(t, rec.Body.String(), "<html>")

	rec = do(t, h, http.MethodHead, "/some/page", "")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Header().Get("Content-Type"), "text/html")
}

func TestCapacityAnswers429WithRetryAfter(t *testing.T) {
	f, clk := newTestFake(settings{Capacity: 5, RetryAfter: 2})
	h := f.Handler()
	codes := map[int]int{}
	for range 20 {
		rec := do(t, h, http.MethodGet, "/", "")
		codes[rec.Code]++
		if rec.Code == http.StatusTooManyRequests {
			assert.Equal(t, "2", rec.Header().Get("Retry-After"))
		}
	}
	assert.Equal(t, map[int]int{200: 5, 429: 15}, codes)

	clk.advance(time.Second) // a second later, another 5
	codes = map[int]int{}
	for range 20 {
		codes[do(t, h, http.MethodGet, "/", "").Code]++
	}
	assert.Equal(t, map[int]int{200: 5, 429: 15}, codes)
	s := statsOf(t, h)
	assert.Equal(t, int64(40), s.Requests)
	assert.Equal(t, map[string]int64{"200": 10, "429": 30}, s.ByStatus)
}

func TestConfigHalvesCapacityLive(t *testing.T) {
	f, clk := newTestFake(settings{Capacity: 10})
	h := f.Handler()
	burst := func() int {
		ok := 0
		for range 20 {
			if do(t, h, http.MethodGet, "/", "").Code == http.StatusOK {
				ok++
			}
		}
		return ok
	}
	assert.Equal(t, 10, burst())
	clk.advance(time.Second)

	rec := do(t, h, http.MethodPost, "/_fake/config", `{"capacity":5,"latency_ms":0}`)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.Equal(t, 5.0, statsOf(t, h).Capacity)
	assert.Equal(t, 5, burst(), "the saved tokens are clamped to the new burst")
	clk.advance(time.Second)
	assert.Equal(t, 5, burst())

	require.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/_fake/config", `{"capacity":0}`).Code)
	assert.Equal(t, 20, burst(), "0 = unlimited")

	assert.Equal(t, http.StatusBadRequest, do(t, h, http.MethodPost, "/_fake/config", `{"capacity":-1}`).Code)
	assert.Equal(t, http.StatusBadRequest, do(t, h, http.MethodPost, "/_fake/config", `{"capacty":1}`).Code)
}

// waitFor polls cond for up to a second, in steps of a few milliseconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

func TestConcurrencyLimitAnswers503(t *testing.T) {
	f, _ := newTestFake(settings{Concurrency: 1, Latency: time.Minute})
	h := f.Handler()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		done <- rec.Code
	}()
	waitFor(t, func() bool { return f.pool.inUse() == 1 })

	rec := do(t, h, http.MethodGet, "/", "")
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, int64(1), statsOf(t, h).InFlight)

	cancel() // the latency wait stops with the request context
	<-done
	s := statsOf(t, h)
	assert.Equal(t, int64(0), s.InFlight)
	assert.Equal(t, map[string]int64{"503": 1, "499": 1}, s.ByStatus)
	assert.Equal(t, 0, f.pool.inUse())
}

func TestConcurrencyQueue(t *testing.T) {
	f, _ := newTestFake(settings{Concurrency: 1, Queue: true, Latency: time.Minute})
	h := f.Handler()
	ctxA, cancelA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() {
		defer close(doneA)
		doCtx(t, ctxA, h, http.MethodGet, "/", "")
	}()
	waitFor(t, func() bool { return f.pool.inUse() == 1 })

	require.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/_fake/config", `{"latency_ms":0}`).Code)
	doneB := make(chan int)
	go func() { doneB <- do(t, h, http.MethodGet, "/", "").Code }()
	waitFor(t, func() bool { return f.inFlight.Load() == 2 })
	select {
	case <-doneB:
		t.Fatal("B should wait for the worker")
	case <-time.After(20 * time.Millisecond):
	}
	cancelA()
	<-doneA
	assert.Equal(t, http.StatusOK, <-doneB, "B got A's worker")
	assert.Equal(t, 0, f.pool.inUse())

	// A queued request whose client gives up leaves no slot behind.
	require.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/_fake/config", `{"latency_ms":60000}`).Code)
	ctxC, cancelC := context.WithCancel(context.Background())
	doneC := make(chan struct{})
	go func() { defer close(doneC); doCtx(t, ctxC, h, http.MethodGet, "/", "") }()
	waitFor(t, func() bool { return f.pool.inUse() == 1 })
	ctxD, cancelD := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelD()
	assert.Equal(t, http.StatusServiceUnavailable, doCtx(t, ctxD, h, http.MethodGet, "/", "").Code)
	cancelC()
	<-doneC
	assert.Equal(t, 0, f.pool.inUse())
}

func TestFailRate(t *testing.T) {
	f, _ := newTestFake(settings{FailRate: 0.5})
	h := f.Handler()
	var codes []int
	for range 100 {
		codes = append(codes, do(t, h, http.MethodPost, "/hook", "{}").Code)
	}
	n500 := 0
	for i, c := range codes {
		if c == http.StatusInternalServerError {
			n500++
			assert.Equal(t, 1, i%2, "every second request fails")
		}
	}
	assert.Equal(t, 50, n500)
	assert.Equal(t, map[string]int64{"200": 50, "500": 50}, statsOf(t, h).ByStatus)

	for _, rate := range []float64{0.1, 0.25, 1.0 / 3, 0.9} {
		got := 0
		for n := int64(1); n <= 300; n++ {
			if failNow(n, rate) {
				got++
			}
		}
		assert.Equal(t, int(300*rate+1e-9), got, "rate %g", rate)
	}
}

func TestOutage(t *testing.T) {
	f, clk := newTestFake(settings{OutageFrom: 10 * time.Second, OutageTo: 20 * time.Second})
	h := f.Handler()
	assert.Equal(t, http.StatusOK, do(t, h, http.MethodGet, "/", "").Code)
	clk.advance(15 * time.Second)
	assert.Equal(t, http.StatusServiceUnavailable, do(t, h, http.MethodGet, "/", "").Code)
	assert.True(t, statsOf(t, h).Outage)
	clk.advance(10 * time.Second)
	assert.Equal(t, http.StatusOK, do(t, h, http.MethodGet, "/", "").Code)

	require.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/_fake/config", `{"outage":true}`).Code)
	assert.Equal(t, http.StatusServiceUnavailable, do(t, h, http.MethodPost, "/api/generate", `{}`).Code)
	require.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/_fake/config", `{"outage":false}`).Code)
	assert.Equal(t, http.StatusOK, do(t, h, http.MethodGet, "/", "").Code)
}

func TestLatencyStopsWithContext(t *testing.T) {
	f, _ := newTestFake(settings{Latency: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	doCtx(t, ctx, f.Handler(), http.MethodGet, "/", "")
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Equal(t, map[string]int64{"499": 1}, statsOf(t, f.Handler()).ByStatus)
}

func TestStatsCountsConnectionsAndReset(t *testing.T) {
	f, _ := newTestFake(settings{Latency: time.Millisecond})
	srv := httptest.NewUnstartedServer(f.Handler())
	srv.Config.ConnState = f.ConnState
	srv.Start()
	defer srv.Close()

	get := func(c *http.Client, path string) int {
		resp, err := c.Get(srv.URL + path)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode
	}
	keepAlive := &http.Transport{}
	defer keepAlive.CloseIdleConnections()
	c := &http.Client{Transport: keepAlive}
	for range 3 {
		assert.Equal(t, http.StatusOK, get(c, "/page"))
	}
	assert.Equal(t, http.StatusNotFound, get(c, "/_fake/nothing")) // reserved, not counted
	noReuse := &http.Transport{DisableKeepAlives: true}
	c2 := &http.Client{Transport: noReuse}
	for range 2 {
		assert.Equal(t, http.StatusOK, get(c2, "/page"))
	}

	resp, err := c.Get(srv.URL + "/_fake/stats")
	require.NoError(t, err)
	var s statsJSON
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, int64(5), s.Requests)
	assert.Equal(t, map[string]int64{"200": 5}, s.ByStatus)
	assert.Equal(t, int64(3), s.NewConnections, "one kept-alive connection plus two one-shot ones")
	assert.GreaterOrEqual(t, s.ActiveConnections, int64(1))
	assert.Equal(t, 1.0, s.LatencyMS)

	resp, err = c.Post(srv.URL+"/_fake/reset", "application/json", nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	s = statsOf(t, f.Handler())
	assert.Equal(t, int64(0), s.Requests)
	assert.Empty(t, s.ByStatus)
	assert.Equal(t, int64(0), s.NewConnections)
}
