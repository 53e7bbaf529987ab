// Command bench is make bench: it runs the Go benchmarks of the perf
// mechanisms beside their anchors (benchstat), then end-to-end scenarios
// with ghz against the real bin/vega-server and cmd/fakeupstream on
// loopback, and writes REPORT.md and PNG plots next to this file.
//
// The fleet scenarios (fleet.go: fleetherd, fleetlimit, fleetredis) run
// three gateways sharing the Redis at --redis (127.0.0.1:6379) under a
// prefix of their own, removed afterwards, through a toxiproxy in this
// process; their load comes from a grpc-go client here, since one ghz run
// has one target.
//
// Usage (from the repository root; make bench does this):
//
//	(cd perf/bench && go run . --root ../..)
//
// It stops every process it started, also on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type driver struct {
	root, out, work            string
	fakeBin, serverBin, ghzBin string
	benchstatBin               string
	redisAddr                  string
	serverCPU, clientCPU       string
	count                      int
	benchtime                  string
	quick                      bool
	report                     Report
	commands                   []string
	limiterRuns                []*limiterRun
	ov                         overloadState // bursts, queueing, tenants (overload.go)
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		d        driver
		started  float64
		skipGo   bool
		skipE2E  bool
		scenario string
	)
	flag.StringVar(&d.root, "root", "../..", "repository root")
	flag.StringVar(&d.out, "out", "", "where REPORT.md and the plots go (default ROOT/perf/bench)")
	flag.IntVar(&d.count, "count", 5, "go test -count for the Go benchmarks")
	flag.StringVar(&d.benchtime, "benchtime", "400ms", "go test -benchtime for the Go benchmarks")
	flag.BoolVar(&skipGo, "skip-go", false, "skip the Go benchmarks")
	flag.BoolVar(&skipE2E, "skip-e2e", false, "skip the end-to-end scenarios")
	flag.StringVar(&scenario, "scenarios", "herd,breaker,reuse,bursts,queueing,limiter,tenants,cpu,fleetherd,fleetlimit,fleetredis", "end-to-end scenarios to run, comma separated (a subset runs only those)")
	flag.BoolVar(&d.quick, "quick", false, "shorter end-to-end runs (for trying the driver, not for the report)")
	flag.Float64Var(&started, "started", 0, "unix time make bench started (for the wall time in the report)")
	flag.StringVar(&d.serverCPU, "server-cpu", "0", "taskset CPU list for the gateway (\"\" = no pinning)")
	flag.StringVar(&d.clientCPU, "client-cpu", "1", "taskset CPU list for ghz and the fake upstream")
	flag.StringVar(&d.redisAddr, "redis", "127.0.0.1:6379", "Redis for the fleet scenarios (each run under a prefix of its own, removed after)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer running.stopAll()

	var err error
	if d.root, err = filepath.Abs(d.root); err != nil {
		return fail(err)
	}
	if d.out == "" {
		d.out = filepath.Join(d.root, "perf", "bench")
	}
	d.work = filepath.Join(d.root, ".tmp", "bench")
	if err := os.MkdirAll(d.work, 0o755); err != nil {
		return fail(err)
	}
	if runtime.NumCPU() < 2 || !haveTaskset() {
		d.serverCPU, d.clientCPU = "", ""
	}
	bin := filepath.Join(d.root, ".tmp", "bin")
	d.ghzBin, d.benchstatBin = filepath.Join(bin, "ghz"), filepath.Join(bin, "benchstat")
	d.fakeBin, d.serverBin = filepath.Join(d.work, "fakeupstream"), filepath.Join(d.root, "bin", "vega-server")
	d.report.Date = time.Now()
	d.report.Machine = machineInfo(ctx, d.root)
	d.report.Settings = []string{
		fmt.Sprintf("Go benchmarks: `-count %d -benchtime %s` (the default -count 5 is the fewest samples for which benchstat's Mann-Whitney test can report a difference at p < 0.05 with room for one outlier; 3 can never go below p = 0.1; the short benchtime keeps the Go step to about 4 minutes of a `make bench` of about 15–18 on 2 cores)", d.count, d.benchtime),
		endToEndSetting(d.serverCPU, d.clientCPU),
		"fleet scenarios: " + d.fleetPlacement(),
	}
	// SPEC §9 goals no scenario here measures: listed, not silently left out.
	d.report.add(Row{Figure: "N identical concurrent Notify calls → N deliveries", Goal: "Notify: N",
		Measured: "no bench scenario; TestNotifyIsNeverCoalesced checks 20 → 20 under make test", Verdict: NotMeasured})

	step := func(name string, f func(context.Context) error) bool {
		if ctx.Err() != nil {
			return false
		}
		t := time.Now()
		fmt.Fprintf(os.Stderr, "== %s\n", name)
		err := f(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "   %s failed: %v\n", name, err)
			d.report.fail(name, err)
		}
		fmt.Fprintf(os.Stderr, "   %s: %s\n", name, time.Since(t).Round(100*time.Millisecond))
		return err == nil
	}
	// Never measure a stale binary: without a fresh build, no end-to-end runs.
	if !step("build", d.build) && !skipE2E {
		skipE2E = true
		d.report.fail("end-to-end scenarios", fmt.Errorf("skipped: the gateway or the fake upstream did not build"))
	}
	if !skipGo {
		step("go benchmarks", d.goBench)
	}
	fleetDone, fleetSelected := map[string]bool{}, map[string]bool{}
	for _, s := range strings.Split(scenario, ",") {
		fleetSelected[strings.TrimSpace(s)] = true
	}
	// The fleet scenarios run the load client and the toxiproxy to Redis
	// in this process: pinned to the client's CPU while they run.
	fleetStep := func(name string, f func(context.Context) error) {
		restore, err := pinDriver(d.clientCPU)
		if err != nil {
			d.report.fail(name, err)
			return
		}
		fleetDone[name] = step(name, f)
		restore()
	}
	if !skipE2E {
		for _, s := range strings.Split(scenario, ",") {
			switch strings.TrimSpace(s) {
			case "fleetherd":
				fleetStep("fleetherd", d.fleetHerd)
			case "fleetlimit":
				fleetStep("fleetlimit", d.fleetLimitScenario)
			case "fleetredis":
				fleetStep("fleetredis", d.fleetRedis)
			case "herd":
				step("herd", d.herd)
			case "breaker":
				step("breaker", d.breaker)
			case "reuse":
				step("reuse", d.reuse)
			case "limiter":
				step("limiter", d.limiter)
			case "bursts":
				step("bursts", d.bursts)
			case "queueing":
				step("queueing", d.queueing)
			case "tenants":
				step("tenants", d.tenants)
			case "cpu":
				step("cpu", d.cpu)
			case "":
			default:
				d.report.fail(s, fmt.Errorf("unknown scenario"))
			}
		}
		d.plots()
	}
	d.fleetNotMeasured(fleetDone, fleetSelected)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "interrupted; no report written")
		return 1
	}
	d.report.section("Load", "Load average (1, 5, 15 min) when the run ended: %s.\n", loadAvg())
	d.report.Commands = append([]string{"make bench   # = (cd perf/bench && go run . --root ../.. --started <unix time>)"}, d.commands...)
	if started > 0 {
		d.report.WallTime = time.Since(time.Unix(0, int64(started*1e9)))
	}
	f, err := os.Create(filepath.Join(d.out, "REPORT.md"))
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	if err := d.report.render(f); err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", f.Name())
	return 0
}

