package notify

import (
	"context"
	"net/http"
)

// Webhook posts to a generic JSON webhook.
type Webhook struct{ ep endpoint }

// NewWebhook validates url (http or https with a host) and returns a sender
// named name ("webhook" when empty). hc is the gateway's shared client; nil
// means a package default with a timeout. Errors never include the URL.
func NewWebhook(name, url string, hc *http.Client) (*Webhook, error) {
	ep, err := newEndpoint("webhook", name, url, hc)
	if err != nil {
		return nil, err
	}
	return &Webhook{ep: ep}, nil
}

// Name returns the sender's name, used as StatusError.Backend.
func (w *Webhook) Name() string { return w.ep.name }

// Send posts m as {"text": m.Text, "payload": m.Payload} (payload omitted
// when empty). Any 2xx is success. Other statuses are a
// *integrations.StatusError whose Message is the body only when it is a
// short plain-text reason.
func (w *Webhook) Send(ctx context.Context, m Message) error {
	body, err := encode(w.ep.name, m, Message.webhookJSON)
	if err != nil {
		return err
	}
	r, err := w.ep.post(ctx, body, m.ID)
	if err != nil {
		return err
	}
	if !is2xx(r.status) {
		return w.ep.statusError(r, w.ep.plainReason(r.body))
	}
	// The status alone says the message was accepted; a failed body read
	// after a 2xx must not cause a duplicate retry.
	return nil
}
