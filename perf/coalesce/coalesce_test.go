package coalesce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
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

// pending reports, after the other goroutines settled, that Do has not
// returned on ch.
func pending(ch <-chan result) bool {
	synctest.Wait()
	return len(ch) == 0
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

// The leader runs fn on its own goroutine, so it cannot return before fn
// does; but its cancellation makes it leave the flight at once, is not the
// follower's error and does not cancel the flight while the follower waits.
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
		if !pending(leader) {
			t.Fatal("leader returned while fn, which runs on its goroutine, still runs")
		}
		if err := fctx.Err(); err != nil {
			t.Errorf("flight ctx err = %v after the leader left; want nil while a follower waits", err)
		}
		g.mu.Lock()
		waiters := g.calls["k"].waiters
		g.mu.Unlock()
		if waiters != 1 {
			t.Errorf("waiters = %d after the leader's ctx ended; want 1: it left the refcount at once", waiters)
		}
		close(release)
		if r := recvNow(t, follower); r.v != "v" || r.err != nil || !r.joined {
			t.Errorf("follower: Do = %v, %v, %v; want v, nil, true", r.v, r.err, r.joined)
		}
		if r := recvNow(t, leader); !errors.Is(r.err, context.Canceled) || r.v != nil || r.joined {
			t.Errorf("leader: Do = %v, %v, %v; want nil, context.Canceled, false", r.v, r.err, r.joined)
		}
		if st := g.Stats(); st.Abandoned != 0 || st.InFlight != 0 || st.Waiting != 0 || calls.Load() != 1 {
			t.Errorf("Stats = %+v, fn calls = %d; want none abandoned, in flight or waiting, 1 call", st, calls.Load())
		}
	})
}

// A leader alone whose ctx ends abandons the flight at once: fn sees its
// context cancelled without any time passing, the key is free for a new
// flight while fn unwinds, and the leader returns its own error even if fn
// returns a value.
func TestDoLeaderAloneCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New()
		observed, unwind := make(chan error, 1), make(chan struct{})
		fn := func(ctx context.Context) (any, error) {
			<-ctx.Done()
			observed <- ctx.Err()
			<-unwind
			return "ignored its ctx", nil
		}
		ctx, cancel := context.WithCancel(t.Context())
		leader := goDo(ctx, g, "k", fn)
		synctest.Wait()

		before := time.Now() // fake time: only moves when every goroutine is blocked on it
		cancel()
		synctest.Wait()
		select {
		case err := <-observed:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("fn saw ctx err %v; want context.Canceled", err)
			}
		default:
			t.Fatal("fn's context not cancelled after its only waiter's ctx ended")
		}
		if d := time.Since(before); d != 0 {
			t.Errorf("fn saw the cancellation after %v; want at once", d)
		}
		if st := g.Stats(); st.Abandoned != 1 || st.InFlight != 1 {
			t.Errorf("Abandoned, InFlight = %d, %d while fn unwinds; want 1, 1", st.Abandoned, st.InFlight)
		}
		// The key was removed: a new caller starts a live flight.
		v, err, joined := g.Do(t.Context(), "k", func(ctx context.Context) (any, error) { return "fresh", ctx.Err() })
		if v != "fresh" || err != nil || joined {
			t.Errorf("Do while the abandoned fn unwinds = %v, %v, %v; want fresh, nil, false", v, err, joined)
		}
		close(unwind)
		if r := recvNow(t, leader); !errors.Is(r.err, context.Canceled) || r.v != nil || r.joined {
			t.Errorf("leader: Do = %v, %v, %v; want nil, context.Canceled, false", r.v, r.err, r.joined)
		}
		if st := g.Stats(); st.InFlight != 0 || st.Waiting != 0 {
			t.Errorf("InFlight, Waiting = %d, %d; want 0, 0", st.InFlight, st.Waiting)
		}
	})
}

