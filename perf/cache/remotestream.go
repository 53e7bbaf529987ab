package cache

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vega-gateway/vega/perf/policy"
)

// StreamFlights coalesces a key's backend streams across the fleet
// (perf/fleet implements it on Redis): one gateway leads and shares each
// message as it is sent, the others follow from the first message.
type StreamFlights interface {
	// LeadStream takes key's stream flight or finds who leads it.
	//
	// Leading, it returns send, which shares one encoded message without
	// waiting, end, called after the last send (its first call counts,
	// later ones do nothing): shared with the status the leader's callers
	// got (code 0: OK), or not shared (the flight has nothing to offer its
	// followers), and followed, which reports whether other gateways are
	// following the flight now (false when the fleet cannot say).
	//
	// Not leading, it returns follow, which hands each encoded message of
	// the leader's flight, from the first, to chunk and returns the
	// flight's end status, or an error when it could not follow it to its
	// end (the leader gone, the flight broken, the fleet failing, ctx
	// ending, or chunk's error).
	//
	// None means the fleet cannot help: the caller is alone.
	LeadStream(ctx context.Context, key string) (send func(chunk []byte), end func(shared bool, code uint32, msg string), followed func(context.Context) bool, follow func(ctx context.Context, chunk func([]byte) error) (code uint32, msg string, err error))
}

// followedTick is how often a leader whose own callers have all left asks
// whether other gateways still follow its flight.
const followedTick = 250 * time.Millisecond

// errMidStream is what the callers of a followed flight get when it could
// not be followed to its end after they received part of it: retryable,
// since calling the backend now would splice two different generations.
var errMidStream = status.Error(codes.Unavailable, "vega: the stream's leading replica was lost mid-stream; retry the call")

// FleetStreamServerInterceptor coalesces server-streaming calls across the
// fleet. It runs inside the local streaming flight (between the coalesce
// and fill steps), for the calls the local coalescer shares (Decision with
// Coalesce, Key and Request), so one replica's flight leads or follows for
// all of that replica's callers of the key.
//
// Leading, every message the inner chain sends is also shared, encoded as
// the remote tier's entries are (checked on reading: key, type, version),
// then its end: OK, or the status code and message the leader's callers
// got. A flight cancelled because its own callers all left, or whose
// messages cannot be encoded within RemoteMaxBytes, is shared as broken.
//
// Following, the leader's messages are sent as this flight's own, from the
// first; its callers, late local joiners included, replay them as from any
// local flight, marked coalesced. When the flight cannot be followed to
// its end (the leader died, the flight broke, Redis failed) and nothing
// was sent yet, this flight leads or follows again (at most
// maxFleetAttempts times), then calls the backend alone; once something
// was sent, its callers end with UNAVAILABLE (retryable) rather than a
// second generation spliced onto the first. With fl nil, or the fleet
// unable to help, the call goes on as without a fleet.
func FleetStreamServerInterceptor(c *Cache, fl StreamFlights) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		d := policy.FromContext(ctx)
		if fl == nil || d == nil || !d.Coalesce || d.Key == "" || d.Request == nil {
			return handler(srv, ss)
		}
		for range maxFleetAttempts {
			send, end, followed, follow := fl.LeadStream(ctx, d.Key)
			if send != nil {
				return c.leadStream(ss, d, send, end, followed, func(s grpc.ServerStream) error { return handler(srv, s) })
			}
			if follow == nil {
				break
			}
			sent := 0
			code, msg, err := follow(ctx, func(b []byte) error {
				e, err := decodeRemote(b, d.Key, c.set.RemoteMaxBytes)
				if _, isStream := e.value.([]proto.Message); err != nil || isStream {
					c.stats.remoteBad.Add(1)
					return errBadEntry
				}
				if sent == 0 {
					d.ServedFrom = policy.FromCoalesced // published with the first message
				}
				sent++
				return ss.SendMsg(e.value)
			})
			switch {
			case err == nil:
				c.stats.fleetCoalesced.Add(1)
				d.ServedFrom = policy.FromCoalesced
				if code == 0 {
					return nil
				}
				return status.Error(codes.Code(code), msg)
			case ctx.Err() != nil:
				return ctx.Err()
			case sent > 0:
				return errMidStream
			}
		}
		return handler(srv, ss)
	}
}

// leadStream runs the inner chain as the fleet's leader of d.Key: each
// message it sends is shared, then its end (end's first call counts: a
// flight broken midway was ended at once).
//
// The chain runs with a context of its own: the local flight's values,
// cancelled once the local flight has ended (its callers all left) and no
// other gateway follows the flight (checked then, and every
// followedTick), so a leader's callers leaving does not cut the stream
// its followers read; meanwhile its messages are only shared.
func (c *Cache) leadStream(ss grpc.ServerStream, d *policy.Decision, send func([]byte), end func(bool, uint32, string), followed func(context.Context) bool, call func(grpc.ServerStream) error) error {
	defer end(false, 0, "") // a panic in call: the followers go alone (end counts once)
	local := ss.Context()
	ctx, cancel := context.WithCancel(context.WithoutCancel(local))
	defer cancel()
	watching := make(chan struct{})
	stop := context.AfterFunc(local, func() {
		defer close(watching)
		for followed(ctx) {
			t := time.NewTimer(followedTick)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		cancel()
	})
	defer func() {
		cancel()
		if !stop() { // the watch started: wait for it
			<-watching
		}
	}()
	ts := &sharingStream{ServerStream: ss, ctx: ctx, key: d.Key, max: c.set.RemoteMaxBytes, send: send, end: end}
	err := call(ts)
	switch code := status.Code(err); {
	case ts.failed || ctx.Err() != nil || code == codes.Canceled || code == codes.DeadlineExceeded ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		end(false, 0, "") // no end to share: the followers lead in turn
	case err == nil:
		end(true, 0, "")
	default:
		st := status.Convert(err)
		end(true, uint32(st.Code()), st.Message())
	}
	return err
}

// sharingStream shares, encoded, every message sent on it, after sending
// it. Only the handler's goroutine uses it.
type sharingStream struct {
	grpc.ServerStream
	ctx    context.Context // the chain's: may outlive the local flight's
	key    string
	max    int
	send   func([]byte)
	end    func(bool, uint32, string)
	failed bool // a message could not be shared: the flight is broken
}

func (s *sharingStream) Context() context.Context { return s.ctx }

func (s *sharingStream) SendMsg(m any) error {
	if err := s.ServerStream.SendMsg(m); err != nil && s.ServerStream.Context().Err() == nil {
		// (Once the local flight has ended, its callers are gone: the
		// messages go on to the followers only.)
		if !s.failed {
			s.failed = true
			s.end(false, 0, "")
		}
		return err
	}
	if s.failed {
		return nil
	}
	b, ok := encodeRemote(s.key, m, 0, false) // freshness unused: never kept
	if !ok || len(b) > s.max {
		s.failed = true
		s.end(false, 0, "") // now: the followers need not wait for the end to go alone
		return nil
	}
	s.send(b)
	return nil
}
