package notify

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
)

func TestWebhookSend(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusAccepted, http.StatusNoContent} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			srv := newFakeServer(t, status, nil, "")
			w, err := NewWebhook("ops-hook", srv.URL+"/hook?token="+secretSegment, newTestHTTPClient(t))
			require.NoError(t, err)
			assert.Equal(t, "ops-hook", w.Name())

			require.NoError(t, w.Send(context.Background(), Message{Text: "hi", Payload: map[string]any{"n": 1.0, "tags": []any{"a"}}}))
			require.NoError(t, w.Send(context.Background(), Message{Text: "no payload"}))

			seen := srv.seen()
			require.Len(t, seen, 2)
			assert.Equal(t, http.MethodPost, seen[0].Method)
			assert.Equal(t, "application/json", seen[0].ContentType)
			assert.Equal(t, "vega-gateway/1", seen[0].UserAgent)
			assert.Equal(t, map[string]any{"text": "hi", "payload": map[string]any{"n": 1.0, "tags": []any{"a"}}}, seen[0].Body)
			assert.Equal(t, map[string]any{"text": "no payload"}, seen[1].Body, "payload omitted when nil")
		})
	}
}

func TestWebhookErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   integrations.StatusError
	}{
		{"500 html", 500, nil, "<html>boom</html>", integrations.StatusError{StatusCode: 500}},
		{"500 plain", 500, nil, "internal error\n", integrations.StatusError{StatusCode: 500, Message: "internal error"}},
		{"404 go default", 404, nil, "404 page not found\n", integrations.StatusError{StatusCode: 404, Message: "404 page not found"}},
		{"400 json", 400, nil, `{"error":"bad"}`, integrations.StatusError{StatusCode: 400}},
		{"large body", 500, nil, strings.Repeat("x", 121), integrations.StatusError{StatusCode: 500}},
		{"multi-line", 500, nil, "line one\nline two", integrations.StatusError{StatusCode: 500}},
		{"echoes the token", 401, nil, "bad token " + secretSegment, integrations.StatusError{StatusCode: 401}},
		{"echoes the path", 404, nil, "no route /hook", integrations.StatusError{StatusCode: 404}},
		{"echoes a url", 404, nil, "see https://docs.example", integrations.StatusError{StatusCode: 404}},
		{"429 http-date", 429, http.Header{"Retry-After": {time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, "", integrations.StatusError{StatusCode: 429}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t, tt.status, tt.header, tt.body)
			rawURL := srv.URL + "/hook?token=" + secretSegment
			w, err := NewWebhook("ops-hook", rawURL, newTestHTTPClient(t))
			require.NoError(t, err)

			err = w.Send(context.Background(), Message{Text: "hi"})
			var se *integrations.StatusError
			require.True(t, errors.As(err, &se), "want *StatusError, got %v", err)
			assert.Equal(t, "ops-hook", se.Backend)
			assert.Equal(t, tt.status, se.StatusCode)
			assert.Equal(t, tt.want.Message, se.Message)
			if tt.status == 429 {
				assert.InDelta(t, 90, se.RetryAfter.Seconds(), 2)
			} else {
				assert.Zero(t, se.RetryAfter)
			}
			requireNoLeak(t, err, rawURL)
			assert.Len(t, srv.seen(), 1)
		})
	}
}

func TestWebhookRedirectedToGet(t *testing.T) {
	target := newFakeServer(t, http.StatusOK, nil, "")
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusFound)
	}))
	t.Cleanup(src.Close)

	w, err := NewWebhook("ops-hook", src.URL+secretPath, newTestHTTPClient(t))
	require.NoError(t, err)
	err = w.Send(context.Background(), Message{Text: "hi"})
	require.ErrorIs(t, err, integrations.ErrBadResponse, "a 302 turned the POST into a GET: not delivered")
	requireNoLeak(t, err, src.URL+secretPath)
	seen := target.seen()
	require.Len(t, seen, 1)
	assert.Equal(t, http.MethodGet, seen[0].Method)
}

func TestWebhookDefaultClient(t *testing.T) {
	t.Cleanup(defaultClient.CloseIdleConnections)
	target := newFakeServer(t, http.StatusOK, nil, "")
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(src.Close)

	w, err := NewWebhook("", target.URL+"/hook", nil)
	require.NoError(t, err)
	assert.Equal(t, "webhook", w.Name())
	require.NoError(t, w.Send(context.Background(), Message{Text: "hi"}))
	assert.Equal(t, defaultTimeout, defaultClient.Timeout)

	// The default client does not follow redirects: the 307 is reported.
	w, err = NewWebhook("", src.URL+"/hook", nil)
	require.NoError(t, err)
	err = w.Send(context.Background(), Message{Text: "hi"})
	var se *integrations.StatusError
	require.True(t, errors.As(err, &se), "want *StatusError, got %v", err)
	assert.Equal(t, http.StatusTemporaryRedirect, se.StatusCode)
	assert.Len(t, target.seen(), 1)
}

