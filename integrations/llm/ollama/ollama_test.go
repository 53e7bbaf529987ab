package ollama_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/llm"
	"github.com/vega-gateway/vega/integrations/llm/ollama"
)

const backend = "test-ollama"

// recorded is what the fake server received.
type recorded struct {
	method, path, contentType string
	body                      string
}

// fake starts a fake Ollama server answering with h and returns a client
// for it and the requests it receives, in order.
func fake(t *testing.T, h http.HandlerFunc) (*ollama.Client, <-chan recorded, *httptest.Server) {
	t.Helper()
	reqs := make(chan recorded, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		reqs <- recorded{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"), body: string(body)}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := ollama.New(backend, srv.URL, srv.Client())
	require.NoError(t, err)
	return c, reqs, srv
}

// reply answers with status and body.
func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// ndjson answers with the lines, flushing after each.
func ndjson(lines ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, l := range lines {
			_, _ = io.WriteString(w, l+"\n")
			w.(http.Flusher).Flush()
		}
	}
}

// blockUntilDone stops a handler until the client goes away or the test
// ends, so slow handlers never outlive their test.
func blockUntilDone(t *testing.T, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-t.Context().Done():
	}
}

func ptr[T any](v T) *T { return &v }

func collect(chunks *[]llm.Chunk) llm.ChunkFunc {
	return func(c llm.Chunk) error {
		*chunks = append(*chunks, c)
		return nil
	}
}

func TestGenerate(t *testing.T) {
	c, reqs, _ := fake(t, reply(200, `{"model":"llama3:8b","created_at":"2026-01-01T00:00:00Z","response":"Paris is the capital.","done":true,"done_reason":"length","prompt_eval_count":12,"eval_count":5}`))

	resp, err := c.Generate(context.Background(), &llm.Request{
		Model:  "llama3",
		Prompt: "Capital of France?",
		Options: llm.Options{
			Temperature: ptr(0.0),
			TopP:        ptr(0.9),
			MaxTokens:   64,
			Seed:        ptr(int64(7)),
			Stop:        []string{"\n\n", "END"},
		},
	})
	require.NoError(t, err)
	assert.Equal(t, &llm.Response{
		Text:         "Paris is the capital.",
		Model:        "llama3:8b",
		FinishReason: "length",
		Usage:        llm.Usage{PromptTokens: 12, CompletionTokens: 5},
	}, resp)

	got := <-reqs
	assert.Equal(t, http.MethodPost, got.method)
	assert.Equal(t, "/api/generate", got.path)
	assert.Equal(t, "application/json", got.contentType)
	assert.JSONEq(t, `{
		"model": "llama3",
		"prompt": "Capital of France?",
		"stream": false,
		"options": {"temperature": 0, "top_p": 0.9, "num_predict": 64, "seed": 7, "stop": ["\n\n", "END"]}
	}`, got.body)
}

