package httpface

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
)

// maxErrorBodyBytes bounds the Connect error body held back to read its
// RetryInfo; error bodies are a code, a message and a few details.
const maxErrorBodyBytes = 64 << 10

// maxRetryAfter caps the advice, as integrations.RetryAfter caps what
// backends send.
const maxRetryAfter = time.Hour

// retryAfter adds a Retry-After header (whole seconds, rounded up) to
// Connect unary error answers whose status invites a retry (429
// resource_exhausted, 503 unavailable), taken from the gRPC trailer
// grpc-retry-pushback-ms when the server sent one, else from the
// google.rpc.RetryInfo detail in the error body. HTTP clients, proxies and
// browsers understand Retry-After; few read Connect error details.
//
// Streams (Connect streaming, gRPC-Web) answer 200 with the error in the
// last frame, so their headers are sent before the status is known; their
// retry advice stays in the error's details.
func retryAfter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if r.Method == http.MethodGet || strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/proto") {
			rw := &retryAfterWriter{ResponseWriter: w}
			defer rw.release() // a handler that wrote a 429/503 and returned
			w = rw
		}
		next.ServeHTTP(w, r)
	})
}

// retryAfterWriter holds back the body of a 429/503 answer until it is
// complete (or its handler flushes), reads the advice from it, and then
// writes the header with Retry-After and the body unchanged. Every other
// answer passes straight through. It keeps Flush and Unwrap, which the
// transcoder needs.
type retryAfterWriter struct {
	http.ResponseWriter
	holding bool // a 429/503 whose body is being held back
	status  int
	body    bytes.Buffer
	done    bool
}

func (w *retryAfterWriter) WriteHeader(code int) {
	if w.done || w.holding {
		return
	}
	if code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
		w.done = true
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.holding, w.status = true, code
}

func (w *retryAfterWriter) Write(p []byte) (int, error) {
	if !w.holding {
		if !w.done {
			w.WriteHeader(http.StatusOK)
		}
		return w.ResponseWriter.Write(p)
	}
	if w.body.Len()+len(p) > maxErrorBodyBytes {
		w.release()
		return w.ResponseWriter.Write(p)
	}
	return w.body.Write(p)
}

// Flush releases a held answer first: a handler that flushes wants the
// bytes on the wire.
func (w *retryAfterWriter) Flush() {
	w.release()
	http.NewResponseController(w.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher: nothing to report to
}

// Unwrap lets http.ResponseController and the transcoder reach the
// underlying writer.
func (w *retryAfterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// release sends a held answer with the advice found in its body.
func (w *retryAfterWriter) release() {
	if !w.holding {
		return
	}
	w.holding, w.done = false, true
	if d, ok := advice(w.Header(), w.body.Bytes()); ok {
		w.Header().Set("Retry-After", seconds(d))
	}
	w.ResponseWriter.WriteHeader(w.status)
	_, _ = w.ResponseWriter.Write(w.body.Bytes())
	w.body = bytes.Buffer{}
}

// advice is the retry delay of a held answer: none when it already has a
// Retry-After; else the grpc-retry-pushback-ms trailer (a Connect unary
// answer carries the gRPC trailers as Trailer- headers); else the body's
// RetryInfo.
func advice(h http.Header, body []byte) (time.Duration, bool) {
	if h.Get("Retry-After") != "" {
		return 0, false
	}
	// The transcoder writes trailer keys as the server sent them (lower
	// case), not in canonical form, so they are looked up without regard
	// to case.
	for k, v := range h {
		if len(v) == 0 || !(strings.EqualFold(k, "Trailer-Grpc-Retry-Pushback-Ms") || strings.EqualFold(k, "Grpc-Retry-Pushback-Ms")) {
			continue
		}
		if ms, err := strconv.ParseInt(v[0], 10, 64); err == nil && ms >= 0 {
			return time.Duration(ms) * time.Millisecond, true
		}
	}
	return retryDelay(body)
}

// connectError is the part of a Connect error body (connectrpc.com,
// "Protocol Reference", Error end-of-stream / unary error) that carries
// details.
type connectError struct {
	Details []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"details"`
}

// retryDelay finds the google.rpc.RetryInfo delay in a Connect error body.
func retryDelay(body []byte) (time.Duration, bool) {
	var e connectError
	if json.Unmarshal(body, &e) != nil {
		return 0, false
	}
	for _, d := range e.Details {
		if d.Type != "google.rpc.RetryInfo" {
			continue
		}
		// Connect writes base64 without padding but accepts either.
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		if err != nil {
			continue
		}
		var info errdetails.RetryInfo
		if proto.Unmarshal(raw, &info) != nil || info.GetRetryDelay() == nil {
			continue
		}
		return info.GetRetryDelay().AsDuration(), true
	}
	return 0, false
}

// seconds renders a delay as Retry-After's whole seconds: rounded up, at
// least 1 (0 would invite an immediate retry storm), at most an hour.
func seconds(d time.Duration) string {
	d = min(max(d, time.Second), maxRetryAfter)
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
}
