package faults

// The harness every row of the matrix uses. Rows run the REAL gateway
// binary (built once by TestMain, see main_test.go) with real sockets on
// loopback; faults sit in an in-process toxiproxy between the gateway and
// its backends, Redis or PostgreSQL.
//
// API (rows in l_test.go, f_test.go, i_test.go use only this):
//
//	g := startGateway(t, env)     // the vega-server binary on free loopback ports,
//	                              // VEGA_API_KEYS/VEGA_ADMIN_API_KEY/VEGA_DATA_DIR set
//	                              // unless env overrides them; SERVING before it returns;
//	                              // stopped (SIGTERM) and its log checked for DATA RACE
//	                              // at cleanup; the log is shown when the test failed.
//	g.Conn()                      // *grpc.ClientConn to g.Addr (closed at cleanup)
//	g.Stats(t)                    // PerfAdmin GetStats (all sections), admin key
//	g.Runtime(t)                  // goroutines and heap of the gateway process
//	g.Kill() / g.Stop() / g.Restart(t)   // SIGKILL / SIGTERM and wait / start again
//	                              // (same ports, same data dir)
//	g.Addr, g.HTTPAddr, g.Log()   // gRPC and HTTP addresses, the log so far
//	ctxWithKey(ctx, keyA)         // tenant A's client key (keyB: tenant B)
//	ctxWithAdmin(ctx)             // the admin key
//	ctxFor(t, d)                  // a context with a deadline, cancelled at cleanup
//
//	p := newProxy(t, upstream)    // toxiproxy in process, listening on 127.0.0.1:<free>
//	                              // in front of upstream (host:port); p.Listen is its address
//	heal := addToxic(t, p, "latency", "downstream", map[string]any{"latency": 500})
//	                              // returns a func removing it; p.Stop()/p.Start() = down/up
//
//	llm := newFakeLLM(t, llmOpts{Concurrency: 4, Latency: 50*time.Millisecond})
//	                              // Ollama-like (/api/generate, /api/chat, JSON or NDJSON
//	                              // stream); beyond Concurrency requests queue; counts calls
//	                              // by prompt (callsFor, maxCallsWithPrefix), in flight, max in
//	                              // flight, cancelled; the mode
//	                              // (llmOK, llm5xx, llm429, llmHang) and latency change live;
//	                              // model "hang", "fail-500", "fail-429", "slow-<ms>" choose
//	                              // per call. Env for it: llm.env() (VEGA_OLLAMA_URL).
//	web := newFakeWeb(t)          // pages for Fetch: /page, /big?n=BYTES, /slow?ms=, /hang;
//	                              // web.hits; web.env() allows its host past the SSRF guard
//	hook := newFakeHook(t)        // Slack/webhook receiver: counts deliveries per text;
//	                              // modes hookOK, hook5xx, hook429, hookDrop (reads the
//	                              // request, then drops the connection: response lost);
//	                              // hook.limit(rate) answers 429 + Retry-After beyond rate/s;
//	                              // env: hook.slackEnv() / hook.webhookEnv()
//
//	redisPrefix(t)                // a unique VEGA_REDIS_PREFIX; its keys deleted at cleanup
//	pgDatabase(t)                 // a fresh PostgreSQL database URL, dropped at cleanup
//
//	record(t, Row{ID, Did, MustHold, Measured})  // the row's line in the report; call it
//	                              // early (ID, Did, MustHold) so a row that fails early is
//	                              // reported BROKEN, and again with Measured; non-empty
//	                              // fields overwrite. Held = the test did not fail.
//	slow(t)                       // skip unless FAULTS_ALL=1 (rows too slow for make test)
//	var c codeTally; c.add(err)   // errors by gRPC code; c.String() = "OK 98, Unavailable 2"
//
// The fakes are in-process httptest servers rather than the
// cmd/fakeupstream binary (make bench's backend): a row needs exact
// per-prompt and per-message counts, live mode switches, hangs and dropped
// responses, which the binary's flags do not offer, so TestMain builds
// only the gateway.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// The keys every gateway of the suite accepts unless a row overrides
// VEGA_API_KEYS or VEGA_ADMIN_API_KEY.
const (
	keyA     = "faults-key-tenant-a"
	keyB     = "faults-key-tenant-b"
	adminKey = "faults-admin-key-0123456789"
)

