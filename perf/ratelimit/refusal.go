package ratelimit

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// refusal is a refusal status kept for reuse: building a status with
// details costs microseconds and a few dozen allocations, and under
// overload most calls are refused with the same wait and rate.
type refusal struct {
	wait time.Duration
	rate float64
	err  error
}

// exhausted is the status of a call refused because its wait cannot fit:
// RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure details.
func (l *limiter) exhausted(wait time.Duration) error {
	wait = roundUp(wait)
	r := round3(l.currentRate())
	if c := l.refused.Load(); c != nil && c.wait == wait && c.rate == r {
		return c.err
	}
	st := status.New(codes.ResourceExhausted,
		fmt.Sprintf("rate limit for %q reached (%v requests/s); retry in %v", l.key, r, wait))
	if ds, err := st.WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     "backend:" + l.key,
			Description: fmt.Sprintf("adaptive rate limit of %v requests/s", r),
		}}},
	); err == nil {
		st = ds
	}
	c := &refusal{wait: wait, rate: r, err: st.Err()}
	l.refused.Store(c)
	return c.err
}

// roundUp rounds a retry delay up to 10ms: a client that honours it is
// never early, and refusals can share a status.
func roundUp(d time.Duration) time.Duration {
	const unit = 10 * time.Millisecond
	return (d + unit - 1) / unit * unit
}

// round3 rounds r to three significant digits.
func round3(r float64) float64 {
	if r <= 0 {
		return r
	}
	scale := math.Pow(10, 2-math.Floor(math.Log10(r)))
	return math.Round(r*scale) / scale
}
