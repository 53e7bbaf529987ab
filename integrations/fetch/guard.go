package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"code.dny.dev/ssrf"

	"github.com/vega-gateway/vega/integrations"
)

// publicPorts are the only ports a guarded (non-allow-listed) destination
// may be dialled on: the web ports and their common alternates. Internal
// services on other ports (Redis 6379, SSH 22, ...) of public hosts stay out
// of reach.
var publicPorts = []uint16{80, 443, 8080, 8443}

// namedRanges gives refused ranges a human name for error messages. Order
// matters: the first match wins (broadcast before reserved). The ssrf tables
// below are the authority; this list only names what they refuse.
var namedRanges = []struct {
	prefix netip.Prefix
	class  string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "a this-network address"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared (CGNAT) address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "a broadcast address"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address"},
	{netip.MustParsePrefix("3fff::/20"), "a documentation address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a NAT64 address"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address"},
	{netip.MustParsePrefix("192.88.99.0/24"), "a 6to4 relay address"},
	{netip.MustParsePrefix("2001::/32"), "a Teredo address"},
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible address"},
}

// guard is the dial-time destination check.
type guard struct {
	allowed  []netip.Prefix
	guardian *ssrf.Guardian
}

func newGuard(allowed []netip.Prefix) *guard {
	return &guard{
		allowed: allowed,
		// Ports are checked here after the IP (allowed CIDRs may use any
		// port); the Guardian only judges the address.
		guardian: ssrf.New(ssrf.WithAnyPort(), ssrf.WithNetworks("tcp4", "tcp6")),
	}
}

// blockedError is returned by the Control function. The dialer wraps it in
// a *net.OpError carrying the resolved address; dialContext replaces that
// with an error that names only what the caller asked for.
//
// class completes "<host> is ..." ("a loopback address"); detail, when set,
// is a complete reason that does not depend on the address.
type blockedError struct{ class, detail string }

func (e *blockedError) Error() string {
	if e.detail != "" {
		return "destination not allowed: " + e.detail
	}
	return "destination not allowed: address is " + e.class
}

// control is the net.Dialer.Control function. Go calls it after name
// resolution and before connect, with the literal IP:port about to be
// dialled, so nothing is sent to a refused address.
func (g *guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &blockedError{detail: "unparseable destination"}
	}
	ip := ap.Addr().WithZone("").Unmap()
	for _, p := range g.allowed {
		if p.Contains(ip) {
			return nil
		}
	}
	if network != "tcp4" && network != "tcp6" {
		return &blockedError{detail: "network " + network + " not allowed"}
	}
	if class := classify(ip); class != "" {
		return &blockedError{class: class}
	}
	if err := g.guardian.SafeAddr(ip); err != nil {
		return &blockedError{class: "a special-purpose address"}
	}
	if !slices.Contains(publicPorts, ap.Port()) {
		return &blockedError{detail: fmt.Sprintf("port %d not allowed for public destinations (80, 443, 8080, 8443 only)", ap.Port())}
	}
	return nil
}

// classify names the class of a refused address, or returns "" when it is
// not in one of the named classes (the ssrf tables still get the last word).
func classify(ip netip.Addr) string {
	switch {
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.Is4() && ip.IsPrivate():
		return "a private address"
	case ip.IsPrivate():
		return "a unique local address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.IsMulticast():
		return "a multicast address"
	}
	for _, r := range namedRanges {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	if ip.Is6() && !ssrf.IPv6GlobalUnicast.Contains(ip) {
		return "a non-global IPv6 address"
	}
	return ""
}

// blockedDialError turns a dial error caused by the guard into ErrBlocked
// naming the host the caller asked for (an IP literal or a name), never the
// address a name resolved to. Other errors pass through.
func blockedDialError(host string, err error) error {
	var be *blockedError
	if !errors.As(err, &be) {
		return err
	}
	if be.detail != "" {
		return fmt.Errorf("%w: %s", integrations.ErrBlocked, be.detail)
	}
	if _, perr := netip.ParseAddr(host); perr == nil {
		return fmt.Errorf("%w: %s is %s", integrations.ErrBlocked, host, be.class)
	}
	return fmt.Errorf("%w: %s resolves to %s", integrations.ErrBlocked, host, be.class)
}

// dialContext dials addr ("host:port", unresolved). Hosts named in the allow
// list are dialled without the guard; everything else goes through the
// guarded dialer, whose Control checks every resolved address.
func (c *Client) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed dial address", integrations.ErrInvalidRequest)
	}
	if c.testDialAddr != nil {
		addr = c.testDialAddr(addr)
	}
	if c.allow.hosts[normalizeHost(host)] {
		return c.plainDialer.DialContext(ctx, network, addr)
	}
	conn, err := c.guardedDialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, blockedDialError(host, err)
	}
	return conn, nil
}
