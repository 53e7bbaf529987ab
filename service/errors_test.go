package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/integrations"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestToStatusTable(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	se := func(code int, retry time.Duration) error {
		return &integrations.StatusError{Backend: "ollama", StatusCode: code, RetryAfter: retry, Message: "reason"}
	}
	cases := []struct {
		name  string
		err   error
		code  codes.Code
		retry time.Duration // expected RetryInfo delay, 0 = none
	}{
		{"canceled", context.Canceled, codes.Canceled, 0},
		{"deadline", fmt.Errorf("wrapped: %w", context.DeadlineExceeded), codes.DeadlineExceeded, 0},
		{"blocked", fmt.Errorf("%w: 10.0.0.1 is a private address", integrations.ErrBlocked), codes.PermissionDenied, 0},
		{"invalid", fmt.Errorf("%w: bad", integrations.ErrInvalidRequest), codes.InvalidArgument, 0},
		{"gateway timeout", fmt.Errorf("%w: fetch", integrations.ErrTimeout), codes.DeadlineExceeded, 0},
		{"unreachable", fmt.Errorf("%w: ollama: connection refused", integrations.ErrUnreachable), codes.Unavailable, 0},
		{"bad response", fmt.Errorf("%w: ollama", integrations.ErrBadResponse), codes.Unavailable, 0},
		{"429 with Retry-After", se(429, 3*time.Second), codes.ResourceExhausted, 3 * time.Second},
		{"429 without Retry-After", se(429, 0), codes.ResourceExhausted, time.Second},
		{"400", se(400, 0), codes.InvalidArgument, 0},
		{"422", se(422, 0), codes.InvalidArgument, 0},
		{"401", se(401, 0), codes.FailedPrecondition, 0},
		{"403", se(403, 0), codes.FailedPrecondition, 0},
		{"404", se(404, 0), codes.NotFound, 0},
		{"408", se(408, 0), codes.DeadlineExceeded, 0},
		{"410", se(410, 0), codes.FailedPrecondition, 0},
		{"500", se(500, 0), codes.Unavailable, 0},
		{"503 with Retry-After", se(503, 5*time.Second), codes.Unavailable, 5 * time.Second},
		{"status passes through", status.Error(codes.Aborted, "x"), codes.Aborted, 0},
		{"unknown", errors.New("secret detail 0xdeadbeef"), codes.Internal, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(toStatus(context.Background(), quiet, tc.err))
			require.Equal(t, tc.code, st.Code(), st.Message())
			var retry *errdetails.RetryInfo
			for _, d := range st.Details() {
				if r, ok := d.(*errdetails.RetryInfo); ok {
					retry = r
				}
			}
			if tc.retry == 0 {
				assert.Nil(t, retry)
			} else {
				require.NotNil(t, retry)
				assert.Equal(t, tc.retry, retry.GetRetryDelay().AsDuration())
			}
			assert.NotContains(t, st.Message(), "deadbeef", "unknown errors are logged, not sent")
		})
	}
	assert.Nil(t, toStatus(context.Background(), quiet, nil))
}

func TestUnknownErrorIsLogged(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	err := toStatus(context.Background(), log, errors.New("disk on fire"))
	assert.Equal(t, codes.Internal, status.Code(err))
	assert.Contains(t, logs.String(), "disk on fire")
}
