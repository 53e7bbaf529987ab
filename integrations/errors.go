// Package integrations holds the outbound clients of the gateway (LLM
// servers, the guarded web fetcher, chat webhooks) and the error vocabulary
// they share.
//
// The subpackages never import service/ or perf/. Errors leave them as the
// types below so that service/ can translate them to gRPC codes in one table.
// No error built here carries an upstream URL, header or secret: webhook URLs
// and API keys are credentials, so messages name the backend instead.
package integrations

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"time"
)

// StatusError reports that an upstream answered with a non-success HTTP
// status. Message is a short, sanitized reason taken from the upstream's
// error body (never the raw body, never a URL).
type StatusError struct {
	Backend    string        // backend name, e.g. "ollama", "slack"
	StatusCode int           // HTTP status code
	RetryAfter time.Duration // from a Retry-After header, 0 when absent
	Message    string        // sanitized upstream reason, may be empty
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: upstream status %d", e.Backend, e.StatusCode)
	}
	return fmt.Sprintf("%s: upstream status %d: %s", e.Backend, e.StatusCode, e.Message)
}

// Sentinel errors. Wrap them with fmt.Errorf("%w: ...") to add detail that
// is safe to show a caller.
var (
	// ErrBlocked: the destination is refused by the SSRF policy.
	ErrBlocked = errors.New("destination not allowed")
	// ErrUnreachable: the upstream could not be reached (refused, reset,
	// DNS failure, TLS failure).
	ErrUnreachable = errors.New("upstream unreachable")
	// ErrTimeout: the upstream did not answer within the gateway's own
	// bound (not the caller's deadline, which stays a context error).
	ErrTimeout = errors.New("upstream timed out")
	// ErrBadResponse: the upstream answered with something that is not the
	// protocol it speaks (malformed JSON, oversized headers, ...).
	ErrBadResponse = errors.New("malformed upstream response")
	// ErrInvalidRequest: the request cannot be sent as given (bad URL,
	// unsupported method, unknown model parameters).
	ErrInvalidRequest = errors.New("invalid request")
)

// ClassifyTransportError turns an error returned by http.Client.Do (or by
// reading a response body) into the vocabulary above, dropping the request
// URL that net/http puts in *url.Error (it may hold a webhook token).
//
// The caller's own cancellation or deadline is returned as the context error
// itself (context.Canceled / context.DeadlineExceeded), so the edge can tell
// "the caller gave up" from "the upstream failed".
func ClassifyTransportError(ctxErr error, backend string, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr != nil {
		return ctxErr
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	for _, sentinel := range []error{ErrBlocked, ErrUnreachable, ErrTimeout, ErrBadResponse, ErrInvalidRequest} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %s", ErrTimeout, backend)
	}
	return fmt.Errorf("%w: %s: %s", ErrUnreachable, backend, sanitize(err))
}

// sanitize keeps the innermost operation error ("connection refused",
// "connection reset by peer", "no such host") and drops addresses.
func sanitize(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) && se.Err != nil {
			return se.Err.Error()
		}
		var de *net.DNSError
		if errors.As(oe.Err, &de) {
			return "name resolution failed"
		}
		return oe.Err.Error()
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return "name resolution failed"
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "connection closed by upstream"
	}
	return "transport error"
}
