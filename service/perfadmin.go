package service

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// A Reporter fills its sections of a stats snapshot and can zero its
// counters. Every mechanism that PerfAdmin shows is one Reporter.
type Reporter interface {
	Report(s *vegav1.Stats)
	Reset()
}

// Section binds a Reporter to the section it fills.
type Section struct {
	ID       vegav1.StatsSection
	Reporter Reporter
}

const (
	minWatchInterval     = 100 * time.Millisecond
	defaultWatchInterval = time.Second
)

// PerfAdminService implements vega.v1.PerfAdminService.
type PerfAdminService struct {
	vegav1.UnimplementedPerfAdminServiceServer

	sections []Section
	started  time.Time
	log      *slog.Logger
	breakers breakerModes // nil until WithActions
	cache    cachePurger  // nil until WithActions
	redriver redriver     // nil until WithRedrive
}

// NewPerfAdminService serves the given sections.
func NewPerfAdminService(log *slog.Logger, sections ...Section) *PerfAdminService {
	return &PerfAdminService{sections: sections, started: time.Now(), log: log}
}

// Snapshot returns every section now (the /metrics exporter reads it).
func (s *PerfAdminService) Snapshot() *vegav1.Stats { return s.snapshot(nil) }

// GetStats implements vega.v1.PerfAdminService.
func (s *PerfAdminService) GetStats(_ context.Context, in *vegav1.GetStatsRequest) (*vegav1.GetStatsResponse, error) {
	want, err := sectionSet(in.GetSections())
	if err != nil {
		return nil, err
	}
	return &vegav1.GetStatsResponse{Stats: s.snapshot(want)}, nil
}

// WatchStats implements vega.v1.PerfAdminService. Each tick builds a fresh
// snapshot; while a send waits on a slow reader (HTTP/2 flow control), the
// ticks it misses are dropped (time.Ticker drops them), so the server never
// queues snapshots and its memory for the stream stays within grpc-go's
// per-stream write quota (64 KiB). A reader that falls behind first drains
// what its own transport had already received, then gets fresh snapshots.
func (s *PerfAdminService) WatchStats(in *vegav1.WatchStatsRequest, stream grpc.ServerStreamingServer[vegav1.WatchStatsResponse]) error {
	want, err := sectionSet(in.GetSections())
	if err != nil {
		return err
	}
	interval := defaultWatchInterval
	if d := in.GetInterval(); d != nil {
		if err := d.CheckValid(); err != nil {
			return invalidArgument("interval", "%v", err)
		}
		interval = d.AsDuration()
		if interval < minWatchInterval {
			return invalidArgument("interval", "must be at least %v", minWatchInterval)
		}
	}
	ctx := stream.Context()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := stream.Send(&vegav1.WatchStatsResponse{Stats: s.snapshot(want)}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return toStatus(ctx, s.log, ctx.Err())
		case <-t.C:
		}
	}
}

// ResetStats implements vega.v1.PerfAdminService.
func (s *PerfAdminService) ResetStats(_ context.Context, in *vegav1.ResetStatsRequest) (*vegav1.ResetStatsResponse, error) {
	want, err := sectionSet(in.GetSections())
	if err != nil {
		return nil, err
	}
	for _, sec := range s.sections {
		if want == nil || want[sec.ID] {
			sec.Reporter.Reset()
		}
	}
	return &vegav1.ResetStatsResponse{ResetTime: timestamppb.Now()}, nil
}

func (s *PerfAdminService) snapshot(want map[vegav1.StatsSection]bool) *vegav1.Stats {
	now := time.Now()
	out := &vegav1.Stats{Time: timestamppb.New(now), Uptime: durationpb.New(now.Sub(s.started))}
	for _, sec := range s.sections {
		if want == nil || want[sec.ID] {
			sec.Reporter.Report(out)
		}
	}
	return out
}

// sectionSet returns nil for "all sections".
func sectionSet(ids []vegav1.StatsSection) (map[vegav1.StatsSection]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	set := make(map[vegav1.StatsSection]bool, len(ids))
	for _, id := range ids {
		if _, ok := vegav1.StatsSection_name[int32(id)]; !ok {
			return nil, status.Errorf(codes.InvalidArgument, "sections: unknown section %d", id)
		}
		if id == vegav1.StatsSection_STATS_SECTION_UNSPECIFIED {
			return nil, nil
		}
		set[id] = true
	}
	return set, nil
}

// StreamStats counts server-streaming RPCs (the "streaming" section).
type StreamStats struct {
	active, total, sent, failed atomic.Int64
}

// StreamServerInterceptor counts streams and the messages sent on them.
func (st *StreamStats) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		st.active.Add(1)
		st.total.Add(1)
		defer st.active.Add(-1)
		err := handler(srv, &countingStream{ServerStream: ss, sent: &st.sent})
		if err != nil && status.Code(err) != codes.Canceled {
			st.failed.Add(1)
		}
		return err
	}
}

// Report fills the streaming section.
func (st *StreamStats) Report(s *vegav1.Stats) {
	s.Streaming = &vegav1.StreamingStats{
		ActiveStreams: st.active.Load(),
		StreamsTotal:  st.total.Load(),
		MessagesSent:  st.sent.Load(),
		StreamsFailed: st.failed.Load(),
	}
}

// Reset zeroes the counters; active streams are a gauge and stay.
func (st *StreamStats) Reset() {
	st.total.Store(0)
	st.sent.Store(0)
	st.failed.Store(0)
}

type countingStream struct {
	grpc.ServerStream
	sent *atomic.Int64
}

func (c *countingStream) SendMsg(m any) error {
	err := c.ServerStream.SendMsg(m)
	if err == nil {
		c.sent.Add(1)
	}
	return err
}
