package main

// The fleet scenarios of issue 11 (SPEC §4, §9): three gateway processes
// sharing one Redis under a prefix of their own, through a toxiproxy in
// this process (so that Redis can be cut and slowed), one fakeupstream
// behind them, and a small grpc-go client here that spreads the load over
// the three (ghz takes one target per run).
//
//	fleetherd   300 identical calls over 3 replicas; a cached answer shared; Redis round trips per miss and hit
//	fleetlimit  3 replicas offered 3× the configured rate ceiling; what the backend receives per second
//	fleetredis  Redis killed under load and brought back; errors, backend calls, when coalescing resumes

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"image/color"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"gonum.org/v1/plot/plotter"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

const fleetReplicas = 3

// fleet is three gateways on one Redis prefix and one fake upstream.
type fleet struct {
	fake   *fake
	gws    []*gateway
	proxy  *toxiproxy.Proxy
	prefix string
	rdb    *redis.Client
}

// startFleet starts the proxy to Redis, the fake upstream with fakeArgs and
// three gateways with env on top of the fleet settings, and waits until
// each sees the other two. stop ends all and removes the prefix's keys.
func (d *driver) startFleet(ctx context.Context, name string, fakeArgs []string, env ...string) (*fleet, func(), error) {
	rdb := redis.NewClient(&redis.Options{Addr: d.redisAddr})
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("the fleet scenarios need Redis at %s: %w", d.redisAddr, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	fl := &fleet{prefix: "vegabench-" + hex.EncodeToString(b[:]), rdb: rdb}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	fl.proxy = toxiproxy.NewProxy(srv, "redis", "127.0.0.1:0", d.redisAddr)
	stop := func() {
		for _, g := range fl.gws {
			g.stop()
		}
		if fl.fake != nil {
			running.stop(fl.fake.cmd)
		}
		fl.proxy.Stop()
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(cctx, 0, fl.prefix+":*", 1000).Iterator()
		for iter.Next(cctx) {
			rdb.Unlink(cctx, iter.Val())
		}
		rdb.Close()
	}
	if err := fl.proxy.Start(); err != nil {
		stop()
		return nil, nil, err
	}
	if fl.fake, err = d.startFake(name, fakeArgs...); err != nil {
		stop()
		return nil, nil, err
	}
	base := []string{"VEGA_OLLAMA_URL=" + fl.fake.url, "REDIS_URL=redis://" + fl.proxy.Listen + "/0", "VEGA_REDIS_PREFIX=" + fl.prefix}
	for i := range fleetReplicas {
		g, err := d.startGateway(fmt.Sprintf("%s-%d", name, i+1), append(base, env...)...)
		if err != nil {
			stop()
			return nil, nil, err
		}
		fl.gws = append(fl.gws, g)
	}
	deadline := time.Now().Add(15 * time.Second)
	for i, g := range fl.gws {
		for {
			s, err := g.stats(vegav1.StatsSection_STATS_SECTION_CLUSTER)
			c := s.GetCluster()
			if err == nil && c.GetReplicasSeen() == fleetReplicas && c.GetSubscribed() {
				break
			}
			if time.Now().After(deadline) {
				stop()
				return nil, nil, fmt.Errorf("replica %d never saw the fleet (%v, %v)", i+1, c, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return fl, stop, nil
}

// cluster is replica i's cluster section.
func (fl *fleet) cluster(i int) (*vegav1.ClusterStats, error) {
	s, err := fl.gws[i].stats(vegav1.StatsSection_STATS_SECTION_CLUSTER)
	return s.GetCluster(), err
}

// cacheKeys counts the prefix's cache keys in Redis.
func (fl *fleet) cacheKeys(ctx context.Context) (int, error) {
	keys, err := fl.rdb.Keys(ctx, fl.prefix+":v1:c:*").Result()
	return len(keys), err
}

// backendCalls is what the fake upstream has received so far.
func (fl *fleet) backendCalls() (int64, error) {
	s, err := fl.fake.stats()
	return s.Requests, err
}

// call is one Generate as a caller saw it.
type call struct {
	replica int
	key     string
	start   time.Duration // since the load began
	latency time.Duration
	from    string // x-vega-served-from
	code    string // "OK" or the gRPC code
}

func (c call) ok() bool { return c.code == "OK" }

// generate sends req to replica i and records what came back.
func (fl *fleet) generate(ctx context.Context, i int, key string, req *vegav1.GenerateRequest, deadline time.Duration, began time.Time) call {
	var md metadata.MD
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	_, err := vegav1.NewGenerateServiceClient(fl.gws[i].conn).Generate(cctx, req, grpc.Header(&md))
	c := call{replica: i, key: key, start: start.Sub(began), latency: time.Since(start), code: "OK"}
	if v := md.Get(policy.ServedFromHeader); len(v) > 0 {
		c.from = v[0]
	}
	if err != nil {
		c.code = status.Code(err).String()
	}
	return c
}

func zeroTemp() *float64 { var z float64; return &z }

// deterministicReq is a Generate the gateway may cache (temperature 0).
func deterministicReq(prompt string) *vegav1.GenerateRequest {
	return &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt, Options: &vegav1.SamplingOptions{Temperature: zeroTemp()}}
}

// creativeReq is a Generate the gateway must not cache (temperature unset).
func creativeReq(prompt string) *vegav1.GenerateRequest {
	return &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt}
}

// pinDriver pins this process (every thread, so the in-process toxiproxy
// and the load client too) to cpus while the fleet scenarios run, and
// returns what undoes it. "" pins nothing.
func pinDriver(cpus string) (restore func(), err error) {
	restore = func() {}
	if cpus == "" {
		return restore, nil
	}
	var want unix.CPUSet
	for _, part := range strings.Split(cpus, ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return restore, fmt.Errorf("cpu list %q: %w", cpus, err)
		}
		b := a
		if found {
			if b, err = strconv.Atoi(hi); err != nil {
				return restore, fmt.Errorf("cpu list %q: %w", cpus, err)
			}
		}
		for c := a; c <= b; c++ {
			want.Set(c)
		}
	}
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return restore, err
	}
	setAll := func(set *unix.CPUSet) error {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			_ = unix.SchedSetaffinity(tid, set) // a thread that just ended is no error
		}
		return nil
	}
	if err := setAll(&want); err != nil {
		return restore, err
	}
	return func() { _ = setAll(&old) }, nil
}

// fleetPlacement says where the fleet scenarios' processes run.
func (d *driver) fleetPlacement() string {
	if d.serverCPU == "" {
		return "no CPU pinning: the three gateways, the fake upstream, this driver (its load client and the toxiproxy to Redis) and Redis share every core"
	}
	return fmt.Sprintf("the three gateways all pinned to CPU %s (GOMAXPROCS=1 each, so the fleet has the one core the single gateway has elsewhere in this report); the fake upstream and this driver (its grpc-go load client and the in-process toxiproxy between the gateways and Redis) pinned to CPU %s; Redis (the machine's, on 127.0.0.1:6379) not pinned",
		d.serverCPU, d.clientCPU)
}

