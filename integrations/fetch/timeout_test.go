package fetch

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

// partialBody sends headers and a first chunk, then stalls.
func partialBody(w http.ResponseWriter) {
	_, _ = w.Write([]byte("first chunk"))
	w.(http.Flusher).Flush()
}

func TestTimeoutGateway(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first func(http.ResponseWriter)
	}{
		{"no headers", nil},
		{"stalled body", partialBody},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newSlowServer(t, tt.first)
			c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, Timeout: 10 * time.Second})

			start := time.Now()
			_, err := c.Do(bg(), &Request{URL: srv.URL, Timeout: 100 * time.Millisecond})
			require.ErrorIs(t, err, integrations.ErrTimeout)
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "the gateway's bound is not a caller deadline")
			assert.NotErrorIs(t, err, integrations.ErrUnreachable)
			assert.Less(t, time.Since(start), 5*time.Second)
			assert.EqualValues(t, 1, srv.hits.Load())
		})
	}
}

func TestTimeoutSettingsBound(t *testing.T) {
	srv := newSlowServer(t, nil)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, Timeout: 100 * time.Millisecond})
	// A longer per-request timeout is clamped to Settings.Timeout.
	_, err := c.Do(bg(), &Request{URL: srv.URL, Timeout: time.Hour})
	require.ErrorIs(t, err, integrations.ErrTimeout)
}

func TestTimeoutCallerDeadline(t *testing.T) {
	srv := newSlowServer(t, partialBody)
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}, Timeout: 10 * time.Second})

	ctx, cancel := context.WithTimeout(bg(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Do(ctx, &Request{URL: srv.URL})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, integrations.ErrTimeout)
}

func TestTimeoutCallerCancel(t *testing.T) {
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	ctx, cancel := context.WithCancel(bg())
	srv := newCountingServer(t, func(_ http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	})
	_, err := c.Do(ctx, &Request{URL: srv.URL})
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, integrations.ErrTimeout)
}

func TestUnreachable(t *testing.T) {
	srv := newCountingServer(t, okHandler("x"))
	url := srv.URL
	srv.Close()
	c := newTestClient(t, Settings{Allow: []string{"127.0.0.1/32"}})
	_, err := c.Do(bg(), &Request{URL: url})
	require.ErrorIs(t, err, integrations.ErrUnreachable)
	assert.NotContains(t, err.Error(), url)
}
