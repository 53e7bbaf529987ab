package wire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/vega-gateway/vega/integrations"
)

// ReadLines calls fn with each non-blank line of r, without its line ending
// and surrounding white space, until fn returns stop or an error, or r ends.
// The line is only valid during the call.
//
// It reports whether fn asked to stop. An error from fn is returned
// unchanged; a line longer than MaxLine wraps integrations.ErrBadResponse;
// a read error is classified with integrations.ClassifyTransportError, so a
// cancelled ctx yields ctx.Err().
func ReadLines(ctx context.Context, name string, r io.Reader, fn func(line []byte) (stop bool, err error)) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		stop, err := fn(line)
		if err != nil || stop {
			return stop, err
		}
	}
	err := sc.Err()
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, bufio.ErrTooLong):
		return false, fmt.Errorf("%w: %s: stream line over %d bytes", integrations.ErrBadResponse, name, MaxLine)
	default:
		return false, integrations.ClassifyTransportError(ctx.Err(), name, err)
	}
}
