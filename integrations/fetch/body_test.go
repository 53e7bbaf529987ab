package fetch

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestBodyLimit(t *testing.T) {
	body := []byte(strings.Repeat("0123456789", 100)) // 1000 bytes
	srv := newCountingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(body)
	})
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, MaxBodyBytes: 500})

	tests := []struct {
		name      string
		maxBytes  int64
		wantLen   int
		truncated bool
	}{
		{"request limit", 100, 100, true},
		{"clamped to settings", 1000, 500, true},
		{"settings limit", 0, 500, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Do(bg(), &Request{URL: srv.URL, MaxBytes: tt.maxBytes})
			require.NoError(t, err, "a long body is truncated, not an error")
			assert.Equal(t, tt.truncated, resp.Truncated)
			require.Len(t, resp.Body, tt.wantLen)
			assert.Equal(t, body[:tt.wantLen], resp.Body)
			assert.Equal(t, "text/plain; charset=utf-8", resp.ContentType)
		})
	}

	big := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, MaxBodyBytes: 1000})
	resp, err := big.Do(bg(), &Request{URL: srv.URL})
	require.NoError(t, err)
	assert.False(t, resp.Truncated, "a body of exactly the limit is complete")
	assert.Equal(t, body, resp.Body)

	resp, err = big.Do(bg(), &Request{URL: srv.URL, MaxBytes: 999})
	require.NoError(t, err)
	assert.True(t, resp.Truncated, "one byte over the limit")
	assert.Equal(t, body[:999], resp.Body)
}

func TestBodyGzip(t *testing.T) {
	small := []byte(strings.Repeat("hello gzip ", 50))
	bomb := make([]byte, 1<<20) // 1 MiB of zeros, ~1 KiB compressed
	smallGz, bombGz := gzipped(t, small), gzipped(t, bomb)
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			http.Error(w, "gzip expected", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		switch r.URL.Path {
		case "/small":
			_, _ = w.Write(smallGz)
		case "/bomb":
			_, _ = w.Write(bombGz)
		case "/corrupt":
			_, _ = w.Write([]byte("this is not gzip at all"))
		}
	})
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, MaxBodyBytes: 64 << 10})

	resp, err := c.Do(bg(), &Request{URL: srv.URL + "/small"})
	require.NoError(t, err)
	assert.Equal(t, small, resp.Body, "decompressed transparently")
	assert.False(t, resp.Truncated)
	assert.Empty(t, resp.Header.Get("Content-Encoding"))

	resp, err = c.Do(bg(), &Request{URL: srv.URL + "/bomb", MaxBytes: 4096})
	require.NoError(t, err)
	assert.True(t, resp.Truncated)
	assert.Equal(t, make([]byte, 4096), resp.Body, "the limit bounds decompressed bytes")
	assert.Less(t, len(bombGz), 4096*4, "the compressed stream is small; the limit must not be on it")

	_, err = c.Do(bg(), &Request{URL: srv.URL + "/corrupt"})
	require.ErrorIs(t, err, integrations.ErrBadResponse)
}

func TestResponseHeaderLimit(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("a", 16<<10))
		_, _ = w.Write([]byte("x"))
	})
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, MaxHeaderBytes: 4 << 10})
	_, err := c.Do(bg(), &Request{URL: srv.URL})
	require.ErrorIs(t, err, integrations.ErrBadResponse)
	assert.Contains(t, err.Error(), "response headers too large")
	assert.EqualValues(t, 1, srv.hits.Load())
}
