// Package fetch is the gateway's SSRF-guarded HTTP fetcher: it gets a
// caller-supplied http(s) URL and returns a bounded, sniffed response.
//
// # Policy
//
// The destination is checked when the connection is dialled, on the literal
// IP the dialer is about to connect to (net.Dialer.Control), never on the
// URL string or on a separate DNS lookup. That defeats DNS rebinding and odd
// IP spellings, and it re-checks every redirect hop because each hop dials
// again. Refused: loopback, private, link-local (incl. cloud metadata),
// unspecified, shared/CGNAT, multicast, broadcast, documentation,
// benchmarking, reserved, unique-local, NAT64, 6to4, Teredo and every other
// IANA special-purpose range (tables from code.dny.dev/ssrf). IPv4-mapped
// IPv6 addresses are unmapped and judged as IPv4.
//
// Guarded (public) destinations may only be dialled on ports 80, 443, 8080
// and 8443. Destinations exempted by Settings.Allow (a host name, or an IP
// inside an allowed CIDR) may be dialled on any port.
//
// Proxies from the environment (HTTP_PROXY, HTTPS_PROXY) are ignored: a
// proxy would make the dial guard see only the proxy's address.
//
// # Errors
//
// Errors use the vocabulary of package integrations:
//
//   - integrations.ErrBlocked: the destination or scheme is refused by policy
//     (internal address, port not allowed, non-http(s) scheme, also on a
//     redirect hop).
//   - integrations.ErrInvalidRequest: the request cannot be sent as given
//     (unparseable URL, no host, user info in the URL, method other than GET
//     or HEAD, negative limits, a host name that does not exist: NXDOMAIN).
//   - integrations.ErrBadResponse: the upstream misbehaved (more redirects
//     than Settings.MaxRedirects, a redirect to an invalid URL, oversized or
//     malformed response headers, corrupt gzip).
//   - integrations.ErrTimeout: the gateway's own per-fetch bound expired while
//     the caller's context was still alive.
//   - integrations.ErrUnreachable: connection refused, reset, a DNS failure
//     other than NXDOMAIN (no answer, SERVFAIL), TLS failure.
//   - context.Canceled / context.DeadlineExceeded: the caller gave up.
//
// A body longer than the limit is not an error: Response.Truncated is set.
package fetch
