package fetch

import (
	"compress/flate"
	"compress/gzip"
	"errors"
	"strings"
)

// badResponse recognizes transport errors that mean the upstream answered
// with something that is not HTTP as it should be, so they can be reported
// as ErrBadResponse instead of ErrUnreachable. net/http does not export
// these errors; the header-size and malformed-response cases are matched on
// net/http's fixed wording (only the fixed reason is returned, never the
// original text, which may quote upstream bytes or the URL).
func badResponse(err error) (reason string, ok bool) {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.As(err, &corrupt):
		return "corrupt gzip body", true
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "server response headers exceeded"):
		return "response headers too large", true
	case strings.Contains(msg, "malformed HTTP"):
		return "malformed HTTP response", true
	}
	return "", false
}
