package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// dialCounter is a plain TCP relay in front of a toxiproxy that counts
// every connection a gateway opens, also while the proxy is down (then it
// accepts and closes at once, which the client sees as a dead server): the
// F7/F8 measure of a dial storm. toxiproxy has no such counter.
type dialCounter struct {
	ln     net.Listener
	target string
	dials  atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // guarded by mu
}

func newDialCounter(t *testing.T, target string) *dialCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dialCounter{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	d.wg.Go(d.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		d.mu.Lock()
		for c := range d.conns {
			_ = c.Close()
		}
		d.mu.Unlock()
		d.wg.Wait()
	})
	return d
}

func (d *dialCounter) addr() string { return d.ln.Addr().String() }

func (d *dialCounter) track(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conns == nil {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *dialCounter) accept() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			d.mu.Lock()
			d.conns = nil
			d.mu.Unlock()
			return
		}
		d.dials.Add(1)
		up, err := net.DialTimeout("tcp", d.target, time.Second)
		if err != nil || !d.track(c) || !d.track(up) {
			_ = c.Close()
			if up != nil {
				_ = up.Close()
			}
			continue
		}
		d.wg.Go(func() { d.pipe(c, up) })
	}
}

func (d *dialCounter) pipe(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = a.Close()
			_ = b.Close()
			d.mu.Lock()
			if d.conns != nil {
				delete(d.conns, a)
				delete(d.conns, b)
			}
			d.mu.Unlock()
		})
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(a, b); closeBoth(); close(done) }()
	_, _ = io.Copy(b, a)
	closeBoth()
	<-done
}

// clusterStats is the replica's fleet section.
func clusterStats(t *testing.T, g *gateway) *vegav1.ClusterStats {
	t.Helper()
	return g.Stats(t).GetCluster()
}

// startFleet starts n gateways sharing Redis at redisAddr under a fresh
// prefix and waits until each sees all of them.
func startFleet(t *testing.T, n int, redisAddr string, env map[string]string) []*gateway {
	t.Helper()
	env = merge(env, map[string]string{"REDIS_URL": "redis://" + redisAddr + "/0", "VEGA_REDIS_PREFIX": redisPrefix(t)})
	gws := make([]*gateway, n)
	for i := range gws {
		gws[i] = startGateway(t, env)
	}
	for _, g := range gws {
		eventually(t, "every replica sees the fleet", func() bool {
			c := clusterStats(t, g)
			return c.GetReplicasSeen() == int64(n) && c.GetSubscribed()
		})
	}
	return gws
}

