package coalesce

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamer is a caller of DoStream that records what it received.
type streamer struct {
	mu     sync.Mutex
	got    []any
	done   chan struct{} // closed when DoStream returned
	err    error
	joined bool
}

// goStream calls g.DoStream on a new goroutine; recv, if not nil, runs
// before each message is recorded and may refuse it.
func goStream(ctx context.Context, g *Group, key string, fn func(context.Context, func(any) error) error, recv func(msg any) error) *streamer {
	s := &streamer{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err, s.joined = g.DoStream(ctx, key, fn, func(msg any) error {
			if recv != nil {
				if err := recv(msg); err != nil {
					return err
				}
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.got = append(s.got, msg)
			return nil
		})
	}()
	return s
}

func (s *streamer) received() []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// finished reports whether DoStream returned.
func (s *streamer) finished() bool {
	synctest.Wait()
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// script is a streaming flight function that emits the values it is sent
// on msgs until msgs is closed.
func script(msgs <-chan any, ctxs chan<- context.Context) func(context.Context, func(any) error) error {
	return func(ctx context.Context, emit func(any) error) error {
		if ctxs != nil {
			ctxs <- ctx
		}
		for m := range msgs {
			if err := emit(m); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestDoStreamLateJoiner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		msgs := make(chan any)
		fn := script(msgs, nil)
		a := goStream(t.Context(), g, "k", fn, nil)
		msgs <- 1
		msgs <- 2
		synctest.Wait()
		if got := a.received(); !slices.Equal(got, []any{1, 2}) {
			t.Fatalf("A received %v; want [1 2] live", got)
		}
		b := goStream(t.Context(), g, "k", fn, nil)
		synctest.Wait()
		if got := b.received(); !slices.Equal(got, []any{1, 2}) {
			t.Fatalf("late joiner B received %v; want the replay [1 2]", got)
		}
		msgs <- 3
		msgs <- 4
		close(msgs)
		for name, s := range map[string]*streamer{"A": a, "B": b} {
			if !s.finished() {
				t.Fatalf("%s: DoStream has not returned", name)
			}
			if got := s.received(); !slices.Equal(got, []any{1, 2, 3, 4}) || s.err != nil {
				t.Errorf("%s received %v, %v; want [1 2 3 4], nil", name, got, s.err)
			}
		}
		if a.joined || !b.joined {
			t.Errorf("joined A, B = %v, %v; want false, true", a.joined, b.joined)
		}
		if st := g.Stats(); st.Flights != 1 || st.Coalesced != 1 || st.InFlight != 0 || st.Waiting != 0 {
			t.Errorf("Stats = %+v; want 1 flight, 1 coalesced, none in flight or waiting", st)
		}
	})
}

func TestDoStreamRecvError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		msgs, ctxs := make(chan any), make(chan context.Context, 1)
		fn := script(msgs, ctxs)
		errGone := errors.New("client gone")
		a := goStream(t.Context(), g, "k", fn, nil)
		fctx := <-ctxs
		b := goStream(t.Context(), g, "k", fn, func(msg any) error {
			if msg == 2 {
				return errGone
			}
			return nil
		})
		c := goStream(t.Context(), g, "k", fn, nil)
		msgs <- 1
		msgs <- 2
		if !b.finished() || b.err != errGone {
			t.Fatalf("B: DoStream returned %v (finished %v); want %v at once", b.err, b.finished(), errGone)
		}
		if fctx.Err() != nil {
			t.Fatalf("flight ctx err = %v after one of three left; want nil", fctx.Err())
		}
		msgs <- 3
		close(msgs)
		for name, s := range map[string]*streamer{"A": a, "C": c} {
			if !s.finished() {
				t.Fatalf("%s: DoStream has not returned", name)
			}
			if got := s.received(); !slices.Equal(got, []any{1, 2, 3}) || s.err != nil {
				t.Errorf("%s received %v, %v; want [1 2 3], nil", name, got, s.err)
			}
		}
	})
}

