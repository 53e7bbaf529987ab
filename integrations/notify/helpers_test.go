package notify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// secretPath is the shape of a Slack webhook path; its last segment is the
// credential.
const (
	secretSegment = "XyZsEcReTtOkEn0123456789"
	secretPath    = "/services/T0000/B0000/" + secretSegment
)

// received is one request seen by a fakeServer.
type received struct {
	Method      string
	Path        string
	ContentType string
	UserAgent   string
	Idempotency string // the Idempotency-Key header
	Body        map[string]any
}

// fakeServer records requests and answers with the configured reply.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []received
}

func newFakeServer(t *testing.T, status int, header http.Header, body string) *fakeServer {
	t.Helper()
	fs := &fakeServer{}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		rec := received{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), UserAgent: r.Header.Get("User-Agent"),
			Idempotency: r.Header.Get("Idempotency-Key")}
		_ = json.Unmarshal(raw, &rec.Body)
		fs.mu.Lock()
		fs.requests = append(fs.requests, rec)
		fs.mu.Unlock()
		for k, vs := range header {
			w.Header()[k] = vs
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fakeServer) seen() []received {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]received(nil), fs.requests...)
}

// newTestHTTPClient is the stand-in for the gateway's shared client.
func newTestHTTPClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// newSlowServer blocks every request until the client gives up or the test
// ends (the release cleanup runs before the server's Close).
func newSlowServer(t *testing.T) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv
}

// newEndlessServer answers status and then streams a body forever (until
// the client closes the connection).
func newEndlessServer(t *testing.T, status int) *httptest.Server {
	t.Helper()
	chunk := make([]byte, 32<<10)
	for i := range chunk {
		chunk[i] = 'a'
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// closedURL returns a URL with the secret path on a port nobody listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL + secretPath
	srv.Close()
	return u
}

// requireNoLeak asserts err's text holds no part of the webhook URL.
func requireNoLeak(t *testing.T, err error, rawURL string) {
	t.Helper()
	require.Error(t, err)
	msg := err.Error()
	require.NotContains(t, msg, rawURL)
	require.NotContains(t, msg, secretSegment)
	require.NotContains(t, msg, secretPath)
	require.NotContains(t, msg, "://")
	if u, perr := url.Parse(rawURL); perr == nil && u.Host != "" {
		require.NotContains(t, msg, u.Host)
	}
}

// newShortBodyServer answers status with a Content-Length longer than the
// body it sends, so reading the body fails with an unexpected EOF.
func newShortBodyServer(t *testing.T, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}
