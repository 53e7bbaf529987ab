package fetch

import (
	"net/http"
	"slices"
	"strings"
)

// DefaultUserAgent is sent when the caller sets no User-Agent.
const DefaultUserAgent = "vega-gateway/1 (+fetch)"

// allowedRequestHeaders is the authoritative list (canonical names).
var allowedRequestHeaders = []string{
	"Accept",
	"Accept-Language",
	"User-Agent",
	"If-None-Match",
	"If-Modified-Since",
	"Range",
}

// AllowedRequestHeaders lists the request headers a caller may have
// forwarded (canonical form). Do sends only these and silently drops the
// rest. Deliberately absent:
//
//   - Authorization, Cookie, Proxy-*: the gateway never forwards credentials
//     to user-chosen destinations (so there is nothing to leak on a
//     cross-host redirect either);
//   - Host, hop-by-hop headers (Connection, TE, Upgrade, ...): set by the
//     transport;
//   - Accept-Encoding: the transport negotiates gzip itself so that the body
//     limit bounds decompressed bytes;
//   - Cache-Control, Pragma: caching is decided by the gateway's own cache
//     layer; forwarding them would suggest they bypass it.
//
// It is a copy for the edge and for tests: changing it does not change what
// Do sends.
var AllowedRequestHeaders = slices.Clone(allowedRequestHeaders)

// IsAllowedRequestHeader reports whether a request header named name
// (any case) is forwarded by Do.
func IsAllowedRequestHeader(name string) bool {
	return slices.Contains(allowedRequestHeaders, http.CanonicalHeaderKey(name))
}

// outboundHeader builds the request headers: the allowed subset of in plus
// the default User-Agent when none is given.
func outboundHeader(in http.Header) http.Header {
	out := make(http.Header, len(allowedRequestHeaders))
	for name, values := range in {
		if IsAllowedRequestHeader(name) && len(values) > 0 {
			out[http.CanonicalHeaderKey(name)] = slices.Clone(values)
		}
	}
	if out.Get("User-Agent") == "" {
		out.Set("User-Agent", DefaultUserAgent)
	}
	return out
}

// hopByHopHeaders are meaningful for one connection only (RFC 9110 7.6.1).
var hopByHopHeaders = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Proxy-Connection",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// responseHeader returns a copy of h without hop-by-hop headers, including
// those named in Connection. Set-Cookie is kept: the cache layer uses it to
// decide not to cache.
func responseHeader(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		return http.Header{}
	}
	for _, v := range out.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				out.Del(name)
			}
		}
	}
	for _, name := range hopByHopHeaders {
		out.Del(name)
	}
	return out
}