// endToEndSetting describes how the end-to-end processes were placed.
func endToEndSetting(serverCPU, clientCPU string) string {
	if serverCPU == "" {
		return "end to end: no CPU pinning (taskset missing or one CPU); gateway, ghz and fakeupstream share every core; everything on 127.0.0.1 with free ports picked at run time"
	}
	return fmt.Sprintf("end to end: gateway pinned to CPU %s with GOMAXPROCS=1; ghz (`--cpus 1`) and fakeupstream pinned to CPU %s; everything on 127.0.0.1 with free ports picked at run time", serverCPU, clientCPU)
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "bench:", err)
	return 1
}

func haveTaskset() bool {
	_, err := output(context.Background(), "", "taskset", "-c", "0", "true")
	return err == nil
}

// build compiles the gateway and the fake upstream.
func (d *driver) build(ctx context.Context) error {
	if _, err := output(ctx, d.root, "go", "build", "-o", d.serverBin, "./cmd/server"); err != nil {
		return err
	}
	_, err := output(ctx, d.root, "go", "build", "-o", d.fakeBin, "./cmd/fakeupstream")
	return err
}

// goBench runs the in-process benchmarks, then benchstat on them.
func (d *driver) goBench(ctx context.Context) error {
	pkgs := []string{"./perf/...", "./cmd/server/", "./integrations/notify/outbox/"}
	args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-count", strconv.Itoa(d.count), "-benchtime", d.benchtime, "-timeout", "20m"}, pkgs...)
	d.commands = append(d.commands, "go "+strings.Join(args, " ")+" > .tmp/bench/raw.txt")
	raw, err := output(ctx, d.root, "go", args...)
	rawFile := filepath.Join(d.work, "raw.txt")
	if werr := os.WriteFile(rawFile, []byte(raw), 0o644); werr != nil {
		return werr
	}
	// A package that fails (say, one being written while this runs) must
	// not throw away the others' results: keep what ran, report the failure.
	s, perr := parseBench(strings.NewReader(raw))
	if perr != nil {
		return perr
	}
	if err != nil {
		if len(s) == 0 {
			return err
		}
		d.report.fail("go benchmarks (partial results kept)", err)
	}
	goFigures(&d.report, s)
	outboxFigures(&d.report, s)
	pgOutboxFigures(&d.report, s)
	var stat strings.Builder
	for _, col := range []string{"/impl", "/path"} {
		d.commands = append(d.commands, "benchstat -col "+col+" .tmp/bench/raw.txt")
		out, err := output(ctx, d.root, d.benchstatBin, "-col", col, rawFile)
		if err != nil {
			out = err.Error()
		}
		fmt.Fprintf(&stat, "<details><summary><code>benchstat -col %s</code></summary>\n\n```\n%s```\n\n</details>\n\n", col, out)
	}
	d.report.section("Go benchmarks (M1, M4, building blocks)", "%s\n%s", goDetails(s, d.count, d.benchtime), stat.String())
	return nil
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// machineInfo describes where the figures come from.
func machineInfo(ctx context.Context, root string) []string {
	cpu := "unknown"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	kernel, _ := output(ctx, "", "uname", "-sr")
	gov, _ := output(ctx, root, "go", "version")
	commit, _ := output(ctx, root, "git", "rev-parse", "--short", "HEAD")
	// The report and plots are this run's output: rewriting them is not a change to what is measured.
	dirty, _ := output(ctx, root, "git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!perf/bench/REPORT.md", ":!perf/bench/*.png")
	if strings.TrimSpace(dirty) != "" {
		commit = strings.TrimSpace(commit) + " (with uncommitted changes in the tree)"
	}
	mem := ""
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])[1] + " kB"
	}
	return []string{
		"CPU: " + cpu,
		fmt.Sprintf("cores: %d", runtime.NumCPU()),
		"memory: " + mem,
		"kernel: " + strings.TrimSpace(kernel),
		"Go: " + strings.TrimSpace(gov),
		"commit: " + strings.TrimSpace(commit),
		"load average (1, 5, 15 min) when the run started: " + loadAvg() + " (other work on these 2 cores skews the figures; see the end of the report for the load when it ended)",
	}
}
