package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"html"
	"net/http"
	"strings"
	"time"
)

type tokensKey struct{}

func withTokens(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, tokensKey{}, n)
}

func tokensFrom(ctx context.Context) int {
	if n, ok := ctx.Value(tokensKey{}).(int); ok && n > 0 {
		return n
	}
	return 16
}

var vocabulary = strings.Fields(`the a gateway answers quickly slowly request model token stream
upstream benchmark latency capacity window retry circuit breaker cache limiter
queue worker connection reply prompt text word sample fake server client`)

// generate returns n words chosen deterministically from the prompt.
func generate(prompt string, n int) []string {
	x := fnv64(prompt) | 1 // xorshift needs a non-zero state
	words := make([]string, n)
	for i := range words {
		x ^= x << 13 // xorshift
		x ^= x >> 7
		x ^= x << 17
		words[i] = vocabulary[x%uint64(len(vocabulary))]
	}
	return words
}

type chatRequest struct {
	Model    string `json:"model"`
	Prompt   string `json:"prompt"`
	Stream   *bool  `json:"stream"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

func (c *chatRequest) lastPrompt() string {
	if len(c.Messages) > 0 {
		return c.Messages[len(c.Messages)-1].Content
	}
	return c.Prompt
}

func flush(w http.ResponseWriter) { _ = http.NewResponseController(w).Flush() }

// ollama answers /api/generate and /api/chat: one JSON object when the
// body says "stream": false, else NDJSON lines ending with done=true.
func ollama(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":%q}`, "invalid JSON: "+err.Error())
		return
	}
	prompt := req.lastPrompt()
	words := generate(prompt, tokensFrom(r.Context()))
	chat := r.URL.Path == "/api/chat"
	created := time.Now().UTC().Format(time.RFC3339Nano)
	line := func(text string, done bool) map[string]any {
		m := map[string]any{"model": req.Model, "created_at": created, "done": done}
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
	enc := json.NewEncoder(w)
	if req.Stream != nil && !*req.Stream {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = enc.Encode(line(strings.Join(words, " "), true))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	for i, word := range words {
		if i > 0 {
			word = " " + word
		}
		_ = enc.Encode(line(word, false))
		flush(w)
	}
	_ = enc.Encode(line("", true))
}

// openAI answers /v1/chat/completions: JSON, or SSE chunks ending with
// "data: [DONE]" when the body says "stream": true.
func openAI(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"messages are required","type":"invalid_request_error"}}`)
		return
	}
	prompt := req.lastPrompt()
	words := generate(prompt, tokensFrom(r.Context()))
	id := fmt.Sprintf("chatcmpl-fake%x", fnv64(prompt))
	created := time.Now().Unix()
	usage := map[string]any{
		"prompt_tokens":     len(strings.Fields(prompt)),
		"completion_tokens": len(words),
		"total_tokens":      len(strings.Fields(prompt)) + len(words),
	}
	base := func(object string, choices []any) map[string]any {
		return map[string]any{"id": id, "object": object, "created": created, "model": req.Model, "choices": choices}
	}
	if req.Stream == nil || !*req.Stream {
		m := base("chat.completion", []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": strings.Join(words, " ")},
			"finish_reason": "stop",
		}})
		m["usage"] = usage
		writeJSON(w, m)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		flush(w)
	}
	for i, word := range words {
		if i > 0 {
			word = " " + word
		}
		delta := map[string]any{"content": word}
		if i == 0 {
			delta["role"] = "assistant"
		}
		send(base("chat.completion.chunk", []any{map[string]any{"index": 0, "delta": delta, "finish_reason": nil}}))
	}
	send(base("chat.completion.chunk", []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "stop"}}))
	last := base("chat.completion.chunk", []any{})
	last["usage"] = usage
	send(last)
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// slack answers any other POST like a Slack incoming webhook.
func slack(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "ok")
}

// page answers GET and HEAD of any path with a small HTML page.
func page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	words := generate(r.URL.Path, tokensFrom(r.Context()))
	fmt.Fprintf(w, "<!doctype html>\n<html><head><title>fakeupstream %s</title></head>\n<body><h1>fakeupstream</h1><p>%s</p></body></html>\n",
		html.EscapeString(r.URL.Path), strings.Join(words, " "))
}
