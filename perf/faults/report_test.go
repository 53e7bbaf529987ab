package faults

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Row is one line of the report: what the row did, what must hold, and
// the figures measured in this run. Held is whether its test passed.
type Row struct {
	ID       string // L1 … L5, F1 … F13, I1 … I14
	Did      string // what was done, with the real binary and real sockets
	MustHold string // the claim
	Measured string // the figures of this run
}

type recorded struct {
	Row
	t testing.TB
}

var rows struct {
	mu sync.Mutex
	m  map[string]*recorded // guarded by mu
}

// record files the row's line. Call it early with ID, Did and MustHold (a
// row that fails before it measured anything is then reported BROKEN
// rather than missing) and again with Measured; non-empty fields replace
// the earlier ones. Held is decided when the report is written, from
// whether t failed.
func record(t testing.TB, r Row) {
	t.Helper()
	if _, ok := matrixTitle(r.ID); !ok {
		t.Fatalf("record: %q is not a row of the matrix", r.ID)
	}
	rows.mu.Lock()
	defer rows.mu.Unlock()
	if rows.m == nil {
		rows.m = map[string]*recorded{}
	}
	e := rows.m[r.ID]
	if e == nil {
		e = &recorded{Row: Row{ID: r.ID}}
		rows.m[r.ID] = e
	}
	e.t = t
	for _, f := range []struct {
		dst *string
		v   string
	}{{&e.Did, r.Did}, {&e.MustHold, r.MustHold}, {&e.Measured, r.Measured}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	if r.Measured != "" {
		t.Logf("%s measured: %s", r.ID, r.Measured)
	}
}

// matrix is section (b) of reliability-anchors.md, in order.
var matrix = []struct{ ID, Title string }{
	{"L1", "steady load, mixed tenants: soak with flat goroutines and heap"},
	{"L2", "3x planned rate for Generate with 50% duplicates"},
	{"L3", "a 10x burst for 5 s, then 1x"},
	{"L4", "rapid reset and ping flood from one client"},
	{"L5", "Notify at 5 msg/s to a Slack channel that allows ~1/s"},
	{"F1", "upstream slow beyond the caller's deadline"},
	{"F2", "upstream hung"},
	{"F3", "upstream 5xx, all then half of the calls"},
	{"F4", "upstream 429 with Retry-After"},
	{"F5", "upstream reset mid-body"},
	{"F6", "slow-drip body"},
	{"F7", "Redis down under load"},
	{"F8", "Redis slow under load"},
	{"F9", "client cancellation orders around a coalesced flight"},
	{"F10", "a panic inside the coalesced function / cache"},
	{"F11", "restart mid-stream: SIGTERM and SIGKILL with work pending"},
	{"F12", "webhook receiver accepts but the response is lost"},
	{"F13", "DNS failure / NXDOMAIN for Fetch"},
	{"I1", "loopback and unspecified addresses for Fetch"},
	{"I2", "metadata and internal addresses for Fetch"},
	{"I3", "DNS rebinding"},
	{"I4", "redirects to internal hosts, other schemes, long chains, loops"},
	{"I5", "HTTP_PROXY in the environment"},
	{"I6", "non-web ports"},
	{"I7", "huge body, endless stream, gzip bomb"},
	{"I8", "mislabelled binary body, invalid UTF-8"},
	{"I9", "malformed protobuf through the codec"},
	{"I10", "invalid UTF-8 in a request string field"},
	{"I11", "a request over the message limit; a small gzip request expanding past it"},
	{"I12", "PerfAdmin key missing/wrong/other length, key comparison timing"},
	{"I13", "Notify: same idempotency key, different params"},
	{"I14", "two tenants with an identical request"},
}

// notApplicable are the rows of the matrix that do not apply to this
// product, with the reason. A row listed here must have no test.
var notApplicable = map[string]string{
	"F10": "no input makes the real binary panic (the matrix found none, and no test-only hook goes into the product), so a panic " +
		"cannot be injected from outside. The in-process tests that guard it: perf/coalesce TestDoPanic, TestDoPanicAfterLeaderLeft, " +
		"TestUnaryInterceptorPanic, TestDoStreamPanic (INTERNAL to every waiter, the key usable again); perf/cache \"a panic is " +
		"contained\"; perf/breaker TestInterceptorPanicCountsAsFailure; perf/ratelimit TestInterceptorPanicReleasesThePermit; " +
		"cmd/server TestPanicBecomesInternalAndServerStaysUp (a panicking backend through the full server: INTERNAL, the process " +
		"serves the next call).",
}

func matrixTitle(id string) (string, bool) {
	for _, m := range matrix {
		if m.ID == id {
			return m.Title, true
		}
	}
	return "", false
}

// writeReport writes the markdown report of this run to path.
func writeReport(path string, started time.Time, loadStart string, code int) error {
	rows.mu.Lock()
	defer rows.mu.Unlock()
	var b strings.Builder
	wall := time.Since(started).Round(time.Second)
	commit := gitOut("rev-parse", "--short", "HEAD")
	if dirty := gitOut("status", "--porcelain", "--untracked-files=no"); dirty != "" && dirty != "unknown" {
		commit += fmt.Sprintf(" plus uncommitted changes to %d files", len(strings.Split(dirty, "\n")))
	} else {
		commit += " (a clean tree)"
	}
	race := "the gateway built with -race"
	if !bins.race {
		race = "the gateway built without -race (FAULTS_RACE=0)"
	}
	soak := os.Getenv("FAULTS_SOAK")
	if soak == "" {
		soak = "default (shortened)"
	}
	fmt.Fprintf(&b, "# Vega Gateway fault and abuse matrix\n\n")
	fmt.Fprintf(&b, "Written by `make faults` (`perf/faults`); do not edit by hand. Rows are section (b) of\n")
	fmt.Fprintf(&b, "`reliability-anchors.md` (L load, F faults, I bad input). Each row ran against the real\n")
	fmt.Fprintf(&b, "gateway binary on loopback sockets, with faults injected by toxiproxy in process; every\n")
	fmt.Fprintf(&b, "figure below was measured in this one run. Held = the row's test passed.\n\n")
	fmt.Fprintf(&b, "## Run\n\n")
	fmt.Fprintf(&b, "- command: `FAULTS_ALL=%s FAULTS_REPORT=… go test -race -count=1 -v ./perf/faults` (`make faults`); %s; FAULTS_SOAK: %s\n",
		os.Getenv("FAULTS_ALL"), race, soak)
	fmt.Fprintf(&b, "- commit: %s\n", commit)
	fmt.Fprintf(&b, "- date: %s\n", started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- machine: %s, %d cores, %s\n", cpuModel(), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "- load average (1 min) at start: %s, at end: %s (other work on these cores slows every row)\n", loadStart, loadAverage())
	fmt.Fprintf(&b, "- wall time: **%s** (goal ≤ 15 min)\n", wall)
	result := "every row that ran held"
	if code != 0 {
		result = "**the run failed** (a row broke, or the test process leaked goroutines)"
	}
	fmt.Fprintf(&b, "- result: %s\n\n", result)

	var held, broken, missing, na int
	fmt.Fprintf(&b, "## Rows\n\n| row | what was done | what must hold | measured | result |\n|---|---|---|---|---|\n")
	for _, m := range matrix {
		e := rows.m[m.ID]
		switch {
		case e != nil && e.t.Skipped():
			missing++
			fmt.Fprintf(&b, "| %s %s | %s | %s | — | **did not run** (skipped: slow rows need FAULTS_ALL=1) |\n", m.ID, cell(m.Title), cell(e.Did), cell(e.MustHold))
		case e != nil:
			res := "held"
			if e.t.Failed() {
				res, broken = "**BROKEN**", broken+1
			} else {
				held++
			}
			fmt.Fprintf(&b, "| %s %s | %s | %s | %s | %s |\n", m.ID, cell(m.Title), cell(e.Did), cell(e.MustHold), cell(e.Measured), res)
		case notApplicable[m.ID] != "":
			na++
			fmt.Fprintf(&b, "| %s %s | — | — | not applicable: %s | n/a |\n", m.ID, cell(m.Title), cell(notApplicable[m.ID]))
		default:
			missing++
			fmt.Fprintf(&b, "| %s %s | — | — | — | **did not run** |\n", m.ID, cell(m.Title))
		}
	}
	fmt.Fprintf(&b, "\n%d held, %d broken, %d did not run, %d not applicable.\n", held, broken, missing, na)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// cell makes s safe inside a markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "<br>")
}

func gitOut(args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
