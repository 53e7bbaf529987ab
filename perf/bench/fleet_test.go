package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gonum.org/v1/plot/plotter"

	"github.com/vega-gateway/vega/perf/policy"
)

func ms_(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestHerdSplitByTheLeadersReplica(t *testing.T) {
	calls := []call{
		{replica: 0, latency: ms_(610), from: policy.FromCoalesced, code: "OK"},
		{replica: 1, latency: ms_(605), from: policy.FromBackend, code: "OK"}, // the leader's replica is 1
		{replica: 2, latency: ms_(620), from: policy.FromCoalesced, code: "OK"},
		{replica: 1, latency: ms_(606), from: policy.FromCoalesced, code: "OK"},
		{replica: 0, latency: ms_(900), code: "Unavailable"}, // an error is in neither side
		{replica: 2, latency: ms_(615), from: policy.FromCoalesced, code: "OK"},
	}
	leader, onLeader, remote := herdSplit(calls)
	if leader != 1 {
		t.Fatalf("leader = %d, want 1", leader)
	}
	if want := []time.Duration{ms_(605), ms_(606)}; !equalDur(onLeader, want) {
		t.Errorf("leader side %v, want %v", onLeader, want)
	}
	if want := []time.Duration{ms_(610), ms_(615), ms_(620)}; !equalDur(remote, want) {
		t.Errorf("remote side %v, want %v (sorted, no error)", remote, want)
	}
	if got := countFrom(calls); got[policy.FromBackend] != 1 || got[policy.FromCoalesced] != 4 || got["Unavailable"] != 1 {
		t.Errorf("countFrom = %v", got)
	}
	// No backend answer at all (every caller failed): no leader, everyone remote.
	leader, onLeader, _ = herdSplit([]call{{replica: 0, code: "Unavailable"}})
	if leader != -1 || len(onLeader) != 0 {
		t.Errorf("no backend answer: leader %d, leader side %v", leader, onLeader)
	}
}

func TestP99GapsPerHerd(t *testing.T) {
	herd := func(leader time.Duration, remote ...time.Duration) herdRound {
		r := herdRound{calls: []call{{replica: 0, latency: leader, from: policy.FromBackend, code: "OK"}}}
		for _, l := range remote {
			r.calls = append(r.calls, call{replica: 1, latency: l, from: policy.FromCoalesced, code: "OK"})
		}
		return r
	}
	rounds := []herdRound{
		herd(ms_(600), ms_(603), ms_(604)),                 // +4 ms
		herd(ms_(800), ms_(830)),                           // a stalled herd: +30 ms
		herd(ms_(650), ms_(649)),                           // −1 ms
		{calls: []call{{replica: 0, code: "Unavailable"}}}, // no side at all: no gap
	}
	got := p99Gaps(rounds)
	if want := []time.Duration{ms_(4), ms_(30), -ms_(1)}; !equalDur(got, want) {
		t.Fatalf("p99Gaps = %v, want %v", got, want)
	}
	if m := median(got); m != ms_(4) {
		t.Errorf("median gap %v, want 4ms (the stalled herd does not decide)", m)
	}
}

func equalDur(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// at is a call of the fleetredis load: sent at ms to replica r, for key, served from.
func at(msSince, r int, key, from string) call {
	return call{start: ms_(msSince), replica: r, key: key, from: from, code: "OK"}
}

func TestKeyShareCountsKeysSharedAcrossReplicas(t *testing.T) {
	calls := []call{
		at(0, 0, "shared", policy.FromBackend), at(10, 1, "shared", policy.FromCoalesced), // 2 replicas, 1 backend call
		at(20, 0, "alone", policy.FromBackend), at(30, 1, "alone", policy.FromBackend), // 2 replicas, 2 calls: not shared
		at(40, 2, "one replica", policy.FromBackend), at(50, 2, "one replica", policy.FromCoalesced), // shares nothing through Redis
		{start: ms_(60), replica: 1, key: "failed", code: "Unavailable"}, at(70, 2, "failed", policy.FromBackend), // an error is no backend call
		at(300, 0, "later", policy.FromBackend), at(310, 1, "later", policy.FromCache), // next window
	}
	if multi, once := keyShare(calls, 0, 250*time.Millisecond); multi != 3 || once != 2 {
		t.Errorf("keyShare = %d multi, %d once; want 3, 2", multi, once)
	}
	if multi, once := keyShare(calls, 250*time.Millisecond, time.Second); multi != 1 || once != 1 {
		t.Errorf("second window: %d, %d; want 1, 1", multi, once)
	}
	if share(0, 0) != 0 || share(4, 3) != 0.75 {
		t.Error("share")
	}
}

func TestResumeAfter(t *testing.T) {
	back := time.Second // windows of 250 ms: 4 is the first at or after it
	calls := []call{
		at(500, 0, "w2", policy.FromBackend), at(510, 1, "w2", policy.FromCoalesced), // shared, but before back
		at(1000, 0, "w4", policy.FromBackend), at(1010, 1, "w4", policy.FromBackend), // window 4: each replica alone
		at(1250, 2, "w5", policy.FromBackend), at(1260, 2, "w5", policy.FromCoalesced), // window 5: one replica only
		at(1500, 0, "w6", policy.FromBackend), at(1510, 2, "w6", policy.FromCache), // window 6: shared
	}
	got, ok := resumeAfter(calls, back)
	if !ok || got != 500*time.Millisecond {
		t.Errorf("resumeAfter = %v, %v; want 500ms (window 6), true", got, ok)
	}
	if _, ok := resumeAfter(calls[:6], back); ok {
		t.Error("resumed with no key shared across replicas after back")
	}
	// back in the middle of a window: the first whole window after it counts.
	if got, ok := resumeAfter(calls, 1100*time.Millisecond); !ok || got != 400*time.Millisecond {
		t.Errorf("back at 1.1 s: %v, %v; want 400ms, true", got, ok)
	}
}

func TestBackendPerKey(t *testing.T) {
	calls := []call{
		at(0, 0, "a", policy.FromBackend), at(10, 1, "a", policy.FromCoalesced), at(20, 2, "b", policy.FromBackend),
		at(260, 0, "c", policy.FromBackend), at(270, 1, "c", policy.FromBackend), at(280, 2, "c", policy.FromBackend),
		at(800, 0, "late", policy.FromBackend), // beyond dur: dropped
	}
	got := backendPerKey(calls, 750*time.Millisecond)
	want := plotter.XYs{{X: 0.125, Y: 1}, {X: 0.375, Y: 3}} // window 2 has no call and no point
	if len(got) != len(want) {
		t.Fatalf("backendPerKey = %v, want %v", got, want)
	}
	for i := range want {
		if math.Abs(got[i].X-want[i].X) > 1e-9 || got[i].Y != want[i].Y {
			t.Errorf("point %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestRateOfACumulativeCount(t *testing.T) {
	// 20 calls/s, sampled every 250 ms with the first sample at 0.1 s.
	var cum []plotter.XY
	for i := range 41 {
		x := 0.1 + 0.25*float64(i)
		cum = append(cum, plotter.XY{X: x, Y: 20 * x})
	}
	if got := rateBetween(cum, 5, 10); math.Abs(got-20) > 1e-9 {
		t.Errorf("rateBetween = %v, want 20", got)
	}
	if got := rateBetween(cum, 20, 30); got != 0 {
		t.Errorf("no sample in the window: %v, want 0", got)
	}
	ps := perSecondOf(cum, 10*time.Second)
	if len(ps) != 10 {
		t.Fatalf("%d seconds, want 10", len(ps))
	}
	for _, p := range ps {
		if math.Abs(p.Y-20) > 1e-9 {
			t.Errorf("second at %v: %v/s, want 20", p.X, p.Y)
		}
	}
}

func TestFleetGoalsNotMeasuredSayWhy(t *testing.T) {
	var d driver
	d.fleetNotMeasured(map[string]bool{"fleetherd": true}, map[string]bool{"fleetherd": true, "fleetredis": true})
	want := len(fleetGoals["fleetlimit"]) + len(fleetGoals["fleetredis"])
	if len(d.report.Rows) != want {
		t.Fatalf("%d rows, want %d (the goals of the two scenarios that added none)", len(d.report.Rows), want)
	}
	for _, r := range d.report.Rows {
		if r.Verdict != NotMeasured {
			t.Errorf("%q: %v, want not measured", r.Figure, r.Verdict)
		}
		failed := strings.Contains(r.Measured, "failed")
		if strings.HasPrefix(r.Figure, "Redis") != failed {
			t.Errorf("%q: %q (fleetredis was selected and failed, fleetlimit not selected)", r.Figure, r.Measured)
		}
	}
}

func TestPinDriverParsesCPULists(t *testing.T) {
	restore, err := pinDriver("")
	if err != nil {
		t.Fatal(err)
	}
	restore()
	if _, err := pinDriver("x"); err == nil {
		t.Error("a bad CPU list is no error")
	}
}

// TestMonitorRedisKeepsThePrefixsCommands runs MONITOR on the real Redis:
// commands under the prefix are kept in order, heartbeats and other
// prefixes are not.
func TestMonitorRedisKeepsThePrefixsCommands(t *testing.T) {
	const addr = "127.0.0.1:6379"
	prefix := fmt.Sprintf("vegabenchtest-%d", time.Now().UnixNano())
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	defer rdb.Del(ctx, prefix+":v1:c:k", prefix+":v1:m:r1", "other-"+prefix)
	stop, err := monitorRedis(addr, prefix)
	if err != nil {
		t.Fatalf("Redis at %s is needed: %v", addr, err)
	}
	start := time.Now()
	rdb.Set(ctx, prefix+":v1:c:k", "v", time.Minute)
	rdb.Set(ctx, prefix+":v1:m:r1", "alive", time.Minute) // a heartbeat
	rdb.Set(ctx, "other:"+strings.Repeat("x", 3), "v", time.Minute)
	rdb.Get(ctx, prefix+":v1:c:k")
	end := time.Now()
	seen := stop()
	if len(seen) != 2 {
		t.Fatalf("kept %d commands, want 2 (the SET and the GET under the prefix): %v", len(seen), seen)
	}
	if !strings.HasPrefix(seen[0].line, `"set" "`+prefix+`:v1:c:k" "v"`) || !strings.HasPrefix(seen[1].line, `"get" "`+prefix+`:v1:c:k"`) {
		t.Errorf("commands %q, %q", seen[0].line, seen[1].line)
	}
	lines := traceLines(seen, prefix, start, end)
	if !strings.Contains(lines[0], "during the call") || !strings.Contains(lines[0], `"<prefix>:v1:c:k"`) {
		t.Errorf("trace line %q", lines[0])
	}
	if got := traceLines([]monitored{{at: end.Add(time.Second), line: "x"}}, prefix, start, end); !strings.Contains(got[0], "after the answer") {
		t.Errorf("a command after the end: %q", got[0])
	}
}
