package notify

import (
	"bytes"
	"context"
	"fmt"
	"net/http"

	"github.com/vega-gateway/vega/integrations"
)

// Slack posts to a Slack incoming webhook.
type Slack struct{ ep endpoint }

// NewSlack validates webhookURL (http or https with a host) and returns a
// sender named name ("slack" when empty). hc is the gateway's shared client;
// nil means a package default with a timeout. Errors never include the URL,
// whose path is the webhook's secret.
func NewSlack(name, webhookURL string, hc *http.Client) (*Slack, error) {
	ep, err := newEndpoint("slack", name, webhookURL, hc)
	if err != nil {
		return nil, err
	}
	return &Slack{ep: ep}, nil
}

// Name returns the sender's name, used as StatusError.Backend.
func (s *Slack) Name() string { return s.ep.name }

// Send posts m as {"text": m.Text, ...m.Payload}. Success is HTTP 200 with
// body "ok". Any other status is a *integrations.StatusError whose Message
// is Slack's error code ("invalid_payload", "channel_not_found", ...) when
// the body is one, and whose RetryAfter comes from Retry-After (429). A 200
// with another body is ErrBadResponse.
func (s *Slack) Send(ctx context.Context, m Message) error {
	body, err := encode(s.ep.name, m, Message.slackJSON)
	if err != nil {
		return err
	}
	r, err := s.ep.post(ctx, body, m.ID)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return s.ep.statusError(r, s.ep.slackCode(r.body))
	}
	if r.readErr != nil {
		// Success is only known from the "ok" body.
		return r.readErr
	}
	if !bytes.Equal(bytes.TrimSpace(r.body), []byte("ok")) {
		return fmt.Errorf("%w: %s: status 200 without \"ok\"", integrations.ErrBadResponse, s.ep.name)
	}
	return nil
}
