package breaker_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/policy"
)

func newSet(t *testing.T, s breaker.Settings) *breaker.Set {
	t.Helper()
	set, err := breaker.NewSet(s)
	require.NoError(t, err)
	return set
}

// call admits one call to key and reports o, failing the test when the call
// is refused.
func call(t *testing.T, s *breaker.Set, key string, o policy.Outcome) {
	t.Helper()
	done, err := s.Allow(key)
	require.NoError(t, err, "Allow(%q)", key)
	done(o)
}

// requireRefused checks err is the breaker's UNAVAILABLE with RetryInfo
// delay want and a message containing msg.
func requireRefused(t *testing.T, err error, want time.Duration, msg string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	require.Equal(t, codes.Unavailable, st.Code(), "code of %v", err)
	assert.Equal(t, want, policy.RetryDelay(st), "RetryInfo delay")
	assert.Contains(t, st.Message(), msg)
}

func stateOf(t *testing.T, s *breaker.Set, key string) breaker.Stats {
	t.Helper()
	for _, st := range s.Stats() {
		if st.Key == key {
			return st
		}
	}
	t.Fatalf("no stats for %q", key)
	return breaker.Stats{}
}

// trip opens key's breaker with ConsecutiveFailures failures.
func trip(t *testing.T, s *breaker.Set, key string, n int) {
	t.Helper()
	for range n {
		call(t, s, key, policy.Failure)
	}
	require.Equal(t, "open", stateOf(t, s, key).State)
}

func TestNewSetRejectsBadSettings(t *testing.T) {
	for _, tc := range []struct {
		s     breaker.Settings
		field string
	}{
		{breaker.Settings{Interval: -time.Second}, "Interval"},
		{breaker.Settings{OpenTimeout: -time.Second}, "OpenTimeout"},
		{breaker.Settings{FailureRatio: 1.5}, "FailureRatio"},
		{breaker.Settings{FailureRatio: -0.1}, "FailureRatio"},
		{breaker.Settings{MaxKeys: -1}, "MaxKeys"},
	} {
		_, err := breaker.NewSet(tc.s)
		if assert.Error(t, err, "%+v", tc.s) {
			assert.Contains(t, err.Error(), tc.field)
		}
	}
}

func TestTripsAfterConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, breaker.Settings{ConsecutiveFailures: 3})
		call(t, s, "ollama", policy.Failure)
		call(t, s, "ollama", policy.Failure)
		call(t, s, "ollama", policy.Success) // breaks the run
		call(t, s, "ollama", policy.Failure)
		call(t, s, "ollama", policy.Failure)
		require.Equal(t, "closed", stateOf(t, s, "ollama").State)
		call(t, s, "ollama", policy.Failure)
		require.Equal(t, "open", stateOf(t, s, "ollama").State)

		time.Sleep(18 * time.Second)
		_, err := s.Allow("ollama")
		requireRefused(t, err, 12*time.Second, `circuit breaker for "ollama" is open; retry in 12s`)
		st := stateOf(t, s, "ollama")
		assert.Equal(t, int64(6), st.Requests)
		assert.Equal(t, int64(5), st.Failures)
		assert.Equal(t, int64(1), st.Rejected)
	})
}

func TestTripsOnFailureRatio(t *testing.T) {
	s := newSet(t, breaker.Settings{ConsecutiveFailures: 100, FailureRatio: 0.5, MinRequests: 10})
	for i := range 9 { // S F S F … S: 4 failures in 9
		call(t, s, "b", []policy.Outcome{policy.Success, policy.Failure}[i%2])
	}
	require.Equal(t, "closed", stateOf(t, s, "b").State)
	call(t, s, "b", policy.Failure) // 5 of 10
	require.Equal(t, "open", stateOf(t, s, "b").State)
}

func TestIntervalClearsCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, breaker.Settings{ConsecutiveFailures: 3, Interval: time.Minute})
		call(t, s, "b", policy.Failure)
		call(t, s, "b", policy.Failure)
		time.Sleep(time.Minute + time.Second)
		call(t, s, "b", policy.Failure)
		call(t, s, "b", policy.Failure)
		assert.Equal(t, "closed", stateOf(t, s, "b").State, "failures of two windows must not add up")
		assert.Equal(t, int64(2), stateOf(t, s, "b").ConsecutiveFailures)
	})
}

func TestOpenFailsFast(t *testing.T) {
	s := newSet(t, breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	trip(t, s, "b", 1)
	for range 100 {
		_, err := s.Allow("b")
		require.Equal(t, codes.Unavailable, status.Code(err))
	}
	assert.Equal(t, int64(100), stateOf(t, s, "b").Rejected)
}

// The half-open probe cap: after OpenTimeout exactly MaxProbes concurrent
// calls are admitted; the rest are refused until they finish.
func TestHalfOpenProbeCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, breaker.Settings{ConsecutiveFailures: 1, MaxProbes: 3, OpenTimeout: 10 * time.Second})
		trip(t, s, "b", 1)
		time.Sleep(10*time.Second + time.Millisecond)
		require.Equal(t, "half-open", stateOf(t, s, "b").State)

		const callers = 10
		var (
			admitted, refused atomic.Int32
			release           = make(chan struct{})
			wg                sync.WaitGroup
		)
		for range callers {
			wg.Go(func() {
				done, err := s.Allow("b")
				if err != nil {
					requireRefused(t, err, time.Second, `circuit breaker for "b" is half-open with all its probes in flight; retry in 1s`)
					refused.Add(1)
					return
				}
				admitted.Add(1)
				<-release
				done(policy.Success)
			})
		}
		synctest.Wait() // every caller is either finished or holding a probe
		assert.Equal(t, int32(3), admitted.Load(), "probes admitted")
		assert.Equal(t, int32(callers-3), refused.Load(), "callers refused")
		close(release)
		wg.Wait()
		assert.Equal(t, "closed", stateOf(t, s, "b").State, "3 successful probes close the breaker")
		call(t, s, "b", policy.Success)
	})
}

func TestFailedProbeReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSet(t, breaker.Settings{ConsecutiveFailures: 1, MaxProbes: 2, OpenTimeout: 10 * time.Second})
		trip(t, s, "b", 1)
		time.Sleep(11 * time.Second)
		call(t, s, "b", policy.Success)
		require.Equal(t, "half-open", stateOf(t, s, "b").State, "one success of two")
		call(t, s, "b", policy.Failure)
		require.Equal(t, "open", stateOf(t, s, "b").State)
		_, err := s.Allow("b")
		requireRefused(t, err, 10*time.Second, "is open; retry in 10s")
	})
}

// A probe whose caller gave up (or was refused downstream) is not counted
// and frees its slot: the breaker cannot get stuck half-open.
func TestUncountedProbeReleasesSlot(t *testing.T) {
	for _, o := range []policy.Outcome{policy.Neutral, policy.Overload} {
		t.Run(o.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newSet(t, breaker.Settings{ConsecutiveFailures: 1, MaxProbes: 1, OpenTimeout: time.Second})
				trip(t, s, "b", 1)
				time.Sleep(2 * time.Second)

				done, err := s.Allow("b")
				require.NoError(t, err, "first probe")
				_, err = s.Allow("b")
				requireRefused(t, err, time.Second, "probes in flight")

				done(o) // the probe's caller cancelled
				assert.Equal(t, "half-open", stateOf(t, s, "b").State)
				call(t, s, "b", policy.Success) // another probe is admitted
				assert.Equal(t, "closed", stateOf(t, s, "b").State)
			})
		})
	}
}