func TestWebhookUnreachableAndDeadline(t *testing.T) {
	u := closedURL(t)
	w, err := NewWebhook("ops-hook", u, newTestHTTPClient(t))
	require.NoError(t, err)
	err = w.Send(context.Background(), Message{Text: "hi"})
	require.ErrorIs(t, err, integrations.ErrUnreachable)
	requireNoLeak(t, err, u)

	slow := newSlowServer(t)
	w, err = NewWebhook("ops-hook", slow.URL+secretPath, newTestHTTPClient(t))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = w.Send(ctx, Message{Text: "hi"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	requireNoLeak(t, err, slow.URL+secretPath)
}

func TestWebhookEndlessBody(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusBadGateway} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			srv := newEndlessServer(t, status)
			w, err := NewWebhook("ops-hook", srv.URL+"/hook", newTestHTTPClient(t))
			require.NoError(t, err)
			err = w.Send(context.Background(), Message{Text: "hi"})
			if status == http.StatusOK {
				require.NoError(t, err)
				return
			}
			var se *integrations.StatusError
			require.True(t, errors.As(err, &se), "want *StatusError, got %v", err)
			assert.Equal(t, status, se.StatusCode)
			assert.Empty(t, se.Message)
		})
	}
}

func TestWebhookInvalid(t *testing.T) {
	_, err := NewWebhook("ops-hook", "gopher://example.com"+secretPath, nil)
	require.ErrorIs(t, err, integrations.ErrInvalidRequest)
	assert.NotContains(t, err.Error(), secretSegment)

	srv := newFakeServer(t, http.StatusOK, nil, "")
	w, err := NewWebhook("ops-hook", srv.URL, newTestHTTPClient(t))
	require.NoError(t, err)
	require.ErrorIs(t, w.Send(context.Background(), Message{}), integrations.ErrInvalidRequest)
	assert.Empty(t, srv.seen())
}

func TestWebhookBodyCut(t *testing.T) {
	ok := newShortBodyServer(t, http.StatusOK, "partial")
	w, err := NewWebhook("ops-hook", ok.URL+"/hook", newTestHTTPClient(t))
	require.NoError(t, err)
	require.NoError(t, w.Send(context.Background(), Message{Text: "hi"}), "a 2xx status is delivery; the body does not matter")

	bad := newShortBodyServer(t, http.StatusInternalServerError, "internal error")
	w, err = NewWebhook("ops-hook", bad.URL+"/hook", newTestHTTPClient(t))
	require.NoError(t, err)
	err = w.Send(context.Background(), Message{Text: "hi"})
	var se *integrations.StatusError
	require.True(t, errors.As(err, &se), "want *StatusError, got %v", err)
	assert.Equal(t, http.StatusInternalServerError, se.StatusCode)
	assert.Empty(t, se.Message, "a cut body gives no reason")
}

// The notification's id goes out as Idempotency-Key on every attempt, so a
// receiver can drop the duplicate of an attempt whose answer was lost
// (fault matrix row F12); a message without an id sends no header.
func TestSendCarriesTheIdempotencyKey(t *testing.T) {
	srv := newFakeServer(t, http.StatusOK, nil, "ok")
	w, err := NewWebhook("ops-hook", srv.URL+"/hook", newTestHTTPClient(t))
	require.NoError(t, err)
	s, err := NewSlack("slack", srv.URL+secretPath, newTestHTTPClient(t))
	require.NoError(t, err)
	require.NoError(t, w.Send(context.Background(), Message{ID: "n-1", Text: "first"}))
	require.NoError(t, w.Send(context.Background(), Message{ID: "n-1", Text: "first"}))
	require.NoError(t, s.Send(context.Background(), Message{ID: "n-2", Text: "to slack"}))
	require.NoError(t, w.Send(context.Background(), Message{Text: "no id"}))

	seen := srv.seen()
	require.Len(t, seen, 4)
	assert.Equal(t, []string{"n-1", "n-1", "n-2", ""},
		[]string{seen[0].Idempotency, seen[1].Idempotency, seen[2].Idempotency, seen[3].Idempotency})
}
