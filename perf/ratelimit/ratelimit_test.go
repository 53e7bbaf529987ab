package ratelimit_test

import (
	"context"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/policy"
	"github.com/vega-gateway/vega/perf/ratelimit"
)

// clock is a manual clock for Settings.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newSet(t *testing.T, s ratelimit.Settings) *ratelimit.Set {
	t.Helper()
	set, err := ratelimit.NewSet(s)
	require.NoError(t, err)
	return set
}

func statsOf(t *testing.T, s *ratelimit.Set, key string) ratelimit.Stats {
	t.Helper()
	for _, st := range s.Stats() {
		if st.Key == key {
			return st
		}
	}
	t.Fatalf("no stats for %q", key)
	return ratelimit.Stats{}
}

func acquire(t *testing.T, s *ratelimit.Set, key string) ratelimit.Permit {
	t.Helper()
	p, err := s.Acquire(t.Context(), key)
	require.NoError(t, err, "Acquire(%q)", key)
	return p
}

// requireExhausted checks err is the limiter's RESOURCE_EXHAUSTED with
// RetryInfo delay retry and a QuotaFailure naming the backend key.
func requireExhausted(t *testing.T, err error, key string, retry time.Duration) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), "code of %v", err)
	assert.Contains(t, st.Message(), `rate limit for "`+key+`"`)
	var quota *errdetails.QuotaFailure
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			quota = q
		}
	}
	if assert.NotNil(t, quota, "QuotaFailure detail") && assert.Len(t, quota.GetViolations(), 1) {
		assert.Equal(t, "backend:"+key, quota.GetViolations()[0].GetSubject())
	}
	assert.Equal(t, retry, policy.RetryDelay(st), "RetryInfo delay")
}

func TestNewSetSettings(t *testing.T) {
	for _, tc := range []struct {
		s    ratelimit.Settings
		want string
	}{
		{ratelimit.Settings{Initial: 200}, "INITIAL_RATE_LIMIT must be between MIN_RATE_LIMIT and MAX_RATE_LIMIT"},
		{ratelimit.Settings{Initial: 2, Min: 5}, "INITIAL_RATE_LIMIT must be between MIN_RATE_LIMIT and MAX_RATE_LIMIT"},
		{ratelimit.Settings{Min: 50, Max: 20}, "MIN_RATE_LIMIT must not exceed MAX_RATE_LIMIT"},
		{ratelimit.Settings{Max: -1}, "MAX_RATE_LIMIT must be a finite number"},
		{ratelimit.Settings{Min: math.NaN()}, "MIN_RATE_LIMIT must be a finite number"},
		{ratelimit.Settings{Initial: math.Inf(1)}, "INITIAL_RATE_LIMIT must be a finite number"},
		{ratelimit.Settings{Decrease: 1}, "Decrease must be in (0, 1)"},
		{ratelimit.Settings{Burst: -1}, "Burst"},
		{ratelimit.Settings{Cooldown: -time.Second}, "Cooldown"},
		{ratelimit.Settings{MaxWait: -time.Second}, "MaxWait"},
		{ratelimit.Settings{MaxKeys: -1}, "MaxKeys"},
	} {
		_, err := ratelimit.NewSet(tc.s)
		if assert.Error(t, err, "%+v", tc.s) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}

	// Zero values are the seed's defaults; a zero Initial or Min is
	// brought within the bounds that are set.
	for _, tc := range []struct {
		s            ratelimit.Settings
		rate, lo, hi float64
	}{
		{ratelimit.Settings{}, 10, 1, 100},
		{ratelimit.Settings{Max: 5}, 5, 1, 5},
		{ratelimit.Settings{Max: 0.5}, 0.5, 0.5, 0.5},
		{ratelimit.Settings{Min: 20}, 20, 20, 100},
	} {
		s := newSet(t, tc.s)
		acquire(t, s, "k")
		st := statsOf(t, s, "k")
		assert.Equal(t, []float64{tc.rate, tc.lo, tc.hi}, []float64{st.Rate, st.Min, st.Max}, "%+v", tc.s)
	}
}

