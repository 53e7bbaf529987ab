package coalesce

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The Group tests run in synctest bubbles: synctest.Wait returns when every
// other goroutine of the test is blocked, which is how they know that the
// callers have joined, without sleeping. Time in a bubble is fake.

// result is what one Do returned.
type result struct {
	v      any
	err    error
	joined bool
}

// goDo calls g.Do on a new goroutine and returns where its result arrives.
func goDo(ctx context.Context, g *Group, key string, fn func(context.Context) (any, error)) <-chan result {
	ch := make(chan result, 1)
	go func() {
		v, err, joined := g.Do(ctx, key, fn)
		ch <- result{v, err, joined}
	}()
	return ch
}

// recvNow returns the result that must already have arrived.
func recvNow(t *testing.T, ch <-chan result) result {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatal("Do has not returned")
		return result{}
	}
}

// blocked returns a flight function that counts its calls, hands out its
// context on started and returns v once release is closed.
func blocked(calls *atomic.Int32, started chan<- context.Context, release <-chan struct{}, v any) func(context.Context) (any, error) {
	return func(ctx context.Context) (any, error) {
		calls.Add(1)
		if started != nil {
			started <- ctx
		}
		<-release
		return v, ctx.Err()
	}
}

func TestDoDupSuppress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		var calls atomic.Int32
		release := make(chan struct{})
		want := new(int) // the very same pointer must reach every caller
		fn := blocked(&calls, nil, release, want)

		const n = 100
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				v, err, joined := g.Do(t.Context(), "k", fn)
				results[i] = result{v, err, joined}
			})
		}
		synctest.Wait()
		if got := g.Stats().Waiting; got != n {
			t.Fatalf("Waiting = %d; want %d", got, n)
		}
		close(release)
		wg.Wait()

		if got := calls.Load(); got != 1 {
			t.Errorf("fn calls = %d; want 1", got)
		}
		joined := 0
		for i, r := range results {
			if r.v != want || r.err != nil {
				t.Errorf("caller %d: Do = %v, %v; want %v, nil", i, r.v, r.err, want)
			}
			if r.joined {
				joined++
			}
		}
		if joined != n-1 {
			t.Errorf("joined = %d; want %d", joined, n-1)
		}
		st := g.Stats()
		if st.Requests != n || st.Coalesced != n-1 || st.Flights != 1 || st.InFlight != 0 || st.Waiting != 0 {
			t.Errorf("Stats = %+v; want %d requests, %d coalesced, 1 flight, none in flight or waiting", st, n, n-1)
		}
	})
}

func TestDoDistinctKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		var calls atomic.Int32
		release := make(chan struct{})
		const n = 50
		var wg sync.WaitGroup
		for i := range n {
			key := string(rune('A' + i))
			wg.Go(func() {
				v, err, joined := g.Do(t.Context(), key, blocked(&calls, nil, release, key))
				if v != key || err != nil || joined {
					t.Errorf("Do(%q) = %v, %v, %v; want %q, nil, false", key, v, err, joined, key)
				}
			})
		}
		synctest.Wait()
		// All 50 run at once: no caller holds the lock while it waits.
		if got := calls.Load(); got != n {
			t.Errorf("concurrent fn calls = %d; want %d", got, n)
		}
		if got := g.Stats().InFlight; got != n {
			t.Errorf("InFlight = %d; want %d", got, n)
		}
		close(release)
		wg.Wait()
	})
}

type ctxKey struct{}

func TestDoFlightContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), ctxKey{}, "tenant-a"), time.Hour)
		defer cancel()
		v, err, _ := g.Do(ctx, "k", func(fctx context.Context) (any, error) {
			if got := fctx.Value(ctxKey{}); got != "tenant-a" {
				t.Errorf("flight ctx value = %v; want the first caller's, tenant-a", got)
			}
			if dl, ok := fctx.Deadline(); ok {
				t.Errorf("flight ctx has the caller's deadline %v; want none", dl)
			}
			return "v", nil
		})
		if v != "v" || err != nil {
			t.Errorf("Do = %v, %v; want v, nil", v, err)
		}
	})
}

func TestDoLeaderCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		var calls atomic.Int32
		started, release := make(chan context.Context, 1), make(chan struct{})
		fn := blocked(&calls, started, release, "v")

		leaderCtx, cancelLeader := context.WithCancel(t.Context())
		leader := goDo(leaderCtx, g, "k", fn)
		fctx := <-started
		follower := goDo(t.Context(), g, "k", fn)
		synctest.Wait()

		cancelLeader()
		if r := recvNow(t, leader); !errors.Is(r.err, context.Canceled) || r.v != nil || r.joined {
			t.Errorf("leader: Do = %v, %v, %v; want nil, context.Canceled, false", r.v, r.err, r.joined)
		}
		if err := fctx.Err(); err != nil {
			t.Errorf("flight ctx err = %v after the leader left; want nil while a follower waits", err)
		}
		close(release)
		if r := recvNow(t, follower); r.v != "v" || r.err != nil || !r.joined {
			t.Errorf("follower: Do = %v, %v, %v; want v, nil, true", r.v, r.err, r.joined)
		}
		if st := g.Stats(); st.Abandoned != 0 || calls.Load() != 1 {
			t.Errorf("Abandoned = %d, fn calls = %d; want 0, 1", st.Abandoned, calls.Load())
		}
	})
}

func TestDoFollowerCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		var calls atomic.Int32
		started, release := make(chan context.Context, 1), make(chan struct{})
		fn := blocked(&calls, started, release, "v")

		leader := goDo(t.Context(), g, "k", fn)
		fctx := <-started
		followerCtx, cancelFollower := context.WithCancel(t.Context())
		follower := goDo(followerCtx, g, "k", fn)
		other := goDo(t.Context(), g, "k", fn)
		synctest.Wait()

		cancelFollower()
		if r := recvNow(t, follower); !errors.Is(r.err, context.Canceled) || !r.joined {
			t.Errorf("follower: Do = %v, %v, %v; want nil, context.Canceled, true", r.v, r.err, r.joined)
		}
		if err := fctx.Err(); err != nil {
			t.Errorf("flight ctx err = %v; want nil", err)
		}
		// The follower leaving did not remove the key: a newcomer joins the
		// same flight rather than starting a duplicate (janos/singleflight#4).
		late := goDo(t.Context(), g, "k", fn)
		synctest.Wait()
		close(release)
		for name, ch := range map[string]<-chan result{"leader": leader, "other": other, "late": late} {
			if r := recvNow(t, ch); r.v != "v" || r.err != nil {
				t.Errorf("%s: Do = %v, %v; want v, nil", name, r.v, r.err)
			}
		}
		if got := calls.Load(); got != 1 {
			t.Errorf("fn calls = %d; want 1", got)
		}
	})
}

func TestDoAllCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		observed := make(chan error, 1)
		fn := func(ctx context.Context) (any, error) {
			<-ctx.Done()
			observed <- ctx.Err()
			return nil, ctx.Err()
		}
		ctxA, cancelA := context.WithCancel(t.Context())
		ctxB, cancelB := context.WithCancel(t.Context())
		a := goDo(ctxA, g, "k", fn)
		b := goDo(ctxB, g, "k", fn)
		synctest.Wait()

		cancelA()
		recvNow(t, a)
		select {
		case err := <-observed:
			t.Fatalf("flight cancelled (%v) while B still waits", err)
		default:
		}
		cancelB()
		if r := recvNow(t, b); !errors.Is(r.err, context.Canceled) {
			t.Errorf("B: err = %v; want context.Canceled", r.err)
		}
		if err := <-observed; !errors.Is(err, context.Canceled) {
			t.Errorf("fn saw ctx err %v; want context.Canceled", err)
		}
		synctest.Wait()
		if st := g.Stats(); st.Abandoned != 1 || st.InFlight != 0 || st.Waiting != 0 {
			t.Errorf("Stats = %+v; want 1 abandoned, none in flight or waiting", st)
		}
	})
}