func TestNeutralAndOverloadNeverTrip(t *testing.T) {
	s := newSet(t, breaker.Settings{ConsecutiveFailures: 5, MinRequests: 1})
	for range 10 {
		call(t, s, "b", policy.Neutral)
		call(t, s, "b", policy.Overload)
	}
	st := stateOf(t, s, "b")
	assert.Equal(t, "closed", st.State)
	assert.Equal(t, int64(20), st.Excluded)
	assert.Equal(t, int64(0), st.Failures)
	assert.Equal(t, int64(0), st.ConsecutiveFailures)
}

func TestKeysAreIsolated(t *testing.T) {
	s := newSet(t, breaker.Settings{ConsecutiveFailures: 2})
	trip(t, s, "down", 2)
	call(t, s, "up", policy.Success)
	_, err := s.Allow("down")
	require.Equal(t, codes.Unavailable, status.Code(err))

	stats := s.Stats()
	require.Len(t, stats, 2)
	assert.Equal(t, "down", stats[0].Key)
	assert.Equal(t, "open", stats[0].State)
	assert.Equal(t, "up", stats[1].Key)
	assert.Equal(t, "closed", stats[1].State)
}

func TestOnStateChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var (
			s      *breaker.Set
			events []breaker.Event
		)
		s = newSet(t, breaker.Settings{
			ConsecutiveFailures: 1, MaxProbes: 1, OpenTimeout: 5 * time.Second,
			OnStateChange: func(e breaker.Event) {
				// Calling back into the Set must not deadlock (sony/gobreaker#37).
				st := s.Stats()
				require.Len(t, st, 1)
				events = append(events, e)
			},
		})
		call(t, s, "b", policy.Failure)
		time.Sleep(5*time.Second + time.Millisecond)
		call(t, s, "b", policy.Success)

		want := []breaker.Event{
			{Key: "b", From: "closed", To: "open", At: start},
			{Key: "b", From: "open", To: "half-open", At: start.Add(5*time.Second + time.Millisecond)},
			{Key: "b", From: "half-open", To: "closed", At: start.Add(5*time.Second + time.Millisecond)},
		}
		require.Equal(t, len(want), len(events), "events: %+v", events)
		for i := range want {
			assert.Equal(t, want[i].From+"→"+want[i].To, events[i].From+"→"+events[i].To, "event %d", i)
			assert.True(t, want[i].At.Equal(events[i].At), "event %d at %v, want %v", i, events[i].At, want[i].At)
			assert.Equal(t, "b", events[i].Key)
		}
		st := stateOf(t, s, "b")
		assert.Equal(t, int64(3), st.StateChanges)
		assert.True(t, st.LastChange.Equal(want[2].At))
	})
}

// A callback that calls back into the Set from the goroutine that tripped
// the breaker, with a hang guard rather than a timed wait.
func TestOnStateChangeMayCallSet(t *testing.T) {
	var s *breaker.Set
	got := make(chan string, 10)
	s = newSet(t, breaker.Settings{
		ConsecutiveFailures: 1,
		OnStateChange: func(e breaker.Event) {
			got <- fmt.Sprintf("%s %s→%s %d", e.Key, e.From, e.To, len(s.Stats()))
			s.SetMode("other", breaker.Auto) // creates a breaker, no change
		},
	})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done, err := s.Allow("b")
		if err == nil {
			done(policy.Failure)
		}
	}()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: the state-change callback blocked the breaker")
	}
	assert.Equal(t, "b closed→open 1", <-got)
}

