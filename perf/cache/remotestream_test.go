package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// followScript is what one follow of fakeStreamFlights does: hand over
// chunks (raw, as the fleet stores them), then end with code and msg, or
// fail with err.
type followScript struct {
	chunks [][]byte
	code   uint32
	msg    string
	err    error
}

// fakeStreamFlights plays the fleet's side of stream flights from a
// script: each LeadStream takes the next step ("lead", a follow, or
// nothing: "down").
type fakeStreamFlights struct {
	mu          sync.Mutex
	steps       []any    // guarded by mu: "lead", followScript or "down"
	shared      [][]byte // guarded by mu: what the leader sent
	ends        []string // guarded by mu: how the leader ended
	follows     int      // guarded by mu
	endCalls    int      // guarded by mu
	followedNow bool     // what followed reports
}

func (f *fakeStreamFlights) LeadStream(context.Context, string) (func([]byte), func(bool, uint32, string), func(context.Context) bool, func(context.Context, func([]byte) error) (uint32, string, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var step any = "down"
	if len(f.steps) > 0 {
		step, f.steps = f.steps[0], f.steps[1:]
	}
	switch s := step.(type) {
	case followScript:
		f.follows++
		return nil, nil, nil, func(ctx context.Context, chunk func([]byte) error) (uint32, string, error) {
			for _, c := range s.chunks {
				if err := chunk(c); err != nil {
					return 0, "", err
				}
			}
			return s.code, s.msg, s.err
		}
	case string:
		if s == "lead" {
			return func(b []byte) {
					f.mu.Lock()
					f.shared = append(f.shared, b)
					f.mu.Unlock()
				}, func(shared bool, code uint32, msg string) {
					f.mu.Lock()
					defer f.mu.Unlock()
					f.endCalls++
					if f.endCalls > 1 {
						return // the first call counts
					}
					if !shared {
						f.ends = append(f.ends, "broken")
						return
					}
					f.ends = append(f.ends, codes.Code(code).String()+" "+msg)
				}, func(context.Context) bool { return f.followedNow }, nil
		}
	}
	return nil, nil, nil, nil
}

// sentStream is the local flight's stream: it records what is sent.
type sentStream struct {
	grpc.ServerStream
	ctx             context.Context
	sent            []*vegav1.GenerateStreamResponse
	failAfterCancel bool // SendMsg fails once ctx ended, as a local flight's does
}

func (s *sentStream) Context() context.Context { return s.ctx }
func (s *sentStream) SendMsg(m any) error {
	if s.failAfterCancel && s.ctx.Err() != nil {
		return s.ctx.Err()
	}
	s.sent = append(s.sent, m.(*vegav1.GenerateStreamResponse))
	return nil
}

const streamKey = "generatestream/t1/abc"

func chunkMsg(text string) *vegav1.GenerateStreamResponse {
	return &vegav1.GenerateStreamResponse{Text: text, Model: "m", Backend: "b"}
}

func encodedChunk(t *testing.T, text string) []byte {
	t.Helper()
	b, ok := encodeRemote(streamKey, chunkMsg(text), 0, false)
	require.True(t, ok)
	return b
}

// runFleetStream runs the interceptor once with a handler that sends texts
// then returns herr, and reports the backend calls.
func runFleetStream(t *testing.T, fl *fakeStreamFlights, ctx context.Context, texts []string, herr error) (*sentStream, *policy.Decision, *Cache, int, error) {
	t.Helper()
	c := newTestCache(t, &fakeClock{}, Settings{})
	d := &policy.Decision{Key: streamKey, Coalesce: true, Request: &vegav1.GenerateStreamRequest{Prompt: "p"}}
	ss := &sentStream{ctx: policy.NewContext(ctx, d)}
	calls := 0
	err := FleetStreamServerInterceptor(c, fl)(nil, ss, &grpc.StreamServerInfo{}, func(_ any, s grpc.ServerStream) error {
		calls++
		d.ServedFrom = policy.FromBackend
		for _, tx := range texts {
			if err := s.SendMsg(chunkMsg(tx)); err != nil {
				return err
			}
		}
		return herr
	})
	return ss, d, c, calls, err
}

func texts(msgs []*vegav1.GenerateStreamResponse) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.GetText())
	}
	return out
}

