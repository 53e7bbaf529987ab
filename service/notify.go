package service

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/notify/outbox"
)

// Limits on Notify input (Slack truncates text beyond 40,000 characters).
const (
	maxNotifyText   = 40000
	maxIdemKeyLen   = 255
	maxChannelName  = 64
	maxPayloadBytes = 256 << 10
	maxIDLen        = 64
)

// Outbox is what NotifyService needs from the durable notification queue.
// Both stores implement it: the bbolt file of a single gateway
// (outbox.Outbox) and the PostgreSQL outbox of a fleet (outbox.Postgres).
type Outbox interface {
	Submit(ctx context.Context, sub outbox.Submission) (outbox.Record, bool, error)
	Wait(ctx context.Context, id string) (outbox.Record, bool, error)
	Get(ctx context.Context, id string) (outbox.Record, bool, error)
	// PausedFor is how long the channel's deliveries are still held back
	// (a receiver's Retry-After, backoff after failures).
	PausedFor(channel string) time.Duration
}

// NotifyService implements vega.v1.NotifyService. A notification is
// recorded in the outbox (durably) before Notify answers; the call then
// waits for its delivery while its deadline allows. Notifications are never
// coalesced or cached; a repeated idempotency key returns the first
// notification.
type NotifyService struct {
	vegav1.UnimplementedNotifyServiceServer

	channels []string // configured channel names, sorted
	box      Outbox
	maxWait  time.Duration
	log      *slog.Logger
}

// NewNotifyService serves Notify to the named channels through box. Notify
// waits at most maxWait for a delivery before answering QUEUED.
func NewNotifyService(channels []string, box Outbox, maxWait time.Duration, log *slog.Logger) *NotifyService {
	channels = slices.Sorted(slices.Values(channels))
	return &NotifyService{channels: channels, box: box, maxWait: maxWait, log: log}
}

// Notify implements vega.v1.NotifyService.
func (s *NotifyService) Notify(ctx context.Context, in *vegav1.NotifyRequest) (*vegav1.NotifyResponse, error) {
	if err := s.validate(in); err != nil {
		return nil, err
	}
	sub := outbox.Submission{
		Tenant: Tenant(ctx), Channel: in.GetChannel(), IdempotencyKey: in.GetIdempotencyKey(),
		Fingerprint: fingerprint(in), Text: in.GetText(),
	}
	if p := in.GetPayload(); p != nil {
		b, err := protojson.Marshal(p)
		if err != nil {
			return nil, invalidArgument("payload", "not representable as JSON: %v", err)
		}
		sub.Payload = b
	}
	rec, _, err := s.box.Submit(ctx, sub)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if rec.State == outbox.Pending {
		rec = s.awaitDelivery(ctx, rec)
	}
	return &vegav1.NotifyResponse{
		Id: rec.ID, Status: notificationStatus(rec.State), Channel: rec.Channel,
		Attempts: int32(rec.Attempts), LastError: rec.LastError,
	}, nil
}

// pauseCheck is how often a waiting Notify looks whether its channel has
// been paused (a Retry-After, backoff) beyond what it may still wait.
const pauseCheck = 500 * time.Millisecond

// awaitDelivery waits for rec's delivery while the wait budget allows and
// returns the record as it then stands. It gives up at once, leaving the
// answer QUEUED, when the channel is paused beyond the budget: a receiver's
// Retry-After or the backoff after failures means no delivery can come in
// time, and waiting it out would only hold the caller.
func (s *NotifyService) awaitDelivery(ctx context.Context, rec outbox.Record) outbox.Record {
	wait := s.waitBudget(ctx)
	if wait <= 0 || s.box.PausedFor(rec.Channel) >= wait {
		return rec
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	until := time.Now().Add(wait)
	// One Wait for the whole budget (the PostgreSQL store reads the record
	// when a wait starts and ends); beside it, a look every pauseCheck ends
	// the wait once the channel is paused beyond what is left of it. The
	// look has its own copy of the channel and ends before rec changes
	// (it read rec.Channel while Wait's answer was written over rec: a
	// data race the fault matrix's L5 row found).
	channel := rec.Channel
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		t := time.NewTicker(pauseCheck)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				if s.box.PausedFor(channel) >= time.Until(until) {
					cancel()
					return
				}
			}
		}
	}()
	r, ok, err := s.box.Wait(wctx, rec.ID)
	cancel()
	<-checked
	if err == nil && ok {
		rec = r
	}
	return rec
}

