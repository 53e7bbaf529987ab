// Package wire holds the HTTP plumbing shared by the LLM backends that talk
// to a server: request checks, base-URL validation, bounded body reading,
// status errors and line-oriented stream reading.
package wire

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/llm"
)

// Size bounds for what is read from an upstream.
const (
	MaxErrorBody = 64 << 10 // bytes of a non-2xx body read for its message
	MaxBody      = 32 << 20 // bytes of a successful non-streamed body
	MaxLine      = 1 << 20  // bytes of one line of a streamed body
	drainLimit   = 64 << 10 // bytes discarded to make a connection reusable
)

// defaultClient is used when a backend is built without an *http.Client.
// It is never modified after initialisation. It has no overall Timeout, as
// a streamed answer may legitimately last minutes: the caller's context
// bounds each request.
var defaultClient = &http.Client{
	Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	},
}

// HTTPClient returns hc, or the package's shared default client when hc is
// nil.
func HTTPClient(hc *http.Client) *http.Client {
	if hc == nil {
		return defaultClient
	}
	return hc
}

// CheckName rejects an empty backend name.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: llm backend name is empty", integrations.ErrInvalidRequest)
	}
	return nil
}

// ParseBaseURL validates the base URL setting of backend name: an absolute
// http or https URL with a host and without query or fragment. The trailing
// slash of its path is removed. The error never repeats the URL, which may
// hold credentials.
func ParseBaseURL(name, raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Opaque != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%w: llm backend %q: base URL must be an http or https URL with a host and no query",
			integrations.ErrInvalidRequest, name)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// CheckRequest rejects a request no backend can send: nil, both Prompt and
// Messages set, a negative MaxTokens, or a non-finite Temperature or TopP.
func CheckRequest(name string, req *llm.Request) error {
	var reason string
	switch {
	case req == nil:
		reason = "nil request"
	case req.Prompt != "" && len(req.Messages) > 0:
		reason = "set either prompt or messages, not both"
	case req.Options.MaxTokens < 0:
		reason = "max tokens is negative"
	case !finite(req.Options.Temperature):
		reason = "temperature is not a finite number"
	case !finite(req.Options.TopP):
		reason = "top_p is not a finite number"
	default:
		return nil
	}
	return fmt.Errorf("%w: %s: %s", integrations.ErrInvalidRequest, name, reason)
}

func finite(f *float64) bool {
	return f == nil || (!math.IsNaN(*f) && !math.IsInf(*f, 0))
}

// ReadBody reads a successful body of at most MaxBody bytes. Transport
// errors are classified with integrations.ClassifyTransportError; an
// oversized body wraps integrations.ErrBadResponse. It does not close body.
func ReadBody(ctx context.Context, name string, body io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(body, MaxBody+1))
	if err != nil {
		return nil, integrations.ClassifyTransportError(ctx.Err(), name, err)
	}
	if len(data) > MaxBody {
		return nil, fmt.Errorf("%w: %s: body over %d bytes", integrations.ErrBadResponse, name, MaxBody)
	}
	return data, nil
}

// Drain discards what is left of a body, up to a bound, so that its
// connection can be reused once the body is closed. Use it only when the
// upstream is known to have finished sending: a body still being generated
// should just be closed, which also tells the upstream to stop.
func Drain(body io.Reader) {
	_, _ = io.CopyN(io.Discard, body, drainLimit)
}

// StatusError builds the error for a non-2xx response and closes its body.
// At most MaxErrorBody bytes of the body are read; message extracts the
// upstream's reason from them (or returns ""), which is then cleaned with
// Clean, redacting secrets.
func StatusError(name string, resp *http.Response, message func([]byte) string, secrets ...string) *integrations.StatusError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody))
	_ = resp.Body.Close()
	return &integrations.StatusError{
		Backend:    name,
		StatusCode: resp.StatusCode,
		RetryAfter: integrations.RetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Message:    Clean(message(data), secrets...),
	}
}

// DecodeJSON reads a successful answer's body (bounded as ReadBody) and
// decodes it into out; an answer that is not JSON is ErrBadResponse.
func DecodeJSON(ctx context.Context, name string, body io.Reader, out any) error {
	data, err := ReadBody(ctx, name, body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s: answer is not JSON", integrations.ErrBadResponse, name)
	}
	return nil
}