// TestFleetStreamLeads: the leader's callers get the backend's stream as
// always; every message is shared as it is sent, then the end.
func TestFleetStreamLeads(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{"lead"}}
		ss, d, _, calls, err := runFleetStream(t, fl, context.Background(), []string{"a", "b"}, nil)
		require.NoError(t, err)
		assert.Equal(t, 1, calls)
		assert.Equal(t, []string{"a", "b"}, texts(ss.sent))
		assert.Equal(t, policy.FromBackend, d.ServedFrom)
		require.Len(t, fl.shared, 2)
		for i, b := range fl.shared {
			e, err := decodeRemote(b, streamKey, DefaultRemoteMaxBytes)
			require.NoError(t, err, "shared in the remote encoding, checked")
			assert.True(t, proto.Equal(ss.sent[i], e.value.(proto.Message)))
		}
		assert.Equal(t, []string{"OK "}, fl.ends)
	})
	t.Run("error status", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{"lead"}}
		_, _, _, _, err := runFleetStream(t, fl, context.Background(), []string{"a"}, status.Error(codes.ResourceExhausted, "slow down"))
		assert.Equal(t, codes.ResourceExhausted, status.Code(err))
		assert.Equal(t, []string{"ResourceExhausted slow down"}, fl.ends)
	})
	t.Run("panic", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{"lead"}}
		c := newTestCache(t, &fakeClock{}, Settings{})
		d := &policy.Decision{Key: streamKey, Coalesce: true, Request: &vegav1.GenerateStreamRequest{}}
		assert.Panics(t, func() {
			_ = FleetStreamServerInterceptor(c, fl)(nil, &sentStream{ctx: policy.NewContext(context.Background(), d)}, &grpc.StreamServerInfo{},
				func(any, grpc.ServerStream) error { panic("boom") })
		}, "the panic goes on to the coalescer, which recovers it")
		assert.Equal(t, []string{"broken"}, fl.ends, "and the followers are told to go alone")
	})
	t.Run("callers gone, not followed", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{"lead"}}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c := newTestCache(t, &fakeClock{}, Settings{})
		d := &policy.Decision{Key: streamKey, Coalesce: true, Request: &vegav1.GenerateStreamRequest{}}
		err := FleetStreamServerInterceptor(c, fl)(nil, &sentStream{ctx: policy.NewContext(ctx, d)}, &grpc.StreamServerInfo{},
			func(_ any, s grpc.ServerStream) error {
				select { // the backend call is cancelled: nobody reads it
				case <-s.Context().Done():
					return status.FromContextError(s.Context().Err()).Err()
				case <-time.After(10 * time.Second):
					return errors.New("never cancelled")
				}
			})
		assert.Equal(t, codes.Canceled, status.Code(err))
		assert.Equal(t, []string{"broken"}, fl.ends, "a cancelled flight is no end to share")
	})
	t.Run("callers gone, followed", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{"lead"}, followedNow: true}
		ctx, cancel := context.WithCancel(context.Background())
		c := newTestCache(t, &fakeClock{}, Settings{})
		d := &policy.Decision{Key: streamKey, Coalesce: true, Request: &vegav1.GenerateStreamRequest{}}
		ss := &sentStream{ctx: policy.NewContext(ctx, d), failAfterCancel: true}
		err := FleetStreamServerInterceptor(c, fl)(nil, ss, &grpc.StreamServerInfo{}, func(_ any, s grpc.ServerStream) error {
			if err := s.SendMsg(chunkMsg("a")); err != nil {
				return err
			}
			cancel() // the leader's own callers all leave
			time.Sleep(3 * followedTick)
			if err := s.Context().Err(); err != nil {
				return fmt.Errorf("the call was cancelled while followed: %w", err)
			}
			return s.SendMsg(chunkMsg("b"))
		})
		require.NoError(t, err)
		assert.Equal(t, []string{"a"}, texts(ss.sent), "the local flight had only what came before its end")
		assert.Len(t, fl.shared, 2, "the followers have it all")
		assert.Equal(t, []string{"OK "}, fl.ends)
	})
}