// With a fixed rate of 20/s and a burst of 5, 100 req/s offered for 10s on
// a manual clock are admitted 20×10 + 5 times.
func TestAdmitsAtConfiguredRate(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Initial: 20, Min: 20, Max: 20, Burst: 5, MaxWait: time.Nanosecond, Now: clk.Now})
	admitted := 0
	for range 1000 {
		if _, err := s.Acquire(t.Context(), "k"); err == nil {
			admitted++
		} else {
			require.Equal(t, codes.ResourceExhausted, status.Code(err))
		}
		clk.Advance(10 * time.Millisecond)
	}
	assert.InDelta(t, 20*10+5, admitted, 1)
	st := statsOf(t, s, "k")
	assert.Equal(t, int64(admitted), st.Admitted)
	assert.Equal(t, int64(1000-admitted), st.Rejected)
}

// Under contention the limit is never exceeded (golang/go#71360): on a
// frozen clock exactly the burst is admitted.
func TestNeverExceedsUnderContention(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Initial: 1, Burst: 10, MaxWait: time.Nanosecond, Now: clk.Now})
	var (
		mu       sync.Mutex
		admitted int
		wg       sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := s.Acquire(context.Background(), "k"); err == nil {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 10, admitted)
}

// A call whose deadline ends before its token is due is refused at once,
// and its token is given back.
func TestRejectsAtOnceWhenWaitCannotFit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, ratelimit.Settings{MaxWait: time.Second}) // 10/s, burst 1
		acquire(t, s, "ollama")

		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := s.Acquire(ctx, "ollama")
		requireExhausted(t, err, "ollama", 100*time.Millisecond)
		assert.Zero(t, time.Since(start), "refused at once, not after waiting")

		// The token was not consumed: the next call waits 100ms, not 200ms.
		ctx, cancel = context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()
		_, err = s.Acquire(ctx, "ollama")
		require.NoError(t, err)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))

		st := statsOf(t, s, "ollama")
		assert.Equal(t, int64(2), st.Admitted)
		assert.Equal(t, int64(1), st.Rejected)
		assert.Equal(t, int64(1), st.Waited)
		assert.Equal(t, 100*time.Millisecond, st.TotalWait)
	})
}

func TestMaxWaitBoundsWaitWithoutDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, ratelimit.Settings{Initial: 1, MaxWait: 100 * time.Millisecond})
		acquire(t, s, "k")
		start := time.Now()
		_, err := s.Acquire(t.Context(), "k")
		requireExhausted(t, err, "k", time.Second)
		assert.Zero(t, time.Since(start))
	})
}

// By default a call waits at most one token's time: at 10 req/s (burst 1)
// the next call waits 100ms, the one after it would wait 200ms and is
// refused.
func TestDefaultMaxWaitIsOneToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, ratelimit.Settings{})
		start := time.Now()
		acquire(t, s, "k")
		admitted := make(chan time.Duration)
		go func() {
			if _, err := s.Acquire(context.Background(), "k"); err != nil {
				t.Errorf("the call that fits: %v", err)
			}
			admitted <- time.Since(start)
		}()
		synctest.Wait() // it holds the token due at 100ms
		_, err := s.Acquire(t.Context(), "k")
		requireExhausted(t, err, "k", 200*time.Millisecond)
		assert.Zero(t, time.Since(start))
		assert.Equal(t, 100*time.Millisecond, <-admitted)
	})
}

// A caller that gives up while waiting gets its context's status, and its
// token goes to the next caller.
func TestCancelWhileWaitingGivesTokenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, ratelimit.Settings{}) // 10/s, burst 1, MaxWait 100ms
		start := time.Now()
		acquire(t, s, "k")

		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := s.Acquire(ctx, "k")
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		cancel()
		require.Equal(t, codes.Canceled, status.Code(<-errc))

		// Without the token back this call would need 150ms > MaxWait.
		_, err := s.Acquire(t.Context(), "k")
		require.NoError(t, err)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		assert.Equal(t, int64(1), statsOf(t, s, "k").Canceled)

		done, stop := context.WithCancel(t.Context())
		stop()
		_, err = s.Acquire(done, "k")
		assert.Equal(t, codes.Canceled, status.Code(err), "a context already done")
	})
}

func TestSuccessRaisesUpToMax(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Initial: 10, Max: 12, Increase: 5, Now: clk.Now})
	for range 10 {
		acquire(t, s, "k").Release(policy.Result{Outcome: policy.Success})
		clk.Advance(time.Second)
	}
	st := statsOf(t, s, "k")
	assert.Equal(t, 12.0, st.Rate)
	assert.Equal(t, int64(2), st.Increases, "slow start: 10→11→12, then capped")
}

