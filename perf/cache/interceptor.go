package cache

import (
	"context"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/vega-gateway/vega/perf/policy"
)

// Option configures the Lookup interceptors.
type Option func(*config)

type config struct {
	refreshTimeout time.Duration
}

var defaults = config{
	refreshTimeout: 30 * time.Second,
}

// WithRefreshTimeout bounds each background refresh (default 30s).
func WithRefreshTimeout(d time.Duration) Option {
	return func(c *config) { c.refreshTimeout = d }
}

func apply(opts []Option) config {
	cfg := defaults
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// LookupUnaryServerInterceptor serves fresh and stale answers before the
// coalescer. A stale answer starts (at most) one background refresh that
// runs the rest of the chain with a clone of the Decision, detached from
// the caller, so its Fill stores the new answer. Requests without a
// Decision, with ReadCache false or with no Key go to the handler.
func LookupUnaryServerInterceptor(c *Cache, opts ...Option) grpc.UnaryServerInterceptor {
	cfg := apply(opts)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		d := policy.FromContext(ctx)
		if d == nil || !d.ReadCache || d.Key == "" {
			return handler(ctx, req)
		}
		// Refreshing takes a Decision that may write the cache.
		v, st := c.lookup(d.Key, d.WriteCache)
		if st == Miss {
			v, st = c.remoteLookup(ctx, d.Key, d.WriteCache, false)
		}
		switch st {
		case Fresh:
			d.ServedFrom = policy.FromCache
			return v, nil
		case Stale:
			rd := d.Clone()
			c.TryRefresh(ctx, d.Key, cfg.refreshTimeout, func(ctx context.Context) {
				_, _ = handler(policy.NewContext(ctx, rd), req)
			})
			d.ServedFrom = policy.FromStale
			return v, nil
		}
		return handler(ctx, req)
	}
}

// FillUnaryServerInterceptor runs inside the coalesced flight. It looks in
// the cache again (a flight may have stored the answer since this caller's
// miss; a stale entry counts as a miss here), and otherwise calls the
// handler and stores its answer when the Decision allows it. Errors are
// never stored.
func FillUnaryServerInterceptor(c *Cache) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		d := policy.FromContext(ctx)
		if d == nil || d.Key == "" {
			return handler(ctx, req)
		}
		if d.ReadCache {
			if v, ok := c.fresh(d.Key); ok {
				d.ServedFrom = policy.FromCache
				return v, nil
			}
		}
		call := func(ctx context.Context) (any, error) { return handler(ctx, req) }
		if c.flights != nil && d.Coalesce {
			return c.fleetFill(ctx, d, call)
		}
		resp, err := call(ctx)
		if v, size, freshUntil, negative, ok := c.store1(d, resp, err); ok {
			c.remoteSet(d.Key, v, size, freshUntil, negative)
		}
		return resp, err
	}
}

// LookupStreamServerInterceptor is LookupUnaryServerInterceptor for
// server-streaming methods: a hit replays the stored messages in order and
// ends the stream without calling the handler.
func LookupStreamServerInterceptor(c *Cache, opts ...Option) grpc.StreamServerInterceptor {
	cfg := apply(opts)
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		d := policy.FromContext(ss.Context())
		if d == nil || !d.ReadCache || d.Key == "" {
			return handler(srv, ss)
		}
		// Refreshing takes a Decision that may write the cache and the
		// request to replay.
		v, st := c.lookup(d.Key, d.WriteCache && d.Request != nil)
		if st == Miss {
			v, st = c.remoteLookup(ss.Context(), d.Key, d.WriteCache && d.Request != nil, true)
		}
		msgs, isStream := v.([]proto.Message)
		switch {
		case !isStream:
		case st == Fresh:
			d.ServedFrom = policy.FromCache
			return replay(ss, msgs)
		case st == Stale:
			rs := &refreshStream{d: d.Clone()}
			c.TryRefresh(ss.Context(), d.Key, cfg.refreshTimeout, func(ctx context.Context) {
				rs.ctx = policy.NewContext(ctx, rs.d)
				_ = handler(srv, rs)
			})
			d.ServedFrom = policy.FromStale
			return replay(ss, msgs)
		}
		return handler(srv, ss)
	}
}

// FillStreamServerInterceptor is FillUnaryServerInterceptor for
// server-streaming methods. It records a clone of every message the handler
// sends and stores them, in order, only when the handler returns nil and
// every send succeeded: a stream that failed midway or was cancelled is
// never stored. The stored size is the sum of the messages' sizes.
func FillStreamServerInterceptor(c *Cache) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		d := policy.FromContext(ss.Context())
		if d == nil || d.Key == "" {
			return handler(srv, ss)
		}
		if d.ReadCache {
			if v, ok := c.fresh(d.Key); ok {
				if msgs, ok := v.([]proto.Message); ok {
					d.ServedFrom = policy.FromCache
					return replay(ss, msgs)
				}
			}
		}
		if !d.WriteCache {
			return handler(srv, ss)
		}
		rec := &recordingStream{ServerStream: ss, limit: c.set.MaxBytes}
		if err := handler(srv, rec); err != nil {
			return err
		}
		if rec.failed {
			return nil
		}
		ttl, negative, ok := d.Storable(rec.msgs)
		if !ok {
			c.noteRejected()
			return nil
		}
		c.Set(d.Key, rec.msgs, rec.size, ttl, negative)
		return nil
	}
}

func replay(ss grpc.ServerStream, msgs []proto.Message) error {
	for _, m := range msgs {
		if err := ss.SendMsg(m); err != nil {
			return err
		}
	}
	return nil
}

// recordingStream forwards what the handler sends and keeps a clone of it.
// Only the handler's goroutine uses it.
type recordingStream struct {
	grpc.ServerStream
	limit  int64           // stop recording beyond this many bytes
	msgs   []proto.Message // clones of the messages sent so far
	size   int             // sum of their proto.Size
	failed bool            // a send failed or the answer outgrew limit: store nothing
}

func (s *recordingStream) SendMsg(m any) error {
	if !s.failed {
		if pm, ok := m.(proto.Message); ok && int64(s.size) < s.limit {
			s.msgs = append(s.msgs, proto.Clone(pm))
			s.size += proto.Size(pm)
		} else {
			s.failed, s.msgs = true, nil
		}
	}
	err := s.ServerStream.SendMsg(m)
	if err != nil {
		s.failed, s.msgs = true, nil
	}
	return err
}

// refreshStream is the stream a background refresh runs the handler on: it
// has no client. Its first RecvMsg yields the request, later ones io.EOF;
// sends and headers go nowhere (the Fill inside records the sends). Only the
// refresh goroutine uses it.
type refreshStream struct {
	ctx      context.Context // the refresh context carrying d
	d        *policy.Decision
	received bool // the request was handed out
}

func (s *refreshStream) Context() context.Context     { return s.ctx }
func (s *refreshStream) SetHeader(metadata.MD) error  { return nil }
func (s *refreshStream) SendHeader(metadata.MD) error { return nil }
func (s *refreshStream) SetTrailer(metadata.MD)       {}
func (s *refreshStream) SendMsg(any) error            { return s.ctx.Err() }

func (s *refreshStream) RecvMsg(m any) error {
	if s.received {
		return io.EOF
	}
	s.received = true
	dst, ok := m.(proto.Message)
	if !ok {
		return io.EOF
	}
	proto.Reset(dst)
	proto.Merge(dst, s.d.Request)
	return nil
}
