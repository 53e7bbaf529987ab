package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/policy"
)

// The scenarios of issue 10 in fake time, against a backend that queues
// (n slots, the rest wait): what a new user sees with the defaults.

// The first finding: 20 (50, 200) distinct calls at once to an idle
// backend that serves them in time must all be served, with the default
// configuration, with and without deadlines.
func TestBurstsAnIdleBackendServesAreNeverRefused(t *testing.T) {
	for _, n := range []int{20, 50, 200} {
		for _, deadline := range []time.Duration{0, 30 * time.Second} {
			t.Run(fmt.Sprintf("n=%d/deadline=%v", n, deadline), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					set := newTestSet(t, Settings{})
					b := newQueueingBackend(4, 400*time.Millisecond)
					out := run(t, set, b, load{Tenant: "a", Rate: 1e9, To: time.Duration(n), Deadline: deadline})
					f := summarise(out, "", 0, time.Hour)
					require.Equal(t, n, f.calls)
					assert.Equal(t, n, f.ok, "every call served: %v", f)
					st := set.Stats()[0]
					assert.Zero(t, st.Rejected)
					assert.Zero(t, st.InFlight)
					assert.Zero(t, st.Queued)
				})
			})
		}
	}
}

// A burst of 50 under a rate ceiling of 100/s is spread over half a second,
// not refused: the issue saw 12 OK and 38 refused.
func TestBurstOf50At100PerSecondAllOK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{Initial: 100, Max: 100})
		b := newQueueingBackend(1000, 2*time.Millisecond)
		start := time.Now()
		out := run(t, set, b, load{Tenant: "a", Rate: 1e9, To: 50, Deadline: 5 * time.Second})
		f := summarise(out, "", 0, time.Hour)
		assert.Equal(t, 50, f.ok, "%v", f)
		assert.Less(t, time.Since(start), 600*time.Millisecond, "served at the ceiling's pace")
		assert.Greater(t, time.Since(start), 400*time.Millisecond, "and no faster than the ceiling")
	})
}

// With 5 s deadlines, 200 calls at once to a backend that serves 10/s: the
// calls that cannot be served in time are refused at once (no time passes)
// with a retry delay, and the admitted ones are all served.
func TestBurstBeyondTheDeadlineIsRefusedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{})
		b := newQueueingBackend(4, 400*time.Millisecond)
		out := run(t, set, b, load{Tenant: "a", Rate: 1e9, To: 200, Deadline: 5 * time.Second})
		f := summarise(out, "", 0, time.Hour)
		t.Logf("%v", f)
		assert.Equal(t, 200, f.calls)
		assert.GreaterOrEqual(t, f.ok, 40, "what fits is served")
		assert.Equal(t, 200, f.ok+f.codes["ResourceExhausted"], "admitted calls are served, not left to time out: %v", f)
		late := 0
		for _, o := range out {
			if o.code == "ResourceExhausted" && o.latency > 0 {
				late++
			}
		}
		// Before the first answer the gateway knows the rate ceiling (10/s)
		// but not the service time, so a few admitted calls are dropped at
		// dispatch when their deadline can no longer cover it.
		assert.LessOrEqual(t, late, 3, "refused at once, but for the cold start's last few")
	})
}

