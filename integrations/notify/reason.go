package notify

import "strings"

const (
	// maxSlackCode bounds a Slack error code kept as StatusError.Message.
	maxSlackCode = 200
	// maxPlainReason bounds a generic webhook's plain-text reason.
	maxPlainReason = 120
)

// slackCode returns body as a Slack error code ("invalid_payload",
// "channel_not_found", ...) when it is one: only [a-z_], at most 200 bytes,
// and no part of the webhook URL. Otherwise "".
func (e endpoint) slackCode(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" || len(s) > maxSlackCode || e.leaks(s) {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c == '_') {
			return ""
		}
	}
	return s
}

// plainReason returns body as a short reason ("404 page not found") when it
// is one line of printable ASCII, at most 120 bytes, looks like neither
// markup nor JSON, and contains no part of the webhook URL. Otherwise "".
func (e endpoint) plainReason(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" || len(s) > maxPlainReason || e.leaks(s) {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || strings.IndexByte(`<>{}[]"\`, c) >= 0 {
			return ""
		}
	}
	return s
}
