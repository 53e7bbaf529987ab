package connpool

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"
)

// BenchmarkRoundTrip compares a Pool with a plain http.Transport of the same
// settings (integrations.NewTransport's) over loopback, so that
// `benchstat -col /impl` shows what the instrumentation costs per request.
// Besides wall time it reports cpu-ns/op, the process's CPU time (client and
// server) per request, which a loaded machine disturbs less.
func BenchmarkRoundTrip(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()

	pool, err := New(Settings{})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	plain := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxConnsPerHost:       10,
		MaxIdleConnsPerHost:   10,
		MaxIdleConns:          100,
		IdleConnTimeout:       60 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	defer plain.CloseIdleConnections()

	for _, impl := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"ours", pool},
		{"transport", plain},
	} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0, cpuOK := processCPU()
			defer func() {
				if cpu1, ok := processCPU(); ok && cpuOK {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
				}
			}()
			b.RunParallel(func(pb *testing.PB) {
				req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
				if err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					resp, err := impl.rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			})
		})
	}
	if st := pool.Stats(); st.Requests > 0 {
		b.Logf("ours: requests=%d reuse=%.3f%% connections=%d", st.Requests, st.ReuseRate(), st.ConnectionsCreated)
	}
}

// BenchmarkStats measures a snapshot with 100 open connections.
func BenchmarkStats(b *testing.B) {
	p, err := New(Settings{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	now := p.s.Now()
	p.mu.Lock()
	for i := range 100 {
		host := "backend-" + string(rune('a'+i%5)) + ":443"
		c := &trackedConn{pool: p, host: host, createdAt: now, lastUsed: now, counters: p.hostLocked(host)}
		p.conns[c] = struct{}{}
	}
	p.mu.Unlock()
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Stats()
	}
}

// BenchmarkInstrumentation is the pool's own work per request, without the
// network: the trace hooks, the outcome, the body wrapper read to EOF and
// closed. Compare it with BenchmarkRoundTrip/impl=transport.
func BenchmarkInstrumentation(b *testing.B) {
	p, err := New(Settings{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	req, err := http.NewRequest(http.MethodGet, "http://backend:8080/", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0, cpuOK := processCPU()
	defer func() {
		if cpu1, ok := processCPU(); ok && cpuOK {
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
		}
	}()
	b.RunParallel(func(pb *testing.PB) {
		now := p.s.Now()
		c := &trackedConn{pool: p, host: "backend:8080", createdAt: now, lastUsed: now}
		c.protoKnown.Store(true)
		p.mu.Lock()
		c.counters = p.hostLocked(c.host)
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		var src strings.Reader
		var resp http.Response
		for pb.Next() {
			rt := newRoundTrip(p, req)
			httptrace.ContextClientTrace(rt.out.Context()).GotConn(httptrace.GotConnInfo{Conn: c, Reused: true})
			rt.putIdleConn(nil)
			src.Reset(`{"ok":true}`)
			resp = http.Response{StatusCode: http.StatusOK, ProtoMajor: 1, ContentLength: 11, Body: io.NopCloser(&src)}
			got, _ := rt.done(req, &resp, nil)
			_, _ = io.Copy(io.Discard, got.Body)
			_ = got.Body.Close()
		}
	})
}