// The second finding: a backend that queues (4 at once, 100 ms each:
// C = 40/s) offered 2× and 4× its capacity with 2 s deadlines. Goodput must
// stay ≥ 0.9 C, OK calls' p99 ≤ 2× the unloaded latency + the queue target
// (50 ms), and the excess be refused, not left to time out.
func TestQueueingBackendUnderOverload(t *testing.T) {
	for _, mult := range []float64{2, 4} {
		t.Run(fmt.Sprintf("%vx", mult), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				set := newTestSet(t, Settings{})
				b := newQueueingBackend(4, 100*time.Millisecond)
				out := run(t, set, b, load{Tenant: "a", Rate: 40 * mult, To: 20 * time.Second, Deadline: 2 * time.Second})
				for s := time.Duration(0); s < 20*time.Second; s += 2 * time.Second {
					t.Logf("t=%v: %v", s, summarise(out, "", s, s+2*time.Second))
				}
				st := set.Stats()[0]
				t.Logf("limiter: limit %d, base %v, sample %v, shed standing %d deadline %d", st.ConcurrencyLimit, st.BaseLatency, st.SampleLatency, st.ShedStanding, st.ShedDeadline)
				late := summarise(out, "", 10*time.Second, 20*time.Second)
				assert.GreaterOrEqual(t, late.perSecond, 0.9*40, "goodput over the last 10 s: %v", late)
				assert.LessOrEqual(t, late.p99, 2*100*time.Millisecond+50*time.Millisecond, "p99 of OK calls: %v", late)
				assert.Zero(t, late.codes["DeadlineExceeded"], "the excess is refused, not timed out")
				conv := summarise(out, "", 5*time.Second, 10*time.Second)
				assert.GreaterOrEqual(t, conv.perSecond, 0.9*40, "converged within 5 s: %v", conv)
				assert.Positive(t, st.ShedStanding, "a standing queue sheds")
				assert.True(t, st.Standing)
				assert.GreaterOrEqual(t, st.ConcurrencyLimit, 4, "the backend's 4 slots are used")
				assert.LessOrEqual(t, st.ConcurrencyLimit, 8, "latency keeps the limit near the backend's parallelism")
			})
		})
	}
}

// The third finding: alpha floods at 5× capacity, beta sends 4
// calls/s. Beta must get every call served within twice the unloaded
// latency (plus the target), and alpha the rest of the capacity.
func TestFloodDoesNotStarveTrickle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{})
		b := newQueueingBackend(4, 100*time.Millisecond)
		out := run(t, set, b,
			load{Tenant: "alpha", Rate: 200, To: 20 * time.Second, Deadline: 2 * time.Second},
			load{Tenant: "beta", Rate: 4, From: 2 * time.Second, To: 20 * time.Second, Deadline: 2 * time.Second},
		)
		alpha := summarise(out, "alpha", 10*time.Second, 20*time.Second)
		beta := summarise(out, "beta", 2*time.Second, 20*time.Second)
		t.Logf("alpha %v\nbeta %v", alpha, beta)
		assert.Equal(t, beta.calls, beta.ok, "every trickle call served")
		assert.LessOrEqual(t, beta.p99, 2*100*time.Millisecond+50*time.Millisecond)
		assert.GreaterOrEqual(t, alpha.perSecond, 0.9*40-4, "the flood gets the rest")
		for _, ts := range set.Stats()[0].Tenants {
			switch ts.Tenant {
			case "alpha":
				assert.Positive(t, ts.Shed)
			case "beta":
				assert.Zero(t, ts.Shed)
				assert.False(t, ts.Standing)
			}
		}
	})
}

// Two equal floods share the backend equally (round-robin).
func TestEqualFloodsShareEqually(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{})
		b := newQueueingBackend(4, 100*time.Millisecond)
		out := run(t, set, b,
			load{Tenant: "a", Rate: 120, To: 15 * time.Second, Deadline: 2 * time.Second},
			load{Tenant: "b", Rate: 120, From: 3 * time.Millisecond, To: 15 * time.Second, Deadline: 2 * time.Second},
		)
		a, bb := summarise(out, "a", 5*time.Second, 15*time.Second), summarise(out, "b", 5*time.Second, 15*time.Second)
		t.Logf("a %v\nb %v", a, bb)
		assert.InDelta(t, a.perSecond, bb.perSecond, 0.1*a.perSecond)
		assert.GreaterOrEqual(t, a.perSecond+bb.perSecond, 0.9*40)
	})
}

// 20 callers in a closed loop fetching a 2 ms page under a 1000/s ceiling
// queue briefly and are all served: the issue saw 695 of 1000 refused.
func TestClosedLoopIsNeverRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{Initial: 1000, Max: 1000})
		b := newQueueingBackend(1000, 2*time.Millisecond)
		refused := 0
		done := make(chan int)
		for range 20 {
			go func() {
				n := 0
				for range 50 {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					p, err := set.Acquire(ctx, "llm", "")
					if err != nil {
						n++
					} else {
						_ = b.serve(ctx)
						p.Release(policy.Result{Outcome: policy.Success})
					}
					cancel()
				}
				done <- n
			}()
		}
		for range 20 {
			refused += <-done
		}
		assert.Zero(t, refused, "of 1000 calls")
		assert.Zero(t, set.Stats()[0].ShedStanding)
	})
}

func TestOneCallIsDispatchedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{})
		start := time.Now()
		p, err := set.Acquire(context.Background(), "b", "t")
		require.NoError(t, err)
		assert.Zero(t, time.Since(start))
		st := set.Stats()[0]
		assert.Equal(t, 1, st.InFlight)
		assert.Equal(t, int64(1), st.Admitted)
		assert.Zero(t, st.Waited)
		p.Release(policy.Result{Outcome: policy.Success})
		assert.Zero(t, set.Stats()[0].InFlight)
	})
}

// fixed returns Settings with the concurrency limit fixed at n and no rate
// ceiling to speak of.
func fixed(n int) Settings {
	return Settings{InitialConcurrency: n, MinConcurrency: n, MaxConcurrency: n, Initial: 1e6, Max: 1e6}
}

func requireResourceExhausted(t *testing.T, err error, reason string) time.Duration {
	t.Helper()
	st, ok := status.FromError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), "%v", err)
	var retry time.Duration
	var quota bool
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration()
		case *errdetails.QuotaFailure:
			quota = true
			assert.Equal(t, "overload control: "+reason, d.GetViolations()[0].GetDescription())
		}
	}
	require.Positive(t, retry, "RetryInfo")
	require.True(t, quota, "QuotaFailure")
	return retry
}

// A call whose wait cannot fit its deadline is refused at once, with the
// wait as its retry delay; a call without a deadline waits at most
// MaxQueueWait.
func TestWaitThatCannotFitIsRefusedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := fixed(1)
		s.MaxQueueWait = time.Second
		set := newTestSet(t, s)
		// Teach it the service time: 100 ms.
		p, err := set.Acquire(context.Background(), "b", "")
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
		p.Release(policy.Result{Outcome: policy.Success})

		held, err := set.Acquire(context.Background(), "b", "")
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = set.Acquire(ctx, "b", "")
		retry := requireResourceExhausted(t, err, "deadline")
		assert.Zero(t, time.Since(start), "refused at once")
		assert.GreaterOrEqual(t, retry, 100*time.Millisecond)

		// No deadline: waits MaxQueueWait, then is refused.
		_, err = set.Acquire(context.Background(), "b", "")
		requireResourceExhausted(t, err, "deadline")
		assert.Equal(t, time.Second, time.Since(start))
		held.Release(policy.Result{Outcome: policy.Success})
		st := set.Stats()[0]
		assert.Equal(t, int64(2), st.ShedDeadline)
		assert.Zero(t, st.Queued)
		assert.Zero(t, st.InFlight)
	})
}

// A caller who leaves while queued loses nothing for the others: the slot
// goes to the next call, and a slot handed over just as its caller left
// goes back.
func TestCallersLeavingWhileQueuedLoseNoSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, fixed(1))
		for i := range 50 {
			held, err := set.Acquire(context.Background(), "b", "")
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				p, err := set.Acquire(ctx, "b", "")
				if err == nil {
					p.Release(policy.Result{Outcome: policy.Success})
				}
				errc <- err
			}()
			synctest.Wait() // queued
			require.Equal(t, 1, set.Stats()[0].Queued)
			if i%2 == 0 { // the release and the cancellation at the same instant
				held.Release(policy.Result{Outcome: policy.Success})
				cancel()
			} else {
				cancel()
				synctest.Wait()
				held.Release(policy.Result{Outcome: policy.Success})
			}
			<-errc
			st := set.Stats()[0]
			require.Zero(t, st.InFlight, "round %d", i)
			require.Zero(t, st.Queued, "round %d", i)
		}
		p, err := set.Acquire(context.Background(), "b", "")
		require.NoError(t, err)
		p.Release(policy.Result{Outcome: policy.Neutral})
		assert.Equal(t, 1, set.Stats()[0].ConcurrencyLimit)
	})
}

