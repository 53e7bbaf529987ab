package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/notify/outbox"
)

// toStatus translates an error from the inside of the gateway into the gRPC
// status the caller sees. It is the one place where that happens.
//
//	context.Canceled                 CANCELED
//	context.DeadlineExceeded         DEADLINE_EXCEEDED
//	integrations.ErrBlocked          PERMISSION_DENIED (SSRF policy)
//	integrations.ErrInvalidRequest   INVALID_ARGUMENT
//	integrations.ErrTimeout          DEADLINE_EXCEEDED (the gateway's own bound)
//	integrations.ErrUnreachable      UNAVAILABLE
//	integrations.ErrBadResponse      UNAVAILABLE
//	StatusError 429                  RESOURCE_EXHAUSTED + RetryInfo
//	StatusError 400, 422             INVALID_ARGUMENT
//	StatusError 401, 403             FAILED_PRECONDITION (the gateway's credentials)
//	StatusError 404                  NOT_FOUND
//	StatusError 408                  DEADLINE_EXCEEDED
//	StatusError other 4xx            FAILED_PRECONDITION
//	StatusError 5xx                  UNAVAILABLE (+ RetryInfo when Retry-After)
//	outbox.ErrKeyReused              FAILED_PRECONDITION
//	outbox.ErrClosed                 UNAVAILABLE (shutting down; retry elsewhere)
//	outbox.ErrUnavailable            UNAVAILABLE + RetryInfo (the outbox's database; detail logged)
//	a *status.Status error           itself
//	anything else                    INTERNAL, detail logged, not sent
//
// Messages name the backend and the reason; they never carry URLs, headers
// or keys (integrations/ builds its errors that way).
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded before the backend answered")
	case errors.Is(err, integrations.ErrBlocked):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, integrations.ErrInvalidRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, integrations.ErrTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, integrations.ErrUnreachable), errors.Is(err, integrations.ErrBadResponse):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, outbox.ErrKeyReused):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, outbox.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, outbox.ErrUnavailable):
		// Nothing was recorded, or the commit's outcome is unknown: the
		// caller retries with the same idempotency key and gets the first.
		log.WarnContext(ctx, "notification outbox unavailable", "err", err)
		return withRetryInfo(status.New(codes.Unavailable,
			"the notification outbox's database is unavailable; nothing is claimed as accepted: retry with the same idempotency_key"), time.Second, "outbox").Err()
	}
	var se *integrations.StatusError
	if errors.As(err, &se) {
		return upstreamStatus(se)
	}
	log.ErrorContext(ctx, "unclassified error", "err", err)
	return status.Error(codes.Internal, "internal error")
}

func upstreamStatus(se *integrations.StatusError) error {
	msg := se.Error()
	var code codes.Code
	switch c := se.StatusCode; {
	case c == http.StatusTooManyRequests:
		code = codes.ResourceExhausted
	case c == http.StatusBadRequest || c == http.StatusUnprocessableEntity:
		code = codes.InvalidArgument
		msg = fmt.Sprintf("backend rejected the request: %s", msg)
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		code = codes.FailedPrecondition
		msg = fmt.Sprintf("backend refused the gateway's credentials: %s", msg)
	case c == http.StatusNotFound:
		code = codes.NotFound
	case c == http.StatusRequestTimeout:
		code = codes.DeadlineExceeded
	case c >= 500:
		code = codes.Unavailable
	default:
		code = codes.FailedPrecondition
	}
	st := status.New(code, msg)
	if se.RetryAfter > 0 || code == codes.ResourceExhausted {
		st = withRetryInfo(st, se.RetryAfter, se.Backend)
	}
	return st.Err()
}

// withRetryInfo attaches RetryInfo (and, for RESOURCE_EXHAUSTED, a
// QuotaFailure naming the backend) so that clients can back off correctly.
func withRetryInfo(st *status.Status, after time.Duration, subject string) *status.Status {
	if after <= 0 {
		after = time.Second
	}
	details := []protoadapt.MessageV1{&errdetails.RetryInfo{RetryDelay: durationpb.New(after)}}
	if st.Code() == codes.ResourceExhausted {
		details = append(details, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     "backend:" + subject,
			Description: "the backend asked callers to slow down",
		}}})
	}
	if withDetails, err := st.WithDetails(details...); err == nil {
		return withDetails
	}
	return st
}

// invalidArgument reports bad input naming the field.
func invalidArgument(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	st := status.New(codes.InvalidArgument, field+": "+msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
		Field: field, Description: msg,
	}}}); err == nil {
		return d.Err()
	}
	return st.Err()
}