const (
	redisAddr = "127.0.0.1:6379"
	pgAdmin   = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// gateway is one running vega-server process.
type gateway struct {
	Addr, HTTPAddr string
	DataDir        string

	t       testing.TB
	env     []string
	logPath string
	conn    *grpc.ClientConn

	mu      sync.Mutex
	cmd     *exec.Cmd     // guarded by mu; nil when not running
	exited  chan struct{} // guarded by mu; closed once cmd was waited for
	exitErr error         // guarded by mu
}

// startGateway runs the vega-server binary with env over the harness's
// defaults and waits until its health service says SERVING.
func startGateway(t testing.TB, env map[string]string) *gateway {
	t.Helper()
	grpcPort, httpPort := freePort(t), freePort(t)
	g := &gateway{
		t:        t,
		Addr:     fmt.Sprintf("127.0.0.1:%d", grpcPort),
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		DataDir:  t.TempDir(),
	}
	full := map[string]string{
		"VEGA_GRPC_ADDR":     g.Addr,
		"VEGA_HTTP_ADDR":     g.HTTPAddr,
		"VEGA_DATA_DIR":      g.DataDir,
		"VEGA_API_KEYS":      keyA + "=tenant-a," + keyB + "=tenant-b",
		"VEGA_ADMIN_API_KEY": adminKey,
		"VEGA_LOG_LEVEL":     "warn",
	}
	maps.Copy(full, env)
	if full["VEGA_GRPC_ADDR"] != g.Addr || full["VEGA_HTTP_ADDR"] != g.HTTPAddr {
		g.Addr, g.HTTPAddr = full["VEGA_GRPC_ADDR"], full["VEGA_HTTP_ADDR"]
	}
	// A minimal environment: nothing of the developer's VEGA_*, REDIS_URL
	// or proxies reaches the gateway unless the row asks for it.
	g.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(),
		// A race in the gateway is reported in its log (checked at cleanup)
		// without stopping it mid-row.
		"GORACE=halt_on_error=0"}
	for _, k := range slices.Sorted(maps.Keys(full)) {
		g.env = append(g.env, k+"="+full[k])
	}
	g.logPath = filepath.Join(t.TempDir(), "gateway.log")

	conn, err := grpc.NewClient(g.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", g.Addr, err)
	}
	g.conn = conn
	t.Cleanup(func() {
		_ = g.Stop()
		_ = conn.Close()
		logs := g.Log()
		if strings.Contains(logs, "WARNING: DATA RACE") {
			t.Errorf("the gateway reported a data race:\n%s", logs)
		} else if t.Failed() {
			t.Logf("gateway %s log (last 80 lines):\n%s", g.Addr, lastLines(logs, 80))
		}
	})
	if err := g.start(); err != nil {
		t.Fatalf("start gateway: %v\n%s", err, g.Log())
	}
	return g
}

func (g *gateway) start() error {
	f, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bins.server)
	cmd.Env = g.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	exited := make(chan struct{})
	g.mu.Lock()
	g.cmd, g.exited, g.exitErr = cmd, exited, nil
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		g.mu.Lock()
		g.exitErr = err
		g.mu.Unlock()
		close(exited)
	}()
	return g.waitServing(exited, 60*time.Second)
}

// waitServing polls the gRPC health service until SERVING, the process
// exits, or within passes.
func (g *gateway) waitServing(exited chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	hc := healthpb.NewHealthClient(g.conn)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-exited:
			g.mu.Lock()
			defer g.mu.Unlock()
			return fmt.Errorf("the gateway exited before serving: %v", g.exitErr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not SERVING after %s (last: %v, %v)", within, r.GetStatus(), err)
		}
	}
}

// Conn is a client connection to the gateway's gRPC port; it reconnects
// across Restart.
func (g *gateway) Conn() *grpc.ClientConn { return g.conn }

// Pid is the running process's id, 0 when stopped.
func (g *gateway) Pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return 0
	}
	return g.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (g *gateway) Kill() {
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Stop sends SIGTERM and waits for the exit (SIGKILL after a minute); it
// returns the process's exit error (nil for a clean exit).
func (g *gateway) Stop() error {
	g.mu.Lock()
	cmd, exited := g.cmd, g.exited
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("did not exit within a minute of SIGTERM: killed")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.exitErr
}

// Restart stops the gateway if it runs (SIGTERM) and starts it again on
// the same ports with the same data directory.
func (g *gateway) Restart(t testing.TB) {
	t.Helper()
	_ = g.Stop()
	if err := g.start(); err != nil {
		t.Fatalf("restart gateway: %v\n%s", err, lastLines(g.Log(), 40))
	}
}

// Log is everything the gateway wrote to stdout and stderr so far.
func (g *gateway) Log() string {
	b, _ := os.ReadFile(g.logPath)
	return string(b)
}

// Stats is PerfAdmin GetStats with every section.
func (g *gateway) Stats(t testing.TB) *vegav1.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxWithAdmin(context.Background()), 10*time.Second)
	defer cancel()
	r, err := vegav1.NewPerfAdminServiceClient(g.conn).GetStats(ctx, &vegav1.GetStatsRequest{})
	if err != nil {
		t.Fatalf("GetStats: %v", err)
	}
	return r.GetStats()
}