// fleetGoals are the report rows the fleet scenarios fill, by scenario,
// so that a scenario not run or failed still shows its goals.
var fleetGoals = map[string][]Row{
	"fleetherd": {
		{Figure: "N = 300 identical requests spread over 3 instances with Redis", Goal: "exactly 1 backend call"},
		{Figure: "3 replicas + Redis: remote coalesced waiter p99 vs the leader replica's callers", Goal: "≤ leader + 5 ms"},
		{Figure: "3 replicas + Redis: a deterministic answer cached by one replica, asked on the other two", Goal: "a cache hit on each, no backend call"},
		{Figure: "3 replicas + Redis: Redis round trips on a cache miss's critical path", Goal: "≤ 1"},
		{Figure: "3 replicas + Redis: Redis round trips of a local cache hit", Goal: "0"},
	},
	"fleetlimit": {
		{Figure: "3 replicas, fleet rate limit: backend calls/s with 3× the limit offered", Goal: "within ±10 % of the configured limit"},
	},
	"fleetredis": {
		{Figure: "Redis killed under load: caller-visible errors", Goal: "0"},
		{Figure: "Redis killed under load: backend calls", Goal: "≤ distinct keys × replicas"},
		{Figure: "Redis back: coalescing across the fleet resumes", Goal: "within 5 s"},
	},
}

// fleetNotMeasured adds the goals of the fleet scenarios that added no
// row (not selected, or failed), with why.
func (d *driver) fleetNotMeasured(done map[string]bool, selected map[string]bool) {
	for _, s := range []string{"fleetherd", "fleetlimit", "fleetredis"} {
		if done[s] {
			continue
		}
		why := "scenario " + s + " not run (--scenarios)"
		if selected[s] {
			why = "scenario " + s + " failed or was skipped; see \"Scenarios that failed to run\""
		}
		for _, r := range fleetGoals[s] {
			r.Measured, r.Verdict = why, NotMeasured
			d.report.add(r)
		}
	}
}

// --- fleetherd -------------------------------------------------------------

const (
	herdLatency = 600 * time.Millisecond
	herdN       = 300
	herdRounds  = 5 // deterministic rounds; one non-deterministic round follows
	shareKeys   = 10
	rttToxic    = 20 * time.Millisecond
	rttSamples  = 7
)

// herdRound is one herd of identical calls over the replicas.
type herdRound struct {
	name    string
	calls   []call
	backend int64 // backend calls the round made
}

// herdSplit is a round's callers split by replica: leader is the replica
// whose caller got the backend's answer (-1 when none did); the latencies
// of OK callers on it and on the other replicas, sorted.
func herdSplit(calls []call) (leader int, onLeader, remote []time.Duration) {
	leader = -1
	for _, c := range calls {
		if c.ok() && c.from == policy.FromBackend {
			leader = c.replica
			break
		}
	}
	for _, c := range calls {
		if !c.ok() {
			continue
		}
		if c.replica == leader {
			onLeader = append(onLeader, c.latency)
		} else {
			remote = append(remote, c.latency)
		}
	}
	slices.Sort(onLeader)
	slices.Sort(remote)
	return leader, onLeader, remote
}

// p99Gaps is, per herd, the p99 of the callers on the other replicas
// minus that of the callers on the leader's; a herd without both sides
// has none.
func p99Gaps(rounds []herdRound) []time.Duration {
	var gaps []time.Duration
	for _, r := range rounds {
		_, onL, rem := herdSplit(r.calls)
		if len(onL) > 0 && len(rem) > 0 {
			gaps = append(gaps, quantile(rem, 0.99)-quantile(onL, 0.99))
		}
	}
	return gaps
}

// countFrom counts a round's calls by served-from (errors by code).
func countFrom(calls []call) map[string]int {
	m := map[string]int{}
	for _, c := range calls {
		if c.ok() {
			m[c.from]++
		} else {
			m[c.code]++
		}
	}
	return m
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// herdOnce sends n identical calls at once, call i to replica i mod 3.
func (fl *fleet) herdOnce(ctx context.Context, name string, req *vegav1.GenerateRequest) (herdRound, error) {
	return fl.herdOf(ctx, herdN, name, req)
}

// herdOf sends n identical calls at once, call i to replica i mod 3.
func (fl *fleet) herdOf(ctx context.Context, n int, name string, req *vegav1.GenerateRequest) (herdRound, error) {
	before, err := fl.backendCalls()
	if err != nil {
		return herdRound{}, err
	}
	r := herdRound{name: name, calls: make([]call, n)}
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-gate
			r.calls[i] = fl.generate(ctx, i%fleetReplicas, name, req, 30*time.Second, time.Now())
		})
	}
	close(gate)
	wg.Wait()
	after, err := fl.backendCalls()
	r.backend = after - before
	return r, err
}

func (d *driver) fleetHerd(ctx context.Context) error {
	fl, stop, err := d.startFleet(ctx, "fleetherd", queueBackend(herdLatency))
	if err != nil {
		return err
	}
	defer stop()
	var rounds []herdRound
	for i := range herdRounds {
		r, err := fl.herdOnce(ctx, fmt.Sprintf("deterministic %d", i+1), deterministicReq(fmt.Sprintf("the fleet's herd %d", i+1)))
		if err != nil {
			return err
		}
		rounds = append(rounds, r)
	}
	r, err := fl.herdOnce(ctx, "non-deterministic", creativeReq("the fleet's creative herd"))
	if err != nil {
		return err
	}
	rounds = append(rounds, r)
	// Context: one caller per replica, so that no replica has a queue of
	// answers to send on the shared core: the cross-replica cost alone.
	var small []herdRound
	for i := range smallHerds {
		r, err := fl.herdOf(ctx, fleetReplicas, "three", deterministicReq(fmt.Sprintf("one caller per replica %d", i)))
		if err != nil {
			return err
		}
		small = append(small, r)
	}
	smallRow := smallHerdRow(small)

	// The herd's rows stand even when a later step fails: that step's
	// rows then say not measured, and why.
	share, shareErr := d.fleetShare(ctx, fl)
	if shareErr != nil {
		d.report.fail("fleetherd, shared cache", shareErr)
	}
	rtt, rttErr := d.fleetRoundTrips(ctx, fl)
	if rttErr != nil {
		d.report.fail("fleetherd, round trips", rttErr)
	}
	d.fleetHerdReport(fl, rounds, share, shareErr, rtt, rttErr)
	d.report.add(smallRow)
	return ctx.Err()
}

