package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// fake is a running cmd/fakeupstream.
type fake struct {
	cmd *exec.Cmd
	url string
}

type fakeStats struct {
	Requests       int64            `json:"requests"`
	ByStatus       map[string]int64 `json:"by_status"`
	NewConnections int64            `json:"new_connections"`
	InFlight       int64            `json:"in_flight"`    // being served or waiting in its queue
	WorkersBusy    int64            `json:"workers_busy"` // being served (≤ Concurrency when that is set)
	Concurrency    int64            `json:"concurrency"`  // 0: unlimited
	Capacity       float64          `json:"capacity"`
	Outage         bool             `json:"outage"`
	UptimeMS       int64            `json:"uptime_ms"`
}

func (d *driver) startFake(name string, args ...string) (*fake, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd, err := running.start(filepath.Join(d.work, name+".fake.log"), d.clientCPU, nil, d.fakeBin, append([]string{"--addr", addr}, args...)...)
	if err != nil {
		return nil, err
	}
	f := &fake{cmd: cmd, url: "http://" + addr}
	if err := waitTCP(addr, 10*time.Second); err != nil {
		running.stop(cmd)
		return nil, err
	}
	return f, nil
}

func (f *fake) stats() (fakeStats, error) {
	var s fakeStats
	resp, err := httpClient.Get(f.url + "/_fake/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

func (f *fake) post(path, body string) error {
	resp, err := httpClient.Post(f.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return nil
}

func (f *fake) reset() error                { return f.post("/_fake/reset", "{}") }
func (f *fake) configure(body string) error { return f.post("/_fake/config", body) }

// gateway is a running bin/vega-server.
type gateway struct {
	cmd   *exec.Cmd
	addr  string
	conn  *grpc.ClientConn
	admin vegav1.PerfAdminServiceClient
}

const adminKey = "bench-admin-key"

// startStack starts a fakeupstream with fakeArgs and a gateway whose
// Ollama backend it is, with env added. stop ends both, gateway first.
func (d *driver) startStack(name string, fakeArgs []string, env ...string) (f *fake, g *gateway, stop func(), err error) {
	f, err = d.startFake(name, fakeArgs...)
	if err != nil {
		return nil, nil, nil, err
	}
	g, err = d.startGateway(name, append([]string{"VEGA_OLLAMA_URL=" + f.url}, env...)...)
	if err != nil {
		running.stop(f.cmd)
		return nil, nil, nil, err
	}
	return f, g, func() { g.stop(); running.stop(f.cmd) }, nil
}

// startGateway runs the server pinned to d.serverCPU with GOMAXPROCS=1
// (when pinning) and env on top of the bench defaults.
func (d *driver) startGateway(name string, env ...string) (*gateway, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	base := []string{
		"VEGA_GRPC_ADDR=" + addr, "VEGA_HTTP_ADDR=off", "VEGA_ADMIN_API_KEY=" + adminKey,
		"VEGA_DATA_DIR=" + filepath.Join(d.work, name+".data"), "VEGA_LOG_LEVEL=error",
	}
	if d.serverCPU != "" {
		base = append(base, "GOMAXPROCS=1")
	}
	cmd, err := running.start(filepath.Join(d.work, name+".server.log"), d.serverCPU, append(base, env...), d.serverBin)
	if err != nil {
		return nil, err
	}
	g := &gateway{cmd: cmd, addr: addr}
	if err := waitTCP(addr, 15*time.Second); err != nil {
		running.stop(cmd)
		return nil, fmt.Errorf("gateway %s: %w (see %s.server.log)", name, err, name)
	}
	g.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		running.stop(cmd)
		return nil, err
	}
	g.admin = vegav1.NewPerfAdminServiceClient(g.conn)
	return g, nil
}

func (g *gateway) stop() {
	if g == nil {
		return
	}
	if g.conn != nil {
		g.conn.Close()
	}
	running.stop(g.cmd)
}

func (g *gateway) stats(sections ...vegav1.StatsSection) (*vegav1.Stats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", adminKey)
	resp, err := g.admin.GetStats(ctx, &vegav1.GetStatsRequest{Sections: sections})
	if err != nil {
		return nil, err
	}
	return resp.GetStats(), nil
}

// resetStats zeroes the gateway's counters (PerfAdmin ResetStats).
func (g *gateway) resetStats() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", adminKey)
	_, err := g.admin.ResetStats(ctx, &vegav1.ResetStatsRequest{})
	return err
}

// limiterStats is the limiter of backend key, nil when absent (its
// getters then return zeros).
func limiterStats(s *vegav1.Stats, key string) *vegav1.LimiterStats {
	for _, l := range s.GetRateLimiters().GetLimiters() {
		if l.GetKey() == key {
			return l
		}
	}
	return nil
}

// ghzResult is the part of ghz's JSON report (runner/reporter.go) we read.
// Durations are integer nanoseconds.
type ghzResult struct {
	Count       int64            `json:"count"`
	Total       int64            `json:"total"`
	Average     int64            `json:"average"`
	Fastest     int64            `json:"fastest"`
	Slowest     int64            `json:"slowest"`
	RPS         float64          `json:"rps"`
	StatusCodes map[string]int64 `json:"statusCodeDistribution"`
	Latency     []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`
	Details []ghzDetail `json:"details"`
}

// ghzDetail is one call of a ghz run.
type ghzDetail struct {
	Timestamp time.Time `json:"timestamp"` // when the call ended (stats.End.EndTime in ghz's stats handler), not when it was sent
	Latency   int64     `json:"latency"`   // ns
	Status    string    `json:"status"`    // "OK", "DeadlineExceeded", "ResourceExhausted", ...
}

// pct is the latency at percentage p (10, 25, 50, 75, 90, 95, 99).
func (g *ghzResult) pct(p int) time.Duration {
	for _, l := range g.Latency {
		if l.Percentage == p {
			return time.Duration(l.Latency)
		}
	}
	return 0
}

// ghz runs ghz against the gateway pinned to the client core and parses its
// JSON report; args are the load options.
func (d *driver) ghz(ctx context.Context, name string, g *gateway, call, data string, args ...string) (*ghzResult, error) {
	out := filepath.Join(d.work, name+".ghz.json")
	full := []string{"--insecure", "--call", call, "-d", data, "-O", "json", "-o", out, "--duration-stop", "ignore"}
	if d.clientCPU != "" {
		full = append(full, "--cpus", "1")
	}
	full = append(full, args...)
	full = append(full, g.addr)
	commandsMu.Lock() // two ghz run at once in the tenants scenario
	d.commands = append(d.commands, "ghz "+shellQuote(full))
	commandsMu.Unlock()
	name0, args0 := d.ghzBin, full
	if d.clientCPU != "" {
		name0, args0 = "taskset", append([]string{"-c", d.clientCPU, d.ghzBin}, full...)
	}
	cmd := exec.CommandContext(ctx, name0, args0...)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ghz %s: %w: %s", name, err, lastLines(string(msg), 5))
	}
	var r ghzResult
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("ghz %s: %w", name, err)
	}
	return &r, nil
}

var commandsMu sync.Mutex // guards driver.commands while ghz runs run in parallel

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " {}\"'$*") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
