package openai_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	"github.com/vega-gateway/vega/integrations/llm/openai"
)

const (
	backend = "test-openai"
	apiKey  = "sk-test-9f8e7d6c5b4a-DISTINCTIVE"
)

// recorded is what the fake server received.
type recorded struct {
	method, path, contentType, auth string
	hasAuth                         bool
	body                            string
}

// fake starts a fake OpenAI-compatible server answering with h and returns
// a client for it (with apiKey, at base+suffix) and the requests it
// receives, in order.
func fake(t *testing.T, key, suffix string, h http.HandlerFunc) (*openai.Client, <-chan recorded) {
	t.Helper()
	reqs := make(chan recorded, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, hasAuth := r.Header["Authorization"]
		reqs <- recorded{
			method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			auth: r.Header.Get("Authorization"), hasAuth: hasAuth, body: string(body),
		}
		r.Body = io.NopCloser(bytes.NewReader(body)) // for h
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := openai.New(backend, srv.URL+suffix, key, srv.Client())
	require.NoError(t, err)
	return c, reqs
}

func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// sse answers with the raw lines, flushing after each.
func sse(lines ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, l := range lines {
			_, _ = io.WriteString(w, l+"\n")
			w.(http.Flusher).Flush()
		}
	}
}

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

// noKey fails the test if err mentions the API key.
func noKey(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), apiKey)
	assert.NotContains(t, err.Error(), "DISTINCTIVE")
}

const completionBody = `{
	"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen2.5-7b",
	"choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "length"}],
	"usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
}`

func TestGenerate(t *testing.T) {
	c, reqs := fake(t, apiKey, "/v1", reply(200, completionBody))

	resp, err := c.Generate(context.Background(), &llm.Request{
		Model:  "qwen",
		Prompt: "Capital of France?",
		Options: llm.Options{
			Temperature: ptr(0.0),
			TopP:        ptr(0.95),
			MaxTokens:   2,
			Seed:        ptr(int64(42)),
			Stop:        []string{"\n"},
		},
	})
	require.NoError(t, err)
	assert.Equal(t, &llm.Response{
		Text: "Paris.", Model: "qwen2.5-7b", FinishReason: "length",
		Usage: llm.Usage{PromptTokens: 11, CompletionTokens: 2},
	}, resp)

	got := <-reqs
	assert.Equal(t, http.MethodPost, got.method)
	assert.Equal(t, "/v1/chat/completions", got.path)
	assert.Equal(t, "application/json", got.contentType)
	assert.Equal(t, "Bearer "+apiKey, got.auth)
	assert.JSONEq(t, `{
		"model": "qwen",
		"messages": [{"role": "user", "content": "Capital of France?"}],
		"temperature": 0, "top_p": 0.95, "max_tokens": 2, "seed": 42, "stop": ["\n"],
		"stream": false
	}`, got.body)
}

func TestGenerateMessagesAndNoKey(t *testing.T) {
	c, reqs := fake(t, "", "", reply(200, `{"choices":[{"message":{"role":"assistant","content":null},"finish_reason":null}]}`))

	resp, err := c.Generate(context.Background(), &llm.Request{
		Model:    "m",
		Messages: []llm.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}},
	})
	require.NoError(t, err)
	assert.Equal(t, &llm.Response{Model: "m", FinishReason: "stop"}, resp, "null content, finish_reason, model and usage")

	got := <-reqs
	assert.Equal(t, "/v1/chat/completions", got.path, "/v1 is added to a base URL without it")
	assert.False(t, got.hasAuth, "no Authorization header without an API key")
	assert.JSONEq(t, `{
		"model": "m",
		"messages": [{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
		"stream": false
	}`, got.body)
}

func TestBaseURLForms(t *testing.T) {
	for suffix, want := range map[string]string{
		"":            "/v1/chat/completions",
		"/":           "/v1/chat/completions",
		"/v1":         "/v1/chat/completions",
		"/v1/":        "/v1/chat/completions",
		"/proxy":      "/proxy/v1/chat/completions",
		"/proxy/v1/":  "/proxy/v1/chat/completions",
		"/openai/v1a": "/openai/v1a/v1/chat/completions",
	} {
		c, reqs := fake(t, "", suffix, reply(200, completionBody))
		_, err := c.Generate(context.Background(), &llm.Request{Model: "m", Prompt: "p"})
		require.NoError(t, err, suffix)
		assert.Equal(t, want, (<-reqs).path, suffix)
	}
}