// A slow caller delays neither the flight nor the other callers.
func TestDoStreamSlowCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		msgs := make(chan any)
		fn := script(msgs, nil)
		unblock := make(chan struct{})
		slow := goStream(t.Context(), g, "k", fn, func(any) error { <-unblock; return nil })
		fast := goStream(t.Context(), g, "k", fn, nil)
		synctest.Wait() // both joined before the flight can end
		for i := range 5 {
			msgs <- i // never blocks on the slow caller
		}
		close(msgs)
		if !fast.finished() || len(fast.received()) != 5 {
			t.Fatalf("fast caller: finished %v with %v; want all 5 while the slow one is stuck", fast.finished(), fast.received())
		}
		if st := g.Stats(); st.InFlight != 0 {
			t.Errorf("InFlight = %d; want 0: the flight ended without waiting for the slow caller", st.InFlight)
		}
		close(unblock)
		if !slow.finished() || !slices.Equal(slow.received(), []any{0, 1, 2, 3, 4}) {
			t.Errorf("slow caller received %v; want [0 1 2 3 4]", slow.received())
		}
	})
}

func TestDoStreamAllLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		emitErr := make(chan error, 1)
		ctxs := make(chan context.Context, 2)
		fn := func(ctx context.Context, emit func(any) error) error {
			ctxs <- ctx
			if err := emit("first"); err != nil {
				return err
			}
			<-ctx.Done()
			err := emit("after")
			emitErr <- err
			return err
		}
		ctxA, cancelA := context.WithCancel(t.Context())
		a := goStream(ctxA, g, "k", fn, nil)
		first := <-ctxs
		errGone := errors.New("client gone")
		b := goStream(t.Context(), g, "k", fn, func(any) error { return errGone })
		if !b.finished() || b.err != errGone {
			t.Fatalf("B: finished %v, err %v; want %v", b.finished(), b.err, errGone)
		}
		if first.Err() != nil {
			t.Fatal("flight cancelled while A still reads")
		}
		cancelA()
		if !a.finished() || !errors.Is(a.err, context.Canceled) {
			t.Fatalf("A: finished %v, err %v; want context.Canceled", a.finished(), a.err)
		}
		if err := <-emitErr; !errors.Is(err, context.Canceled) {
			t.Errorf("emit in an abandoned flight = %v; want context.Canceled", err)
		}
		if st := g.Stats(); st.Abandoned != 1 {
			t.Errorf("Abandoned = %d; want 1", st.Abandoned)
		}

		// The next caller gets a live flight.
		gate := make(chan struct{})
		c := goStream(t.Context(), g, "k", fn, func(any) error { <-gate; return errGone })
		second := <-ctxs
		synctest.Wait()
		if second.Err() != nil {
			t.Errorf("new flight ctx err = %v; want live", second.Err())
		}
		close(gate)
		if !c.finished() || c.joined || c.err != errGone {
			t.Errorf("C: finished %v, joined %v, err %v; want a new flight left with %v", c.finished(), c.joined, c.err, errGone)
		}
		<-emitErr
	})
}

func TestDoStreamPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var reported int
		g := New(WithPanicHandler(func(string, *PanicError) { reported++ }))
		fn := func(_ context.Context, emit func(any) error) error {
			_ = emit("partial")
			panic("boom")
		}
		s := goStream(t.Context(), g, "k", fn, nil)
		if !s.finished() {
			t.Fatal("DoStream hangs after a panic")
		}
		if got := s.received(); !slices.Equal(got, []any{"partial"}) {
			t.Errorf("received %v; want [partial]", got)
		}
		if st := status.Convert(s.err); st.Code() != codes.Internal {
			t.Errorf("err = %v; want Internal", s.err)
		}
		if st := g.Stats(); st.Panics != 1 || reported != 1 {
			t.Errorf("Panics = %d, reported %d; want 1, 1", st.Panics, reported)
		}
		err, joined := g.DoStream(t.Context(), "k", func(_ context.Context, emit func(any) error) error { return emit("ok") }, func(any) error { return nil })
		if err != nil || joined {
			t.Errorf("DoStream after panic = %v, %v; want nil, false", err, joined)
		}
	})
}

func TestDoStreamError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		errBackend := errors.New("backend down")
		release := make(chan struct{})
		fn := func(_ context.Context, emit func(any) error) error {
			<-release
			return errBackend
		}
		a := goStream(t.Context(), g, "k", fn, nil)
		b := goStream(t.Context(), g, "k", fn, nil)
		synctest.Wait()
		close(release)
		for name, s := range map[string]*streamer{"A": a, "B": b} {
			if !s.finished() || s.err != errBackend {
				t.Errorf("%s: err = %v; want %v", name, s.err, errBackend)
			}
		}
	})
}