func TestModes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var events []string
		s := newSet(t, breaker.Settings{
			ConsecutiveFailures: 2, OpenTimeout: 20 * time.Second,
			OnStateChange: func(e breaker.Event) { events = append(events, e.From+"→"+e.To) },
		})

		s.SetMode("b", breaker.ForceOpen)
		_, err := s.Allow("b")
		requireRefused(t, err, 20*time.Second, `circuit breaker for "b" is forced open; retry in 20s`)
		st := stateOf(t, s, "b")
		assert.Equal(t, "open", st.State)
		assert.Equal(t, "force-open", st.Mode)

		// ForceClosed admits everything; outcomes are counted in Stats but
		// do not trip.
		s.SetMode("b", breaker.ForceClosed)
		for range 10 {
			call(t, s, "b", policy.Failure)
		}
		st = stateOf(t, s, "b")
		assert.Equal(t, "closed", st.State)
		assert.Equal(t, "force-closed", st.Mode)
		assert.Equal(t, int64(10), st.Failures)

		// Auto starts a fresh, closed breaker that trips on its own again.
		s.SetMode("b", breaker.Auto)
		assert.Equal(t, "auto", stateOf(t, s, "b").Mode)
		call(t, s, "b", policy.Failure)
		assert.Equal(t, "closed", stateOf(t, s, "b").State)
		call(t, s, "b", policy.Failure)
		assert.Equal(t, "open", stateOf(t, s, "b").State)

		// ForceClosed overrides an open breaker at once.
		s.SetMode("b", breaker.ForceClosed)
		call(t, s, "b", policy.Success)
		s.SetMode("b", breaker.ForceClosed) // no change, no event

		// Back to Auto while the old open time still runs: the fresh
		// breaker is closed and admits at once (the open fast path was reset).
		s.SetMode("b", breaker.Auto)
		call(t, s, "b", policy.Success)
		assert.Equal(t, "closed", stateOf(t, s, "b").State)

		assert.Equal(t, []string{"closed→open", "open→closed", "closed→open", "open→closed"}, events)
	})
}

func TestStatsAndReset(t *testing.T) {
	s := newSet(t, breaker.Settings{ConsecutiveFailures: 3})
	assert.Empty(t, s.Stats())
	call(t, s, "b", policy.Success)
	call(t, s, "b", policy.Failure)
	call(t, s, "b", policy.Neutral)
	st := stateOf(t, s, "b")
	assert.Equal(t, breaker.Stats{
		Key: "b", State: "closed", Mode: "auto",
		Requests: 3, Successes: 1, Failures: 1, Excluded: 1,
		ConsecutiveFailures: 1,
	}, st)

	trip(t, s, "b", 2) // 1 + 2 consecutive failures
	s.ResetStats()
	st = stateOf(t, s, "b")
	assert.Equal(t, "open", st.State, "ResetStats changes no state")
	assert.Zero(t, st.Requests+st.Successes+st.Failures+st.Excluded+st.Rejected+st.StateChanges)
	assert.False(t, st.LastChange.IsZero())
}

// Many goroutines on a few keys with random outcomes, Stats and SetMode
// alongside: run with -race. Every admitted call reports exactly once.
func TestConcurrentUse(t *testing.T) {
	var changes atomic.Int64
	s := newSet(t, breaker.Settings{
		ConsecutiveFailures: 3, MaxProbes: 2, OpenTimeout: time.Millisecond,
		OnStateChange: func(breaker.Event) { changes.Add(1) },
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				key := fmt.Sprintf("k%d", (g+i)%3)
				done, err := s.Allow(key)
				if err != nil {
					if status.Code(err) != codes.Unavailable {
						t.Errorf("Allow: %v", err)
					}
					continue
				}
				done(policy.Outcome(i % 4))
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			_ = s.Stats()
			s.SetMode("k0", breaker.Mode(i%3))
		}
		s.SetMode("k0", breaker.Auto)
	})
	wg.Wait()

	var total int64
	for _, st := range s.Stats() {
		assert.Equal(t, st.Requests, st.Successes+st.Failures+st.Excluded, "%s: every admitted call reported once", st.Key)
		total += st.Requests + st.Rejected
	}
	assert.Equal(t, int64(8*2000), total)
	assert.Positive(t, changes.Load())
}

func TestRefusalMessage(t *testing.T) {
	s := newSet(t, breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: 500 * time.Millisecond})
	s.SetMode("host:example.com", breaker.ForceOpen)
	_, err := s.Allow("host:example.com")
	st := status.Convert(err)
	assert.True(t, strings.HasSuffix(st.Message(), "retry in 500ms"), st.Message())
}