func TestStream(t *testing.T) {
	c, reqs := fake(t, apiKey, "", sse(
		`: keep-alive comment`,
		`event: message`,
		`data: {"id":"1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`,
		``,
		`data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}`,
		``,
		`data:{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}`,
		``,
		`data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`,
		``,
		`data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`,
		``,
		`data: [DONE]`,
		``,
	))

	var chunks []llm.Chunk
	err := c.Stream(context.Background(), &llm.Request{Model: "m", Prompt: "Say hello", Options: llm.Options{MaxTokens: 2}}, collect(&chunks))
	require.NoError(t, err)
	assert.Equal(t, []llm.Chunk{
		{Text: "Hel"},
		{Text: "lo"},
		{Done: true, FinishReason: "length", Usage: llm.Usage{PromptTokens: 5, CompletionTokens: 2}},
	}, chunks)

	got := <-reqs
	assert.Equal(t, "Bearer "+apiKey, got.auth)
	assert.JSONEq(t, `{
		"model": "m",
		"messages": [{"role":"user","content":"Say hello"}],
		"max_tokens": 2,
		"stream": true,
		"stream_options": {"include_usage": true}
	}`, got.body)
}

func TestStreamEnds(t *testing.T) {
	text := `data: {"choices":[{"delta":{"content":"a"},"finish_reason":null}]}`
	stop := `data: {"choices":[{"delta":{},"finish_reason":"stop"}]}`
	tests := []struct {
		name       string
		lines      []string
		wantReason string // "" means an ErrBadResponse is expected
	}{
		{"done without finish_reason", []string{text, "data: [DONE]"}, "stop"},
		{"finish_reason without done", []string{text, stop}, "stop"},
		{"truncated", []string{text}, ""},
		{"empty body", nil, ""},
		{"json instead of sse", []string{completionBody}, ""},
		{"malformed event", []string{text, `data: {"choices":[`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := fake(t, apiKey, "", sse(tt.lines...))
			var chunks []llm.Chunk
			err := c.Stream(context.Background(), &llm.Request{Model: "m", Prompt: "p"}, collect(&chunks))
			if tt.wantReason == "" {
				require.ErrorIs(t, err, integrations.ErrBadResponse)
				noKey(t, err)
				for _, ch := range chunks {
					assert.False(t, ch.Done, "a truncated answer must not look complete")
				}
				return
			}
			require.NoError(t, err)
			require.NotEmpty(t, chunks)
			assert.Equal(t, llm.Chunk{Done: true, FinishReason: tt.wantReason}, chunks[len(chunks)-1])
		})
	}
}

func TestStreamErrorEvent(t *testing.T) {
	c, _ := fake(t, apiKey, "", sse(
		`data: {"choices":[{"delta":{"content":"a"},"finish_reason":null}]}`,
		`event: error`,
		`data: {"error":{"message":"engine crashed; key was `+apiKey+`","type":"server_error"}}`,
		`data: {"choices":[{"delta":{"content":"never"},"finish_reason":null}]}`,
		`data: [DONE]`,
	))
	var chunks []llm.Chunk
	err := c.Stream(context.Background(), &llm.Request{Model: "m", Prompt: "p"}, collect(&chunks))
	require.ErrorIs(t, err, integrations.ErrBadResponse)
	assert.Contains(t, err.Error(), "engine crashed")
	noKey(t, err)
	assert.Equal(t, []llm.Chunk{{Text: "a"}}, chunks)
}

func TestStreamCallbackErrorStops(t *testing.T) {
	c, _ := fake(t, "", "", sse(
		`data: {"choices":[{"delta":{"content":"a"},"finish_reason":null}]}`,
		`data: {"choices":[{"delta":{"content":"b"},"finish_reason":"stop"}]}`,
		`data: [DONE]`,
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
	tests := []struct {
		name string
		h    http.HandlerFunc
		want integrations.StatusError
	}{
		{
			name: "openai error object",
			h:    reply(404, `{"error":{"message":"The model `+"`x`"+` does not exist","type":"invalid_request_error","code":"model_not_found"}}`),
			want: integrations.StatusError{Backend: backend, StatusCode: 404, Message: "The model `x` does not exist"},
		},
		{
			name: "vllm top-level message",
			h:    reply(400, `{"object":"error","message":"max_tokens is too large","type":"BadRequestError","code":400}`),
			want: integrations.StatusError{Backend: backend, StatusCode: 400, Message: "max_tokens is too large"},
		},
		{
			name: "key echoed",
			h:    reply(401, `{"error":{"message":"Incorrect API key provided: `+apiKey+`.","type":"invalid_request_error"}}`),
			want: integrations.StatusError{Backend: backend, StatusCode: 401, Message: "Incorrect API key provided: [redacted]."},
		},
		{
			name: "rate limited",
			h: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "2")
				w.WriteHeader(429)
				_, _ = io.WriteString(w, `{"error":{"message":"Rate limit reached"}}`)
			},
			want: integrations.StatusError{Backend: backend, StatusCode: 429, RetryAfter: 2 * time.Second, Message: "Rate limit reached"},
		},
		{
			name: "plain text 500",
			h:    reply(500, "upstream connect error"),
			want: integrations.StatusError{Backend: backend, StatusCode: 500},
		},
		{
			name: "long message",
			h:    reply(400, `{"error":{"message":"`+strings.Repeat("z", 400)+`"}}`),
			want: integrations.StatusError{Backend: backend, StatusCode: 400, Message: strings.Repeat("z", 200) + "..."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := fake(t, apiKey, "", tt.h)
			req := &llm.Request{Model: "x", Prompt: "p"}

			_, err := c.Generate(context.Background(), req)
			var se *integrations.StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.want, *se)
			noKey(t, err)

			err = c.Stream(context.Background(), req, func(llm.Chunk) error {
				t.Error("no chunk expected")
				return nil
			})
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.want, *se)
			noKey(t, err)
		})
	}
}

