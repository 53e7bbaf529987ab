package httpface

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestCheckOrigin(t *testing.T) {
	for _, ok := range []string{"https://app.example.com", "http://localhost:3000", "https://app.example.com/"} {
		assert.NoError(t, CheckOrigin(ok), ok)
	}
	for _, bad := range []string{"*", "https://*.example.com", "app.example.com", "https://app.example.com/x", "ftp://x", "https://u@x", "https://x?q"} {
		assert.Error(t, CheckOrigin(bad), bad)
	}
}

func retryBody(t *testing.T, d time.Duration, padded bool) string {
	raw, err := proto.Marshal(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	assert.NoError(t, err)
	enc := base64.RawStdEncoding.EncodeToString(raw)
	if padded {
		enc = base64.StdEncoding.EncodeToString(raw)
	}
	return `{"code":"resource_exhausted","message":"slow down","details":[{"type":"google.rpc.QuotaFailure","value":""},{"type":"google.rpc.RetryInfo","value":"` + enc + `"}]}`
}

func TestRetryAfter(t *testing.T) {
	serve := func(status int, header map[string]string, body string) *httptest.ResponseRecorder {
		h := retryAfter(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			for k, v := range header {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body[:len(body)/2])) // in two writes
			_, _ = w.Write([]byte(body[len(body)/2:]))
		}))
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/x.S/M", nil)
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		assert.Equal(t, status, rec.Code)
		assert.Equal(t, body, rec.Body.String(), "the body passes unchanged")
		return rec
	}
	for _, tc := range []struct {
		name   string
		status int
		header map[string]string
		body   string
		want   string
	}{
		{"RetryInfo 3s", 429, nil, retryBody(t, 3*time.Second, false), "3"},
		{"RetryInfo padded, rounded up", 503, nil, retryBody(t, 1500*time.Millisecond, true), "2"},
		{"below a second is 1", 429, nil, retryBody(t, 10*time.Millisecond, false), "1"},
		{"capped at an hour", 429, nil, retryBody(t, 48*time.Hour, false), "3600"},
		{"pushback trailer wins", 429, map[string]string{"Trailer-Grpc-Retry-Pushback-Ms": "4200"}, retryBody(t, time.Second, false), "5"},
		{"no advice", 429, nil, `{"code":"resource_exhausted","message":"too big"}`, ""},
		{"not JSON", 503, nil, `upstream down`, ""},
		{"other status", 400, nil, retryBody(t, 3*time.Second, false), ""},
		{"OK", 200, nil, `{"text":"hi"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, serve(tc.status, tc.header, tc.body).Header().Get("Retry-After"))
		})
	}
}

func TestConnectVersionOnlyForUnaryPosts(t *testing.T) {
	var got string
	h := connectVersion(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.Header.Get("Connect-Protocol-Version") }))
	for _, tc := range []struct {
		method, ctype, want string
	}{
		{"POST", "application/json", "1"},
		{"POST", "application/json; charset=utf-8", "1"},
		{"POST", "application/proto", "1"},
		{"POST", "application/connect+json", ""},
		{"POST", "application/grpc-web+proto", ""},
		{"GET", "application/json", ""},
	} {
		got = ""
		req := httptest.NewRequest(tc.method, "/x.S/M", nil)
		req.Header.Set("Content-Type", tc.ctype)
		h.ServeHTTP(httptest.NewRecorder(), req)
		assert.Equal(t, tc.want, got, "%s %s", tc.method, tc.ctype)
	}
	// What curl -d sends without -H, and nothing at all: 415 naming the header.
	for _, ctype := range []string{"application/x-www-form-urlencoded", "text/plain", ""} {
		got = "not called"
		req := httptest.NewRequest(http.MethodPost, "/x.S/M", nil)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, "not called", got, ctype)
		assert.Equal(t, http.StatusUnsupportedMediaType, rec.Code, ctype)
		assert.Contains(t, rec.Body.String(), "Content-Type: application/json", ctype)
	}
}
