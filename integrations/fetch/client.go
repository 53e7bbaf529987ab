package fetch

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/vega-gateway/vega/integrations"
)

// backend names the fetcher in errors.
const backend = "fetch"

// Client fetches caller-supplied URLs under the SSRF policy. It owns its
// transport and connection pool and is never shared with other
// integrations. It is safe for concurrent use.
type Client struct {
	settings      Settings
	allow         allowList
	guard         *guard
	guardedDialer *net.Dialer
	plainDialer   *net.Dialer
	transport     *http.Transport
	http          *http.Client

	// testDialAddr, when set (tests only), rewrites the address handed to
	// the dialer so tests can simulate names resolving to loopback without
	// DNS traffic.
	testDialAddr func(addr string) string
}

// New builds a Client. An invalid Settings.Allow entry is an error naming
// that entry; negative limits are an error.
func New(s Settings) (*Client, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	al, err := parseAllow(s.Allow)
	if err != nil {
		return nil, err
	}
	c := &Client{settings: s, allow: al, guard: newGuard(al.prefixes)}
	c.plainDialer = &net.Dialer{Timeout: s.DialTimeout, KeepAlive: 30 * time.Second}
	c.guardedDialer = &net.Dialer{Timeout: s.DialTimeout, KeepAlive: 30 * time.Second, Control: c.guard.control}
	c.transport = &http.Transport{
		Proxy:                  nil, // environment proxies would bypass the dial guard
		DialContext:            c.dialContext,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    min(10*time.Second, s.Timeout),
		ResponseHeaderTimeout:  s.Timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: s.MaxHeaderBytes,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
	}
	c.http = &http.Client{
		Transport:     c.transport,
		CheckRedirect: c.checkRedirect,
		// No Jar: cookies set by one destination are never sent anywhere.
		// No Timeout: Do bounds each fetch with its own context.
	}
	return c, nil
}

// CloseIdleConnections closes pooled connections that are not in use.
func (c *Client) CloseIdleConnections() { c.transport.CloseIdleConnections() }

// checkRedirect caps the hop count and re-applies the URL policy to every
// target. The destination IP of each hop is checked when it is dialled.
//
// Too many hops is ErrBadResponse (the upstream misbehaves; nothing was
// refused by policy). A non-http(s) target is ErrBlocked. Any other invalid
// target URL is ErrBadResponse, since the caller's request was fine.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > c.settings.MaxRedirects {
		return fmt.Errorf("%w: more than %d redirects", integrations.ErrBadResponse, c.settings.MaxRedirects)
	}
	u, err := checkURL(req.URL)
	if err != nil {
		if errors.Is(err, integrations.ErrBlocked) {
			return fmt.Errorf("%w (redirect)", err)
		}
		return fmt.Errorf("%w: redirect to an invalid URL", integrations.ErrBadResponse)
	}
	req.URL = u
	// No credential can cross to another host: the outbound header filter
	// never lets Authorization, Cookie or Proxy-Authorization through, there
	// is no cookie jar, and net/http drops them on cross-domain redirects.
	return nil
}