func (d *driver) fleetHerdReport(fl *fleet, rounds []herdRound, share shareResult, shareErr error, rtt rttResult, rttErr error) {
	var body strings.Builder
	fmt.Fprintf(&body, "Placement: %s.\n\n", d.fleetPlacement())
	fmt.Fprintf(&body, "Three `bin/vega-server` processes with the same `REDIS_URL` (through a toxiproxy in the driver to the machine's Redis) and `VEGA_REDIS_PREFIX=%s`, every other setting the default (`VEGA_REDIS_TIMEOUT` 50 ms); backend: fakeupstream `--latency %s --concurrency %d --queue` (an LLM server: %d at a time, the rest queued). "+
		"Each herd is %d identical `Generate` calls released at once by a grpc-go client in the driver, call *i* to replica *i* mod 3 over one connection per replica, 30 s deadlines; the deterministic ones (temperature 0) are kept in the cache, the non-deterministic one is not (the leader hands its answer to the flight's waiters only). "+
		"*Leader replica* is the replica whose caller got `x-vega-served-from: backend`; its other callers are coalesced locally, the callers on the other two replicas wait for the leader's notice through Redis. Latency is each caller's own, from its send.\n\n",
		fl.prefix, herdLatency, queueSlots, queueSlots, herdN)
	body.WriteString("| herd | backend calls | served from | leader replica | leader replica's callers p50 / p99 / max | other replicas' callers p50 / p99 / max | p99 remote − leader |\n|---|---|---|---|---|---|---|\n")
	var allLeader, allRemote []time.Duration
	diffs := p99Gaps(rounds)
	backendOK, errs := true, 0
	var perRound []string
	for _, r := range rounds {
		leader, onL, rem := herdSplit(r.calls)
		counts := countFrom(r.calls)
		errs += herdN - counts[policy.FromBackend] - counts[policy.FromCoalesced] - counts[policy.FromCache] - counts[policy.FromStale]
		backendOK = backendOK && r.backend == 1
		perRound = append(perRound, fmt.Sprint(r.backend))
		allLeader, allRemote = append(allLeader, onL...), append(allRemote, rem...)

		fmt.Fprintf(&body, "| %s | %d | %s | %d | %s / %s / %s | %s / %s / %s | %s |\n", r.name, r.backend, fmtCounts(counts), leader+1,
			ms(quantile(onL, 0.5)), ms(quantile(onL, 0.99)), ms(quantile(onL, 1)),
			ms(quantile(rem, 0.5)), ms(quantile(rem, 0.99)), ms(quantile(rem, 1)), signedMs(quantile(rem, 0.99)-quantile(onL, 0.99)))
	}
	slices.Sort(allLeader)
	slices.Sort(allRemote)
	lp99, rp99 := quantile(allLeader, 0.99), quantile(allRemote, 0.99)
	fmt.Fprintf(&body, "\nThe verdict is on the median over the herds of each herd's *p99 remote − leader*: each herd compares its two sides under the same conditions, while a pooled p99 would be the slowest herd's (one stall of this shared machine moves a whole herd by 100 ms or more). "+
		"All %d herds pooled, for the record: leader replicas' callers p99 %s (%d calls), other replicas' callers p99 %s (%d calls).\n", len(rounds), ms(lp99), len(allLeader), ms(rp99), len(allRemote))
	diffStrs := make([]string, len(diffs))
	for i, x := range diffs {
		diffStrs[i] = signedMs(x)
	}
	medDiff := median(diffs)
	goals := fleetGoals["fleetherd"]
	row := goals[0]
	row.Measured = fmt.Sprintf("backend calls per herd: %s (%d deterministic herds, then 1 non-deterministic); %d caller errors", strings.Join(perRound, ", "), herdRounds, errs)
	row.Ratio = fmt.Sprintf("%s / %d", strings.Join(perRound, ", "), herdN)
	row.Verdict = verdict(backendOK && errs == 0)
	d.report.add(row)
	row = goals[1]
	row.Measured = fmt.Sprintf("remote p99 − leader p99, median of %d herds: %s (per herd: %s; 200 remote and 100 leader-replica callers each; pooled p99s %s vs %s)",
		len(diffs), signedMs(medDiff), strings.Join(diffStrs, ", "), ms(rp99), ms(lp99))
	row.Ratio = signedMs(medDiff)
	row.Verdict = verdict(len(diffs) == len(rounds) && medDiff <= 5*time.Millisecond)
	d.report.add(row)

	if shareErr != nil {
		row = goals[2]
		row.Measured, row.Verdict = "the step failed: "+shareErr.Error(), NotMeasured
		d.report.add(row)
	} else {
		fmt.Fprintf(&body, "\n**Shared cache.** %d distinct deterministic prompts sent at once, prompt *k* to replica *k* mod 3 (%d backend calls); once their answers were in Redis (%d of %d after %s; the driver waits at most 5 s), each prompt was sent to the other two replicas at once: %s; backend calls during that step: %d.\n",
			shareKeys, share.first, share.reached, shareKeys, ms(share.waited), fmtCounts(share.counts), share.second)
		row = goals[2]
		hits := share.counts[policy.FromCache]
		row.Measured = fmt.Sprintf("%d of %d asks on the other replicas were cache hits, %d backend calls (for the %d first asks: %d; %d of their answers in Redis within 5 s)", hits, 2*shareKeys, share.second, shareKeys, share.first, share.reached)
		row.Ratio = fmt.Sprintf("%d/%d hits", hits, 2*shareKeys)
		row.Verdict = verdict(hits == 2*shareKeys && share.second == 0 && share.first == shareKeys)
		d.report.add(row)
	}
	if rttErr != nil {
		for _, row := range goals[3:5] {
			row.Measured, row.Verdict = "the step failed: "+rttErr.Error(), NotMeasured
			d.report.add(row)
		}
		d.report.section("Fleet: a herd over 3 replicas, the shared cache, Redis round trips (issue 11)", "%s", body.String())
		return
	}

	fmt.Fprintf(&body, "\n**Redis round trips.** A round trip is counted by what it costs: a latency toxic of %s on the proxy's downstream (every reply from Redis %s late; `VEGA_REDIS_TIMEOUT` 50 ms still covers two in a row) adds %s per round trip on a call's critical path. "+
		"%d fresh deterministic prompts were sent one after another to replica 1 with and without the toxic (a miss each: local miss, shared-tier read, lease, backend %s, answer stored), then each again (a local hit). Critical-path round trips = (median with − median without) / %s. "+
		"Redis's own `INFO commandstats` is not used: other work on this machine shares that Redis. PerfAdmin's cluster `redis_ops` delta per call (median) is given too; it also counts what the replica sends in the background for the call (the answer's write to the shared tier) and, now and then, a heartbeat.\n\n",
		rttToxic, rttToxic, rttToxic, rttSamples, herdLatency, rttToxic)
	body.WriteString("| call | median latency, no toxic | median latency, +" + rttToxic.String() + " per reply | round trips on the critical path | redis_ops per call (median) |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&body, "| cache miss | %s | %s | %.1f | %d |\n", ms(rtt.missPlain), ms(rtt.missToxic), rtt.missTrips(), rtt.missOps)
	fmt.Fprintf(&body, "| local hit | %s | %s | %.1f | %d |\n", ms(rtt.hitPlain), ms(rtt.hitToxic), rtt.hitTrips(), rtt.hitOps)
	if len(rtt.trace) > 0 {
		fmt.Fprintf(&body, "\nWhat Redis saw of one more miss on replica 1 (MONITOR on a connection of the driver's own; commands under this fleet's prefix but the heartbeats; times from the caller's send, Redis's clock; lower case: a command the replica sent, one round trip each unless pipelined; UPPER CASE: run inside the script above it):\n\n```\n%s\n```\n", strings.Join(rtt.trace, "\n"))
	}
	row = goals[3]
	row.Measured = fmt.Sprintf("%.1f round trips (miss median %s with %s per reply vs %s without); %d redis_ops per miss incl. background", rtt.missTrips(), ms(rtt.missToxic), rttToxic, ms(rtt.missPlain), rtt.missOps)
	row.Ratio = fmt.Sprintf("%.1f", rtt.missTrips())
	row.Verdict = verdict(rtt.missTrips() <= 1.5)
	d.report.add(row)
	row = goals[4]
	row.Measured = fmt.Sprintf("%.1f round trips (hit median %s with the toxic vs %s without); %d redis_ops per hit", rtt.hitTrips(), ms(rtt.hitToxic), ms(rtt.hitPlain), rtt.hitOps)
	row.Ratio = fmt.Sprintf("%.1f", rtt.hitTrips())
	row.Verdict = verdict(rtt.hitTrips() < 0.5 && rtt.hitOps == 0)
	d.report.add(row)
	d.report.section("Fleet: a herd over 3 replicas, the shared cache, Redis round trips (issue 11)", "%s", body.String())
}

const smallHerds = 10

// smallHerdRow is a context row: herds of one caller per replica, the
// remote callers' latency minus the leader's caller's.
func smallHerdRow(rounds []herdRound) Row {
	var gaps []time.Duration
	ones := 0
	for _, r := range rounds {
		if r.backend == 1 {
			ones++
		}
		_, onL, rem := herdSplit(r.calls)
		if len(onL) == 1 {
			for _, x := range rem {
				gaps = append(gaps, x-onL[0])
			}
		}
	}
	slices.Sort(gaps)
	return Row{
		Figure:   fmt.Sprintf("3 replicas + Redis, context: %d herds of 3 identical calls, one per replica (no replica has a queue of answers to send on the shared core)", len(rounds)),
		Goal:     "—",
		Measured: fmt.Sprintf("remote caller − leader's caller: p50 %s, max %s (%d remote callers); herds with exactly 1 backend call: %d of %d", signedMs(quantile(gaps, 0.5)), signedMs(quantile(gaps, 1)), len(gaps), ones, len(rounds)),
		Verdict:  NoGoal,
	}
}

func signedMs(d time.Duration) string {
	if d < 0 {
		return "−" + ms(-d)
	}
	return "+" + ms(d)
}

type shareResult struct {
	first, second int64 // backend calls of the first asks, of the asks on the other replicas
	waited        time.Duration
	reached       int            // answers found in Redis before the second asks
	counts        map[string]int // the second asks by served-from
}

// fleetShare: distinct deterministic prompts on one replica each, then
// the same prompts on the two others once Redis holds the answers.
func (d *driver) fleetShare(ctx context.Context, fl *fleet) (shareResult, error) {
	var res shareResult
	keys0, err := fl.cacheKeys(ctx)
	if err != nil {
		return res, err
	}
	b0, err := fl.backendCalls()
	if err != nil {
		return res, err
	}
	ask := func(other bool) []call {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var out []call
		for k := range shareKeys {
			for j := range fleetReplicas {
				if (j == k%fleetReplicas) == other {
					continue
				}
				wg.Go(func() {
					c := fl.generate(ctx, j, "", deterministicReq(fmt.Sprintf("shared answer %d", k)), 30*time.Second, time.Now())
					mu.Lock()
					out = append(out, c)
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		return out
	}
	first := ask(false)
	for _, c := range first {
		if !c.ok() {
			return res, fmt.Errorf("first ask: %s", c.code)
		}
	}
	b1, err := fl.backendCalls()
	if err != nil {
		return res, err
	}
	res.first = b1 - b0
	t := time.Now()
	for {
		n, err := fl.cacheKeys(ctx)
		if err != nil {
			return res, err
		}
		res.reached = n - keys0
		if n >= keys0+shareKeys || time.Since(t) > 5*time.Second {
			break // an answer not in Redis by then was not shared: asked anyway, counted
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.waited = time.Since(t)
	res.counts = countFrom(ask(true))
	b2, err := fl.backendCalls()
	res.second = b2 - b1
	return res, err
}

type rttResult struct {
	missPlain, missToxic, hitPlain, hitToxic time.Duration
	missOps, hitOps                          int64
	trace                                    []string // what Redis saw of one miss (MONITOR)
}

func (r rttResult) missTrips() float64 { return trips(r.missToxic - r.missPlain) }
func (r rttResult) hitTrips() float64  { return trips(r.hitToxic - r.hitPlain) }

// trips is how many toxic latencies a delay holds, to a tenth (a small
// negative delay is noise: 0).
func trips(d time.Duration) float64 {
	return max(0, math.Round(float64(d)/float64(rttToxic)*10)/10)
}

// fleetRoundTrips measures misses and local hits on replica 1 with and
// without a latency toxic on the replies from Redis.
func (d *driver) fleetRoundTrips(ctx context.Context, fl *fleet) (rttResult, error) {
	var res rttResult
	seq := 0
	measure := func(tag string) (miss, hit time.Duration, missOps, hitOps int64, err error) {
		var m, h []time.Duration
		var mo, ho []int64
		prompts := make([]string, rttSamples)
		for i := range prompts {
			seq++
			prompts[i] = fmt.Sprintf("round trips %s %d", tag, seq)
		}
		for pass := range 2 { // 0: misses, 1: local hits of the same prompts
			for _, p := range prompts {
				before, err := fl.cluster(0)
				if err != nil {
					return 0, 0, 0, 0, err
				}
				c := fl.generate(ctx, 0, p, deterministicReq(p), 10*time.Second, time.Now())
				after, err := fl.cluster(0)
				if err != nil {
					return 0, 0, 0, 0, err
				}
				want := policy.FromBackend
				if pass == 1 {
					want = policy.FromCache
				}
				if !c.ok() || c.from != want {
					return 0, 0, 0, 0, fmt.Errorf("%s pass %d: %s from %q, want OK from %q", tag, pass, c.code, c.from, want)
				}
				ops := after.GetRedisOps() - before.GetRedisOps()
				if pass == 0 {
					m, mo = append(m, c.latency), append(mo, ops)
				} else {
					h, ho = append(h, c.latency), append(ho, ops)
				}
			}
		}
		return median(m), median(h), median(mo), median(ho), nil
	}
	var err error
	if res.missPlain, res.hitPlain, res.missOps, res.hitOps, err = measure("plain"); err != nil {
		return res, err
	}
	if _, err := fl.proxy.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(`{"name":"rtt","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, rttToxic.Milliseconds()))); err != nil {
		return res, err
	}
	time.Sleep(200 * time.Millisecond) // let replies already on their way pass
	res.missToxic, res.hitToxic, _, _, err = measure("toxic")
	if rerr := fl.proxy.Toxics.RemoveToxic(context.Background(), "rtt"); err == nil {
		err = rerr
	}
	if err != nil {
		return res, err
	}
	// One more miss, with Redis's MONITOR on: the commands it took.
	mon, err := monitorRedis(d.redisAddr, fl.prefix)
	if err != nil {
		return res, err
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	c := fl.generate(ctx, 0, "", deterministicReq("round trips traced"), 10*time.Second, start)
	end := time.Now()
	time.Sleep(300 * time.Millisecond) // the background write
	lines := mon()
	if !c.ok() {
		return res, fmt.Errorf("traced miss: %s", c.code)
	}
	res.trace = traceLines(lines, fl.prefix, start, end)
	return res, nil
}

// monitored is a command Redis's MONITOR reported, and when (Redis's clock,
// the same machine's).
type monitored struct {
	at   time.Time
	line string
}

// monitorRedis runs MONITOR on its own connection (a raw one: go-redis's
// Monitor spins on its reader) and keeps the commands that name prefix,
// except the heartbeats; stop ends it and returns them.
func monitorRedis(addr, prefix string) (stop func() []monitored, err error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		conn.Close()
		return nil, err
	}
	rd := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if l, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
		conn.Close()
		return nil, fmt.Errorf("MONITOR: %q, %v", l, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	var (
		mu  sync.Mutex
		out []monitored
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			l, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			if !strings.Contains(l, prefix) || strings.Contains(l, prefix+":v1:m") {
				continue
			}
			// +1733250000.123456 [0 127.0.0.1:5555] "get" "key"
			l = strings.TrimSpace(strings.TrimPrefix(l, "+"))
			ts, rest, _ := strings.Cut(l, " ")
			f, err := strconv.ParseFloat(ts, 64)
			if err != nil {
				continue
			}
			if i := strings.Index(rest, "] "); i >= 0 {
				rest = rest[i+2:]
			}
			mu.Lock()
			out = append(out, monitored{at: time.Unix(0, int64(f*1e9)), line: rest})
			mu.Unlock()
		}
	}()
	return func() []monitored {
		// Lines Redis wrote before the replies the caller has seen are in
		// the socket by now: read them, then stop.
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		<-done
		conn.Close()
		mu.Lock()
		defer mu.Unlock()
		return out
	}, nil
}

// traceLines formats what MONITOR saw around a call that ran from start to
// end: time from the start, during the call or after its answer, the
// command with the prefix shortened and long arguments cut.
func traceLines(seen []monitored, prefix string, start, end time.Time) []string {
	var out []string
	for _, m := range seen {
		when := "during the call"
		if m.at.After(end) {
			when = "after the answer"
		} else if m.at.Before(start) {
			when = "before the call"
		}
		l := strings.ReplaceAll(m.line, prefix, "<prefix>")
		if len(l) > 140 {
			l = l[:140] + "…"
		}
		out = append(out, fmt.Sprintf("%+8.1f ms  %-16s %s", float64(m.at.Sub(start))/1e6, when, l))
	}
	return out
}

func median[T int64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// --- fleetlimit ------------------------------------------------------------

const (
	fleetLimit    = 20.0 // req/s, the fleet's configured rate ceiling
	fleetLimitDur = 30 * time.Second
	fleetWarm     = 5 * time.Second // excluded from the steady-state figure
)

// openLoadFleet sends rate calls/s in all, round robin over the replicas,
// each call its own goroutine (open loop), for dur; req makes call n's
// request and key. It returns every call, in sending order.
func (fl *fleet) openLoad(ctx context.Context, rate float64, dur, deadline time.Duration, req func(n int, since time.Duration) (string, *vegav1.GenerateRequest)) []call {
	total := int(rate * dur.Seconds())
	calls := make([]call, total)
	began := time.Now()
	var wg sync.WaitGroup
	for n := range total {
		at := began.Add(time.Duration(float64(n) / rate * float64(time.Second)))
		if w := time.Until(at); w > 0 {
			if sleepCtx(ctx, w) != nil {
				calls = calls[:n]
				break
			}
		}
		key, r := req(n, time.Since(began))
		wg.Go(func() { calls[n] = fl.generate(ctx, n%fleetReplicas, key, r, deadline, began) })
	}
	wg.Wait()
	return calls
}

// sampleBackend polls the fake upstream's request count every `every`
// until stop is closed; the counts are cumulative from the first poll.
func (fl *fleet) sampleBackend(every time.Duration, began time.Time, stop <-chan struct{}) func() []plotter.XY {
	var mu sync.Mutex
	var out []plotter.XY
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if n, err := fl.backendCalls(); err == nil {
				mu.Lock()
				out = append(out, plotter.XY{X: time.Since(began).Seconds(), Y: float64(n)})
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() []plotter.XY { <-done; mu.Lock(); defer mu.Unlock(); return out }
}

// rateBetween is the rate of a cumulative count between times from and to
// (seconds), from the samples nearest inside them.
func rateBetween(cum []plotter.XY, from, to float64) float64 {
	var a, b *plotter.XY
	for i := range cum {
		if a == nil && cum[i].X >= from {
			a = &cum[i]
		}
		if cum[i].X <= to {
			b = &cum[i]
		}
	}
	if a == nil || b == nil || b.X <= a.X {
		return 0
	}
	return (b.Y - a.Y) / (b.X - a.X)
}

// perSecondOf turns a cumulative count into counts per whole second.
func perSecondOf(cum []plotter.XY, dur time.Duration) plotter.XYs {
	var xy plotter.XYs
	for s := 0; s < int(dur.Seconds()); s++ {
		xy = append(xy, plotter.XY{X: float64(s) + 0.5, Y: rateBetween(cum, float64(s), float64(s+1))})
	}
	return xy
}

func (d *driver) fleetLimitScenario(ctx context.Context) error {
	limit := fmt.Sprint(fleetLimit)
	fl, stop, err := d.startFleet(ctx, "fleetlimit", queueBackend(queueLatency), "INITIAL_RATE_LIMIT="+limit, "MAX_RATE_LIMIT="+limit)
	if err != nil {
		return err
	}
	defer stop()
	dur := fleetLimitDur
	if d.quick {
		dur = 15 * time.Second
	}
	offered := 3 * fleetLimit
	began := time.Now()
	stopS := make(chan struct{})
	samples := fl.sampleBackend(250*time.Millisecond, began, stopS)
	calls := fl.openLoad(ctx, offered, dur, queueDeadline, func(n int, _ time.Duration) (string, *vegav1.GenerateRequest) {
		p := fmt.Sprintf("fleet limit %d", n)
		return p, creativeReq(p)
	})
	close(stopS)
	cum := samples()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	steady := rateBetween(cum, fleetWarm.Seconds(), dur.Seconds())
	perSec := perSecondOf(cum, dur)
	var per [fleetReplicas]map[string]int
	for i := range per {
		per[i] = map[string]int{}
	}
	for _, c := range calls {
		if c.ok() {
			per[c.replica]["OK"]++
		} else {
			per[c.replica][c.code]++
		}
	}
	var rates [fleetReplicas]float64
	for i := range fleetReplicas {
		s, err := fl.gws[i].stats(vegav1.StatsSection_STATS_SECTION_RATE_LIMITERS)
		if err == nil {
			rates[i] = limiterStats(s, "ollama").GetCurrentRate()
		}
	}
	var body strings.Builder
	fmt.Fprintf(&body, "Placement: %s.\n\n", d.fleetPlacement())
	fmt.Fprintf(&body, "Three gateways on one Redis prefix with `INITIAL_RATE_LIMIT=MAX_RATE_LIMIT=%s` (the fleet's rate ceiling for the backend, kept in Redis as a GCRA and granted to replicas in 20 ms batches; everything else default); backend: fakeupstream `--latency %s --concurrency %d --queue` (capacity %.0f/s, an LLM server that queues and never answers 429). "+
		"Offered: %.0f distinct non-deterministic `Generate` calls/s in all (3× the limit), open loop, round robin over the replicas (%.0f/s each), %s deadlines, for %s. "+
		"*Backend rate* is what the fake upstream received (its own request count, sampled every 250 ms), over the run after the first %s.\n\n",
		limit, queueLatency, queueSlots, queueCapacity, offered, offered/3, queueDeadline, dur, fleetWarm)
	body.WriteString("| replica | calls sent | outcomes | limiter current_rate at the end |\n|---|---|---|---|\n")
	for i := range fleetReplicas {
		sent := 0
		for _, n := range per[i] {
			sent += n
		}
		fmt.Fprintf(&body, "| %d | %d | %s | %.1f/s |\n", i+1, sent, fmtCounts(per[i]), rates[i])
	}
	fmt.Fprintf(&body, "\nBackend calls per second, second by second: %s.\n", fmtXY(perSec))
	row := fleetGoals["fleetlimit"][0]
	dev := (steady - fleetLimit) / fleetLimit
	row.Measured = fmt.Sprintf("%.1f backend calls/s (limit %s/s, offered %.0f/s over 3 replicas; seconds %g–%g)", steady, limit, offered, fleetWarm.Seconds(), dur.Seconds())
	row.Ratio = fmt.Sprintf("%+.1f %%", 100*dev)
	row.Verdict = verdict(dev >= -0.1 && dev <= 0.1)
	d.report.add(row)
	d.report.section("Fleet: the rate ceiling of 3 replicas (issue 11)", "%s", body.String())
	d.savePlot("fleet-rate.png", fmt.Sprintf("3 replicas sharing a %s/s rate ceiling through Redis, offered %.0f calls/s: what the backend received per second.", limit, offered),
		func(path string) error {
			return plotLines("Fleet rate ceiling: backend calls per second", "time, s", "calls/s", []series{
				{name: "backend received", color: modeColors["adaptive"], xy: perSec},
				{name: "configured limit", color: color.Black, dashed: true, xy: flat(fleetLimit, dur)},
				{name: "offered", color: modeColors["fixed"], dashed: true, xy: flat(offered, dur)},
			}, path)
		})
	return nil
}

func fmtXY(xy plotter.XYs) string {
	parts := make([]string, len(xy))
	for i, p := range xy {
		parts[i] = strconv.FormatFloat(p.Y, 'g', 3, 64)
	}
	return strings.Join(parts, " ")
}

// --- fleetredis ------------------------------------------------------------

const (
	redisLoadRate = 150.0 // calls/s over the fleet
	keyWindow     = 250 * time.Millisecond
	keysPerWindow = 10
	redisUpFirst  = 5 * time.Second
	redisDownFor  = 10 * time.Second
	redisUpAfter  = 15 * time.Second
	resumeGoal    = 5 * time.Second
)

// keyWindowOf is the window a key of the fleetredis load belongs to.
func keyWindowOf(since time.Duration) int { return int(since / keyWindow) }

// keyShare is, over the keys whose window starts in [from, to), how many
// were asked on two replicas or more (multi) and how many of those the
// backend was asked for once for the whole fleet (once): a shared answer,
// through a cross-replica flight or the shared tier, so through Redis.
func keyShare(calls []call, from, to time.Duration) (multi, once int) {
	type seen struct {
		replicas map[int]bool
		backend  int
	}
	keys := map[string]*seen{}
	for _, c := range calls {
		w := time.Duration(keyWindowOf(c.start)) * keyWindow
		if w < from || w >= to {
			continue
		}
		k := keys[c.key]
		if k == nil {
			k = &seen{replicas: map[int]bool{}}
			keys[c.key] = k
		}
		k.replicas[c.replica] = true
		if c.ok() && c.from == policy.FromBackend {
			k.backend++
		}
	}
	for _, k := range keys {
		if len(k.replicas) >= 2 {
			multi++
			if k.backend == 1 {
				once++
			}
		}
	}
	return multi, once
}

// share is once/multi, 0 when there is no such key.
func share(multi, once int) float64 {
	if multi == 0 {
		return 0
	}
	return float64(once) / float64(multi)
}

// resumeAfter is how long after back the fleet shared an answer again:
// the start of the first key window at or after back with a key asked on
// two replicas or more and fetched from the backend once. ok is false when
// there was none.
func resumeAfter(calls []call, back time.Duration) (time.Duration, bool) {
	last := time.Duration(-1)
	for _, c := range calls {
		last = max(last, time.Duration(keyWindowOf(c.start))*keyWindow)
	}
	for w := back.Truncate(keyWindow); w <= last; w += keyWindow {
		if w < back {
			continue
		}
		if _, once := keyShare(calls, w, w+keyWindow); once > 0 {
			return w - back, true
		}
	}
	return 0, false
}

// backendPerKey is, per key window, the backend calls (callers served
// from the backend) per distinct key.
func backendPerKey(calls []call, dur time.Duration) plotter.XYs {
	n := int(dur / keyWindow)
	keys := make([]map[string]bool, n)
	backend := make([]int, n)
	for _, c := range calls {
		w := keyWindowOf(c.start)
		if w >= n {
			continue
		}
		if keys[w] == nil {
			keys[w] = map[string]bool{}
		}
		keys[w][c.key] = true
		if c.ok() && c.from == policy.FromBackend {
			backend[w]++
		}
	}
	var xy plotter.XYs
	for w := range n {
		if len(keys[w]) > 0 {
			xy = append(xy, plotter.XY{X: (time.Duration(w)*keyWindow + keyWindow/2).Seconds(), Y: float64(backend[w]) / float64(len(keys[w]))})
		}
	}
	return xy
}

func (d *driver) fleetRedis(ctx context.Context) error {
	fl, stop, err := d.startFleet(ctx, "fleetredis", []string{"--latency", "50ms", "--concurrency", "16", "--queue"}, highLimits...)
	if err != nil {
		return err
	}
	defer stop()
	down, back := redisUpFirst, redisUpFirst+redisDownFor
	dur := back + redisUpAfter
	b0, err := fl.backendCalls()
	if err != nil {
		return err
	}
	began := time.Now()
	// The fault, on its own schedule, and the replicas' mode every 100 ms.
	type modeAt struct {
		at    time.Duration
		local int // replicas in mode "local"
	}
	var (
		modes   []modeAt
		faultMu sync.Mutex
		ferr    error
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		if sleepCtx(ctx, time.Until(began.Add(down))) != nil {
			return
		}
		fl.proxy.Stop()
		if sleepCtx(ctx, time.Until(began.Add(back))) != nil {
			return
		}
		if err := fl.proxy.Start(); err != nil {
			faultMu.Lock()
			ferr = err
			faultMu.Unlock()
		}
	})
	wg.Go(func() {
		for time.Since(began) < dur && ctx.Err() == nil {
			local := 0
			for i := range fleetReplicas {
				if c, err := fl.cluster(i); err == nil && c.GetMode() == "local" {
					local++
				}
			}
			faultMu.Lock()
			modes = append(modes, modeAt{time.Since(began), local})
			faultMu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	})
	calls := fl.openLoad(ctx, redisLoadRate, dur, 5*time.Second, func(n int, since time.Duration) (string, *vegav1.GenerateRequest) {
		k := fmt.Sprintf("redis fault %d-%d", keyWindowOf(since), n%keysPerWindow)
		return k, deterministicReq(k)
	})
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ferr != nil {
		return ferr
	}
	b1, err := fl.backendCalls()
	if err != nil {
		return err
	}
	backend := b1 - b0
	keys := map[string]bool{}
	errsBy := map[string]int{}
	var slowest time.Duration
	fromBackend := 0
	for _, c := range calls {
		keys[c.key] = true
		slowest = max(slowest, c.latency)
		if !c.ok() {
			errsBy[c.code]++
		} else if c.from == policy.FromBackend {
			fromBackend++
		}
	}
	nerr := 0
	for _, n := range errsBy {
		nerr += n
	}
	resume, resumed := resumeAfter(calls, back)
	allRedis := time.Duration(-1) // when every replica was first in mode redis again
	for _, m := range modes {
		if m.at >= back && m.local == 0 {
			allRedis = m.at - back
			break
		}
	}
	upM, upO := keyShare(calls, 0, down)
	downM, downO := keyShare(calls, down, back)
	endM, endO := keyShare(calls, dur-resumeGoal, dur) // the last 5 s
	shareUp, shareEnd := share(upM, upO), share(endM, endO)
	// Resumed: shared again within the goal, and as much as before the
	// kill over the last 5 s (not one lucky key).
	resumedOK := resumed && resume <= resumeGoal && shareEnd >= 0.9*shareUp
	maxLocal := 0
	for _, m := range modes {
		if m.at >= down && m.at < back {
			maxLocal = max(maxLocal, m.local)
		}
	}
	perKey := backendPerKey(calls, dur)
	var phaseMean func(from, to time.Duration) float64 = func(from, to time.Duration) float64 {
		s, n := 0.0, 0
		for _, p := range perKey {
			if p.X >= from.Seconds() && p.X < to.Seconds() {
				s += p.Y
				n++
			}
		}
		if n == 0 {
			return 0
		}
		return s / float64(n)
	}
	clusters := make([]*vegav1.ClusterStats, fleetReplicas)
	for i := range fleetReplicas {
		clusters[i], _ = fl.cluster(i)
	}

	var body strings.Builder
	fmt.Fprintf(&body, "Placement: %s.\n\n", d.fleetPlacement())
	fmt.Fprintf(&body, "Three gateways on one Redis prefix, `VEGA_REDIS_TIMEOUT` 50 ms (the default), rate and concurrency limits out of the way (100000: this scenario is about Redis, not the limiter); backend: fakeupstream `--latency 50ms --concurrency 16 --queue`. "+
		"Load: %.0f deterministic `Generate` calls/s, open loop, round robin over the replicas, 5 s deadlines; %d new keys every %s, each asked about %.1f times over the replicas within its window. "+
		"Redis is up for %s, then *killed* (the toxiproxy between the gateways and Redis disabled: open connections closed, new ones refused) for %s, then back for %s.\n\n",
		redisLoadRate, keysPerWindow, keyWindow, redisLoadRate*keyWindow.Seconds()/keysPerWindow, redisUpFirst, redisDownFor, redisUpAfter)
	fmt.Fprintf(&body, "- calls: %d over %d distinct keys; caller errors: %d (%s); slowest call %s\n", len(calls), len(keys), nerr, fmtCounts(errsBy), ms(slowest))
	for _, ph := range []struct {
		name     string
		from, to time.Duration
	}{{"before the kill", 0, down}, {"while Redis was down", down, back}, {"after Redis came back", back, dur}} {
		var lat []time.Duration
		slow := 0
		for _, c := range calls {
			if c.start >= ph.from && c.start < ph.to {
				lat = append(lat, c.latency)
				if c.latency > time.Second {
					slow++
				}
			}
		}
		slices.Sort(lat)
		fmt.Fprintf(&body, "- latency of calls sent %s: p50 %s, p99 %s, max %s; %d slower than 1 s\n", ph.name, ms(quantile(lat, 0.5)), ms(quantile(lat, 0.99)), ms(quantile(lat, 1)), slow)
	}
	fmt.Fprintf(&body, "- backend calls: %d (fake upstream), %d callers served from the backend; bound: keys × replicas = %d\n", backend, fromBackend, len(keys)*fleetReplicas)
	fmt.Fprintf(&body, "- backend calls per key (mean over key windows): %.2f while Redis was up, %.2f while it was down, %.2f after it came back\n",
		phaseMean(0, down), phaseMean(down, back), phaseMean(back, dur))
	fmt.Fprintf(&body, "- replicas in mode local (PerfAdmin cluster, polled every 100 ms) while Redis was down: up to %d of 3; all 3 in mode redis again %s after Redis came back\n", maxLocal, afterOrNever(allRedis))
	fmt.Fprintf(&body, "- keys asked on two replicas or more and fetched from the backend once for the whole fleet (shared through Redis): %d of %d (%.0f %%) before the kill, %d of %d (%.0f %%) while Redis was down, %d of %d (%.0f %%) in the last %s\n",
		upO, upM, 100*shareUp, downO, downM, 100*share(downM, downO), endO, endM, 100*shareEnd, resumeGoal)
	if resumed {
		fmt.Fprintf(&body, "- the first such key after Redis came back was in the key window starting %s after it\n", ms(resume))
	} else {
		body.WriteString("- no key was shared across replicas after Redis came back\n")
	}
	perSec := perSecondMean(perKey)
	fmt.Fprintf(&body, "- backend calls per key, each second (mean of its key windows): %s\n", fmtXY(perSec))
	var relapses []string
	for _, p := range perSec {
		if p.X > back.Seconds()+1 && p.Y > 1.5 {
			relapses = append(relapses, fmt.Sprintf("%.0f s", p.X-0.5))
		}
	}
	var localAgain []string // polls after the first all-redis one that found a replica local again
	for _, m := range modes {
		if allRedis >= 0 && m.at > back+allRedis && m.local > 0 {
			localAgain = append(localAgain, fmt.Sprintf("%.1f s (%d)", m.at.Seconds(), m.local))
		}
	}
	if len(localAgain) > 0 {
		fmt.Fprintf(&body, "- polls that found replicas in mode local again after all three had rejoined (time, how many): %s\n", strings.Join(localAgain, ", "))
	}
	if len(relapses) > 0 {
		fmt.Fprintf(&body, "- seconds, more than one after Redis came back, with more than 1.5 backend calls per key (the fleet apart again): %s (Redis came back at %g s)\n", strings.Join(relapses, ", "), back.Seconds())
	}
	body.WriteString("\nPerfAdmin's cluster section of each replica at the end:\n\n| replica | breaker opens | redis errors | fallbacks (ops not sent) | leases won / lost | takeovers | fleet-coalesced | remote hits / misses | Redis round trip p50 / p99 (last 1024 ops) |\n|---|---|---|---|---|---|---|---|---|\n")
	for i, c := range clusters {
		fmt.Fprintf(&body, "| %d | %d | %d | %d | %d / %d | %d | %d | %d / %d | %.2f / %.2f ms |\n", i+1, c.GetBreakerOpens(), c.GetRedisErrors(), c.GetRedisFallbacks(),
			c.GetLeasesWon(), c.GetLeasesLost(), c.GetLeaseTakeovers(), c.GetFleetCoalesced(), c.GetRemoteHits(), c.GetRemoteMisses(), c.GetRedisRttP50Ms(), c.GetRedisRttP99Ms())
	}
	goals := fleetGoals["fleetredis"]
	row := goals[0]
	row.Measured = fmt.Sprintf("%d errors in %d calls (Redis down %s of %s); slowest call %s", nerr, len(calls), redisDownFor, dur, ms(slowest))
	row.Ratio = fmt.Sprintf("%d/%d", nerr, len(calls))
	row.Verdict = verdict(nerr == 0 && len(calls) > 0)
	d.report.add(row)
	row = goals[1]
	row.Measured = fmt.Sprintf("%d backend calls for %d distinct keys (bound %d); per key %.2f with Redis down, %.2f up", backend, len(keys), len(keys)*fleetReplicas, phaseMean(down, back), phaseMean(0, down))
	row.Ratio = ratio(float64(backend), float64(len(keys)*fleetReplicas))
	row.Verdict = verdict(backend <= int64(len(keys)*fleetReplicas))
	d.report.add(row)
	row = goals[2]
	if resumed {
		row.Measured = fmt.Sprintf("first answer shared across replicas %s after Redis came back (all replicas in mode redis %s after); keys shared over the last %s: %.0f %% (before the kill %.0f %%)",
			ms(resume), afterOrNever(allRedis), resumeGoal, 100*shareEnd, 100*shareUp)
		row.Ratio = ratio(float64(resume), float64(resumeGoal))
	} else {
		row.Measured = fmt.Sprintf("no answer shared across replicas in the %s of load after Redis came back", redisUpAfter)
	}
	row.Verdict = verdict(resumedOK)
	d.report.add(row)
	d.report.section("Fleet: Redis killed under load (issue 11)", "%s", body.String())
	d.savePlot("fleet-redis.png", fmt.Sprintf("3 replicas, %0.f calls/s over fresh keys; Redis killed from %gs to %gs: backend calls per distinct key in each %s key window (1 = coalesced across the fleet, up to 3 = each replica alone).",
		redisLoadRate, down.Seconds(), back.Seconds(), keyWindow),
		func(path string) error {
			return plotLines("Redis killed under load: backend calls per key", "time, s", "backend calls per key", []series{
				{name: "backend calls per key", color: modeColors["adaptive"], xy: perKey},
				{name: "Redis down", color: color.Black, dashed: true, xy: plotter.XYs{{X: down.Seconds(), Y: 0}, {X: down.Seconds(), Y: 3}, {X: back.Seconds(), Y: 3}, {X: back.Seconds(), Y: 0}}},
			}, path)
		})
	return nil
}

// perSecondMean averages a series' points by whole second.
func perSecondMean(xy plotter.XYs) plotter.XYs {
	var out plotter.XYs
	sum, n, sec := 0.0, 0, -1
	flush := func() {
		if n > 0 {
			out = append(out, plotter.XY{X: float64(sec) + 0.5, Y: sum / float64(n)})
		}
	}
	for _, p := range xy {
		if s := int(p.X); s != sec {
			flush()
			sum, n, sec = 0, 0, s
		}
		sum += p.Y
		n++
	}
	flush()
	return out
}

func afterOrNever(d time.Duration) string {
	if d < 0 {
		return "never (before the load ended)"
	}
	return ms(d)
}