// Overload evidence cuts the limit by a tenth, once per window and only for
// calls dispatched after the last cut; a caller's own cancellation is no
// evidence; a deadline that ended while the backend still worked, after
// ample time, is.
func TestLossCutsTheLimitOncePerWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{InitialConcurrency: 20, Initial: 1e6, Max: 1e6})
		var ps []Permit
		for range 5 {
			p, err := set.Acquire(context.Background(), "b", "")
			require.NoError(t, err)
			ps = append(ps, p)
		}
		for _, p := range ps {
			p.Release(policy.Result{Outcome: policy.Overload})
		}
		assert.Equal(t, 18, set.Stats()[0].ConcurrencyLimit, "×0.9 once")

		p, _ := set.Acquire(context.Background(), "b", "")
		p.Release(policy.Result{Outcome: policy.Neutral})
		assert.Equal(t, 18, set.Stats()[0].ConcurrencyLimit, "a cancellation is no evidence")
	})
}

func TestExpiredDeadlineAtTheBackendIsEvidence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{InitialConcurrency: 20, Initial: 1e6, Max: 1e6})
		for range 12 { // a window of 100 ms calls: base 100 ms
			p, _ := set.Acquire(context.Background(), "b", "")
			time.Sleep(100 * time.Millisecond)
			p.Release(policy.Result{Outcome: policy.Success})
		}
		require.Equal(t, 100*time.Millisecond, set.Stats()[0].BaseLatency)
		before := set.Stats()[0].ConcurrencyLimit

		hasty, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		p, err := set.Acquire(hasty, "b", "")
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
		p.release(policy.Result{Outcome: policy.Neutral}, 50*time.Millisecond, true)
		assert.Equal(t, before, set.Stats()[0].ConcurrencyLimit, "a deadline shorter than twice the base says nothing")

		ample, cancel2 := context.WithTimeout(context.Background(), time.Second)
		defer cancel2()
		p, err = set.Acquire(ample, "b", "")
		require.NoError(t, err)
		time.Sleep(time.Second)
		p.release(policy.Result{Outcome: policy.Neutral}, time.Second, true)
		assert.Less(t, set.Stats()[0].ConcurrencyLimit, before, "ten times the base and still no answer: overload")
	})
}

// A Retry-After holds every dispatch until it has passed; a call whose
// deadline ends before is refused at once.
func TestRetryAfterHoldsDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{Initial: 1e6, Max: 1e6})
		p, _ := set.Acquire(context.Background(), "b", "")
		p.Release(policy.Result{Outcome: policy.Overload, RetryAfter: time.Second})
		start := time.Now()

		short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := set.Acquire(short, "b", "")
		requireResourceExhausted(t, err, "retry_after")
		assert.Zero(t, time.Since(start))

		p, err = set.Acquire(context.Background(), "b", "")
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start), "dispatched when the hold ends")
		p.Release(policy.Result{Outcome: policy.Success})
	})
}

// Under a standing queue a call that waited more than twice the target is
// dropped at dispatch (CoDel's drop) instead of being served late.
func TestStandingQueueDropsStaleCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{})
		b := newQueueingBackend(4, 100*time.Millisecond)
		run(t, set, b, load{Tenant: "a", Rate: 400, To: 12 * time.Second})
		st := set.Stats()[0]
		assert.Positive(t, st.ShedStanding)
		assert.LessOrEqual(t, st.QueueDelayP99, 2*st.QueueTarget+10*time.Millisecond, "no dispatched call waited much beyond twice the target")
	})
}

