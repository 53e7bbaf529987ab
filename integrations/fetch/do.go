package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vega-gateway/vega/integrations"
)

// Request is one fetch.
type Request struct {
	URL string
	// Method is "GET" or "HEAD"; "" means GET. Anything else is
	// ErrInvalidRequest.
	Method string
	// Header holds request headers; only AllowedRequestHeaders are sent,
	// the rest are dropped silently. A missing User-Agent becomes
	// DefaultUserAgent.
	Header http.Header
	// MaxBytes caps the body; 0 means Settings.MaxBodyBytes, larger values
	// are clamped to it.
	MaxBytes int64
	// Timeout bounds the fetch; 0 means Settings.Timeout, larger values are
	// clamped to it.
	Timeout time.Duration
}

// Response is a fetched, bounded response.
type Response struct {
	StatusCode int
	// Header is the response header without hop-by-hop fields. Set-Cookie
	// is kept. Content-Length, when present, is the upstream's and may
	// exceed len(Body).
	Header http.Header
	Body   []byte
	// ContentType is sniffed from the first 512 bytes of Body with
	// http.DetectContentType (the upstream's header is not trusted); "" for
	// an empty body.
	ContentType string
	// FinalURL is the URL of the last request, after redirects, always
	// valid UTF-8 (see finalURL).
	FinalURL string
	// Truncated is true when the body was longer than the limit; Body then
	// holds the first MaxBytes bytes.
	Truncated bool
}

// Do fetches req.URL under the SSRF policy. See the package documentation
// for the error classes.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	if req == nil {
		return nil, invalid("nil request")
	}
	method, maxBytes, timeout, err := c.limits(req)
	if err != nil {
		return nil, err
	}
	u, err := validateURL(req.URL)
	if err != nil {
		return nil, err
	}

	inner, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(inner, method, u.String(), nil)
	if err != nil {
		return nil, invalid("malformed URL")
	}
	hreq.Header = outboundHeader(req.Header)

	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, classifyErr(ctx, inner, timeout, err)
	}
	defer resp.Body.Close()

	out := &Response{
		StatusCode: resp.StatusCode,
		Header:     responseHeader(resp.Header),
		FinalURL:   finalURL(resp.Request.URL),
	}
	if method == http.MethodHead {
		return out, nil
	}
	// Read one byte past the limit to detect truncation without buffering
	// more than that.
	body, err := io.ReadAll(io.LimitReader(resp.Body, min(maxBytes, math.MaxInt64-1)+1))
	if err != nil {
		return nil, classifyErr(ctx, inner, timeout, err)
	}
	if int64(len(body)) > maxBytes {
		body, out.Truncated = body[:maxBytes:maxBytes], true
	}
	out.Body = body
	if len(body) > 0 {
		out.ContentType = http.DetectContentType(body)
	}
	return out, nil
}

// limits resolves the method and the per-request bounds.
func (c *Client) limits(req *Request) (method string, maxBytes int64, timeout time.Duration, err error) {
	switch req.Method {
	case "", http.MethodGet:
		method = http.MethodGet
	case http.MethodHead:
		method = http.MethodHead
	default:
		return "", 0, 0, invalid("method not allowed (GET or HEAD only)")
	}
	if req.MaxBytes < 0 || req.Timeout < 0 {
		return "", 0, 0, invalid("negative limit")
	}
	maxBytes = c.settings.MaxBodyBytes
	if req.MaxBytes > 0 && req.MaxBytes < maxBytes {
		maxBytes = req.MaxBytes
	}
	timeout = c.settings.Timeout
	if req.Timeout > 0 && req.Timeout < timeout {
		timeout = req.Timeout
	}
	return method, maxBytes, timeout, nil
}

// classifyErr maps an error from the transport or a body read. The caller's
// own cancellation wins; then the fetch's own deadline (ErrTimeout); then
// the shared transport classification.
func classifyErr(ctx, inner context.Context, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		return integrations.ClassifyTransportError(ctx.Err(), backend, err)
	}
	if errors.Is(inner.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: no complete response within %s", integrations.ErrTimeout, backend, timeout)
	}
	if reason, ok := badResponse(err); ok {
		return fmt.Errorf("%w: %s: %s", integrations.ErrBadResponse, backend, reason)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		// NXDOMAIN: the caller named a host that does not exist. That is
		// the request's fault, not an outage of the host (a breaker must
		// not count it), and retrying will not help.
		return fmt.Errorf("%w: %s: the URL's host name does not exist (no such host)", integrations.ErrInvalidRequest, backend)
	}
	return integrations.ClassifyTransportError(nil, backend, err)
}

// finalURL is u as a string that is valid UTF-8. A redirect's Location may
// carry raw bytes that are not (a Latin-1 query: net/url keeps RawQuery as
// sent), and the gateway's answer holds the URL in a proto string, which
// must be valid UTF-8 or the whole answer fails to marshal. Such a URL gets
// every byte above 0x7F percent-encoded, as a browser does: the server sees
// the same bytes.
func finalURL(u *url.URL) string {
	s := u.String()
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