// TestDoJoinAfterAbandon is tailscale/tailscale#18919: a caller arriving
// after the last waiter left, while the abandoned fn still unwinds, must get
// a fresh, live flight and not the cancelled one; and the old flight ending
// must not remove the new flight's key.
func TestDoJoinAfterAbandon(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		var calls atomic.Int32
		unwind, release := make(chan struct{}), make(chan struct{})
		ctxs := make(chan context.Context, 2)
		fn := func(ctx context.Context) (any, error) {
			n := calls.Add(1)
			ctxs <- ctx
			if n == 1 {
				<-ctx.Done()
				<-unwind // still unwinding while B arrives
				return nil, ctx.Err()
			}
			<-release
			return "v2", ctx.Err()
		}
		ctxA, cancelA := context.WithCancel(t.Context())
		a := goDo(ctxA, g, "k", fn)
		first := <-ctxs
		cancelA()
		if r := recvNow(t, a); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("A: err = %v; want context.Canceled", r.err)
		}
		if first.Err() == nil {
			t.Fatal("first flight not cancelled after its only waiter left")
		}

		b := goDo(t.Context(), g, "k", fn)
		second := <-ctxs
		if err := second.Err(); err != nil {
			t.Fatalf("B's flight ctx err = %v; want a live context", err)
		}
		close(unwind) // the first flight ends while the second runs
		synctest.Wait()
		c := goDo(t.Context(), g, "k", fn)
		synctest.Wait()
		close(release)
		if r := recvNow(t, b); r.v != "v2" || r.err != nil || r.joined {
			t.Errorf("B: Do = %v, %v, %v; want v2, nil, false", r.v, r.err, r.joined)
		}
		if r := recvNow(t, c); r.v != "v2" || r.err != nil || !r.joined {
			t.Errorf("C: Do = %v, %v, %v; want v2, nil, true (joined B's flight)", r.v, r.err, r.joined)
		}
		if got := calls.Load(); got != 2 {
			t.Errorf("fn calls = %d; want 2", got)
		}
	})
}

func TestDoPanic(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fn         func()
		wantGoexit bool
	}{
		{"panic", func() { panic("boom") }, false},
		{"panic(nil)", func() { panic(nil) }, false},
		{"Goexit", runtime.Goexit, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testDoPanic(t, tc.fn, tc.wantGoexit) })
		})
	}
}

func testDoPanic(t *testing.T, die func(), wantGoexit bool) {
	var reported []*PanicError
	g := New(WithPanicHandler(func(key string, err *PanicError) {
		if key != "k" {
			t.Errorf("panic handler key = %q; want k", key)
		}
		reported = append(reported, err)
	}))
	release := make(chan struct{})
	fn := func(context.Context) (any, error) {
		<-release
		die()
		return "unreachable", nil
	}
	var waiters []<-chan result
	for range 3 {
		waiters = append(waiters, goDo(t.Context(), g, "k", fn))
	}
	synctest.Wait()
	close(release)
	for i, ch := range waiters {
		r := recvNow(t, ch)
		if st := status.Convert(r.err); st.Code() != codes.Internal || st.Message() != "internal error" {
			t.Errorf("waiter %d: status = %v; want Internal \"internal error\"", i, st)
		}
		var pe *PanicError
		if !errors.As(r.err, &pe) || pe.Goexit != wantGoexit || len(pe.Stack) == 0 {
			t.Errorf("waiter %d: err = %#v; want a *PanicError with Goexit %v and a stack", i, r.err, wantGoexit)
		}
	}
	synctest.Wait()
	if len(reported) != 1 {
		t.Errorf("panic handler calls = %d; want 1", len(reported))
	}
	if st := g.Stats(); st.Panics != 1 || st.InFlight != 0 {
		t.Errorf("Panics = %d, InFlight = %d; want 1, 0", st.Panics, st.InFlight)
	}
	// The key works again.
	v, err, joined := g.Do(t.Context(), "k", func(context.Context) (any, error) { return "ok", nil })
	if v != "ok" || err != nil || joined {
		t.Errorf("Do after panic = %v, %v, %v; want ok, nil, false", v, err, joined)
	}
}

func TestDoErrorReachesEveryWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		errBackend := errors.New("backend down")
		release := make(chan struct{})
		fn := func(context.Context) (any, error) {
			<-release
			return nil, errBackend
		}
		var waiters []<-chan result
		for range 10 {
			waiters = append(waiters, goDo(t.Context(), g, "k", fn))
		}
		synctest.Wait()
		close(release)
		for i, ch := range waiters {
			if r := recvNow(t, ch); r.err != errBackend {
				t.Errorf("waiter %d (joined %v): err = %v; want %v", i, r.joined, r.err, errBackend)
			}
		}
	})
}

func TestDoDoneContext(t *testing.T) {
	g := New()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	v, err, joined := g.Do(ctx, "k", func(context.Context) (any, error) {
		t.Error("fn called for a caller that had already left")
		return nil, nil
	})
	if v != nil || !errors.Is(err, context.Canceled) || joined {
		t.Errorf("Do = %v, %v, %v; want nil, context.Canceled, false", v, err, joined)
	}
	if st := g.Stats(); st.Flights != 0 {
		t.Errorf("Flights = %d; want 0", st.Flights)
	}
}

// A finished flight keeps nothing: the next call runs fn again.
func TestDoKeepsNoResults(t *testing.T) {
	var g Group // the zero value works
	var calls int
	fn := func(context.Context) (any, error) { calls++; return calls, nil }
	for want := 1; want <= 2; want++ {
		if v, err, joined := g.Do(t.Context(), "k", fn); v != want || err != nil || joined {
			t.Errorf("Do #%d = %v, %v, %v; want %d, nil, false", want, v, err, joined, want)
		}
	}
}

func TestStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		fn := func(context.Context) (any, error) {
			time.Sleep(10 * time.Millisecond) // fake time
			return "v", nil
		}
		var wg sync.WaitGroup
		wg.Go(func() { g.Do(t.Context(), "k", fn) })
		synctest.Wait()
		wg.Go(func() { g.Do(t.Context(), "k", fn) }) // waits 10ms
		synctest.Wait()
		wg.Go(func() {
			time.Sleep(4 * time.Millisecond)
			g.Do(t.Context(), "k", fn) // waits 6ms
		})
		wg.Go(func() { g.Do(t.Context(), "other", fn) })
		synctest.Wait()
		if st := g.Stats(); st.InFlight != 2 || st.Waiting != 3 {
			t.Errorf("InFlight, Waiting = %d, %d; want 2, 3", st.InFlight, st.Waiting)
		}
		wg.Wait()

		st := g.Stats()
		want := Stats{Requests: 4, Coalesced: 2, Flights: 2, TotalWait: 16 * time.Millisecond}
		if st != want {
			t.Errorf("Stats = %+v; want %+v", st, want)
		}
		if got := st.CoalesceRate(); got != 50 {
			t.Errorf("CoalesceRate = %v; want 50", got)
		}
		if got := st.AvgWaitTime(); got != 8*time.Millisecond {
			t.Errorf("AvgWaitTime = %v; want 8ms", got)
		}

		// ResetStats zeroes the counters but not the gauges.
		release := make(chan struct{})
		done := goDo(t.Context(), g, "k", func(context.Context) (any, error) { <-release; return nil, nil })
		synctest.Wait()
		g.ResetStats()
		if st, want := g.Stats(), (Stats{InFlight: 1, Waiting: 1}); st != want {
			t.Errorf("Stats after ResetStats = %+v; want %+v", st, want)
		}
		close(release)
		recvNow(t, done)
	})
}

func TestStatsEmpty(t *testing.T) {
	var s Stats
	if s.CoalesceRate() != 0 || s.AvgWaitTime() != 0 {
		t.Errorf("CoalesceRate, AvgWaitTime of no requests = %v, %v; want 0, 0", s.CoalesceRate(), s.AvgWaitTime())
	}
}
