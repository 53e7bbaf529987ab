package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/vega-gateway/vega/integrations"
)

// Message is one notification.
type Message struct {
	// ID identifies the notification across its attempts: it is sent as
	// the Idempotency-Key header, so a receiver that keeps the keys it saw
	// can drop the duplicate an ambiguous attempt causes (Slack ignores
	// the header). Empty sends no header.
	ID   string
	Text string
	// Payload is an optional structured payload (from a protobuf Struct):
	// JSON-compatible values only (nil, bool, float64, string, []any,
	// map[string]any).
	Payload map[string]any
}

// empty reports whether m carries nothing to send.
func (m Message) empty() bool { return m.Text == "" && len(m.Payload) == 0 }

// slackJSON is Payload with "text" set from Text. Payload keys such as
// "blocks", "attachments", "username" and "icon_emoji" pass through; Text
// wins over a "text" key in Payload when both are set.
func (m Message) slackJSON() ([]byte, error) {
	body := make(map[string]any, len(m.Payload)+1)
	maps.Copy(body, m.Payload)
	if m.Text != "" {
		body["text"] = m.Text
	}
	return encodeJSON(body)
}

// webhookJSON is {"text": Text, "payload": Payload}, payload omitted when
// nil or empty.
func (m Message) webhookJSON() ([]byte, error) {
	return encodeJSON(struct {
		Text    string         `json:"text"`
		Payload map[string]any `json:"payload,omitempty"`
	}{m.Text, m.Payload})
}

// encodeJSON marshals v without HTML escaping, so Slack markup such as
// <https://example.com|link> stays readable on the wire.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// encode validates m and builds the request body with build.
func encode(name string, m Message, build func(Message) ([]byte, error)) ([]byte, error) {
	if m.empty() {
		return nil, fmt.Errorf("%w: %s: empty message", integrations.ErrInvalidRequest, name)
	}
	b, err := build(m)
	if err != nil {
		// The encoder error may quote payload values; keep it generic.
		return nil, fmt.Errorf("%w: %s: payload is not JSON-encodable", integrations.ErrInvalidRequest, name)
	}
	return b, nil
}
