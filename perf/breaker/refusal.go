package breaker

import (
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// refusal is a refused call's status, kept for reuse: building a status
// with details costs a few microseconds and allocations, so a breaker hands
// out the same error while the reason and the (rounded) wait are unchanged.
type refusal struct {
	why  string
	wait time.Duration
	err  error
}

// refusalAt returns the status a call refused at now gets: UNAVAILABLE
// with a RetryInfo detail.
func (b *breaker) refusalAt(m Mode, err error, now time.Time) error {
	var (
		why  string
		wait time.Duration
	)
	switch {
	case m == ForceOpen:
		why, wait = "is forced open", b.set.s.OpenTimeout
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		why, wait = "is half-open with all its probes in flight", min(probeRetry, b.set.s.OpenTimeout)
	default: // gobreaker.ErrOpenState
		why, wait = "is open", max(time.Unix(0, b.openUntil.Load()).Sub(now), 0)
	}
	return b.refuse(why, wait)
}

// refuse returns the refusal "circuit breaker for <key> <why>; retry in
// <wait>", reusing the last one while it says the same.
func (b *breaker) refuse(why string, wait time.Duration) error {
	wait = roundUp(wait)
	if r := b.refused.Load(); r != nil && r.why == why && r.wait == wait {
		return r.err
	}
	r := &refusal{why: why, wait: wait, err: unavailable(fmt.Sprintf("circuit breaker for %q %s", b.key, why), wait)}
	b.refused.Store(r)
	return r.err
}

// roundUp rounds a retry delay up to a whole second, or to 10ms below one
// second: callers never retry early, and the status can be reused.
func roundUp(d time.Duration) time.Duration {
	unit := time.Second
	if d < time.Second {
		unit = 10 * time.Millisecond
	}
	return (d + unit - 1) / unit * unit
}

// unavailable returns an UNAVAILABLE status error "msg; retry in wait" with
// a RetryInfo detail.
func unavailable(msg string, wait time.Duration) error {
	st := status.New(codes.Unavailable, fmt.Sprintf("%s; retry in %v", msg, wait))
	if ds, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = ds
	}
	return st.Err()
}