// runtimeSnap is the gateway process's goroutines and heap at one moment.
type runtimeSnap struct {
	Goroutines int64
	HeapBytes  uint64
}

func (r runtimeSnap) String() string {
	return fmt.Sprintf("%d goroutines, heap %.1f MiB", r.Goroutines, float64(r.HeapBytes)/(1<<20))
}

// Runtime reads the gateway's runtime section (PerfAdmin).
func (g *gateway) Runtime(t testing.TB) runtimeSnap {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxWithAdmin(context.Background()), 10*time.Second)
	defer cancel()
	r, err := vegav1.NewPerfAdminServiceClient(g.conn).GetStats(ctx, &vegav1.GetStatsRequest{
		Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_RUNTIME}})
	if err != nil {
		t.Fatalf("GetStats runtime: %v", err)
	}
	rt := r.GetStats().GetRuntime()
	return runtimeSnap{Goroutines: rt.GetGoroutines(), HeapBytes: rt.GetHeapAllocBytes()}
}

func ctxWithKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-api-key", key)
}

func ctxWithAdmin(ctx context.Context) context.Context { return ctxWithKey(ctx, adminKey) }

// ctxFor is a context with a deadline d from now, cancelled at cleanup.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newProxy is toxiproxy, in process, listening on a free loopback port in
// front of upstream (host:port). Stop/Start take it down and up.
func newProxy(t testing.TB, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := toxiproxy.NewProxy(srv, "p"+hex.EncodeToString(b[:]), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy in front of %s: %v", upstream, err)
	}
	t.Cleanup(p.Stop)
	return p
}

// addToxic adds a toxic (latency, bandwidth, slicer, reset_peer, timeout,
// limit_data, …) on stream "upstream" or "downstream" with attrs, and
// returns a function removing it.
func addToxic(t testing.TB, p *toxiproxy.Proxy, kind, stream string, attrs map[string]any) (remove func()) {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := kind + "-" + hex.EncodeToString(b[:])
	spec, err := json.Marshal(map[string]any{"name": name, "type": kind, "stream": stream, "toxicity": 1, "attributes": attrs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Toxics.AddToxicJson(bytes.NewReader(spec)); err != nil {
		t.Fatalf("add toxic %s: %v", kind, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
				t.Errorf("remove toxic %s: %v", kind, err)
			}
		})
	}
}

// hostPort is u's host:port.
func hostPort(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parse %q: %v", rawURL, err)
	}
	return u.Host
}

// redisPrefix is a fresh VEGA_REDIS_PREFIX on the real Redis; its keys are
// deleted when the test ends.
func redisPrefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "faults-" + hex.EncodeToString(b[:])
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("Redis at %s is required: %v", redisAddr, err)
	}
	t.Cleanup(func() {
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Unlink(ctx, iter.Val())
		}
	})
	return prefix
}

// pgDatabase creates a fresh database on the real PostgreSQL and returns
// its URL (for VEGA_POSTGRES_URL); it is dropped when the test ends.
func pgDatabase(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "faults_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgAdmin)
	if err != nil {
		t.Fatalf("PostgreSQL at 127.0.0.1:5432 is required: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgAdmin)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}

// freePort asks the kernel for a free loopback port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// slow skips a row too slow for make test; make faults sets FAULTS_ALL=1.
func slow(t testing.TB) {
	t.Helper()
	if os.Getenv("FAULTS_ALL") != "1" {
		t.Skip("slow row: runs in make faults")
	}
}

// codeTally counts outcomes by gRPC code; safe for concurrent use.
type codeTally struct {
	mu sync.Mutex
	m  map[codes.Code]int // guarded by mu
}

// add counts err's code (OK for nil) and returns it.
func (c *codeTally) add(err error) codes.Code {
	code := status.Code(err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[codes.Code]int{}
	}
	c.m[code]++
	return code
}

// get is how many calls ended with code.
func (c *codeTally) get(code codes.Code) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[code]
}

// total is every call counted.
func (c *codeTally) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.m {
		n += v
	}
	return n
}

// String is "OK 98, Unavailable 2", OK first, then by count.
func (c *codeTally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return "none"
	}
	keys := slices.Collect(maps.Keys(c.m))
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == codes.OK) != (keys[j] == codes.OK) {
			return keys[i] == codes.OK
		}
		if c.m[keys[i]] != c.m[keys[j]] {
			return c.m[keys[i]] > c.m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, c.m[k])
	}
	return strings.Join(parts, ", ")
}

func lastLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