// fn runs on the leader's goroutine: Do starts none.
func TestDoRunsOnLeaderGoroutine(t *testing.T) {
	g := New()
	caller := goroutineID()
	var ran uint64
	v, err, joined := g.Do(t.Context(), "k", func(context.Context) (any, error) {
		ran = goroutineID()
		return "v", nil
	})
	if v != "v" || err != nil || joined {
		t.Fatalf("Do = %v, %v, %v; want v, nil, false", v, err, joined)
	}
	if ran != caller {
		t.Errorf("fn ran on goroutine %d; want the caller's, %d", ran, caller)
	}
}

// goroutineID returns the current goroutine's number, from its stack's
// "goroutine N [running]:" header.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	b = b[:bytes.IndexByte(b, ' ')]
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic(err)
	}
	return n
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

// The flight is cancelled when its last waiter leaves, whichever of the
// leader and the follower leaves first, and not before.
func TestDoAllCancel(t *testing.T) {
	for _, leaderFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("leaderFirst=%v", leaderFirst), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testDoAllCancel(t, leaderFirst) })
		})
	}
}

func testDoAllCancel(t *testing.T, leaderFirst bool) {
	g := New()
	observed := make(chan error, 1)
	fn := func(ctx context.Context) (any, error) {
		<-ctx.Done()
		observed <- ctx.Err()
		return nil, ctx.Err()
	}
	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	defer cancelLeader()
	followerCtx, cancelFollower := context.WithCancel(t.Context())
	defer cancelFollower()
	leader := goDo(leaderCtx, g, "k", fn)
	synctest.Wait()
	follower := goDo(followerCtx, g, "k", fn)
	synctest.Wait()

	if leaderFirst {
		cancelLeader()
		if !pending(leader) {
			t.Error("leader returned before fn did")
		}
	} else {
		cancelFollower()
		if r := recvNow(t, follower); !errors.Is(r.err, context.Canceled) || !r.joined {
			t.Errorf("follower: Do = %v, %v, %v; want nil, context.Canceled, true", r.v, r.err, r.joined)
		}
	}
	select {
	case err := <-observed:
		t.Fatalf("flight cancelled (%v) while a waiter remains", err)
	default:
	}
	if leaderFirst {
		cancelFollower()
		if r := recvNow(t, follower); !errors.Is(r.err, context.Canceled) || !r.joined {
			t.Errorf("follower: Do = %v, %v, %v; want nil, context.Canceled, true", r.v, r.err, r.joined)
		}
	} else {
		cancelLeader()
	}
	if r := recvNow(t, leader); !errors.Is(r.err, context.Canceled) || r.joined {
		t.Errorf("leader: Do = %v, %v, %v; want nil, context.Canceled, false", r.v, r.err, r.joined)
	}
	if err := <-observed; !errors.Is(err, context.Canceled) {
		t.Errorf("fn saw ctx err %v; want context.Canceled", err)
	}
	synctest.Wait()
	if st := g.Stats(); st.Abandoned != 1 || st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("Stats = %+v; want 1 abandoned, none in flight or waiting", st)
	}
}

// TestDoJoinAfterAbandon is tailscale/tailscale#18919: a caller arriving
// after the last waiter left, while the abandoned fn still unwinds (on the
// first leader's goroutine), must get a fresh, live flight and not the
// cancelled one; and the old flight ending must not remove the new flight's
// key.
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
		synctest.Wait()
		if first.Err() == nil {
			t.Fatal("first flight not cancelled after its only waiter left")
		}

		b := goDo(t.Context(), g, "k", fn)
		second := <-ctxs
		if err := second.Err(); err != nil {
			t.Fatalf("B's flight ctx err = %v; want a live context", err)
		}
		close(unwind) // the first flight ends while the second runs
		if r := recvNow(t, a); !errors.Is(r.err, context.Canceled) || r.joined {
			t.Fatalf("A: Do = %v, %v, %v; want nil, context.Canceled, false", r.v, r.err, r.joined)
		}
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

