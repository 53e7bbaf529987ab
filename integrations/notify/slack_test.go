package notify

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

func newTestSlack(t *testing.T, url string) *Slack {
	t.Helper()
	s, err := NewSlack("slack-ops", url, newTestHTTPClient(t))
	require.NoError(t, err)
	return s
}

func TestSlackSend(t *testing.T) {
	srv := newFakeServer(t, http.StatusOK, nil, "ok")
	s := newTestSlack(t, srv.URL+secretPath)
	assert.Equal(t, "slack-ops", s.Name())

	err := s.Send(context.Background(), Message{
		Text: "deploy finished <https://example.com|details>",
		Payload: map[string]any{
			"text":       "loses to Text",
			"username":   "vega",
			"icon_emoji": ":rocket:",
			"blocks":     []any{map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": "*hi*"}}},
		},
	})
	require.NoError(t, err)

	seen := srv.seen()
	require.Len(t, seen, 1)
	got := seen[0]
	assert.Equal(t, http.MethodPost, got.Method)
	assert.Equal(t, secretPath, got.Path)
	assert.Equal(t, "application/json", got.ContentType)
	assert.Equal(t, "vega-gateway/1", got.UserAgent)
	assert.Equal(t, map[string]any{
		"text":       "deploy finished <https://example.com|details>",
		"username":   "vega",
		"icon_emoji": ":rocket:",
		"blocks":     []any{map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": "*hi*"}}},
	}, got.Body)
}

func TestSlackPayloadText(t *testing.T) {
	srv := newFakeServer(t, http.StatusOK, nil, "ok\n")
	s := newTestSlack(t, srv.URL+secretPath)
	require.NoError(t, s.Send(context.Background(), Message{Payload: map[string]any{"text": "from payload"}}))
	require.NoError(t, s.Send(context.Background(), Message{Text: "only text"}))
	seen := srv.seen()
	require.Len(t, seen, 2)
	assert.Equal(t, map[string]any{"text": "from payload"}, seen[0].Body)
	assert.Equal(t, map[string]any{"text": "only text"}, seen[1].Body)
}

func TestSlackInvalidMessage(t *testing.T) {
	srv := newFakeServer(t, http.StatusOK, nil, "ok")
	s := newTestSlack(t, srv.URL+secretPath)
	for name, m := range map[string]Message{
		"empty":         {},
		"not encodable": {Text: "x", Payload: map[string]any{"f": func() {}}},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.Send(context.Background(), m)
			require.ErrorIs(t, err, integrations.ErrInvalidRequest)
		})
	}
	assert.Empty(t, srv.seen())
}

// letterSecret is a secret made only of [a-z] so that, unlike a real token,
// it would pass the Slack error-code shape check: only the leak check can
// keep it out of messages.
const letterSecret = "xyzsecrettokenabcdefghij"

func TestSlackErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   integrations.StatusError
	}{
		{"invalid_payload", 400, nil, "invalid_payload", integrations.StatusError{StatusCode: 400, Message: "invalid_payload"}},
		{"action_prohibited", 403, nil, "action_prohibited", integrations.StatusError{StatusCode: 403, Message: "action_prohibited"}},
		{"channel_not_found", 404, nil, "channel_not_found", integrations.StatusError{StatusCode: 404, Message: "channel_not_found"}},
		{"no_service", 404, nil, "no_service\n", integrations.StatusError{StatusCode: 404, Message: "no_service"}},
		{"channel_is_archived", 410, nil, "channel_is_archived", integrations.StatusError{StatusCode: 410, Message: "channel_is_archived"}},
		{"rate limited", 429, http.Header{"Retry-After": {"2"}}, "rate_limited", integrations.StatusError{StatusCode: 429, RetryAfter: 2 * time.Second, Message: "rate_limited"}},
		{"server error", 500, nil, "<html><body>Internal Error</body></html>", integrations.StatusError{StatusCode: 500}},
		{"unavailable", 503, http.Header{"Retry-After": {"30"}}, "", integrations.StatusError{StatusCode: 503, RetryAfter: 30 * time.Second}},
		{"not a code", 400, nil, "Invalid Payload: missing text", integrations.StatusError{StatusCode: 400}},
		{"too long", 400, nil, strings.Repeat("a", 201), integrations.StatusError{StatusCode: 400}},
		// Error-code-shaped bodies that carry the URL's secret are dropped.
		{"is the secret", 404, nil, letterSecret, integrations.StatusError{StatusCode: 404}},
		{"contains the secret", 404, nil, "bad_" + letterSecret + "_x", integrations.StatusError{StatusCode: 404}},
		{"redirect status", 302, nil, "", integrations.StatusError{StatusCode: 302}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t, tt.status, tt.header, tt.body)
			secretURL := srv.URL + "/services/T0000/B0000/" + letterSecret
			s, err := NewSlack("slack-ops", secretURL, noRedirectClient(t))
			require.NoError(t, err)

			err = s.Send(context.Background(), Message{Text: "hi"})
			var se *integrations.StatusError
			require.True(t, errors.As(err, &se), "want *StatusError, got %v", err)
			want := tt.want
			want.Backend = "slack-ops"
			assert.Equal(t, want, *se)
			requireNoLeak(t, err, secretURL)
			assert.NotContains(t, err.Error(), letterSecret)
			assert.Len(t, srv.seen(), 1)
		})
	}
}

