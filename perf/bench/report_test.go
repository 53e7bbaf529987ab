package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

const rawFixture = `goos: linux
goarch: amd64
pkg: github.com/vega-gateway/vega/cmd/server
cpu: AMD EPYC
BenchmarkChainInProcess/path=bare-2         	 1000000	       100.0 ns/op	      16 B/op	       1 allocs/op
BenchmarkChainInProcess/path=bare-2         	 1000000	       120.0 ns/op	      16 B/op	       1 allocs/op
BenchmarkChainInProcess/path=bare-2         	 1000000	       110.0 ns/op	      16 B/op	       1 allocs/op
BenchmarkChainInProcess/path=miss-2         	 1000000	       900.0 ns/op	     300 B/op	       5 allocs/op
BenchmarkChainInProcess/path=miss-2         	 1000000	       950.0 ns/op	     300 B/op	       5 allocs/op
BenchmarkChainInProcess/path=miss-2         	 1000000	       910.0 ns/op	     300 B/op	       5 allocs/op
BenchmarkChainInProcess/path=hit-2          	 1000000	       400.0 ns/op	     100 B/op	       2 allocs/op
BenchmarkDo/keys=hot/impl=ours-2            	 1000000	       200.0 ns/op	      80 B/op	       1 allocs/op
BenchmarkDo/keys=hot/impl=singleflight-2    	 1000000	       100.0 ns/op	      80 B/op	       1 allocs/op
BenchmarkZipfHitRatio/impl=ours-2           	       3	  50000000 ns/op	        70.50 hit%	        30.00 ns/req
BenchmarkZipfHitRatio/impl=otter-2          	       3	  50000000 ns/op	        70.00 hit%	        30.00 ns/req
BenchmarkBytesPerEntry/impl=ours-2          	       1	 900000000 ns/op	       150.0 bytes/entry
BenchmarkSend/impl=group-2                  	    1000	     20000 ns/op
BenchmarkSend/impl=fsync-2                  	     100	   2000000 ns/op
PASS
ok  	github.com/vega-gateway/vega/cmd/server	12.3s
`

func TestParseBenchAndMedians(t *testing.T) {
	s, err := parseBench(strings.NewReader(rawFixture))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.median("BenchmarkChainInProcess/path=bare", "ns/op"); got != 110 {
		t.Errorf("median bare ns/op = %v, want 110", got)
	}
	if n := s.count("BenchmarkChainInProcess/path=miss", "allocs/op"); n != 3 {
		t.Errorf("samples = %d, want 3", n)
	}
	if got, _ := s.median("BenchmarkZipfHitRatio/impl=ours", "hit%"); got != 70.5 {
		t.Errorf("hit%% = %v", got)
	}
	if _, ok := s.median("BenchmarkNothing", "ns/op"); ok {
		t.Error("median of a missing benchmark")
	}
}

func TestGoFiguresVerdicts(t *testing.T) {
	s, _ := parseBench(strings.NewReader(rawFixture))
	var r Report
	goFigures(&r, s)
	outboxFigures(&r, s)
	want := map[string]Verdict{
		"interceptor chain, cache miss, in process (M1)":              Met,         // +800 ns, +4 allocs
		"interceptor chain, cache hit, in process (M1)":               Met,         // 400 ns < 1 ms
		"coalescer vs singleflight, 1 hot key":                        Missed,      // 2×
		"limiter Acquire vs x/time/rate Allow":                        NotMeasured, // not in the fixture
		"cache hit ratio, Zipf trace (M4)":                            Met,         // 70.5 ≥ 70
		"cache overhead per entry (M4)":                               Met,         // 150 B
		"outbox, group commit vs fsync per message (Send/impl=group)": NoGoal,
	}
	got := map[string]Verdict{}
	for _, row := range r.Rows {
		got[row.Figure] = row.Verdict
	}
	for fig, v := range want {
		if g, ok := got[fig]; !ok || g != v {
			t.Errorf("%s: verdict %v (row present: %v), want %v (rows: %+v)", fig, g, ok, v, r.Rows)
		}
	}
}

func TestRender(t *testing.T) {
	r := Report{
		Date:     time.Date(2026, 11, 27, 18, 0, 0, 0, time.UTC),
		Machine:  []string{"CPU: test"},
		WallTime: 7*time.Minute + 30*time.Second,
		Rows: []Row{
			{Figure: "a | b", Goal: "≤ 1", Measured: "0.5", Ratio: "0.50", Verdict: Met},
			{Figure: "c", Goal: "≥ 2", Measured: "1", Ratio: "0.50", Verdict: Missed},
		},
		Plots:    []Plot{{"x.png", "a plot"}},
		Commands: []string{"ghz -n 1"},
	}
	r.section("Details", "body %d", 1)
	var b strings.Builder
	if err := r.render(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| a \\| b | ≤ 1 | 0.5 | 0.50 | met |",
		"| c | ≥ 2 | 1 | 0.50 | **missed** |",
		"1 met, 1 missed.",
		"wall time of `make bench`: **7m30s**",
		"![a plot](x.png)",
		"## Details\n\nbody 1",
		"```sh\nghz -n 1\n```",
		"2026-11-27 18:00 UTC",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestPhaseOf(t *testing.T) {
	// 10 s at capacity 100: bad for 3 s, then at capacity.
	g := []float64{10, 20, 40, 95, 100, 98, 101, 99, 100, 100}
	pf := phaseOf(g, 0, 10*time.Second, 100)
	if pf.convergence != 8*time.Second { // the 5-s mean ending at second 7 (98.6) is the first that stays ≥ 90
		t.Errorf("convergence %s, want 8s", pf.convergence)
	}
	if pf.goodput < 76.29 || pf.goodput > 76.31 { // the mean of the last 10 s: all of this phase
		t.Errorf("steady goodput %v", pf.goodput)
	}
	never := phaseOf([]float64{100, 100, 10}, 0, 3*time.Second, 100)
	if never.convergence != -1 {
		t.Errorf("convergence %s, want never", never.convergence)
	}
}

func TestWaiterDelayAndGoodput(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &ghzResult{}
	add := func(start, lat time.Duration, status string) {
		r.Details = append(r.Details, ghzDetail{t0.Add(start + lat), int64(lat), status}) // ghz's timestamp is the end
	}
	add(0, 400*time.Millisecond, "OK")                               // leader, ends at 400ms
	add(10*time.Millisecond, 391*time.Millisecond, "OK")             // ends 1 ms later
	add(20*time.Millisecond, 383*time.Millisecond, "OK")             // ends 3 ms later
	add(1500*time.Millisecond, time.Millisecond, "DeadlineExceeded") // not OK
	p50, p99 := waiterDelay(r)
	if p50 != time.Millisecond || p99 != 3*time.Millisecond {
		t.Errorf("waiter delay p50 %s p99 %s", p50, p99)
	}
	g := goodputPerSecond(r, t0, 2*time.Second)
	if len(g) != 2 || g[0] != 3 || g[1] != 0 {
		t.Errorf("goodput %v", g)
	}
	if g := goodputPerSecond(r, t0.Add(-599*time.Millisecond), 2*time.Second); g[0] != 1 || g[1] != 2 {
		t.Errorf("goodput from an earlier zero %v, want [1 2]: answers at 0.999 s, 1.000 s and 1.002 s after it", g)
	}
}

func TestCPUTicksOfSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no procfs")
	}
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}