// TestFleetStreamFollows: a follower's callers get the leader's messages,
// from the first, marked coalesced, with no backend call; the leader's
// error status is theirs too.
func TestFleetStreamFollows(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{followScript{chunks: [][]byte{encodedChunk(t, "a"), encodedChunk(t, "b"), encodedChunk(t, "c")}}}}
		ss, d, c, calls, err := runFleetStream(t, fl, context.Background(), []string{"x"}, nil)
		require.NoError(t, err)
		assert.Zero(t, calls, "no backend call")
		assert.Equal(t, []string{"a", "b", "c"}, texts(ss.sent))
		assert.Equal(t, policy.FromCoalesced, d.ServedFrom)
		assert.EqualValues(t, 1, c.Stats().FleetCoalesced)
	})
	t.Run("error end", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{followScript{chunks: [][]byte{encodedChunk(t, "a")}, code: uint32(codes.Unavailable), msg: "backend down"}}}
		ss, d, _, calls, err := runFleetStream(t, fl, context.Background(), nil, nil)
		assert.Zero(t, calls)
		assert.Equal(t, []string{"a"}, texts(ss.sent))
		st := status.Convert(err)
		assert.Equal(t, codes.Unavailable, st.Code())
		assert.Equal(t, "backend down", st.Message())
		assert.Equal(t, policy.FromCoalesced, d.ServedFrom)
	})
}

// TestFleetStreamFallback pins the rule: a follow that fails before any
// message was sent leads (or follows) again, then goes alone; one that
// fails after a message was sent ends the callers with UNAVAILABLE and
// never calls the backend, so two generations are never spliced.
func TestFleetStreamFallback(t *testing.T) {
	gone := errors.New("owner gone")
	t.Run("nothing sent: lead instead", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{followScript{err: gone}, "lead"}}
		ss, d, _, calls, err := runFleetStream(t, fl, context.Background(), []string{"a", "b"}, nil)
		require.NoError(t, err)
		assert.Equal(t, 1, calls, "the backend, once")
		assert.Equal(t, []string{"a", "b"}, texts(ss.sent))
		assert.Equal(t, policy.FromBackend, d.ServedFrom)
		assert.Len(t, fl.shared, 2, "and shared for the fleet")
	})
	t.Run("nothing sent, fleet gives up: alone", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{followScript{err: gone}, followScript{err: gone}, followScript{err: gone}, "lead"}}
		ss, _, _, calls, err := runFleetStream(t, fl, context.Background(), []string{"a"}, nil)
		require.NoError(t, err)
		assert.Equal(t, 1, calls)
		assert.Equal(t, []string{"a"}, texts(ss.sent))
		assert.Equal(t, 3, fl.follows, "three attempts")
		assert.Empty(t, fl.shared, "alone: nothing shared")
	})
	t.Run("bad entry first: not sent, lead instead", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{followScript{chunks: [][]byte{[]byte("garbage")}}, "lead"}}
		ss, _, c, calls, err := runFleetStream(t, fl, context.Background(), []string{"a"}, nil)
		require.NoError(t, err)
		assert.Equal(t, 1, calls)
		assert.Equal(t, []string{"a"}, texts(ss.sent))
		assert.EqualValues(t, 1, c.Stats().RemoteBad)
	})
	t.Run("part sent: unavailable", func(t *testing.T) {
		fl := &fakeStreamFlights{steps: []any{followScript{chunks: [][]byte{encodedChunk(t, "a")}, err: gone}, "lead"}}
		ss, _, _, calls, err := runFleetStream(t, fl, context.Background(), []string{"x"}, nil)
		assert.Equal(t, codes.Unavailable, status.Code(err))
		assert.Zero(t, calls, "never a second generation after the first one's chunks")
		assert.Equal(t, []string{"a"}, texts(ss.sent))
	})
	t.Run("fleet down: alone", func(t *testing.T) {
		fl := &fakeStreamFlights{}
		ss, _, _, calls, err := runFleetStream(t, fl, context.Background(), []string{"a"}, nil)
		require.NoError(t, err)
		assert.Equal(t, 1, calls)
		assert.Equal(t, []string{"a"}, texts(ss.sent))
	})
}

// TestFleetStreamOnlyCoalescedCalls: a call the local coalescer does not
// share asks the fleet nothing.
func TestFleetStreamOnlyCoalescedCalls(t *testing.T) {
	fl := &fakeStreamFlights{steps: []any{"lead"}}
	c := newTestCache(t, &fakeClock{}, Settings{})
	d := &policy.Decision{Key: streamKey, Coalesce: false, Request: &vegav1.GenerateStreamRequest{}}
	calls := 0
	err := FleetStreamServerInterceptor(c, fl)(nil, &sentStream{ctx: policy.NewContext(context.Background(), d)}, &grpc.StreamServerInfo{},
		func(any, grpc.ServerStream) error { calls++; return nil })
	require.NoError(t, err)
	assert.Equal(t, 1, calls)
	assert.Len(t, fl.steps, 1, "LeadStream was not called")
}
