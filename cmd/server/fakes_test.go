package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Behaviour of the fake LLM servers is chosen by the model name, so one
// server covers the success and failure paths:
//
//	"slow"        waits until the request is cancelled
//	"ratelimited" 429 with Retry-After: 3
//	"broken"      500
//	"missing"     404 (model not found)
//	"wait-<ms>"   answers normally after <ms> milliseconds
//	anything else answers "<backend> says: <prompt>"
type fakeLLM struct {
	*httptest.Server
	calls     atomic.Int64
	cancelled atomic.Int64 // slow requests that saw their context end
}

func (f *fakeLLM) failure(w http.ResponseWriter, r *http.Request, model string) bool {
	if ms, ok := strings.CutPrefix(model, "wait-"); ok {
		d, _ := strconv.Atoi(ms)
		t := time.NewTimer(time.Duration(d) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			f.cancelled.Add(1)
			return true
		}
		return false
	}
	switch model {
	case "slow":
		<-r.Context().Done()
		f.cancelled.Add(1)
		return true
	case "ratelimited":
		w.Header().Set("Retry-After", "3")
		http.Error(w, `{"error":"slow down"}`, http.StatusTooManyRequests)
		return true
	case "broken":
		http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
		return true
	case "missing":
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":"model %s not found, try pulling it first"}`, model)
		return true
	}
	return false
}

// newFakeOllama serves /api/generate and /api/chat, JSON or NDJSON streams.
func newFakeOllama(t *testing.T) *fakeLLM {
	t.Helper()
	f := &fakeLLM{}
	handler := func(w http.ResponseWriter, r *http.Request) {
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
		if f.failure(w, r, req.Model) {
			return
		}
		prompt := req.Prompt
		if len(req.Messages) > 0 {
			prompt = req.Messages[len(req.Messages)-1].Content
		}
		words := strings.Fields("ollama says: " + prompt)
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
			return
		}
		_ = enc.Encode(line(strings.Join(words, " "), true))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/generate", handler)
	mux.HandleFunc("POST /api/chat", handler)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// newFakeOpenAI serves /v1/chat/completions, JSON or SSE.
func newFakeOpenAI(t *testing.T, apiKey string) *fakeLLM {
	t.Helper()
	f := &fakeLLM{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+apiKey {
			http.Error(w, `{"error":{"message":"bad key"}}`, http.StatusUnauthorized)
			return
		}
		var req struct {
			Model    string `json:"model"`
			Stream   bool   `json:"stream"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
			return
		}
		if f.failure(w, r, req.Model) {
			return
		}
		prompt := req.Messages[len(req.Messages)-1].Content
		words := strings.Fields("openai says: " + prompt)
		usage := map[string]any{"prompt_tokens": len(strings.Fields(prompt)), "completion_tokens": len(words)}
		if !req.Stream {
			_ = json.NewEncoder(w).Encode(map[string]any{
				"model": req.Model,
				"choices": []any{map[string]any{
					"message": map[string]any{"role": "assistant", "content": strings.Join(words, " ")}, "finish_reason": "stop",
				}},
				"usage": usage,
			})
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		send := func(v any) {
			b, _ := json.Marshal(v)
			fmt.Fprintf(w, "data: %s\n\n", b)
			w.(http.Flusher).Flush()
		}
		for i, word := range words {
			if i > 0 {
				word = " " + word
			}
			send(map[string]any{"model": req.Model, "choices": []any{map[string]any{"delta": map[string]any{"content": word}, "finish_reason": nil}}})
		}
		send(map[string]any{"model": req.Model, "choices": []any{map[string]any{"delta": map[string]any{}, "finish_reason": "stop"}}})
		send(map[string]any{"model": req.Model, "choices": []any{}, "usage": usage})
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// fakeSlack records the texts it accepted. Texts choose failures:
// "fail-500", "fail-429" (Retry-After: 2), "fail-404" (channel_not_found).
type fakeSlack struct {
	*httptest.Server
	mu       sync.Mutex
	received []map[string]any // guarded by mu
}

func newFakeSlack(t *testing.T) *fakeSlack {
	t.Helper()
	f := &fakeSlack{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		switch body["text"] {
		case "fail-500":
			http.Error(w, "internal", http.StatusInternalServerError)
			return
		case "fail-429":
			w.Header().Set("Retry-After", "2")
			http.Error(w, "rate_limited", http.StatusTooManyRequests)
			return
		case "fail-429-long":
			w.Header().Set("Retry-After", "30")
			http.Error(w, "rate_limited", http.StatusTooManyRequests)
			return
		case "fail-404":
			http.Error(w, "channel_not_found", http.StatusNotFound)
			return
		}
		f.mu.Lock()
		f.received = append(f.received, body)
		f.mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(f.Close)
	return f
}

// count returns how many accepted messages had this text.
func (f *fakeSlack) count(text string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, b := range f.received {
		if b["text"] == text {
			n++
		}
	}
	return n
}

func (f *fakeSlack) last() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.received) == 0 {
		return nil
	}
	return f.received[len(f.received)-1]
}

// newFakeWeb serves pages for Fetch and counts hits.
type fakeWeb struct {
	*httptest.Server
	hits atomic.Int64
}

func newFakeWeb(t *testing.T) *fakeWeb {
	t.Helper()
	f := &fakeWeb{}
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // no declared type: the gateway sniffs
		w.Header().Set("X-Custom", "yes")
		w.Header().Add("Set-Cookie", "session=secret")
		fmt.Fprint(w, "<!DOCTYPE html><html><body>hello from the fake web</body></html>")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", 5000))
	})
	mux.HandleFunc("/binary", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte{0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28})
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) {
		http.NotFound(w, r)
	})
	mux.HandleFunc("/to-private", func(w http.ResponseWriter, r *http.Request) {
		_, port, _ := strings.Cut(r.Host, ":")
		http.Redirect(w, r, "http://127.0.0.2:"+port+"/page", http.StatusFound)
	})
	mux.HandleFunc("/to-metadata", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	f.Server = httptest.NewServer(countHits(&f.hits, mux))
	t.Cleanup(f.Close)
	return f
}

func countHits(n *atomic.Int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}
