package fetch

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

// A host name that does not exist (NXDOMAIN) is the request's fault: it is
// ErrInvalidRequest (INVALID_ARGUMENT, not counted by a breaker), while a
// resolver that does not answer stays ErrUnreachable. The end-to-end check
// through the real binary is perf/faults TestF13DNSFailure.
func TestClassifyNoSuchHostIsInvalidRequest(t *testing.T) {
	alive := context.Background()
	dialErr := func(de *net.DNSError) error {
		return &url.Error{Op: "Get", URL: "http://secret-token@nope.invalid/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: de}}
	}

	err := classifyErr(alive, alive, time.Second, dialErr(&net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}))
	require.ErrorIs(t, err, integrations.ErrInvalidRequest)
	require.NotContains(t, err.Error(), "secret-token")
	require.Contains(t, err.Error(), "does not exist")

	err = classifyErr(alive, alive, time.Second, dialErr(&net.DNSError{Err: "server misbehaving", Name: "flaky.example", IsTemporary: true}))
	require.ErrorIs(t, err, integrations.ErrUnreachable)
	require.False(t, errors.Is(err, integrations.ErrInvalidRequest))

	// The caller's own cancellation still wins over the DNS answer.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	err = classifyErr(gone, gone, time.Second, dialErr(&net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}))
	require.ErrorIs(t, err, context.Canceled)
}
