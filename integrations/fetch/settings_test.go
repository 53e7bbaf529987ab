package fetch

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewDefaults(t *testing.T) {
	c, err := New(Settings{}) // not newTestClient: it fills in test timeouts; this test sends nothing
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	assert.Equal(t, DefaultMaxRedirects, c.settings.MaxRedirects)
	assert.Equal(t, int64(DefaultMaxBodyBytes), c.settings.MaxBodyBytes)
	assert.Equal(t, int64(DefaultMaxHeaderBytes), c.transport.MaxResponseHeaderBytes)
	assert.Equal(t, 30*time.Second, c.settings.Timeout)
	assert.Equal(t, 5*time.Second, c.guardedDialer.Timeout)

	tr := c.transport
	assert.Nil(t, tr.Proxy, "environment proxies must be ignored")
	assert.NotSame(t, http.DefaultTransport, tr)
	assert.True(t, tr.ForceAttemptHTTP2)
	assert.NotZero(t, tr.ResponseHeaderTimeout)
	assert.NotZero(t, tr.TLSHandshakeTimeout)
	assert.NotZero(t, tr.MaxIdleConnsPerHost)
	assert.NotZero(t, tr.IdleConnTimeout)
	assert.NotNil(t, c.guardedDialer.Control)
	assert.Nil(t, c.http.Jar)
}

func TestNewAllow(t *testing.T) {
	c := newTestClient(t, Settings{Allow: []string{
		" Example.Internal. ", "localhost", "10.1.0.0/16", "127.0.0.1", "::1/128", "::ffff:192.168.0.0/112", "",
	}})
	assert.Equal(t, map[string]bool{"example.internal": true, "localhost": true}, c.allow.hosts)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("192.168.0.0/16"),
	}, c.allow.prefixes)
}

func TestNewRejects(t *testing.T) {
	for _, entry := range []string{"10.0.0.0/33", "10.0.0.0/x", "fe80::1%eth0", "::g", "exa mple.com", "*.example.com", "2130706433", "http://example.com"} {
		t.Run(entry, func(t *testing.T) {
			_, err := New(Settings{Allow: []string{"localhost", entry}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), entry, "the error names the bad entry")
		})
	}
	for _, s := range []Settings{{MaxRedirects: -1}, {MaxBodyBytes: -1}, {MaxHeaderBytes: -1}, {Timeout: -1}, {DialTimeout: -1}} {
		_, err := New(s)
		require.Error(t, err)
	}
}

func TestOutboundHeader(t *testing.T) {
	h := outboundHeader(http.Header{
		"accept":            {"text/html"},
		"Accept-Language":   {"fr"},
		"Authorization":     {"Bearer secret"},
		"Cookie":            {"a=b"},
		"Accept-Encoding":   {"identity"},
		"Cache-Control":     {"no-cache"},
		"Connection":        {"close"},
		"Host":              {"evil"},
		"X-Forwarded-For":   {"1.2.3.4"},
		"If-None-Match":     {`"etag"`},
		"If-Modified-Since": {"Mon, 02 Jan 2006 15:04:05 GMT"},
		"Range":             {"bytes=0-9"},
	})
	assert.Equal(t, http.Header{
		"Accept":            {"text/html"},
		"Accept-Language":   {"fr"},
		"If-None-Match":     {`"etag"`},
		"If-Modified-Since": {"Mon, 02 Jan 2006 15:04:05 GMT"},
		"Range":             {"bytes=0-9"},
		"User-Agent":        {DefaultUserAgent},
	}, h)
	assert.Equal(t, []string{"custom/1"}, outboundHeader(http.Header{"User-Agent": {"custom/1"}}).Values("User-Agent"))
	assert.True(t, IsAllowedRequestHeader("accept-language"))
	assert.False(t, IsAllowedRequestHeader("Authorization"))
	assert.ElementsMatch(t, allowedRequestHeaders, AllowedRequestHeaders)
}

func TestResponseHeader(t *testing.T) {
	h := responseHeader(http.Header{
		"Connection":        {"X-Hop, keep-alive"},
		"X-Hop":             {"1"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
		"Set-Cookie":        {"a=b"},
		"Content-Type":      {"text/html"},
	})
	assert.Equal(t, http.Header{"Set-Cookie": {"a=b"}, "Content-Type": {"text/html"}}, h)
	assert.Equal(t, http.Header{}, responseHeader(nil))
}