func TestRateCeilingSlowStartAndDecrease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{Initial: 10, Max: 100, Cooldown: 100 * time.Millisecond})
		start := time.Now()
		for range 5 {
			p, _ := set.Acquire(context.Background(), "b", "")
			p.Release(policy.Result{Outcome: policy.Success})
		}
		assert.Equal(t, 15.0, set.Stats()[0].Rate, "one per success in slow start")
		time.Sleep(time.Second)
		p1, _ := set.Acquire(context.Background(), "b", "")
		p2, _ := set.Acquire(context.Background(), "b", "")
		p1.Release(policy.Result{Outcome: policy.Overload})
		p2.Release(policy.Result{Outcome: policy.Failure})
		st := set.Stats()[0]
		assert.Equal(t, int64(1), st.Decreases, "a call dispatched before the decrease does not cause another")
		assert.InDelta(t, 5/time.Since(start).Seconds(), st.Rate, 0.01, "falls to the delivered rate: 5 successes since start")
	})
}

func TestKeysAndResetStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, fixed(1))
		a, _ := set.Acquire(context.Background(), "a", "")
		b, err := set.Acquire(context.Background(), "b", "")
		require.NoError(t, err, "keys are isolated")
		a.Release(policy.Result{Outcome: policy.Success})
		b.Release(policy.Result{Outcome: policy.Success})
		set.ResetStats()
		for _, st := range set.Stats() {
			assert.Zero(t, st.Admitted)
			assert.Equal(t, 1, st.ConcurrencyLimit, "limits are kept")
		}
	})
}

func TestNewSetSettings(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{Min: 5, Max: 2}, "MIN_RATE_LIMIT must not exceed MAX_RATE_LIMIT"},
		{Settings{Initial: 200}, "INITIAL_RATE_LIMIT must be between"},
		{Settings{MinConcurrency: 8, MaxConcurrency: 4}, "VEGA_CONCURRENCY_MIN must not exceed VEGA_CONCURRENCY_MAX"},
		{Settings{InitialConcurrency: 100}, "VEGA_CONCURRENCY_INITIAL must be between"},
		{Settings{QueueTarget: -1}, "VEGA_QUEUE_TARGET must not be negative"},
		{Settings{Decrease: 1}, "Decrease must be in (0, 1)"},
	} {
		_, err := NewSet(tc.s)
		assert.ErrorContains(t, err, tc.want)
	}
	set := newTestSet(t, Settings{})
	assert.Equal(t, Settings{
		Initial: 10, Min: 1, Max: 100, Increase: 5, Decrease: 0.8, Cooldown: 100 * time.Millisecond,
		InitialConcurrency: 4, MinConcurrency: 1, MaxConcurrency: 64, MaxQueueWait: 30 * time.Second,
		MaxQueue: 1024, MaxTenantQueue: 256, MaxKeys: 10000,
	}, set.s)
}

// make bench's burst scenario on one gateway: bursts of 20, 50 and 200
// with 30 s deadlines, then with 5 s, one after the other. With 30 s every
// call is served; with 5 s none of the admitted calls misses its deadline
// (the service time learnt under an earlier, higher limit once made the
// wait estimate refuse 43 of 200 that fitted; and calls dispatched with
// barely their service time left ended late).
func TestBurstsOneAfterAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := newTestSet(t, Settings{})
		b := newQueueingBackend(4, 400*time.Millisecond)
		for _, deadline := range []time.Duration{30 * time.Second, 5 * time.Second} {
			for _, n := range []int{20, 50, 200} {
				out := run(t, set, b, load{Tenant: "a", Rate: 1e9, To: time.Duration(n), Deadline: deadline})
				f := summarise(out, "", 0, time.Hour)
				t.Logf("%d at once, deadline %v: %v", n, deadline, f)
				if deadline == 30*time.Second {
					assert.Equal(t, n, f.ok, "all served")
				} else {
					assert.Zero(t, f.codes["DeadlineExceeded"], "no admitted call misses its deadline")
					late := 0
					for _, o := range out {
						if o.code == "ResourceExhausted" && o.latency > 0 {
							late++
						}
					}
					// A call is dropped at its turn when the backend slowed
					// since it was admitted (the limit above the backend's
					// slots): refused late rather than timed out, and rare.
					t.Logf("refused after queueing: %d", late)
					assert.LessOrEqual(t, late, n/20, "refused on arrival, but for a few")
					assert.GreaterOrEqual(t, f.ok, min(n, 44), "about what fits: 4 slots x 12 turns")
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
	})
}