// testDoPanic: fn panics or exits on the leader's goroutine. Every waiter
// gets the INTERNAL *PanicError: the followers, and the leader, unless
// runtime.Goexit ends its goroutine (Do never returns there, as in
// singleflight.Do). The key works again afterwards.
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
	leader := goDo(t.Context(), g, "k", fn)
	synctest.Wait()
	var followers []<-chan result
	for range 2 {
		followers = append(followers, goDo(t.Context(), g, "k", fn))
	}
	synctest.Wait()
	close(release)
	check := func(who string, r result) {
		t.Helper()
		if st := status.Convert(r.err); st.Code() != codes.Internal || st.Message() != "internal error" {
			t.Errorf("%s: status = %v; want Internal \"internal error\"", who, st)
		}
		var pe *PanicError
		if !errors.As(r.err, &pe) || pe.Goexit != wantGoexit || len(pe.Stack) == 0 {
			t.Errorf("%s: err = %#v; want a *PanicError with Goexit %v and a stack", who, r.err, wantGoexit)
		}
	}
	for i, ch := range followers {
		check(fmt.Sprint("follower ", i), recvNow(t, ch))
	}
	if wantGoexit {
		if !pending(leader) {
			t.Error("leader's Do returned after runtime.Goexit in fn; want its goroutine gone")
		}
	} else {
		check("leader", recvNow(t, leader))
	}
	synctest.Wait()
	if len(reported) != 1 {
		t.Errorf("panic handler calls = %d; want 1", len(reported))
	}
	if st := g.Stats(); st.Panics != 1 || st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("Panics, InFlight, Waiting = %d, %d, %d; want 1, 0, 0", st.Panics, st.InFlight, st.Waiting)
	}
	// The key works again.
	v, err, joined := g.Do(t.Context(), "k", func(context.Context) (any, error) { return "ok", nil })
	if v != "ok" || err != nil || joined {
		t.Errorf("Do after panic = %v, %v, %v; want ok, nil, false", v, err, joined)
	}
}

// A leader whose ctx ended before fn panicked gets its own error; the
// follower gets the panic.
func TestDoPanicAfterLeaderLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New(WithPanicHandler(func(string, *PanicError) {}))
		release := make(chan struct{})
		fn := func(context.Context) (any, error) {
			<-release
			panic("boom")
		}
		leaderCtx, cancelLeader := context.WithCancel(t.Context())
		leader := goDo(leaderCtx, g, "k", fn)
		synctest.Wait()
		follower := goDo(t.Context(), g, "k", fn)
		synctest.Wait()
		cancelLeader()
		synctest.Wait()
		close(release)
		if r := recvNow(t, leader); !errors.Is(r.err, context.Canceled) {
			t.Errorf("leader: err = %v; want context.Canceled", r.err)
		}
		var pe *PanicError
		if r := recvNow(t, follower); !errors.As(r.err, &pe) || pe.Value != "boom" {
			t.Errorf("follower: err = %v; want the *PanicError of boom", r.err)
		}
	})
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

// TestDoAllocs pins the cost of starting a flight: the call and the flight
// context (WithoutCancel, WithCancel and its CancelFunc); no goroutine, no
// closure of fn's. A leader whose ctx can end adds context.AfterFunc (its
// context and stop function) and the closure it calls.
func TestDoAllocs(t *testing.T) {
	g := New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fn := func(context.Context) (any, error) { return nil, nil }
	for _, tc := range []struct {
		name string
		ctx  context.Context
		max  float64
	}{
		{"never ends", context.Background(), 4},
		{"cancellable", ctx, 7},
	} {
		if got := testing.AllocsPerRun(100, func() { g.Do(tc.ctx, "k", fn) }); got > tc.max {
			t.Errorf("%s: Do allocates %v times; want at most %v", tc.name, got, tc.max)
		}
	}
}
