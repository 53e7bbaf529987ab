package httpface

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// refuse is an interceptor that refuses every call the way the gateway's
// limiter does: RESOURCE_EXHAUSTED, a RetryInfo detail and (when pushback
// is not "") the grpc-retry-pushback-ms trailer.
func refuse(retryInfo time.Duration, pushback string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
		if pushback != "" {
			_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", pushback))
		}
		st := status.New(codes.ResourceExhausted, "backend sim is overloaded")
		if retryInfo > 0 {
			st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryInfo)})
		}
		return nil, st.Err()
	}
}

func TestRetryAfterThroughTheTranscoder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retryInfo time.Duration
		pushback  string
		want      string
	}{
		{"RetryInfo only", 2 * time.Second, "", "2"},
		{"pushback trailer wins", 2 * time.Second, "4500", "5"},
		{"pushback only", 0, "300", "1"},
		{"neither", 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := startStack(t, refuse(tc.retryInfo, tc.pushback))
			defer st.stop()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Post(st.httpURL+"/vega.v1.GenerateService/Generate", "application/json", strings.NewReader(`{"model":"sim","prompt":"hi"}`))
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(body))
			assert.Contains(t, string(body), `"code":"resource_exhausted"`)
			assert.Equal(t, tc.want, resp.Header.Get("Retry-After"), "headers: %v", resp.Header)
		})
	}
}
