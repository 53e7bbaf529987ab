package fetch

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

func TestValidateURL(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		wantErr error  // nil: accepted
		want    string // normalized URL when accepted
	}{
		{"plain http", "http://example.com/a?b=c", nil, "http://example.com/a?b=c"},
		{"https with port", "https://example.com:8443/", nil, "https://example.com:8443/"},
		{"case folded", "HTTP://Example.COM/Path", nil, "http://example.com/Path"},
		{"empty port dropped", "http://example.com:/x", nil, "http://example.com/x"},
		{"decimal ipv4", "http://2130706433:8080/", nil, "http://127.0.0.1:8080/"},
		{"hex ipv4", "http://0x7f000001/", nil, "http://127.0.0.1/"},
		{"short ipv4", "http://0x7f.1/", nil, "http://127.0.0.1/"},
		{"octal ipv4", "http://0251.0376.0251.0376/", nil, "http://169.254.169.254/"},
		{"trailing-dot ipv4", "http://10.0.0.1./", nil, "http://10.0.0.1/"},
		{"mapped ipv6", "http://[::FFFF:127.0.0.1]:81/", nil, "http://[::ffff:127.0.0.1]:81/"},
		{"ipv6", "http://[FD00::1]/", nil, "http://[fd00::1]/"},
		{"idn", "http://ex%C3%A9.com/", nil, "http://ex%C3%A9.com/"},

		{"file", "file:///etc/passwd", integrations.ErrBlocked, ""},
		{"gopher", "gopher://x", integrations.ErrBlocked, ""},
		{"ftp", "ftp://x", integrations.ErrBlocked, ""},
		{"data", "data:text/html,<b>x</b>", integrations.ErrBlocked, ""},
		{"javascript", "javascript:alert(1)", integrations.ErrBlocked, ""},
		{"ws", "ws://example.com/", integrations.ErrBlocked, ""},

		{"empty", "", integrations.ErrInvalidRequest, ""},
		{"relative", "example.com/x", integrations.ErrInvalidRequest, ""},
		{"protocol relative", "//169.254.169.254/", integrations.ErrInvalidRequest, ""},
		{"no host", "http:///x", integrations.ErrInvalidRequest, ""},
		{"opaque", "http:example.com", integrations.ErrInvalidRequest, ""},
		{"userinfo", "http://user:pass@example.com/", integrations.ErrInvalidRequest, ""},
		{"user only", "http://user@example.com/", integrations.ErrInvalidRequest, ""},
		{"port zero", "http://example.com:0/", integrations.ErrInvalidRequest, ""},
		{"port too big", "http://example.com:65536/", integrations.ErrInvalidRequest, ""},
		{"zone", "http://[fe80::1%25eth0]/", integrations.ErrInvalidRequest, ""},
		{"bad ipv4 part", "http://256.1.1.1/", integrations.ErrInvalidRequest, ""},
		{"five parts", "http://1.2.3.4.5/", integrations.ErrInvalidRequest, ""},
		{"bad octal", "http://08.1.1.1/", integrations.ErrInvalidRequest, ""},
		{"odd char", "http://a!b.com/", integrations.ErrInvalidRequest, ""},
		{"empty label", "http://a..b/", integrations.ErrInvalidRequest, ""},
		{"space", "http://a b/", integrations.ErrInvalidRequest, ""},
		{"too long", "http://example.com/" + strings.Repeat("a", maxURLLength), integrations.ErrInvalidRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := validateURL(tt.raw)
			if tt.wantErr == nil {
				require.NoError(t, err)
				assert.Equal(t, tt.want, u.String())
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			assert.Nil(t, u)
			other := integrations.ErrInvalidRequest
			if tt.wantErr == integrations.ErrInvalidRequest {
				other = integrations.ErrBlocked
			}
			assert.NotErrorIs(t, err, other)
			if tt.raw != "" {
				assert.NotContains(t, err.Error(), tt.raw, "errors must not quote the URL")
			}
		})
	}
}

func TestParseLegacyIPv4(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means invalid
	}{
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"1.2.3.4.", "1.2.3.4"},
		{"4294967295", "255.255.255.255"},
		{"4294967296", ""},
		{"1.16777216", ""},
		{"256.1", ""},
		{"1.2.3.4.5", ""},
		{"09", ""},
		{"0xg", ""},
		{"1..2", ""},
		{"99999999999999999999999999", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, ok := parseLegacyIPv4(tt.in)
			if tt.want == "" {
				assert.False(t, ok)
				return
			}
			require.True(t, ok)
			assert.Equal(t, tt.want, a.String())
		})
	}
}

// FuzzValidateURL checks the URL policy never panics and that whatever it
// accepts is an absolute http(s) URL with a host, no user info, a valid
// port, no ambiguous numeric host, and is stable under re-validation. It is
// pure: no resolution, no network.
func FuzzValidateURL(f *testing.F) {
	for _, seed := range []string{
		"http://example.com/",
		"https://example.com:8443/a?b=c#d",
		"http://127.0.0.1:8080/",
		"http://localhost/",
		"http://[::1]/",
		"http://[::ffff:127.0.0.1]/",
		"http://[fe80::1%25eth0]/",
		"http://0.0.0.0/",
		"http://2130706433/",
		"http://0x7f.1/",
		"http://0177.0.0.1/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00::1]/",
		"http://100.64.0.1/",
		"http://user:pass@example.com/",
		"file:///etc/passwd",
		"gopher://x",
		"ftp://x",
		"javascript:alert(1)",
		"data:text/plain,x",
		"//example.com",
		"http:example.com",
		"http://a..b/",
		"http://ex%C3%A9.com/",
		"http://example.com:99999/",
		"HTTP://EXAMPLE.COM./",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := validateURL(raw)
		if err != nil {
			blocked := errors.Is(err, integrations.ErrBlocked)
			invalid := errors.Is(err, integrations.ErrInvalidRequest)
			if blocked == invalid {
				t.Fatalf("error must be exactly one of ErrBlocked/ErrInvalidRequest: %v", err)
			}
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
		host := u.Hostname()
		if host == "" {
			t.Fatalf("accepted URL without host: %q", raw)
		}
		if u.User != nil || u.Opaque != "" {
			t.Fatalf("accepted user info or opaque URL: %q", raw)
		}
		if p := u.Port(); p != "" && (len(p) > 5 || p == "0") {
			t.Fatalf("accepted port %q", p)
		}
		if !strings.Contains(host, ":") && endsInNumber(host) {
			if a, perr := netip.ParseAddr(host); perr != nil || !a.Is4() {
				t.Fatalf("accepted ambiguous numeric host %q", host)
			}
		}
		again, err := validateURL(u.String())
		if err != nil {
			t.Fatalf("normalized URL %q rejected: %v", u.String(), err)
		}
		if again.String() != u.String() {
			t.Fatalf("not stable: %q then %q", u.String(), again.String())
		}
	})
}
