package fetch

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

// TestDoBlocked: with no Allow entries every internal destination is refused
// by the dial guard before connect (or by the scheme check before any dial),
// and the loopback servers listening on the targeted ports see no request.
// Non-loopback targets (10.x, 169.254.x, fd00::, 100.64.x) are refused in
// Control, before any packet is sent.
func TestDoBlocked(t *testing.T) {
	v4 := newCountingServer(t, okHandler("reached"))
	port := v4.port(t)
	v6port := port
	var v6 *countingServer
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		v6 = newCountingServerOn(t, "[::1]:0", okHandler("reached"))
		v6port = v6.port(t)
	}

	c := newTestClient(t, Settings{DialTimeout: 200 * time.Millisecond, Timeout: 2 * time.Second})
	tests := []struct {
		url  string
		want string // substring of the error
	}{
		{"http://127.0.0.1:" + port + "/", "127.0.0.1 is a loopback address"},
		{"http://localhost:" + port + "/", "localhost resolves to a loopback address"},
		{"http://[::1]:" + v6port + "/", "::1 is a loopback address"},
		{"http://[::ffff:127.0.0.1]:" + port + "/", "is a loopback address"},
		{"http://0.0.0.0:" + port + "/", "0.0.0.0 is an unspecified address"},
		{"http://2130706433:" + port + "/", "127.0.0.1 is a loopback address"},
		{"http://0x7f.1:" + port + "/", "127.0.0.1 is a loopback address"},
		{"http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"},
		{"http://[::ffff:169.254.169.254]/", "is a link-local address"},
		{"http://10.0.0.1/", "10.0.0.1 is a private address"},
		{"http://[fd00::1]/", "fd00::1 is a unique local address"},
		{"http://100.64.0.1/", "100.64.0.1 is a shared (CGNAT) address"},
		{"http://[64:ff9b::a00:1]/", "is a NAT64 address"},
		{"file:///etc/passwd", `scheme "file" not allowed`},
		{"gopher://x", `scheme "gopher" not allowed`},
		{"ftp://x", `scheme "ftp" not allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			start := time.Now()
			resp, err := c.Do(bg(), &Request{URL: tt.url})
			require.ErrorIs(t, err, integrations.ErrBlocked)
			assert.Nil(t, resp)
			assert.NotErrorIs(t, err, integrations.ErrUnreachable)
			assert.NotErrorIs(t, err, integrations.ErrTimeout)
			assert.Contains(t, err.Error(), tt.want)
			assert.Less(t, time.Since(start), time.Second, "refused before any connection attempt")
		})
	}
	assert.Zero(t, v4.hits.Load(), "the IPv4 loopback server must not be reached")
	if v6 != nil {
		assert.Zero(t, v6.hits.Load(), "the IPv6 loopback server must not be reached")
	}
}

// TestDoBlockedRebinding simulates a public-looking name that resolves to
// loopback (what a rebinding DNS server would answer on the second lookup):
// the guard judges the address actually dialled.
func TestDoBlockedRebinding(t *testing.T) {
	srv := newCountingServer(t, okHandler("reached"))
	c := newTestClient(t, Settings{})
	c.testDialAddr = func(addr string) string {
		if strings.HasPrefix(addr, "rebind.test:") {
			return srv.Listener.Addr().String()
		}
		return addr
	}
	_, err := c.Do(bg(), &Request{URL: "http://rebind.test:8080/"})
	require.ErrorIs(t, err, integrations.ErrBlocked)
	assert.Equal(t, "destination not allowed: rebind.test resolves to a loopback address", err.Error())
	assert.NotContains(t, err.Error(), "127.0.0.1", "the resolved address is not disclosed")
	assert.Zero(t, srv.hits.Load())
}

func TestDoInvalidRequest(t *testing.T) {
	srv := newCountingServer(t, okHandler("hello"))
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	withUser := strings.Replace(srv.URL, "http://", "http://user:pass@", 1) + "/"
	tests := []struct {
		name string
		req  *Request
	}{
		{"POST", &Request{URL: srv.URL, Method: "POST"}},
		{"lower-case get", &Request{URL: srv.URL, Method: "get"}},
		{"CONNECT", &Request{URL: srv.URL, Method: "CONNECT"}},
		{"userinfo", &Request{URL: withUser}},
		{"no host", &Request{URL: "http:///x"}},
		{"unparseable", &Request{URL: "http://[::1"}},
		{"negative MaxBytes", &Request{URL: srv.URL, MaxBytes: -1}},
		{"negative Timeout", &Request{URL: srv.URL, Timeout: -1}},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Do(bg(), tt.req)
			require.ErrorIs(t, err, integrations.ErrInvalidRequest)
			assert.NotErrorIs(t, err, integrations.ErrBlocked)
			assert.Nil(t, resp)
			assert.NotContains(t, err.Error(), "pass")
		})
	}
	assert.Zero(t, srv.hits.Load())
}
