package fetch

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

// TestGuardControl calls the Control function directly: no socket, no
// packet, so public addresses can be judged without touching the network.
func TestGuardControl(t *testing.T) {
	g := newGuard([]netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("::1/128"),
	})
	tests := []struct {
		network, addr string
		class         string // "" means allowed
		detail        string
	}{
		// Allowed CIDRs: any port.
		{"tcp4", "127.0.0.1:6379", "", ""},
		{"tcp4", "10.1.2.3:22", "", ""},
		{"tcp6", "[::1]:12345", "", ""},
		{"tcp6", "[::ffff:127.0.0.1]:12345", "", ""}, // unmapped, then allowed
		// Public destinations on web ports.
		{"tcp4", "93.184.216.34:80", "", ""},
		{"tcp4", "93.184.216.34:443", "", ""},
		{"tcp4", "93.184.216.34:8080", "", ""},
		{"tcp6", "[2606:2800:220:1:248:1893:25c8:1946]:8443", "", ""},
		// Public destinations on other ports.
		{"tcp4", "93.184.216.34:6379", "", "port 6379 not allowed"},
		{"tcp4", "93.184.216.34:22", "", "port 22 not allowed"},
		// Refused classes.
		{"tcp4", "127.0.0.2:80", "a loopback address", ""},
		{"tcp4", "0.0.0.0:80", "an unspecified address", ""},
		{"tcp6", "[::]:80", "an unspecified address", ""},
		{"tcp4", "0.1.2.3:80", "a this-network address", ""},
		{"tcp4", "10.0.0.1:80", "a private address", ""},
		{"tcp4", "172.16.0.1:80", "a private address", ""},
		{"tcp4", "192.168.1.1:80", "a private address", ""},
		{"tcp4", "169.254.169.254:80", "a link-local address", ""},
		{"tcp6", "[fe80::1%eth0]:80", "a link-local address", ""},
		{"tcp4", "100.64.0.1:80", "a shared (CGNAT) address", ""},
		{"tcp4", "224.0.0.1:80", "a multicast address", ""},
		{"tcp6", "[ff02::1]:80", "a multicast address", ""},
		{"tcp4", "255.255.255.255:80", "a broadcast address", ""},
		{"tcp4", "192.0.2.1:80", "a documentation address", ""},
		{"tcp6", "[2001:db8::1]:80", "a documentation address", ""},
		{"tcp4", "198.18.0.1:80", "a benchmarking address", ""},
		{"tcp4", "240.0.0.1:80", "a reserved address", ""},
		{"tcp6", "[fd00::1]:80", "a unique local address", ""},
		{"tcp6", "[fc00::1]:80", "a unique local address", ""},
		{"tcp6", "[fd00:ec2::254]:80", "a unique local address", ""},
		{"tcp6", "[64:ff9b::a00:1]:80", "a NAT64 address", ""},
		{"tcp6", "[2002:7f00:1::]:80", "a 6to4 address", ""},
		{"tcp6", "[2001:0:4136:e378::1]:80", "a Teredo address", ""},
		{"tcp6", "[::ffff:169.254.169.254]:80", "a link-local address", ""},
		{"tcp6", "[::ffff:10.0.0.1]:80", "a private address", ""},
		{"tcp6", "[::127.0.0.1]:80", "an IPv4-compatible address", ""},
		{"tcp6", "[fec0::1]:80", "a non-global IPv6 address", ""},
		{"tcp4", "192.0.0.8:80", "a special-purpose address", ""}, // only in the ssrf tables
		// Not TCP.
		{"udp4", "93.184.216.34:80", "", "network udp4 not allowed"},
		{"tcp4", "not-an-address", "", "unparseable destination"},
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.addr, func(t *testing.T) {
			err := g.control(tt.network, tt.addr, nil)
			if tt.class == "" && tt.detail == "" {
				require.NoError(t, err)
				return
			}
			var be *blockedError
			require.True(t, errors.As(err, &be), "want *blockedError, got %v", err)
			assert.Equal(t, tt.class, be.class)
			if tt.detail != "" {
				assert.Contains(t, be.detail, tt.detail)
			}
		})
	}
}

func TestBlockedDialError(t *testing.T) {
	lit := blockedDialError("127.0.0.1", &blockedError{class: "a loopback address"})
	require.ErrorIs(t, lit, integrations.ErrBlocked)
	assert.Equal(t, "destination not allowed: 127.0.0.1 is a loopback address", lit.Error())

	name := blockedDialError("rebind.test", &blockedError{class: "a private address"})
	require.ErrorIs(t, name, integrations.ErrBlocked)
	assert.Equal(t, "destination not allowed: rebind.test resolves to a private address", name.Error())

	other := errors.New("connection refused")
	assert.Same(t, other, blockedDialError("x", other))
}
