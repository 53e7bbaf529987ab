package service

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/notify/outbox"
)

// slowBox records a submission as pending and delivers it after delay.
type slowBox struct{ delay time.Duration }

func (b slowBox) Submit(_ context.Context, sub outbox.Submission) (outbox.Record, bool, error) {
	return outbox.Record{ID: "n1", Channel: sub.Channel, State: outbox.Pending}, true, nil
}

func (b slowBox) Wait(ctx context.Context, id string) (outbox.Record, bool, error) {
	select {
	case <-time.After(b.delay):
		return outbox.Record{ID: id, Channel: "slack", State: outbox.Delivered, Attempts: 1}, true, nil
	case <-ctx.Done():
		return outbox.Record{}, false, ctx.Err()
	}
}

func (b slowBox) Get(context.Context, string) (outbox.Record, bool, error) {
	return outbox.Record{}, false, nil
}

func (b slowBox) PausedFor(string) time.Duration { return 0 }

// TestNotifyWaitOutlivingPauseChecks: a delivery that lands after several
// pause checks is answered DELIVERED, and (under -race) the check beside
// the wait no longer reads the record Wait's answer is written over (the
// fault matrix's L5 row found that race in the built binary).
func TestNotifyWaitOutlivingPauseChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewNotifyService([]string{"slack"}, slowBox{delay: 3*pauseCheck + pauseCheck/2}, 5*time.Second,
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		r, err := s.Notify(context.Background(), &vegav1.NotifyRequest{Channel: "slack", Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED || r.GetAttempts() != 1 {
			t.Fatalf("got %v after %d attempts, want DELIVERED after 1", r.GetStatus(), r.GetAttempts())
		}
	})
}
