package fetch

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vega-gateway/vega/integrations"
)

// maxURLLength bounds the URL a caller may ask for.
const maxURLLength = 8 << 10

// validateURL parses raw and applies checkURL. It never resolves names and
// never touches the network, so it is safe to fuzz.
func validateURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, invalid("empty URL")
	}
	if len(raw) > maxURLLength {
		return nil, invalid("URL longer than %d bytes", maxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse errors quote the whole URL; keep them out.
		return nil, invalid("malformed URL")
	}
	return checkURL(u)
}

// checkURL enforces the URL-level policy and returns a normalized copy:
//
//   - scheme http or https; any other scheme is a policy refusal (ErrBlocked),
//     a missing scheme is ErrInvalidRequest;
//   - a host is present, there is no user info, the port (if any) is 1-65535;
//   - IPv4 written as a number or in shorthand ("2130706433", "0x7f.1",
//     "127.1") is rewritten to its dotted-quad form, as browsers do, so it is
//     dialled as a literal (and judged by the dial guard) instead of being
//     sent to DNS;
//   - IPv6 zones and characters that are not valid in a host name are
//     refused.
//
// Whether the destination IP is allowed is decided later, at dial time.
func checkURL(u *url.URL) (*url.URL, error) {
	switch u.Scheme {
	case "http", "https":
	case "":
		return nil, invalid("URL must be absolute with scheme http or https")
	default:
		// url.Parse only accepts [a-z0-9+.-] in a scheme, so quoting it is safe.
		return nil, fmt.Errorf("%w: scheme %q not allowed", integrations.ErrBlocked, u.Scheme)
	}
	if u.Opaque != "" {
		return nil, invalid("malformed URL")
	}
	if u.User != nil {
		return nil, invalid("user info in URL not allowed")
	}
	host := u.Hostname()
	if host == "" {
		return nil, invalid("URL has no host")
	}
	port := u.Port()
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, invalid("port out of range")
		}
	}
	host, err := normalizeURLHost(host)
	if err != nil {
		return nil, err
	}
	out := *u
	out.Host = host
	if strings.Contains(host, ":") {
		out.Host = "[" + host + "]"
	}
	if port != "" {
		out.Host = net.JoinHostPort(host, port)
	}
	return &out, nil
}

// normalizeURLHost lower-cases a reg-name, canonicalizes IP literals and
// refuses hosts that could not be a DNS name or an IP.
func normalizeURLHost(host string) (string, error) {
	if strings.Contains(host, ":") {
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return "", invalid("malformed IPv6 address")
		}
		return a.String(), nil
	}
	h := strings.ToLower(host)
	if endsInNumber(h) {
		a, ok := parseLegacyIPv4(h)
		if !ok {
			return "", invalid("malformed IPv4 address")
		}
		return a.String(), nil
	}
	if len(h) > 1024 || !utf8.ValidString(h) {
		return "", invalid("malformed host")
	}
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	for _, l := range labels {
		if l == "" {
			return "", invalid("malformed host")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			// Bytes >= 0x80 belong to internationalized names, which net/http
			// converts to punycode itself.
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= utf8.RuneSelf) {
				return "", invalid("malformed host")
			}
		}
	}
	return h, nil
}

// endsInNumber reports whether the last dot-separated label of h (ignoring
// one trailing dot) is a number, which makes h an IPv4 address in the WHATWG
// URL standard rather than a DNS name.
func endsInNumber(h string) bool {
	parts := strings.Split(h, ".")
	if len(parts) > 1 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	last := parts[len(parts)-1]
	if last == "" {
		return false
	}
	if strings.Trim(last, "0123456789") == "" {
		return true
	}
	_, ok := parseIPv4Number(last)
	return ok
}

// parseLegacyIPv4 parses the IPv4 spellings browsers accept (WHATWG "IPv4
// parser"): one to four parts, each decimal, octal (leading 0) or hex (0x),
// the last part filling the remaining bytes.
func parseLegacyIPv4(h string) (netip.Addr, bool) {
	parts := strings.Split(h, ".")
	if len(parts) > 1 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return netip.Addr{}, false
		}
		nums[i] = n
	}
	for _, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, false
		}
	}
	last := nums[len(nums)-1]
	if last >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, false
	}
	v := last
	for i, n := range nums[:len(nums)-1] {
		v += n << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Number parses one part of a legacy IPv4 address. Values above
// 2^32 saturate (they are invalid in any position anyway).
func parseIPv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, s = 16, s[2:]
	case len(s) >= 2 && s[0] == '0':
		base, s = 8, s[1:]
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		d, ok := digitValue(s[i])
		if !ok || d >= base {
			return 0, false
		}
		if n <= 1<<32 {
			n = n*base + d
		}
	}
	return n, true
}

func digitValue(c byte) (uint64, bool) {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0'), true
	case c >= 'a' && c <= 'f':
		return uint64(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return uint64(c-'A') + 10, true
	}
	return 0, false
}

// invalid builds an ErrInvalidRequest with a detail that never quotes the
// URL.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", integrations.ErrInvalidRequest, fmt.Sprintf(format, args...))
}
