package fetch

import (
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

const page = "<!DOCTYPE html><html><body>hi</body></html>"

// pageServer serves page at /bare (no Content-Type header at all) and at
// /lying (claiming image/png), and records the last request.
type pageServer struct {
	*countingServer
	mu   sync.Mutex
	last *http.Request
}

func newPageServer(t *testing.T) *pageServer {
	t.Helper()
	ps := &pageServer{}
	ps.countingServer = newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		ps.mu.Lock()
		ps.last = r.Clone(r.Context())
		ps.mu.Unlock()
		switch r.URL.Path {
		case "/lying":
			w.Header().Set("Content-Type", "image/png")
		default:
			w.Header()["Content-Type"] = nil // suppress net/http's own sniffing
		}
		w.Header().Set("Set-Cookie", "session=1")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "secret-hop")
		w.Header().Set("X-Normal", "1")
		_, _ = w.Write([]byte(page))
	})
	return ps
}

func (ps *pageServer) lastRequest() *http.Request {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.last
}

func TestDoAllowedByCIDR(t *testing.T) {
	srv := newPageServer(t)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})

	for _, path := range []string{"/bare", "/lying"} {
		t.Run(path, func(t *testing.T) {
			resp, err := c.Do(bg(), &Request{URL: srv.URL + path})
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, page, string(resp.Body))
			assert.Equal(t, "text/html; charset=utf-8", resp.ContentType)
			assert.Equal(t, srv.URL+path, resp.FinalURL)
			assert.False(t, resp.Truncated)
			assert.Equal(t, "session=1", resp.Header.Get("Set-Cookie"))
			assert.Equal(t, "1", resp.Header.Get("X-Normal"))
			assert.Empty(t, resp.Header.Values("Connection"))
			assert.Empty(t, resp.Header.Values("X-Hop"), "headers named in Connection are hop-by-hop")
		})
	}
	resp, err := c.Do(bg(), &Request{URL: srv.URL + "/lying"})
	require.NoError(t, err)
	assert.Equal(t, "image/png", resp.Header.Get("Content-Type"), "the upstream header is passed on, not trusted")
	assert.EqualValues(t, 3, srv.hits.Load())
}

func TestDoHead(t *testing.T) {
	srv := newPageServer(t)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	resp, err := c.Do(bg(), &Request{URL: srv.URL + "/bare", Method: http.MethodHead})
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, resp.Body)
	assert.Empty(t, resp.ContentType)
	assert.False(t, resp.Truncated)
	assert.Equal(t, http.MethodHead, srv.lastRequest().Method)
}

func TestDoEmptyBodyAndStatus(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1"}})
	resp, err := c.Do(bg(), &Request{URL: srv.URL + "/missing"})
	require.NoError(t, err, "an upstream 404 is a response, not an error")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Empty(t, resp.Body)
	assert.Empty(t, resp.ContentType)
}

func TestDoAllowedByHost(t *testing.T) {
	srv := newPageServer(t)
	c := newTestClient(t, Settings{Allow: []string{"LOCALHOST."}})
	url := "http://localhost:" + srv.port(t) + "/bare"
	resp, err := c.Do(bg(), &Request{URL: url})
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, page, string(resp.Body))
	assert.Equal(t, url, resp.FinalURL)
	assert.EqualValues(t, 1, srv.hits.Load())

	// The host exemption is by name: the same server by IP stays blocked.
	_, err = c.Do(bg(), &Request{URL: srv.URL + "/bare"})
	require.ErrorIs(t, err, integrations.ErrBlocked)
	assert.EqualValues(t, 1, srv.hits.Load())
}

func TestDoAllowedIPv6(t *testing.T) {
	srv := newCountingServerOn(t, "[::1]:0", okHandler("v6"))
	c := newTestClient(t, Settings{Allow: []string{"::1/128"}})
	resp, err := c.Do(bg(), &Request{URL: srv.URL + "/"})
	require.NoError(t, err)
	assert.Equal(t, "v6", string(resp.Body))
}

func TestDoRequestHeaders(t *testing.T) {
	srv := newPageServer(t)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	_, err := c.Do(bg(), &Request{URL: srv.URL + "/bare", Header: http.Header{
		"Accept":          {"text/html"},
		"Authorization":   {"Bearer secret"},
		"Cookie":          {"a=b"},
		"X-Internal":      {"1"},
		"Accept-Encoding": {"identity"},
	}})
	require.NoError(t, err)
	got := srv.lastRequest().Header
	assert.Equal(t, "text/html", got.Get("Accept"))
	assert.Equal(t, DefaultUserAgent, got.Get("User-Agent"))
	assert.Empty(t, got.Get("Authorization"))
	assert.Empty(t, got.Get("Cookie"))
	assert.Empty(t, got.Get("X-Internal"))
	assert.Equal(t, "gzip", got.Get("Accept-Encoding"), "the transport negotiates encoding itself")

	_, err = c.Do(bg(), &Request{URL: srv.URL + "/bare", Header: http.Header{"User-Agent": {"custom/2"}}})
	require.NoError(t, err)
	assert.Equal(t, "custom/2", srv.lastRequest().Header.Get("User-Agent"))
}

func TestDoNoSharedClient(t *testing.T) {
	a := newTestClient(t, Settings{})
	b := newTestClient(t, Settings{})
	assert.NotSame(t, a.http, b.http)
	assert.NotSame(t, a.transport, b.transport)
	assert.NotSame(t, http.DefaultClient, a.http)
}