// Slow start (one request/s per success) lasts until the first decrease.
// A decrease falls to what the backend delivered since the last one when
// that is below rate × Decrease; afterwards each success adds
// min(Increase, 5% of the rate before the decrease)/rate.
func TestSlowStartEndsAtTheFirstDecrease(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Initial: 10, Max: 100, Increase: 5, Now: clk.Now})
	for range 10 {
		acquire(t, s, "k").Release(policy.Result{Outcome: policy.Success})
		clk.Advance(100 * time.Millisecond)
	}
	require.Equal(t, 20.0, statsOf(t, s, "k").Rate, "10 successes in slow start: +1 each")
	acquire(t, s, "k").Release(policy.Result{Outcome: policy.Overload})
	require.Equal(t, 10.0, statsOf(t, s, "k").Rate, "10 delivered in the last second: below 20 × 0.8")
	for range 4 {
		acquire(t, s, "k").Release(policy.Result{Outcome: policy.Success})
		clk.Advance(100 * time.Millisecond)
	}
	assert.InDelta(t, 10.39, statsOf(t, s, "k").Rate, 0.01, "10→10.1→10.2→10.3→10.39: +min(5, 0.05×20)/rate each")
}

// With less than a second of evidence, or when the backend delivered more
// than rate × Decrease, a decrease is the plain multiplication.
func TestDecreaseNeedsEvidenceToFallFurther(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Initial: 100, Max: 1000, Now: clk.Now})
	for range 30 {
		acquire(t, s, "k").Release(policy.Result{Outcome: policy.Success})
		clk.Advance(10 * time.Millisecond)
	}
	require.Equal(t, 130.0, statsOf(t, s, "k").Rate)
	acquire(t, s, "k").Release(policy.Result{Outcome: policy.Overload})
	assert.Equal(t, 104.0, statsOf(t, s, "k").Rate, "0.3 s of evidence: 130 × 0.8")

	for range 25 { // 25 delivered over the next 1.25 s: 20/s
		acquire(t, s, "k").Release(policy.Result{Outcome: policy.Success})
		clk.Advance(50 * time.Millisecond)
	}
	before := statsOf(t, s, "k").Rate
	acquire(t, s, "k").Release(policy.Result{Outcome: policy.Overload})
	assert.InDelta(t, 20.0, statsOf(t, s, "k").Rate, 0.01, "falls to the delivered 20/s, below %.1f × 0.8", before)
}

// The token bucket follows the rate: after rising to 40/s, a second holds
// 40 tokens.
func TestBucketFollowsRate(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Initial: 10, Max: 40, Increase: 1000, Burst: 1, MaxWait: time.Nanosecond, Now: clk.Now})
	acquire(t, s, "k").Release(policy.Result{Outcome: policy.Success})
	require.Equal(t, 40.0, statsOf(t, s, "k").Rate)
	admitted := 0
	for range 1000 {
		clk.Advance(time.Millisecond)
		if p, err := s.Acquire(t.Context(), "k"); err == nil {
			admitted++
			p.Release(policy.Result{Outcome: policy.Neutral})
		}
	}
	assert.InDelta(t, 40, admitted, 1)
}

func TestFailureLowersDownToMinOncePerCooldown(t *testing.T) {
	for _, o := range []policy.Outcome{policy.Failure, policy.Overload} {
		t.Run(o.String(), func(t *testing.T) {
			clk := newClock()
			s := newSet(t, ratelimit.Settings{Initial: 10, Min: 2, Decrease: 0.5, Cooldown: time.Second, Now: clk.Now})
			step := func(wantRate float64) {
				t.Helper()
				acquire(t, s, "k").Release(policy.Result{Outcome: o})
				assert.Equal(t, wantRate, statsOf(t, s, "k").Rate)
			}
			step(5)
			clk.Advance(500 * time.Millisecond)
			step(5) // within Cooldown: no cascade
			clk.Advance(500 * time.Millisecond)
			step(2.5)
			clk.Advance(time.Second)
			step(2) // floored at Min
			clk.Advance(time.Second)
			step(2)
			assert.Equal(t, int64(3), statsOf(t, s, "k").Decreases)
		})
	}
}

