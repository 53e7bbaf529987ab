package main

import (
	"strings"
	"testing"
	"time"
)

// calls builds a ghz result of n calls each of status and latency lat.
func calls(parts ...any) *ghzResult {
	r := &ghzResult{StatusCodes: map[string]int64{}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i+2 < len(parts); i += 3 {
		n, status, lat := parts[i].(int), parts[i+1].(string), parts[i+2].(time.Duration)
		for range n {
			r.Details = append(r.Details, ghzDetail{t0.Add(lat), int64(lat), status})
			r.StatusCodes[status]++
			r.Count++
		}
	}
	return r
}

func TestBurstFitsAndDrain(t *testing.T) {
	for _, c := range []struct {
		n        int
		deadline time.Duration
		fits     int
		drain    time.Duration
	}{
		{20, 30 * time.Second, 20, 2 * time.Second},
		{50, 30 * time.Second, 50, 5200 * time.Millisecond},
		{200, 30 * time.Second, 200, 20 * time.Second},
		{20, 5 * time.Second, 20, 2 * time.Second},
		{50, 5 * time.Second, 48, 5200 * time.Millisecond}, // 12 rounds of 4 end by 4.8 s
		{200, 5 * time.Second, 48, 20 * time.Second},
	} {
		b := burst{n: c.n, deadline: c.deadline}
		if got := b.fits(); got != c.fits {
			t.Errorf("N=%d, %s: fits %d, want %d", c.n, c.deadline, got, c.fits)
		}
		if got := b.drain(); got != c.drain {
			t.Errorf("N=%d: drain %s, want %s", c.n, got, c.drain)
		}
	}
}

func TestBurstRow(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		name string
		b    burst
		want Verdict
	}{
		{"30 s, all OK", burst{"adaptive", 30 * time.Second, 20, calls(20, "OK", 2000*ms)}, Met},
		{"30 s, one refused", burst{"adaptive", 30 * time.Second, 20, calls(19, "OK", 2000*ms, 1, "ResourceExhausted", 2*ms)}, Missed},
		{"30 s, one late", burst{"none", 30 * time.Second, 20, calls(19, "OK", 2000*ms, 1, "DeadlineExceeded", 30000*ms)}, Missed},
		{"5 s, 44 of 48 served, rest refused", burst{"fixed", 5 * time.Second, 200, calls(44, "OK", 4400*ms, 156, "ResourceExhausted", 30*ms)}, Met},
		{"5 s, 43 of 48 served", burst{"fixed", 5 * time.Second, 200, calls(43, "OK", 4400*ms, 157, "ResourceExhausted", 30*ms)}, Missed},
		{"5 s, 2 of 200 late (1 %)", burst{"fixed", 5 * time.Second, 200, calls(46, "OK", 4400*ms, 152, "ResourceExhausted", 30*ms, 2, "DeadlineExceeded", 5000*ms)}, Met},
		{"5 s, one of 50 late", burst{"adaptive", 5 * time.Second, 50, calls(45, "OK", 4800*ms, 4, "ResourceExhausted", 4800*ms, 1, "DeadlineExceeded", 5000*ms)}, Missed},
		{"5 s, none: all sent, the rest late", burst{"none", 5 * time.Second, 200, calls(48, "OK", 4800*ms, 152, "DeadlineExceeded", 5000*ms)}, Missed},
	} {
		row := burstRow(c.b)
		if row.Verdict != c.want {
			t.Errorf("%s: %v, want %v (%+v)", c.name, row.Verdict, c.want, row)
		}
	}
}

func TestRefusalRow(t *testing.T) {
	ms := time.Millisecond
	if r := refusalRow("none", []burst{{"none", 5 * time.Second, 200, calls(48, "OK", 4800*ms, 152, "DeadlineExceeded", 5000*ms)}}); r.Verdict != NoGoal || r.Measured != "no call refused" {
		t.Errorf("no refusal: %+v", r)
	}
	// Refused while the first 4 calls were still at the backend: on
	// arrival, however slow the gateway's intake (here 300 ms).
	onArrival := []burst{
		{"fixed", 5 * time.Second, 200, calls(4, "OK", 400*ms, 40, "OK", 4000*ms, 156, "ResourceExhausted", 300*ms)},
		{"fixed", 5 * time.Second, 50, calls(46, "OK", 4800*ms, 4, "ResourceExhausted", 10*ms)},
	}
	if r := refusalRow("fixed", onArrival); r.Verdict != Met || !strings.HasPrefix(r.Measured, "160 of 160 on arrival") {
		t.Errorf("refusals on arrival: %+v", r)
	}
	// 4 of 50 refused after waiting 4.8 s in the queue.
	late := append(onArrival[:1:1], burst{"adaptive", 5 * time.Second, 50, calls(4, "OK", 400*ms, 42, "OK", 4000*ms, 4, "ResourceExhausted", 4800*ms)})
	if r := refusalRow("adaptive", late); r.Verdict != Missed || !strings.HasPrefix(r.Measured, "156 of 160 on arrival") {
		t.Errorf("4 of 160 refused after queueing: %+v", r)
	}
	// No call answered: on arrival means within one service time.
	if r := refusalRow("fixed", []burst{{"fixed", 5 * time.Second, 10, calls(10, "ResourceExhausted", 2*ms)}}); r.Verdict != Met {
		t.Errorf("all refused at once: %+v", r)
	}
}

func TestIdleWhileQueued(t *testing.T) {
	busy := fakeStats{WorkersBusy: 4, Concurrency: 4}
	free := fakeStats{WorkersBusy: 3, Concurrency: 4}
	unbounded := fakeStats{WorkersBusy: 3}
	held := sample{limit: 4, inFlight: 3, queued: 2}      // a slot the gateway does not use
	inTransit := sample{limit: 4, inFlight: 4, queued: 2} // answered, not yet released
	above := sample{limit: 6, inFlight: 4, queued: 2}     // limit above the backend's slots
	for _, c := range []struct {
		name          string
		before, after fakeStats
		s             sample
		want          bool
	}{
		{"free slot throughout, calls held back", free, free, held, true},
		{"slot handed over between the reads", free, busy, held, false},
		{"slot freed after the read", busy, free, held, false},
		{"nobody waiting", free, free, sample{limit: 4, inFlight: 3}, false},
		{"answer in transit: the gateway's slot is still taken", free, free, inTransit, false},
		{"limit above the backend's slots, all of them in use", free, free, above, false},
		{"backend without a slot bound", unbounded, unbounded, held, false},
	} {
		if got := idleWhileQueued(c.before, c.after, c.s); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestLimitFiguresAndTarget(t *testing.T) {
	s := []sample{{t: time.Second, limit: 64}, {t: 11 * time.Second, limit: 4}, {t: 12 * time.Second, limit: 6}, {t: 13 * time.Second, limit: 5}}
	if got := limitFigures(s, 10*time.Second); got != "5.0 (4–6)" {
		t.Errorf("limit figures %q", got)
	}
	if got := limitFigures(s, time.Minute); got != "—" {
		t.Errorf("no sample: %q", got)
	}
	if autoTarget(102*time.Millisecond) != 51*time.Millisecond || autoTarget(4*time.Millisecond) != 5*time.Millisecond {
		t.Error("automatic queue target: ½ unloaded p50, at least 5 ms")
	}
	if l := latencies(calls(2, "OK", 3*time.Millisecond, 1, "OK", time.Millisecond, 1, "ResourceExhausted", time.Duration(0)), "OK"); len(l) != 3 || l[0] != time.Millisecond {
		t.Errorf("latencies %v", l)
	}
}
