package service

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/notify/outbox"
)

// outboxStats is what the batch section needs of the notification
// outbox; both stores (bbolt and PostgreSQL) have it.
type outboxStats interface {
	Stats() outbox.Stats
	ResetStats()
}

// OutboxReporter fills the batch section from the notification outbox:
// its group commits and each channel's queue, the store it lives in and,
// for PostgreSQL, the replica delivering each channel.
type OutboxReporter struct{ Box outboxStats }

func (r OutboxReporter) Report(s *vegav1.Stats) {
	st := r.Box.Stats()
	b := st.Batch
	out := &vegav1.BatchStats{
		Commits: b.Commits, Operations: b.Operations, MaxBatchSize: b.MaxBatchSize,
		FlushedOnSize: b.FlushedOnSize, FlushedOnInterval: b.FlushedOnInterval, FlushedIdle: b.FlushedIdle,
		MaxCommitMs: ms(b.MaxCommitTime), MaxBatch: int64(b.MaxBatch), FlushInterval: durationpb.New(b.FlushInterval),
		Channels: make(map[string]*vegav1.OutboxChannelStats, len(st.Channels)),
		Store:    st.Store, Replica: st.Replica,
	}
	if b.Commits > 0 {
		out.AvgBatchSize = float64(b.Operations) / float64(b.Commits)
		out.AvgCommitMs = ms(b.CommitTime) / float64(b.Commits)
	}
	for name, c := range st.Channels {
		out.Channels[name] = &vegav1.OutboxChannelStats{
			QueueDepth: int64(c.QueueDepth), OldestPendingAgeMs: ms(c.OldestPendingAge),
			Accepted: c.Accepted, Delivered: c.Delivered, Retried: c.Retried,
			DeadLettered: c.DeadLettered, DeadLetterDepth: c.DeadLetterDepth, LastError: c.LastError,
			PausedForMs: ms(c.PausedFor), RatePerSecond: c.Rate, Burst: int64(c.Burst), Unconfigured: c.Unconfigured,
			Owner: c.Owner,
		}
	}
	s.Batch = out
}

func (r OutboxReporter) Reset() { r.Box.ResetStats() }

// redriver puts dead letters back in their queues.
type redriver interface {
	Redrive(ctx context.Context, channel string, ids []string) (int, error)
}

// WithRedrive gives PerfAdmin the outbox whose dead letters it may re-drive.
func (s *PerfAdminService) WithRedrive(r redriver) *PerfAdminService {
	s.redriver = r
	return s
}

// RedriveNotifications implements vega.v1.PerfAdminService.
func (s *PerfAdminService) RedriveNotifications(ctx context.Context, in *vegav1.RedriveNotificationsRequest) (*vegav1.RedriveNotificationsResponse, error) {
	if s.redriver == nil {
		return nil, status.Error(codes.FailedPrecondition, "the notification outbox is not enabled")
	}
	if len(in.GetIds()) > 10000 {
		return nil, invalidArgument("ids", "at most 10000 per call")
	}
	n, err := s.redriver.Redrive(ctx, in.GetChannel(), in.GetIds())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &vegav1.RedriveNotificationsResponse{Redriven: int64(n)}, nil
}