// waitBudget is how long Notify may wait for a delivery: maxWait, cut so
// that a QUEUED answer still reaches the caller before its deadline.
func (s *NotifyService) waitBudget(ctx context.Context) time.Duration {
	wait := s.maxWait
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		wait = min(wait, left-min(250*time.Millisecond, left/5))
	}
	return wait
}

// GetNotification implements vega.v1.NotifyService.
func (s *NotifyService) GetNotification(ctx context.Context, in *vegav1.GetNotificationRequest) (*vegav1.GetNotificationResponse, error) {
	id := in.GetId()
	if id == "" || len(id) > maxIDLen {
		return nil, invalidArgument("id", "required: the id Notify returned")
	}
	rec, ok, err := s.box.Get(ctx, id)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if !ok || rec.Tenant != Tenant(ctx) {
		return nil, status.Errorf(codes.NotFound, "no notification with id %q (delivered notifications are kept for the idempotency retention, 24h by default)", id)
	}
	out := &vegav1.GetNotificationResponse{
		Id: rec.ID, Status: notificationStatus(rec.State), Channel: rec.Channel,
		Attempts: int32(rec.Attempts), LastError: rec.LastError, CreateTime: timestamppb.New(rec.Created),
	}
	if !rec.Finished.IsZero() {
		out.FinishTime = timestamppb.New(rec.Finished)
	}
	if rec.State == outbox.Pending && !rec.NextAttempt.IsZero() {
		out.NextAttemptTime = timestamppb.New(rec.NextAttempt)
	}
	return out, nil
}

func notificationStatus(s outbox.State) vegav1.NotificationStatus {
	switch s {
	case outbox.Delivered:
		return vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED
	case outbox.Dead:
		return vegav1.NotificationStatus_NOTIFICATION_STATUS_FAILED
	default:
		return vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED
	}
}

func (s *NotifyService) validate(in *vegav1.NotifyRequest) error {
	ch := in.GetChannel()
	if ch == "" || len(ch) > maxChannelName {
		return invalidArgument("channel", "required; configured channels: %s", s.channelList())
	}
	if _, ok := slices.BinarySearch(s.channels, ch); !ok {
		return invalidArgument("channel", "%q is not configured; configured channels: %s", ch, s.channelList())
	}
	text := in.GetText()
	switch {
	case text == "" && len(in.GetPayload().GetFields()) == 0:
		return invalidArgument("text", "set text or payload")
	case utf8.RuneCountInString(text) > maxNotifyText:
		return invalidArgument("text", "longer than %d characters", maxNotifyText)
	case len(in.GetIdempotencyKey()) > maxIdemKeyLen:
		return invalidArgument("idempotency_key", "longer than %d bytes", maxIdemKeyLen)
	case strings.IndexByte(in.GetIdempotencyKey(), 0) >= 0: // neither store keeps NUL in a key
		return invalidArgument("idempotency_key", "must not contain NUL")
	}
	if p := in.GetPayload(); p != nil && proto.Size(p) > maxPayloadBytes {
		return invalidArgument("payload", "larger than %d bytes", maxPayloadBytes)
	}
	return nil
}

func (s *NotifyService) channelList() string {
	if len(s.channels) == 0 {
		return "none (set SLACK_WEBHOOK_URL or VEGA_WEBHOOK_URL)"
	}
	return strings.Join(s.channels, ", ")
}

// fingerprint identifies the content of a notification, for the
// idempotency check.
func fingerprint(in *vegav1.NotifyRequest) []byte {
	c := &vegav1.NotifyRequest{Channel: in.GetChannel(), Text: in.GetText(), Payload: in.GetPayload()}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	sum := sha256.Sum256(b)
	return sum[:]
}
