package notify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vega-gateway/vega/integrations"
)

const (
	// userAgent is sent with every notification.
	userAgent = "vega-gateway/1"
	// maxResponseBytes bounds what is read (and drained) from a response.
	maxResponseBytes = 64 << 10
	// defaultTimeout bounds a Send made with the package default client.
	defaultTimeout = 10 * time.Second
)

// defaultClient is used when a constructor gets a nil *http.Client. It has
// its own pool and does not follow redirects (a redirected POST would turn
// into a GET and lose the message; the 3xx is reported instead).
var defaultClient = &http.Client{
	Timeout:   defaultTimeout,
	Transport: defaultTransport(),
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// defaultTransport is a private copy of net/http's default transport.
func defaultTransport() http.RoundTripper {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		return t.Clone()
	}
	return http.DefaultTransport
}

// endpoint is a validated webhook destination.
type endpoint struct {
	name    string
	url     *url.URL
	hc      *http.Client
	secrets []string // lower-cased URL parts that must never appear in an error
}

// newEndpoint validates rawURL (absolute http or https with a host). Its
// errors never quote rawURL.
func newEndpoint(kind, name, rawURL string, hc *http.Client) (endpoint, error) {
	if name == "" {
		name = kind
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return endpoint{}, fmt.Errorf("%w: %s: malformed webhook URL", integrations.ErrInvalidRequest, name)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return endpoint{}, fmt.Errorf("%w: %s: webhook URL must be http or https", integrations.ErrInvalidRequest, name)
	}
	if u.Hostname() == "" || u.Opaque != "" {
		return endpoint{}, fmt.Errorf("%w: %s: webhook URL has no host", integrations.ErrInvalidRequest, name)
	}
	if hc == nil {
		hc = defaultClient
	}
	return endpoint{name: name, url: u, hc: hc, secrets: urlSecrets(u)}, nil
}

// urlSecrets lists the parts of u an error must not contain: host, path
// segments, query keys and values, user info and fragment (parts shorter
// than 4 bytes carry no secret and would make every reason suspicious).
func urlSecrets(u *url.URL) []string {
	parts := []string{u.Host, u.Hostname(), u.EscapedPath(), u.Fragment, u.RawQuery}
	parts = append(parts, strings.Split(u.Path, "/")...)
	parts = append(parts, strings.Split(u.EscapedPath(), "/")...)
	for k, vs := range u.Query() {
		parts = append(parts, k)
		parts = append(parts, vs...)
	}
	if u.User != nil {
		parts = append(parts, u.User.Username())
		if p, ok := u.User.Password(); ok {
			parts = append(parts, p)
		}
	}
	var out []string
	for _, p := range parts {
		if len(p) >= 4 {
			out = append(out, strings.ToLower(p))
		}
	}
	return out
}

// leaks reports whether s contains any part of the webhook URL.
func (e endpoint) leaks(s string) bool {
	ls := strings.ToLower(s)
	if strings.Contains(ls, "://") {
		return true
	}
	for _, secret := range e.secrets {
		if strings.Contains(ls, secret) {
			return true
		}
	}
	return false
}

// reply is a response read within maxResponseBytes.
type reply struct {
	status  int
	header  http.Header
	body    []byte
	readErr error // classified error from reading the body; body is nil then
}

// post sends body as JSON. Transport errors are classified; a redirect that
// turned the POST into another method is ErrBadResponse (the message was
// not delivered where intended). The response body is read up to
// maxResponseBytes and the connection drained (bounded) and closed.
func (e endpoint) post(ctx context.Context, body []byte, idempotencyKey string) (*reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: cannot build request", integrations.ErrInvalidRequest, e.name)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}

	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, integrations.ClassifyTransportError(ctx.Err(), e.name, err)
	}
	defer drainClose(resp.Body)
	if resp.Request != nil && resp.Request.Method != http.MethodPost {
		return nil, fmt.Errorf("%w: %s: redirected to a %s request, message not delivered", integrations.ErrBadResponse, e.name, resp.Request.Method)
	}
	r := &reply{status: resp.StatusCode, header: resp.Header}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		// A partial body gives no reason; whether the failed read matters is
		// the sender's call (readErr).
		r.readErr = integrations.ClassifyTransportError(ctx.Err(), e.name, err)
		return r, nil
	}
	r.body = data
	return r, nil
}

// statusError builds the StatusError for a failed reply with the given
// sanitized reason.
func (e endpoint) statusError(r *reply, reason string) *integrations.StatusError {
	return &integrations.StatusError{
		Backend:    e.name,
		StatusCode: r.status,
		RetryAfter: integrations.RetryAfter(r.header.Get("Retry-After"), time.Now()),
		Message:    reason,
	}
}

func is2xx(code int) bool { return code >= 200 && code <= 299 }

// drainClose reads what is left of body (at most maxResponseBytes, so the
// connection can be reused) and closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxResponseBytes))
	_ = body.Close()
}
