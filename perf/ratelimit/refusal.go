package ratelimit

import (
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// reason is why a call was refused.
type reason int

const (
	reasonDeadline   reason = iota // the expected wait could not fit the deadline or MaxQueueWait
	reasonStanding                 // a standing queue: refused on arrival or dropped at dispatch
	reasonFull                     // the queue was full
	reasonRetryAfter               // the backend's Retry-After lasts past the deadline
	numReasons
)

func (r reason) String() string {
	return [...]string{"deadline", "standing", "full", "retry_after"}[r]
}

// refusal is a refusal status kept for reuse: building a status with
// details costs microseconds and a few dozen allocations, and under
// overload most calls are refused with the same advice.
type refusal struct {
	wait time.Duration
	err  error
}

// shedLocked counts a refusal of a call of t and returns its status:
// RESOURCE_EXHAUSTED with a message saying why, RetryInfo (retry after
// wait, rounded up to 10ms) and QuotaFailure naming the backend.
func (l *limiter) shedLocked(t *tenant, r reason, wait time.Duration, now time.Time) error {
	t.shed++
	l.stats.shed[r]++
	wait = roundUp(max(wait, l.targetLocked()))
	if c := l.refused[r]; c != nil && c.wait == wait {
		return c.err
	}
	var msg string
	switch r {
	case reasonDeadline:
		msg = fmt.Sprintf("backend %q is busy: this call's wait for its turn (about %v) would not fit its deadline; retry in %v", l.key, wait, wait)
	case reasonStanding:
		msg = fmt.Sprintf("backend %q is overloaded (its queue is not draining); retry in %v", l.key, wait)
	case reasonFull:
		msg = fmt.Sprintf("backend %q is overloaded (its queue is full); retry in %v", l.key, wait)
	case reasonRetryAfter:
		msg = fmt.Sprintf("backend %q asked the gateway to wait (Retry-After) past this call's deadline; retry in %v", l.key, wait)
	}
	st := status.New(codes.ResourceExhausted, msg)
	if ds, err := st.WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     "backend:" + l.key,
			Description: "overload control: " + r.String(),
		}}},
	); err == nil {
		st = ds
	}
	c := &refusal{wait: wait, err: st.Err()}
	l.refused[r] = c
	return c.err
}

// roundUp rounds a retry delay up to 10ms: a client that honours it is
// never early, and refusals can share a status.
func roundUp(d time.Duration) time.Duration {
	const unit = 10 * time.Millisecond
	return (d + unit - 1) / unit * unit
}