// fleetLoad runs deterministic Generates over the gateways from workers
// until stop is called: keys change every 500 ms (10 per slot), so new keys
// keep arriving during a fault.
type fleetLoad struct {
	calls   atomic.Int64
	codes   codeTally
	slowest atomic.Int64
	keys    sync.Map
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startFleetLoad(t *testing.T, gws []*gateway, workers int) *fleetLoad {
	l := &fleetLoad{stop: make(chan struct{})}
	begin := time.Now()
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("f7-%d-%d", time.Since(begin)/(500*time.Millisecond), (w*7+i)%10)
				l.keys.Store(key, true)
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _, err := generate(ctx, gws[(w+i)%len(gws)], genReq("m", key))
				cancel()
				took := int64(time.Since(start))
				for old := l.slowest.Load(); took > old && !l.slowest.CompareAndSwap(old, took); old = l.slowest.Load() {
				}
				l.calls.Add(1)
				l.codes.add(err)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *fleetLoad) end() (keys int) {
	close(l.stop)
	l.wg.Wait()
	l.keys.Range(func(any, any) bool { keys++; return true })
	return keys
}

// runtimeLine is the replicas' goroutines and heap.
func runtimeLine(t *testing.T, gws []*gateway) string {
	parts := make([]string, len(gws))
	for i, g := range gws {
		r := g.Runtime(t)
		parts[i] = fmt.Sprintf("%d/%.1f MiB", r.Goroutines, float64(r.HeapBytes)/(1<<20))
	}
	return strings.Join(parts, ", ")
}

// TestF7RedisDown: Redis goes away for 5 s under steady load on a fleet of
// three gateway processes, then comes back.
func TestF7RedisDown(t *testing.T) {
	slow(t)
	record(t, Row{ID: "F7",
		Did: "Redis: 3 gateway processes sharing Redis through toxiproxy (and a relay counting every connection the gateways open), " +
			"VEGA_REDIS_TIMEOUT 250 ms, 6 workers of deterministic Generates (new keys every 500 ms) against a 20 ms backend: 3 s healthy, " +
			"Redis down 5 s (proxy stopped), 3 s after it returns. PostgreSQL: a gateway with VEGA_POSTGRES_URL through toxiproxy, 2 " +
			"workers sending Notify (unique idempotency keys, 3 s deadlines) for 2 s, PostgreSQL down 4 s, 3 s after; every refused call " +
			"retried with its key once PostgreSQL is back.",
		MustHold: "Redis: 0 caller-visible errors; every replica's Redis breaker opens (mode local) and the connections it opens while Redis " +
			"is down stay few (no per-call dial storm); backend calls ≤ distinct keys × 3; every replica back on Redis after it returns " +
			"(time measured). PostgreSQL: each Notify is OK (accepted) or UNAVAILABLE with RetryInfo, never another error; every accepted " +
			"notification delivered, 0 lost; each retried key delivered once.",
	})
	var lines []string
	t.Run("redis", func(t *testing.T) {
		llm := newFakeLLM(t, llmOpts{Latency: 20 * time.Millisecond})
		p := newProxy(t, redisAddr)
		relay := newDialCounter(t, p.Listen)
		gws := startFleet(t, 3, relay.addr(), merge(roomy, llm.env(), map[string]string{"VEGA_REDIS_TIMEOUT": "250ms"}))
		before := runtimeLine(t, gws)
		load := startFleetLoad(t, gws, 6)
		time.Sleep(3 * time.Second)
		callsBefore := load.calls.Load()
		p.Stop()
		downAt := time.Now()
		dialsAtDown := relay.dials.Load()
		time.Sleep(5 * time.Second)
		dialsDown := relay.dials.Load() - dialsAtDown
		callsDown := load.calls.Load() - callsBefore
		modes := make([]string, len(gws))
		for i, g := range gws {
			modes[i] = clusterStats(t, g).GetMode()
		}
		if err := p.Start(); err != nil {
			t.Fatalf("Redis proxy back up: %v", err)
		}
		upAt := time.Now()
		downFor := upAt.Sub(downAt)
		back := eventually(t, "every replica uses Redis again", func() bool {
			for _, g := range gws {
				if clusterStats(t, g).GetMode() != "redis" {
					return false
				}
			}
			return true
		})
		time.Sleep(3 * time.Second)
		keys := load.end()
		if load.codes.get(codes.OK) != load.codes.total() {
			t.Fatalf("callers saw errors: %s", load.codes.String())
		}
		for i, g := range gws {
			if c := clusterStats(t, g); c.GetBreakerOpens() == 0 || c.GetRedisFallbacks() == 0 {
				t.Fatalf("replica %d never fell back to local with Redis down: %d breaker opens, %d fallbacks", i+1, c.GetBreakerOpens(), c.GetRedisFallbacks())
			}
		}
		// No storm: a dial per call would be hundreds; the breaker, the
		// heartbeat and the subscription each retry on a timer, a few times
		// a second per replica whatever the call rate.
		if bound := int64(len(gws)) * (int64(downFor/time.Second) + 2) * 6; dialsDown > bound {
			t.Fatalf("%d connections opened to Redis in %s down (%d calls), want ≤ %d", dialsDown, downFor, callsDown, bound)
		}
		if calls := llm.calls.Load(); calls > int64(keys*3) {
			t.Fatalf("%d backend calls for %d keys over 3 replicas", calls, keys)
		}
		opens := make([]string, len(gws))
		for i, g := range gws {
			c := clusterStats(t, g)
			opens[i] = fmt.Sprintf("%d", c.GetBreakerOpens())
		}
		lines = append(lines, fmt.Sprintf("Redis: %d calls (%d while down), %s, slowest %s; modes while down: %s; Redis breaker opens per "+
			"replica: %s; connections opened to Redis while down: %d in %s (relay count; a dial per call would be %d); backend calls %d for %d distinct keys "+
			"(bound %d); every replica back on Redis %s after it returned; replicas' goroutines/heap %s → %s",
			load.calls.Load(), callsDown, load.codes.String(), time.Duration(load.slowest.Load()).Round(time.Millisecond),
			strings.Join(modes, "/"), strings.Join(opens, "/"), dialsDown, downFor.Round(100*time.Millisecond), callsDown, llm.calls.Load(), keys,
			keys*3, back.Round(10*time.Millisecond), before, runtimeLine(t, gws)))
	})
	t.Run("postgres", func(t *testing.T) {
		hook := newFakeHook(t)
		dbURL := pgDatabase(t)
		p := newProxy(t, "127.0.0.1:5432")
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = p.Listen
		g := startGateway(t, merge(fastOutbox, hook.webhookEnv(), map[string]string{
			"VEGA_POSTGRES_URL": u.String(), "VEGA_NOTIFY_MAX_WAIT": "0s",
		}))
		var (
			c        codeTally
			mu       sync.Mutex
			accepted = map[string]bool{} // text → accepted (OK)
			refused  []string            // texts refused with UNAVAILABLE
			bad      []string
			seq      atomic.Int64
			stop     = make(chan struct{})
			wg       sync.WaitGroup
		)
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					text := fmt.Sprintf("f7-pg-%04d", seq.Add(1))
					_, err := notifyCall(ctxFor(t, 3*time.Second), g, "webhook", text, "key-"+text)
					code := c.add(err)
					mu.Lock()
					switch {
					case code == codes.OK:
						accepted[text] = true
					case code == codes.Unavailable && retryDelay(err) > 0:
						refused = append(refused, text)
					default:
						bad = append(bad, fmt.Sprintf("%s: %v", text, err))
					}
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		time.Sleep(2 * time.Second)
		p.Stop()
		time.Sleep(4 * time.Second)
		if err := p.Start(); err != nil {
			t.Fatalf("PostgreSQL proxy back up: %v", err)
		}
		upAt := time.Now()
		var firstOK time.Duration
		for firstOK == 0 {
			text := fmt.Sprintf("f7-pg-probe-%d", seq.Add(1))
			_, err := notifyCall(ctxFor(t, 3*time.Second), g, "webhook", text, "key-"+text)
			if err == nil {
				firstOK = time.Since(upAt)
				mu.Lock()
				accepted[text] = true
				mu.Unlock()
			} else if time.Since(upAt) > generous {
				t.Fatalf("Notify still failing %s after PostgreSQL returned: %v", generous, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(3 * time.Second)
		close(stop)
		wg.Wait()
		if len(bad) > 0 {
			t.Fatalf("%d Notify calls neither accepted nor refused with UNAVAILABLE + RetryInfo: %v", len(bad), bad[:min(3, len(bad))])
		}
		if len(refused) == 0 {
			t.Fatalf("no Notify was refused while PostgreSQL was down (%s): the fault did not bite", c.String())
		}
		// The callers retry what was refused, with the same key.
		retriedOK := 0
		for _, text := range refused {
			_, err := notifyCall(ctxFor(t, 10*time.Second), g, "webhook", text, "key-"+text)
			if err != nil {
				t.Fatalf("retrying %s after PostgreSQL returned: %v", text, err)
			}
			retriedOK++
			accepted[text] = true
		}
		ids := map[string]string{}
		for text := range accepted {
			ids[text] = text
		}
		lost, dups := deliveredAll(t, hook, ids)
		if lost != 0 {
			t.Fatalf("%d accepted notifications never delivered", lost)
		}
		lines = append(lines, fmt.Sprintf("PostgreSQL: %d Notify calls: %s; PostgreSQL down 4 s; first OK %s after it returned; %d refused calls "+
			"retried with their keys: %d OK; %d notifications accepted in all, delivered: all, lost 0, duplicated %d; gateway %s",
			c.total(), c.String(), firstOK.Round(10*time.Millisecond), len(refused), retriedOK, len(accepted), dups, g.Runtime(t)))
	})
	t.Cleanup(func() { record(t, Row{ID: "F7", Measured: strings.Join(lines, ". ") + "."}) })
}

// TestF8RedisSlow: every Redis round trip takes 500 ms, twice the
// budget, for 5 s under steady load on three gateway processes.
func TestF8RedisSlow(t *testing.T) {
	slow(t)
	record(t, Row{ID: "F8",
		Did: "3 gateway processes sharing Redis through toxiproxy (and a counting relay), VEGA_REDIS_TIMEOUT 250 ms, 6 workers of deterministic " +
			"Generates (new keys every 500 ms) against a 20 ms backend: 3 s healthy, 5 s with a 500 ms latency toxic on Redis's answers, " +
			"3 s after.",
		MustHold: "0 caller-visible errors; calls fall through to the local tier or the backend (the slowest call is recorded); the " +
			"connections opened to Redis during the slow window stay few (bounded churn, ≤ 28 per replica in 5 s); backend calls ≤ " +
			"distinct keys × 3; every replica back on Redis after.",
	})
	llm := newFakeLLM(t, llmOpts{Latency: 20 * time.Millisecond})
	p := newProxy(t, redisAddr)
	relay := newDialCounter(t, p.Listen)
	gws := startFleet(t, 3, relay.addr(), merge(roomy, llm.env(), map[string]string{"VEGA_REDIS_TIMEOUT": "250ms"}))
	before := runtimeLine(t, gws)
	load := startFleetLoad(t, gws, 6)
	time.Sleep(3 * time.Second)
	heal := addToxic(t, p, "latency", "downstream", map[string]any{"latency": 500})
	dialsAt, callsAt := relay.dials.Load(), load.calls.Load()
	time.Sleep(5 * time.Second)
	dials, callsSlow := relay.dials.Load()-dialsAt, load.calls.Load()-callsAt
	modes := make([]string, len(gws))
	for i, g := range gws {
		modes[i] = clusterStats(t, g).GetMode()
	}
	heal()
	back := eventually(t, "every replica uses Redis again", func() bool {
		for _, g := range gws {
			if clusterStats(t, g).GetMode() != "redis" {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * time.Second)
	keys := load.end()
	if load.codes.get(codes.OK) != load.codes.total() {
		t.Fatalf("callers saw errors: %s", load.codes.String())
	}
	if bound := int64(len(gws)) * 7 * 4; dials > bound {
		t.Fatalf("%d connections opened to Redis in 5 s slow (%d calls), want ≤ %d", dials, callsSlow, bound)
	}
	if calls := llm.calls.Load(); calls > int64(keys*3) {
		t.Fatalf("%d backend calls for %d keys over 3 replicas", calls, keys)
	}
	opens := make([]string, len(gws))
	for i, g := range gws {
		opens[i] = fmt.Sprintf("%d", clusterStats(t, g).GetBreakerOpens())
	}
	record(t, Row{ID: "F8", Measured: fmt.Sprintf(
		"%d calls (%d in the slow window), %s, slowest %s; modes at the end of the slow window: %s; Redis breaker opens per replica: %s; "+
			"connections opened to Redis in the slow window: %d (relay count); backend calls %d for %d distinct keys (bound %d); every "+
			"replica back on Redis %s after the toxic was removed; replicas' goroutines/heap %s → %s.",
		load.calls.Load(), callsSlow, load.codes.String(), time.Duration(load.slowest.Load()).Round(time.Millisecond), strings.Join(modes, "/"),
		strings.Join(opens, "/"), dials, llm.calls.Load(), keys, keys*3, back.Round(10*time.Millisecond), before, runtimeLine(t, gws))})
}
