package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// bins are the binaries TestMain builds once for every row.
var bins struct {
	server string // ./cmd/server
	race   bool   // the server was built with -race
}

// TestMain builds the real gateway (with -race unless FAULTS_RACE=0: a
// race the matrix provokes in the gateway is then reported in its log,
// which the harness checks; the fakes are in process, see
// harness_test.go), runs the rows,
// checks the test process for leaked goroutines and, when FAULTS_REPORT
// names a file, writes the report there.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	started := time.Now()
	dir, err := os.MkdirTemp("", "vega-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "faults: build:", err)
		return 1
	}
	load := loadAverage()
	code := m.Run()
	if err := goleak.Find(toxiproxyLinks...); err != nil {
		fmt.Fprintln(os.Stderr, "faults: goroutines leaked by the test process:", err)
		if code == 0 {
			code = 1
		}
	}
	if path := os.Getenv("FAULTS_REPORT"); path != "" && !testing.Short() {
		if err := writeReport(path, started, load, code); err != nil {
			fmt.Fprintln(os.Stderr, "faults: report:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// toxiproxyLinks are the one targeted exception of the leak check:
// toxiproxy v2.5.0 strands a link's goroutines when its destination write
// fails while its source still has data (the gateway drops a connection
// mid-answer: F1, F5, F6), when a proxy is stopped while a toxic holds
// data (its writer waits on a channel nobody closes), and limit_data stops
// reading its input for good once its limit is reached; nothing in
// toxiproxy's API ends them. They
// belong to the test's proxy, never to the gateway, which runs in its own
// process and whose goroutines the rows measure through PerfAdmin.
var toxiproxyLinks = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
}

// repoRoot is the main module's directory (this package is perf/faults).
func repoRoot() string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return root
}

// build compiles ./cmd/server into dir.
func build(dir string) error {
	bins.server = filepath.Join(dir, "vega-server")
	bins.race = os.Getenv("FAULTS_RACE") != "0"
	args := []string{"build", "-o", bins.server}
	if bins.race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/server")
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// loadAverage is the first field of /proc/loadavg ("" when unreadable).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
