package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sort"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/notify"
)

// Limits on Notify input (Slack truncates text beyond 40,000 characters).
const (
	maxNotifyText   = 40000
	maxIdemKeyLen   = 255
	maxChannelName  = 64
	maxPayloadBytes = 256 << 10
)

// Sender is what NotifyService needs from a channel.
type Sender interface {
	Send(ctx context.Context, m notify.Message) error
}

// NotifyService implements vega.v1.NotifyService. Notifications are never
// coalesced or cached; a repeated idempotency key returns the first result.
type NotifyService struct {
	vegav1.UnimplementedNotifyServiceServer

	channels map[string]Sender
	idem     *Idempotency
	backends *Backends
	log      *slog.Logger
}

// NewNotifyService serves Notify to the named channels.
func NewNotifyService(channels map[string]Sender, idem *Idempotency, backends *Backends, log *slog.Logger) *NotifyService {
	return &NotifyService{channels: channels, idem: idem, backends: backends, log: log}
}

// Notify implements vega.v1.NotifyService.
func (s *NotifyService) Notify(ctx context.Context, in *vegav1.NotifyRequest) (*vegav1.NotifyResponse, error) {
	sender, msg, err := s.validate(in)
	if err != nil {
		return nil, err
	}
	send := func(ctx context.Context) (*vegav1.NotifyResponse, error) {
		err := sender.Send(ctx, msg)
		s.backends.Observe(in.GetChannel(), err)
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		return &vegav1.NotifyResponse{Id: newID(), Status: vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, Channel: in.GetChannel()}, nil
	}
	if in.GetIdempotencyKey() == "" {
		return send(ctx)
	}
	resp, err := s.idem.do(ctx, Tenant(ctx)+"\x00"+in.GetIdempotencyKey(), fingerprint(in), send)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return resp, nil
}

func (s *NotifyService) validate(in *vegav1.NotifyRequest) (Sender, notify.Message, error) {
	ch := in.GetChannel()
	if ch == "" || len(ch) > maxChannelName {
		return nil, notify.Message{}, invalidArgument("channel", "required; configured channels: %s", s.channelList())
	}
	sender, ok := s.channels[ch]
	if !ok {
		return nil, notify.Message{}, invalidArgument("channel", "%q is not configured; configured channels: %s", ch, s.channelList())
	}
	text := in.GetText()
	switch {
	case text == "" && len(in.GetPayload().GetFields()) == 0:
		return nil, notify.Message{}, invalidArgument("text", "set text or payload")
	case utf8.RuneCountInString(text) > maxNotifyText:
		return nil, notify.Message{}, invalidArgument("text", "longer than %d characters", maxNotifyText)
	case len(in.GetIdempotencyKey()) > maxIdemKeyLen:
		return nil, notify.Message{}, invalidArgument("idempotency_key", "longer than %d bytes", maxIdemKeyLen)
	}
	msg := notify.Message{Text: text}
	if p := in.GetPayload(); p != nil {
		if size := proto.Size(p); size > maxPayloadBytes {
			return nil, notify.Message{}, invalidArgument("payload", "larger than %d bytes", maxPayloadBytes)
		}
		msg.Payload = p.AsMap()
	}
	return sender, msg, nil
}

func (s *NotifyService) channelList() string {
	if len(s.channels) == 0 {
		return "none (set SLACK_WEBHOOK_URL or VEGA_WEBHOOK_URL)"
	}
	names := make([]string, 0, len(s.channels))
	for n := range s.channels {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// newID returns a random 128-bit identifier in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