// noRedirectClient reports 3xx as they are, like the package default.
func noRedirectClient(t *testing.T) *http.Client {
	t.Helper()
	hc := newTestHTTPClient(t)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hc
}

func TestSlackOKWithoutOK(t *testing.T) {
	srv := newFakeServer(t, http.StatusOK, nil, "something else")
	s := newTestSlack(t, srv.URL+secretPath)
	err := s.Send(context.Background(), Message{Text: "hi"})
	require.ErrorIs(t, err, integrations.ErrBadResponse)
	requireNoLeak(t, err, srv.URL+secretPath)
}

func TestSlackUnreachable(t *testing.T) {
	u := closedURL(t)
	s := newTestSlack(t, u)
	err := s.Send(context.Background(), Message{Text: "hi"})
	require.ErrorIs(t, err, integrations.ErrUnreachable)
	requireNoLeak(t, err, u)
	assert.True(t, strings.HasPrefix(err.Error(), "upstream unreachable: slack-ops"), err.Error())
}

func TestSlackCallerDeadline(t *testing.T) {
	srv := newSlowServer(t)
	s := newTestSlack(t, srv.URL+secretPath)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Send(ctx, Message{Text: "hi"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, integrations.ErrTimeout)
	requireNoLeak(t, err, srv.URL+secretPath)
}

func TestSlackClientTimeout(t *testing.T) {
	srv := newSlowServer(t)
	hc := newTestHTTPClient(t)
	hc.Timeout = 100 * time.Millisecond
	s, err := NewSlack("slack-ops", srv.URL+secretPath, hc)
	require.NoError(t, err)
	err = s.Send(context.Background(), Message{Text: "hi"})
	require.ErrorIs(t, err, integrations.ErrTimeout)
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	requireNoLeak(t, err, srv.URL+secretPath)
}

func TestSlackEndlessBody(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusInternalServerError} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			srv := newEndlessServer(t, status)
			s := newTestSlack(t, srv.URL+secretPath)
			err := s.Send(context.Background(), Message{Text: "hi"})
			if status == http.StatusOK {
				require.ErrorIs(t, err, integrations.ErrBadResponse)
				return
			}
			var se *integrations.StatusError
			require.True(t, errors.As(err, &se), "want *StatusError, got %v", err)
			assert.Equal(t, status, se.StatusCode)
			assert.Empty(t, se.Message)
		})
	}
}

func TestNewSlackInvalidURL(t *testing.T) {
	for _, raw := range []string{
		"ftp://hooks.slack.com" + secretPath,
		"hooks.slack.com" + secretPath,
		"https://" + secretPath,
		"https://[::1" + secretPath,
		"https:" + secretPath,
		"",
	} {
		t.Run(raw, func(t *testing.T) {
			s, err := NewSlack("slack-ops", raw, nil)
			require.ErrorIs(t, err, integrations.ErrInvalidRequest)
			assert.Nil(t, s)
			assert.NotContains(t, err.Error(), secretSegment)
			assert.NotContains(t, err.Error(), "hooks.slack.com")
			assert.Contains(t, err.Error(), "slack-ops")
		})
	}
}

func TestSlackDefaultName(t *testing.T) {
	s, err := NewSlack("", "https://hooks.slack.com"+secretPath, nil)
	require.NoError(t, err)
	assert.Equal(t, "slack", s.Name())
	assert.Same(t, defaultClient, s.ep.hc)
}

func TestSlackBodyCutAfter200(t *testing.T) {
	srv := newShortBodyServer(t, http.StatusOK, "ok")
	s := newTestSlack(t, srv.URL+secretPath)
	err := s.Send(context.Background(), Message{Text: "hi"})
	require.ErrorIs(t, err, integrations.ErrUnreachable, "success is unknown without the full \"ok\" body")
	requireNoLeak(t, err, srv.URL+secretPath)
}