// A call scheduled before the last decrease cannot cause another one: its
// failure speaks for the old rate.
func TestDecreaseIgnoresCallsScheduledBefore(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Initial: 10, Burst: 2, Decrease: 0.5, Cooldown: time.Millisecond, Now: clk.Now})
	a, b := acquire(t, s, "k"), acquire(t, s, "k")
	clk.Advance(time.Second)
	a.Release(policy.Result{Outcome: policy.Overload})
	require.Equal(t, 5.0, statsOf(t, s, "k").Rate)
	clk.Advance(time.Second)
	b.Release(policy.Result{Outcome: policy.Overload})
	assert.Equal(t, 5.0, statsOf(t, s, "k").Rate, "b was scheduled before the decrease")
	acquire(t, s, "k").Release(policy.Result{Outcome: policy.Overload})
	assert.Equal(t, 2.5, statsOf(t, s, "k").Rate, "a call scheduled after it counts")
}

func TestNeutralChangesNothing(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Now: clk.Now})
	for range 20 {
		acquire(t, s, "k").Release(policy.Result{Outcome: policy.Neutral, RetryAfter: time.Hour})
		clk.Advance(time.Second)
	}
	st := statsOf(t, s, "k")
	assert.Equal(t, 10.0, st.Rate)
	assert.Zero(t, st.Increases+st.Decreases)
	assert.True(t, st.BlockedUntil.IsZero())
	ratelimit.Permit{}.Release(policy.Result{Outcome: policy.Failure}) // the zero Permit is inert
}

// "No retry before 2s": a backend's Retry-After of 2s holds every call to
// the key for 2s, including one already waiting for its token.
func TestRetryAfterHoldsCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, ratelimit.Settings{Burst: 1, MaxWait: 5 * time.Second}) // 10/s
		start := time.Now()
		p := acquire(t, s, "slack")

		waiting := make(chan time.Duration, 1)
		go func() { // needs the token due at 100ms
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := s.Acquire(ctx, "slack")
			if err != nil {
				t.Errorf("waiting call: %v", err)
			}
			waiting <- time.Since(start)
		}()
		time.Sleep(50 * time.Millisecond)
		p.Release(policy.Result{Outcome: policy.Overload, RetryAfter: 2 * time.Second})
		assert.True(t, statsOf(t, s, "slack").BlockedUntil.Equal(start.Add(2050*time.Millisecond)))

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := s.Acquire(ctx, "slack")
		requireExhausted(t, err, "slack", 2*time.Second)

		assert.Equal(t, 2050*time.Millisecond, <-waiting, "the waiting call is held until the Retry-After ends")
		assert.True(t, statsOf(t, s, "slack").BlockedUntil.IsZero(), "the hold is over")
	})
}

func TestKeysAreIsolated(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Burst: 1, Now: clk.Now})
	acquire(t, s, "a").Release(policy.Result{Outcome: policy.Overload, RetryAfter: time.Minute})
	acquire(t, s, "b").Release(policy.Result{Outcome: policy.Success})

	_, err := s.Acquire(t.Context(), "a")
	requireExhausted(t, err, "a", time.Minute)
	stats := s.Stats()
	require.Len(t, stats, 2)
	assert.Equal(t, "a", stats[0].Key)
	assert.Equal(t, 8.0, stats[0].Rate, "10 × the default Decrease 0.8")
	assert.Equal(t, "b", stats[1].Key)
	assert.Equal(t, 11.0, stats[1].Rate, "slow start: +1")
	assert.True(t, stats[1].BlockedUntil.IsZero())
}

func TestResetStats(t *testing.T) {
	clk := newClock()
	s := newSet(t, ratelimit.Settings{Now: clk.Now})
	acquire(t, s, "k").Release(policy.Result{Outcome: policy.Success})
	s.ResetStats()
	st := statsOf(t, s, "k")
	assert.Equal(t, 11.0, st.Rate, "ResetStats keeps the rate")
	assert.Zero(t, st.Admitted+st.Rejected+st.Waited+st.Canceled+st.Increases+st.Decreases+int64(st.TotalWait))
}

// Many goroutines adapting a few keys: run with -race.
func TestConcurrentUse(t *testing.T) {
	s := newSet(t, ratelimit.Settings{Initial: 1e6, Min: 1e5, Max: 2e6, MaxWait: time.Nanosecond})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				p, err := s.Acquire(context.Background(), []string{"a", "b", "c"}[(g+i)%3])
				if err != nil {
					continue
				}
				p.Release(policy.Result{Outcome: policy.Outcome(i % 4)})
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			_ = s.Stats()
		}
	})
	wg.Wait()
	for _, st := range s.Stats() {
		assert.GreaterOrEqual(t, st.Rate, st.Min)
		assert.LessOrEqual(t, st.Rate, st.Max)
	}
}
