package fetch

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProxyFromEnvironmentIgnored sets every proxy variable to a listening
// fake proxy and fetches a non-loopback-looking name (net/http never proxies
// loopback addresses or "localhost", which would make this test pass for
// the wrong reason). The name is mapped to the real server at dial time, so
// no DNS query leaves the machine.
func TestProxyFromEnvironmentIgnored(t *testing.T) {
	proxy := newCountingServer(t, okHandler("via-proxy"))
	origin := newCountingServer(t, okHandler("direct"))
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	c := newTestClient(t, Settings{Allow: []string{"proxy-check.test", "127.0.0.1/32"}})
	c.testDialAddr = func(addr string) string {
		if strings.HasPrefix(addr, "proxy-check.test:") {
			return origin.Listener.Addr().String()
		}
		return addr
	}

	resp, err := c.Do(bg(), &Request{URL: "http://proxy-check.test/page"})
	require.NoError(t, err)
	assert.Equal(t, "direct", string(resp.Body))
	assert.EqualValues(t, 1, origin.hits.Load())
	assert.Zero(t, proxy.hits.Load(), "the environment proxy must not be used")

	// Control: the same client with a proxy configured does reach the fake
	// proxy, so the assertions above can fail.
	proxyURL, err := url.Parse(proxy.URL)
	require.NoError(t, err)
	tr := c.transport.Clone()
	tr.Proxy = http.ProxyURL(proxyURL)
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	res, err := hc.Get("http://proxy-check.test/page")
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	assert.EqualValues(t, 1, proxy.hits.Load())
}