func TestGenerateSendsOnlySetOptions(t *testing.T) {
	c, reqs, _ := fake(t, reply(200, `{"model":"m","response":"ok","done":true}`))
	ctx := context.Background()

	resp, err := c.Generate(ctx, &llm.Request{Model: "m", Prompt: "hi"})
	require.NoError(t, err)
	assert.Equal(t, "stop", resp.FinishReason, "done without done_reason is a natural stop")
	assert.JSONEq(t, `{"model":"m","prompt":"hi","stream":false}`, (<-reqs).body)

	_, err = c.Generate(ctx, &llm.Request{Model: "m", Prompt: "hi", Options: llm.Options{MaxTokens: 3}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"model":"m","prompt":"hi","stream":false,"options":{"num_predict":3}}`, (<-reqs).body)
}

func TestGenerateChat(t *testing.T) {
	c, reqs, _ := fake(t, reply(200, `{"model":"m","message":{"role":"assistant","content":"Hello!"},"done":true,"done_reason":"stop","prompt_eval_count":9,"eval_count":2}`))

	resp, err := c.Generate(context.Background(), &llm.Request{
		Model: "m",
		Messages: []llm.Message{
			{Role: "system", Content: "Be brief."},
			{Role: "user", Content: "Greet me."},
		},
		Options: llm.Options{Temperature: ptr(0.2)},
	})
	require.NoError(t, err)
	assert.Equal(t, &llm.Response{Text: "Hello!", Model: "m", FinishReason: "stop", Usage: llm.Usage{PromptTokens: 9, CompletionTokens: 2}}, resp)

	got := <-reqs
	assert.Equal(t, "/api/chat", got.path)
	assert.JSONEq(t, `{
		"model": "m",
		"messages": [{"role":"system","content":"Be brief."},{"role":"user","content":"Greet me."}],
		"stream": false,
		"options": {"temperature": 0.2}
	}`, got.body)
}

func TestGenerateUsesRequestModelWhenAnswerHasNone(t *testing.T) {
	c, _, _ := fake(t, reply(200, `{"response":"x","done":true}`))
	resp, err := c.Generate(context.Background(), &llm.Request{Model: "asked", Prompt: "p"})
	require.NoError(t, err)
	assert.Equal(t, "asked", resp.Model)
}

func TestStream(t *testing.T) {
	c, reqs, _ := fake(t, ndjson(
		`{"model":"m","response":"Par","done":false}`,
		`{"model":"m","response":"","done":false}`,
		`{"model":"m","response":"is","done":false}`,
		`{"model":"m","response":".","done":false}`,
		`{"model":"m","response":"","done":true,"done_reason":"stop","prompt_eval_count":4,"eval_count":3}`,
	))

	var chunks []llm.Chunk
	err := c.Stream(context.Background(), &llm.Request{Model: "m", Prompt: "Capital?", Options: llm.Options{MaxTokens: 10}}, collect(&chunks))
	require.NoError(t, err)
	assert.Equal(t, []llm.Chunk{
		{Text: "Par"},
		{Text: "is"},
		{Text: "."},
		{Done: true, FinishReason: "stop", Usage: llm.Usage{PromptTokens: 4, CompletionTokens: 3}},
	}, chunks)

	got := <-reqs
	assert.Equal(t, "/api/generate", got.path)
	assert.JSONEq(t, `{"model":"m","prompt":"Capital?","stream":true,"options":{"num_predict":10}}`, got.body)
}

func TestStreamChat(t *testing.T) {
	c, reqs, _ := fake(t, ndjson(
		`{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}`,
		`{"model":"m","message":{"role":"assistant","content":" there"},"done":false}`,
		`{"model":"m","message":{"role":"assistant","content":"!"},"done":true,"done_reason":"length","prompt_eval_count":6,"eval_count":3}`,
	))

	var chunks []llm.Chunk
	err := c.Stream(context.Background(), &llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hello"}}}, collect(&chunks))
	require.NoError(t, err)
	assert.Equal(t, []llm.Chunk{
		{Text: "Hi"},
		{Text: " there"},
		{Text: "!", Done: true, FinishReason: "length", Usage: llm.Usage{PromptTokens: 6, CompletionTokens: 3}},
	}, chunks)

	got := <-reqs
	assert.Equal(t, "/api/chat", got.path)
	assert.JSONEq(t, `{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":true}`, got.body)
}

func TestStreamErrorLine(t *testing.T) {
	c, _, _ := fake(t, ndjson(
		`{"response":"a","done":false}`,
		`{"error":"llama runner process has terminated: signal: killed"}`,
		`{"response":"never","done":false}`,
	))

	var chunks []llm.Chunk
	err := c.Stream(context.Background(), &llm.Request{Model: "m", Prompt: "p"}, collect(&chunks))
	require.ErrorIs(t, err, integrations.ErrBadResponse)
	assert.Contains(t, err.Error(), backend)
	assert.Contains(t, err.Error(), "llama runner process has terminated: signal: killed")
	assert.Equal(t, []llm.Chunk{{Text: "a"}}, chunks, "no chunk after the error, and no Done chunk")
}

func TestStreamBadEnds(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name  string
		lines []string
	}{
		{"no done line", []string{`{"response":"a","done":false}`, `{"response":"b","done":false}`}},
		{"empty body", nil},
		{"malformed line", []string{`{"response":"a","done":false}`, `{"response": nope}`}},
		{"long error line", []string{`{"error":"` + long + `"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := fake(t, ndjson(tt.lines...))
			var chunks []llm.Chunk
			err := c.Stream(context.Background(), &llm.Request{Model: "m", Prompt: "p"}, collect(&chunks))
			require.ErrorIs(t, err, integrations.ErrBadResponse)
			for _, ch := range chunks {
				assert.False(t, ch.Done, "a broken stream must not end with a Done chunk")
			}
			assert.Less(t, len(err.Error()), 300, "upstream text is cut")
		})
	}
}

func TestStreamCallbackErrorStops(t *testing.T) {
	c, _, _ := fake(t, ndjson(
		`{"response":"a","done":false}`,
		`{"response":"b","done":false}`,
		`{"response":"","done":true}`,
	))
	errStop := errors.New("client went away")
	calls := 0
	err := c.Stream(context.Background(), &llm.Request{Model: "m", Prompt: "p"}, func(llm.Chunk) error {
		calls++
		return errStop
	})
	assert.Same(t, errStop, err)
	assert.Equal(t, 1, calls)
}

func TestStatusErrors(t *testing.T) {
	long := strings.Repeat("y", 500)
	tests := []struct {
		name string
		h    http.HandlerFunc
		want integrations.StatusError
	}{
		{
			name: "model not found",
			h:    reply(404, `{"error":"model \"x\" not found"}`),
			want: integrations.StatusError{Backend: backend, StatusCode: 404, Message: `model "x" not found`},
		},
		{
			name: "rate limited",
			h: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "2")
				w.WriteHeader(429)
				_, _ = io.WriteString(w, `{"error":"server busy"}`)
			},
			want: integrations.StatusError{Backend: backend, StatusCode: 429, RetryAfter: 2 * time.Second, Message: "server busy"},
		},
		{
			name: "plain text 500",
			h:    reply(500, "Internal Server Error\n"),
			want: integrations.StatusError{Backend: backend, StatusCode: 500},
		},
		{
			name: "long message",
			h:    reply(400, `{"error":"`+long+`"}`),
			want: integrations.StatusError{Backend: backend, StatusCode: 400, Message: strings.Repeat("y", 200) + "..."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := fake(t, tt.h)
			req := &llm.Request{Model: "x", Prompt: "p"}

			_, err := c.Generate(context.Background(), req)
			var se *integrations.StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.want, *se)

			err = c.Stream(context.Background(), req, func(llm.Chunk) error {
				t.Error("no chunk expected")
				return nil
			})
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.want, *se)
		})
	}
}

func TestMalformedAnswers(t *testing.T) {
	tests := []struct{ name, body string }{
		{"not json", `<html>proxy error</html>`},
		{"truncated json", `{"response":"a","do`},
		{"not done", `{"response":"a","done":false}`},
		{"error with 200", `{"error":"something broke"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := fake(t, reply(200, tt.body))
			resp, err := c.Generate(context.Background(), &llm.Request{Model: "m", Prompt: "p"})
			assert.Nil(t, resp)
			assert.ErrorIs(t, err, integrations.ErrBadResponse)
		})
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	hc := srv.Client()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	srv.Close()

	c, err := ollama.New(backend, srv.URL, hc)
	require.NoError(t, err)
	req := &llm.Request{Model: "m", Prompt: "p"}

	_, genErr := c.Generate(context.Background(), req)
	streamErr := c.Stream(context.Background(), req, func(llm.Chunk) error { return nil })
	for _, err := range []error{genErr, streamErr} {
		require.ErrorIs(t, err, integrations.ErrUnreachable)
		assert.Contains(t, err.Error(), backend)
		assert.NotContains(t, err.Error(), u.Host)
		assert.NotContains(t, err.Error(), u.Port())
	}
}

func TestNilHTTPClientUsesDefault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	c, err := ollama.New(backend, "http://"+addr, nil)
	require.NoError(t, err)
	_, err = c.Generate(context.Background(), &llm.Request{Model: "m", Prompt: "p"})
	require.ErrorIs(t, err, integrations.ErrUnreachable)
	assert.NotContains(t, err.Error(), addr)
}

func TestCallerDeadline(t *testing.T) {
	c, _, _ := fake(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "generate") {
			blockUntilDone(t, r)
			return
		}
		// chat: one chunk, then nothing.
		_, _ = io.WriteString(w, `{"message":{"role":"assistant","content":"a"},"done":false}`+"\n")
		w.(http.Flusher).Flush()
		blockUntilDone(t, r)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Generate(ctx, &llm.Request{Model: "m", Prompt: "p"})
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	var chunks []llm.Chunk
	err = c.Stream(ctx2, &llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "p"}}}, collect(&chunks))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, []llm.Chunk{{Text: "a"}}, chunks)
}

func TestCallerCancel(t *testing.T) {
	c, _, _ := fake(t, func(_ http.ResponseWriter, r *http.Request) { blockUntilDone(t, r) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := c.Generate(ctx, &llm.Request{Model: "m", Prompt: "p"})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestConnectionsAreReused(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/chat") {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":"model \"x\" not found"}`)
			return
		}
		_, _ = io.WriteString(w, `{"response":"a","done":false}`+"\n"+`{"response":"","done":true}`+"\n")
		// Bytes after the final line, sent late so that the client has
		// stopped reading before they arrive: it must drain them.
		w.(http.Flusher).Flush()
		time.Sleep(10 * time.Millisecond)
		_, _ = io.WriteString(w, "\n")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := ollama.New(backend, srv.URL, srv.Client())
	require.NoError(t, err)

	ctx := context.Background()
	for range 3 {
		err := c.Stream(ctx, &llm.Request{Model: "m", Prompt: "p"}, func(llm.Chunk) error { return nil })
		require.NoError(t, err)
		_, err = c.Generate(ctx, &llm.Request{Model: "x", Messages: []llm.Message{{Role: "user", Content: "p"}}})
		var se *integrations.StatusError
		require.ErrorAs(t, err, &se)
	}
	assert.Equal(t, int32(1), conns.Load(), "bodies must be drained and closed so the connection is reused")
}

func TestInvalidRequest(t *testing.T) {
	c, reqs, _ := fake(t, reply(200, `{"response":"a","done":true}`))
	bad := []*llm.Request{
		nil,
		{Model: "m", Prompt: "p", Messages: []llm.Message{{Role: "user", Content: "p"}}},
		{Model: "m", Prompt: "p", Options: llm.Options{MaxTokens: -1}},
	}
	for _, req := range bad {
		_, err := c.Generate(context.Background(), req)
		assert.ErrorIs(t, err, integrations.ErrInvalidRequest)
		err = c.Stream(context.Background(), req, func(llm.Chunk) error { return nil })
		assert.ErrorIs(t, err, integrations.ErrInvalidRequest)
	}
	assert.Empty(t, reqs, "an invalid request is not sent")
}

func TestNew(t *testing.T) {
	c, err := ollama.New("local", "http://127.0.0.1:11434/", nil)
	require.NoError(t, err)
	assert.Equal(t, "local", c.Name())

	for _, base := range []string{"", "127.0.0.1:11434", "ftp://h:1", "http://", "http://h:1/?a=b"} {
		_, err := ollama.New("local", base, nil)
		require.ErrorIs(t, err, integrations.ErrInvalidRequest, base)
		assert.Contains(t, err.Error(), "base URL")
	}
	_, err = ollama.New("", "http://h:1", nil)
	assert.ErrorIs(t, err, integrations.ErrInvalidRequest)
}

func TestBaseURLPathPrefix(t *testing.T) {
	paths := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		_, _ = io.WriteString(w, `{"response":"a","done":true}`)
	}))
	t.Cleanup(srv.Close)
	c, err := ollama.New(backend, srv.URL+"/ollama/", srv.Client())
	require.NoError(t, err)
	_, err = c.Generate(context.Background(), &llm.Request{Model: "m", Prompt: "p"})
	require.NoError(t, err)
	assert.Equal(t, "/ollama/api/generate", <-paths)
}
