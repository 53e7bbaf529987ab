package fetch

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

// redirectServer answers /to?u=<url> with a 302 to u, /hop/N with a 302 to
// /hop/N+1 (forever), /chain/N with a 302 to /chain/N-1 and 200 at
// /chain/0.
func redirectServer(t *testing.T) *countingServer {
	t.Helper()
	return newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/to":
			http.Redirect(w, r, r.URL.Query().Get("u"), http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/hop/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/hop/"))
			http.Redirect(w, r, "/hop/"+strconv.Itoa(n+1), http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/chain/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/chain/"))
			if n == 0 {
				_, _ = w.Write([]byte("final"))
				return
			}
			http.Redirect(w, r, "/chain/"+strconv.Itoa(n-1), http.StatusMovedPermanently)
		default:
			http.NotFound(w, r)
		}
	})
}

func TestRedirectToBlockedAddress(t *testing.T) {
	src := redirectServer(t)
	target := newCountingServerOn(t, "127.0.0.2:0", okHandler("internal"))
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})

	_, err := c.Do(bg(), &Request{URL: src.URL + "/to?u=" + target.URL + "/secret"})
	require.ErrorIs(t, err, integrations.ErrBlocked)
	assert.Contains(t, err.Error(), "127.0.0.2 is a loopback address")
	assert.EqualValues(t, 1, src.hits.Load())
	assert.Zero(t, target.hits.Load(), "the blocked hop must never be dialled")
}

func TestRedirectToMetadataAndSchemes(t *testing.T) {
	src := redirectServer(t)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	tests := []struct {
		location string
		want     error
	}{
		{"http://169.254.169.254/latest/meta-data/", integrations.ErrBlocked},
		{"http://2130706434/", integrations.ErrBlocked}, // 127.0.0.2 spelled as a number,
		{"file:///etc/passwd", integrations.ErrBlocked},
		{"gopher://x/", integrations.ErrBlocked},
		{"http://user:pass@127.0.0.1:1/", integrations.ErrBadResponse},
	}
	for _, tt := range tests {
		t.Run(tt.location, func(t *testing.T) {
			before := src.hits.Load()
			_, err := c.Do(bg(), &Request{URL: src.URL + "/to?u=" + tt.location})
			require.ErrorIs(t, err, tt.want)
			assert.Equal(t, before+1, src.hits.Load())
		})
	}
}

func TestRedirectLimit(t *testing.T) {
	src := redirectServer(t)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, MaxRedirects: 3})

	_, err := c.Do(bg(), &Request{URL: src.URL + "/hop/0"})
	require.ErrorIs(t, err, integrations.ErrBadResponse)
	assert.NotErrorIs(t, err, integrations.ErrBlocked)
	assert.Contains(t, err.Error(), "more than 3 redirects")
	assert.EqualValues(t, 4, src.hits.Load(), "the original request plus 3 followed hops")

	// Exactly MaxRedirects hops is fine.
	resp, err := c.Do(bg(), &Request{URL: src.URL + "/chain/3"})
	require.NoError(t, err)
	assert.Equal(t, "final", string(resp.Body))
	assert.Equal(t, src.URL+"/chain/0", resp.FinalURL)
}

func TestRedirectWithinAllowed(t *testing.T) {
	src := redirectServer(t)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	resp, err := c.Do(bg(), &Request{URL: src.URL + "/chain/2"})
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "final", string(resp.Body))
	assert.Equal(t, src.URL+"/chain/0", resp.FinalURL)
	assert.EqualValues(t, 3, src.hits.Load())
}

// TestRedirectCrossHostCredentials: credentials never reach the first host
// (they are not on the allow-list) nor a redirect target on another host.
func TestRedirectCrossHostCredentials(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	dst := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		_, _ = w.Write([]byte("dst"))
	})
	dstURL := "http://localhost:" + dst.port(t) + "/"
	src := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		http.Redirect(w, r, dstURL, http.StatusFound)
	})
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32", "localhost"}})
	resp, err := c.Do(bg(), &Request{URL: src.URL + "/", Header: http.Header{
		"Authorization": {"Bearer secret"},
		"Cookie":        {"sid=1"},
		"Accept":        {"text/plain"},
	}})
	require.NoError(t, err)
	assert.Equal(t, "dst", string(resp.Body))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 2)
	for _, h := range seen {
		assert.Empty(t, h.Get("Authorization"))
		assert.Empty(t, h.Get("Cookie"))
		assert.Equal(t, "text/plain", h.Get("Accept"))
	}
}

// TestRedirectToANonUTF8URL: a Location whose query holds raw Latin-1
// bytes (net/url keeps RawQuery as sent) made FinalURL invalid UTF-8, and
// the gateway's Fetch answer then failed to marshal with INTERNAL (found by
// the fault matrix, row I8). FinalURL now percent-encodes those bytes, and
// the server is asked for the same bytes.
func TestRedirectToANonUTF8URL(t *testing.T) {
	var mu sync.Mutex
	var gotQuery string
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latin1" {
			w.Header()["Location"] = []string{"/page?q=caf\xe9&x=\xff"}
			w.WriteHeader(http.StatusFound)
			return
		}
		mu.Lock()
		gotQuery = r.URL.RawQuery
		mu.Unlock()
		_, _ = w.Write([]byte("ok"))
	})
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	resp, err := c.Do(bg(), &Request{URL: srv.URL + "/latin1"})
	require.NoError(t, err)
	assert.Equal(t, srv.URL+"/page?q=caf%E9&x=%FF", resp.FinalURL)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "q=caf\xe9&x=\xff", gotQuery, "the redirect is followed with the bytes as sent")

	// A valid URL is left as it is, non-ASCII included.
	assert.Equal(t, "http://h/caf%C3%A9?q=café", finalURL(&url.URL{Scheme: "http", Host: "h", Path: "/café", RawQuery: "q=café"}))
}