func TestMalformedAnswers(t *testing.T) {
	tests := []struct{ name, body string }{
		{"not json", `<html>bad gateway</html>`},
		{"truncated json", `{"choices":[{"message":`},
		{"no choices", `{"choices":[]}`},
		{"choice without message", `{"choices":[{"delta":{"content":"a"}}]}`},
		{"error with 200", `{"error":{"message":"overloaded"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := fake(t, apiKey, "", reply(200, tt.body))
			resp, err := c.Generate(context.Background(), &llm.Request{Model: "m", Prompt: "p"})
			assert.Nil(t, resp)
			require.ErrorIs(t, err, integrations.ErrBadResponse)
			noKey(t, err)
		})
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	hc := srv.Client()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	srv.Close()

	c, err := openai.New(backend, srv.URL, apiKey, hc)
	require.NoError(t, err)
	req := &llm.Request{Model: "m", Prompt: "p"}
	_, genErr := c.Generate(context.Background(), req)
	streamErr := c.Stream(context.Background(), req, func(llm.Chunk) error { return nil })
	for _, err := range []error{genErr, streamErr} {
		require.ErrorIs(t, err, integrations.ErrUnreachable)
		assert.Contains(t, err.Error(), backend)
		assert.NotContains(t, err.Error(), u.Host)
		assert.NotContains(t, err.Error(), u.Port())
		noKey(t, err)
	}
}

func TestCallerDeadline(t *testing.T) {
	c, _ := fake(t, apiKey, "", func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(readAll(r), `"stream":true`) {
			_, _ = io.WriteString(w, `data: {"choices":[{"delta":{"content":"a"},"finish_reason":null}]}`+"\n\n")
			w.(http.Flusher).Flush()
		}
		blockUntilDone(t, r)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Generate(ctx, &llm.Request{Model: "m", Prompt: "p"})
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	var chunks []llm.Chunk
	err = c.Stream(ctx2, &llm.Request{Model: "m", Prompt: "p"}, collect(&chunks))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, []llm.Chunk{{Text: "a"}}, chunks)
}

func readAll(r *http.Request) string {
	body, _ := io.ReadAll(r.Body)
	return string(body)
}

func TestConnectionsAreReused(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(body), `"model":"missing"`):
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":{"message":"no such model"}}`)
		case strings.Contains(string(body), `"stream":true`):
			_, _ = io.WriteString(w, `data: {"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
			// Bytes after [DONE], sent late so that the client has stopped
			// reading before they arrive: it must drain them.
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond)
			_, _ = io.WriteString(w, ": bye\n\n")
		default:
			_, _ = io.WriteString(w, completionBody)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := openai.New(backend, srv.URL, "", srv.Client())
	require.NoError(t, err)

	ctx := context.Background()
	for range 3 {
		require.NoError(t, c.Stream(ctx, &llm.Request{Model: "m", Prompt: "p"}, func(llm.Chunk) error { return nil }))
		_, err := c.Generate(ctx, &llm.Request{Model: "m", Prompt: "p"})
		require.NoError(t, err)
		_, err = c.Generate(ctx, &llm.Request{Model: "missing", Prompt: "p"})
		var se *integrations.StatusError
		require.ErrorAs(t, err, &se)
	}
	assert.Equal(t, int32(1), conns.Load(), "bodies must be drained and closed so the connection is reused")
}

func TestInvalidRequest(t *testing.T) {
	c, reqs := fake(t, apiKey, "", reply(200, completionBody))
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
	c, err := openai.New("vllm", "http://127.0.0.1:8000/v1/", apiKey, nil)
	require.NoError(t, err)
	assert.Equal(t, "vllm", c.Name())
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		assert.NotContains(t, s, apiKey)
		assert.Contains(t, s, "vllm")
	}

	for _, base := range []string{"", "127.0.0.1:8000", "ftp://h:1", "http://", "http://h:1/v1?key=" + apiKey} {
		_, err := openai.New("vllm", base, apiKey, nil)
		require.ErrorIs(t, err, integrations.ErrInvalidRequest, base)
		assert.Contains(t, err.Error(), "base URL")
		noKey(t, err)
	}
	_, err = openai.New("", "http://h:1", "", nil)
	assert.ErrorIs(t, err, integrations.ErrInvalidRequest)
}
