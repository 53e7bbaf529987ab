package fetch

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Defaults applied by New to zero-valued Settings fields.
const (
	DefaultMaxRedirects   = 5
	DefaultMaxBodyBytes   = 10 << 20 // 10 MiB
	DefaultMaxHeaderBytes = 64 << 10 // 64 KiB
	DefaultTimeout        = 30 * time.Second
	DefaultDialTimeout    = 5 * time.Second
)

// Settings configures a Client. Zero values mean the defaults above.
type Settings struct {
	// Allow lists destinations exempt from the SSRF guard (VEGA_FETCH_ALLOW):
	// host names ("example.internal", "localhost"), matched
	// case-insensitively and without a trailing dot, and CIDRs
	// ("10.1.0.0/16", "::1/128"). A bare IP is taken as a single-address
	// CIDR. Exempt destinations may be dialled on any port.
	Allow []string
	// MaxRedirects caps redirect hops; 0 means 5.
	MaxRedirects int
	// MaxBodyBytes caps the decompressed body; 0 means 10 MiB.
	MaxBodyBytes int64
	// MaxHeaderBytes caps the response headers; 0 means 64 KiB.
	MaxHeaderBytes int64
	// Timeout bounds a whole fetch including redirects and body; 0 means 30s.
	Timeout time.Duration
	// DialTimeout bounds each connection attempt; 0 means 5s.
	DialTimeout time.Duration
}

// withDefaults validates s and fills in zero fields.
func (s Settings) withDefaults() (Settings, error) {
	if s.MaxRedirects < 0 || s.MaxBodyBytes < 0 || s.MaxHeaderBytes < 0 || s.Timeout < 0 || s.DialTimeout < 0 {
		return s, errors.New("fetch: settings must not be negative")
	}
	if s.MaxRedirects == 0 {
		s.MaxRedirects = DefaultMaxRedirects
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.DialTimeout == 0 {
		s.DialTimeout = DefaultDialTimeout
	}
	return s, nil
}

// allowList is the parsed form of Settings.Allow.
type allowList struct {
	hosts    map[string]bool // lower-case, no trailing dot
	prefixes []netip.Prefix  // masked; IPv4 prefixes are plain IPv4
}

func parseAllow(entries []string) (allowList, error) {
	al := allowList{hosts: map[string]bool{}}
	for _, raw := range entries {
		e := strings.TrimSpace(raw)
		if e == "" {
			continue
		}
		if p, ok, err := parseAllowPrefix(e); err != nil {
			return allowList{}, fmt.Errorf("fetch: invalid allow entry %q: %v", raw, err)
		} else if ok {
			al.prefixes = append(al.prefixes, p)
			continue
		}
		host := normalizeHost(e)
		if !validHostName(host) {
			return allowList{}, fmt.Errorf("fetch: invalid allow entry %q: not a host name, IP or CIDR", raw)
		}
		al.hosts[host] = true
	}
	return al, nil
}

// parseAllowPrefix parses e as a CIDR or a bare IP. ok is false when e is
// neither (it may then be a host name).
func parseAllowPrefix(e string) (p netip.Prefix, ok bool, err error) {
	if strings.Contains(e, "/") {
		p, err = netip.ParsePrefix(e)
		if err != nil {
			return p, false, errors.New("malformed CIDR")
		}
	} else {
		a, perr := netip.ParseAddr(e)
		if perr != nil {
			if strings.Contains(e, ":") {
				return p, false, errors.New("malformed IP address")
			}
			return p, false, nil
		}
		if a.Zone() != "" {
			return p, false, errors.New("zoned IP addresses are not supported")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	// An IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) is the IPv4 prefix
	// it maps, since the guard unmaps addresses before matching.
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), true, nil
}

// normalizeHost lower-cases a host name and strips one trailing dot.
func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// validHostName reports whether h (normalized) is a plausible DNS name:
// dot-separated labels of letters, digits, '-' and '_', not ending in a
// number (such names are IPv4 spellings, see parseLegacyIPv4).
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return !endsInNumber(h)
}
