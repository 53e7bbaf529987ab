package connpool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hangGuard bounds every wait on a choreographed event.
const hangGuard = 10 * time.Second

// fakeClock is the pool's clock in tests: ages move only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testServer is an httptest server on 127.0.0.1 that counts the
// connections it accepts (http.StateNew), those that carried a request
// (http.StateActive at least once) and those open at once.
type testServer struct {
	*httptest.Server
	newConns  atomic.Int64
	usedConns atomic.Int64
	open      atomic.Int64
	maxOpen   atomic.Int64
	used      sync.Map // net.Conn → struct{}: has carried a request
}

func startServer(t *testing.T, h http.HandlerFunc) *testServer {
	t.Helper()
	s := &testServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			s.newConns.Add(1)
			storeMax(&s.maxOpen, s.open.Add(1))
		case http.StateActive:
			if _, seen := s.used.LoadOrStore(c, struct{}{}); !seen {
				s.usedConns.Add(1)
			}
		case http.StateClosed, http.StateHijacked:
			s.open.Add(-1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func storeMax(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

func newPool(t *testing.T, s Settings) *Pool {
	t.Helper()
	p, err := New(s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// do sends a request through rt and returns the status and the body, read
// to EOF and closed.
func do(t *testing.T, rt http.RoundTripper, req *http.Request) (int, string) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode, string(b)
}

func get(t *testing.T, rt http.RoundTripper, url string) int {
	t.Helper()
	code, _ := do(t, rt, mustRequest(t, http.MethodGet, url, nil))
	return code
}

func mustRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	return req
}

func addr(s *testServer) string { return s.Listener.Addr().String() }

// requireAllSlotsFree asserts that every connection has given back its slot
// under MaxTotalConns once idle connections are closed.
func requireAllSlotsFree(t *testing.T, p *Pool) {
	t.Helper()
	p.CloseIdleConnections()
	n := int64(p.s.MaxTotalConns)
	require.Eventually(t, func() bool {
		if p.slots.TryAcquire(n) {
			p.slots.Release(n)
			return true
		}
		return false
	}, hangGuard, time.Millisecond, "slots still held")
	assert.Zero(t, p.Stats().TotalConnections)
}

func ok(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }

// At steady load with bodies read and closed, nearly every request runs on
// a socket that carried one before, and the pool's count agrees with the
// server's. net/http may open a few more connections than the concurrency:
// a request waiting for its own dial can be served by a connection freed
// meanwhile, and the dialed one goes to the idle pool, perhaps never to
// carry a request. So the exact comparison is with the connections that
// carried requests (StateActive), and StateNew is bounded by
// MaxConnsPerHost only.
func TestReuseAtSteadyLoad(t *testing.T) {
	srv := startServer(t, ok)
	p := newPool(t, Settings{})

	const workers, perWorker = 8, 250
	const total = workers * perWorker
	var g errgroup.Group
	for range workers {
		g.Go(func() error {
			for range perWorker {
				resp, err := p.RoundTrip(mustRequest(t, http.MethodGet, srv.URL, nil))
				if err != nil {
					return err
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					return err
				}
				if err := resp.Body.Close(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())

	st := p.Stats()
	newConns, usedConns := srv.newConns.Load(), srv.usedConns.Load()
	t.Logf("requests=%d reuse=%.2f%%; server: new conns=%d (reuse %.2f%%), conns that carried requests=%d (reuse %.2f%%)",
		st.Requests, st.ReuseRate(), newConns, 100*(1-float64(newConns)/total),
		usedConns, 100*(1-float64(usedConns)/total))
	assert.LessOrEqual(t, newConns, int64(p.s.MaxConnsPerHost))
	assert.Equal(t, newConns, st.ConnectionsCreated)
	assert.Equal(t, int64(total), st.Requests)
	assert.Equal(t, total-usedConns, st.ReusedRequests)
	assert.InDelta(t, 100*(1-float64(usedConns)/total), st.ReuseRate(), 1e-9)
	assert.GreaterOrEqual(t, st.ReuseRate(), 99.0)
	assert.GreaterOrEqual(t, 100*(1-float64(newConns)/total), 99.0, "server's view")
	assert.Zero(t, st.Errors)
	assert.Zero(t, st.ActiveConnections)
	// net/http may close a connection rather than pool it, e.g. when its
	// write loop has not reported within 50 ms (persistConn.wroteRequest),
	// which happens under -race.
	assert.Equal(t, st.ConnectionsCreated-st.ConnectionsClosed, st.IdleConnections, "%+v", st)
	assert.Zero(t, st.RetiredIdle+st.RetiredByAge+st.RetiredByErrors)
	requireAllSlotsFree(t, p)
}

// net/http reuses a connection only once its response body has been read to
// EOF. Closing a body unread costs a new connection in net/http; Pool reads
// the rest of a small body of known length on Close, and no other.
func TestUnreadBodyOnClose(t *testing.T) {
	sized := func(n int) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = io.WriteString(w, strings.Repeat("x", n))
		}
	}
	chunked := func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "small but streamed")
		w.(http.Flusher).Flush()
	}
	plain := func() http.RoundTripper {
		return &http.Transport{MaxConnsPerHost: 10, MaxIdleConnsPerHost: 10}
	}
	const requests = 20
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		plain    bool // net/http's Transport instead of a Pool
		wantConn int64
	}{
		{"pool/100B", sized(100), false, 1},
		{"pool/4KiB", sized(drainLimit), false, 1},
		{"pool/4KiB+1", sized(drainLimit + 1), false, requests},
		{"pool/chunked", chunked, false, requests},
		{"transport/1B", sized(1), true, requests},
		{"transport/100B", sized(100), true, requests},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, tt.handler)
			var rt http.RoundTripper
			if tt.plain {
				tr := plain()
				t.Cleanup(tr.(*http.Transport).CloseIdleConnections)
				rt = tr
			} else {
				rt = newPool(t, Settings{})
			}
			for range requests {
				resp, err := rt.RoundTrip(mustRequest(t, http.MethodGet, srv.URL, nil))
				require.NoError(t, err)
				require.NoError(t, resp.Body.Close()) // unread
			}
			assert.Equal(t, tt.wantConn, srv.newConns.Load(), "server connections")
			if p, ok := rt.(*Pool); ok {
				st := p.Stats()
				assert.Equal(t, requests-tt.wantConn, st.ReusedRequests)
				assert.Zero(t, st.ActiveConnections)
				assert.Zero(t, st.RetiredIdle, "closes after an unread body are not idle retirements")
			}
		})
	}
}

// Close reads the rest of a small body, but no longer than the request's
// context allows: a server that stalls mid-body holds Close until then.
func TestCloseDrainBoundedByContext(t *testing.T) {
	release := make(chan struct{})
	srv := startServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		<-release
	})
	defer close(release) // before srv.Close, which waits for the handler
	p := newPool(t, Settings{})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	resp, err := p.RoundTrip(mustRequest(t, http.MethodGet, srv.URL, nil).WithContext(ctx))
	require.NoError(t, err)
	closed := make(chan struct{})
	go func() {
		_ = resp.Body.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(hangGuard):
		t.Fatal("Close did not return after the request's deadline")
	}
	assert.Error(t, ctx.Err(), "Close returned before the deadline: it cannot have drained")
	require.Eventually(t, func() bool { return p.Stats().TotalConnections == 0 }, hangGuard, time.Millisecond)
}

// A Close that aborts a Read in progress does not try to drain under it.
func TestCloseAbortsRead(t *testing.T) {
	release := make(chan struct{})
	srv := startServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.(http.Flusher).Flush()
		<-release
	})
	defer close(release)
	p := newPool(t, Settings{})

	resp, err := p.RoundTrip(mustRequest(t, http.MethodGet, srv.URL, nil))
	require.NoError(t, err)
	readErr := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(make([]byte, 10))
		readErr <- err
	}()
	require.Eventually(t, func() bool { return resp.Body.(*body).reads.Load() == 1 }, hangGuard, time.Millisecond)
	require.NoError(t, resp.Body.Close())
	select {
	case err := <-readErr:
		assert.Error(t, err)
	case <-time.After(hangGuard):
		t.Fatal("Read not aborted by Close")
	}
	require.Eventually(t, func() bool { return p.Stats().TotalConnections == 0 }, hangGuard, time.Millisecond)
}

func TestMaxConnsPerHost(t *testing.T) {
	const limit, requests = 4, 20
	gate := make(chan struct{})
	entered := make(chan struct{}, requests)
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-gate
		ok(w, r)
	})
	p := newPool(t, Settings{MaxConnsPerHost: limit})

	var g errgroup.Group
	for range requests {
		g.Go(func() error {
			resp, err := p.RoundTrip(mustRequest(t, http.MethodGet, srv.URL, nil))
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.Body.Close()
		})
	}
	for range limit {
		select {
		case <-entered:
		case <-time.After(hangGuard):
			t.Fatal("requests did not reach the server")
		}
	}
	st := p.Stats()
	assert.EqualValues(t, limit, st.ActiveConnections, "at the limit, all connections carry a request")
	assert.EqualValues(t, limit, srv.open.Load())
	close(gate)
	require.NoError(t, g.Wait())

	assert.EqualValues(t, limit, srv.newConns.Load())
	assert.LessOrEqual(t, srv.maxOpen.Load(), int64(limit))
	st = p.Stats()
	assert.EqualValues(t, requests, st.Requests)
	assert.EqualValues(t, requests-limit, st.ReusedRequests)
}

// MaxTotalConns holds across hosts. The servers close each connection after
// its one request, so every request needs a slot of its own. A connection
// counts as open on the server from its accept (StateNew) until its request's
// handler has finished: the server's StateClosed comes a little later, and
// may come after the client has already closed its end, freed the slot and
// dialed again.
func TestMaxTotalConnsAcrossHosts(t *testing.T) {
	const limit, perHost = 3, 10
	var live, maxLive atomic.Int64
	gate := make(chan struct{})
	entered := make(chan struct{}, 2*perHost)
	start := func() *testServer {
		s := &testServer{Server: httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			<-gate
			live.Add(-1)
			ok(w, r)
		}))}
		s.Config.SetKeepAlivesEnabled(false)
		s.Config.ConnState = func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				s.newConns.Add(1)
				storeMax(&maxLive, live.Add(1))
			}
		}
		s.Start()
		t.Cleanup(s.Close)
		return s
	}
	a, b := start(), start()
	p := newPool(t, Settings{MaxTotalConns: limit, MaxConnsPerHost: perHost})

	var g errgroup.Group
	for range perHost {
		for _, s := range []*testServer{a, b} {
			g.Go(func() error {
				resp, err := p.RoundTrip(mustRequest(t, http.MethodGet, s.URL, nil))
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.Body.Close()
			})
		}
	}
	for range limit {
		select {
		case <-entered:
		case <-time.After(hangGuard):
			t.Fatal("requests did not reach the servers")
		}
	}
	assert.EqualValues(t, limit, p.Stats().TotalConnections)
	close(gate)
	require.NoError(t, g.Wait())

	assert.EqualValues(t, limit, maxLive.Load(), "open connections across both servers, at most")
	assert.EqualValues(t, 2*perHost, a.newConns.Load()+b.newConns.Load())
	st := p.Stats()
	assert.EqualValues(t, 2*perHost, st.ConnectionsCreated)
	assert.EqualValues(t, 2*perHost, st.Requests)
	assert.Zero(t, st.Errors)
	requireAllSlotsFree(t, p)
}

// A dial waiting for a slot gives up with the request's context, and evicts
// another host's connection once it has been idle for evictGrace.
func TestTotalCapWaitAndEvict(t *testing.T) {
	clock := newFakeClock()
	a, b := startServer(t, ok), startServer(t, ok)
	p := newPool(t, Settings{MaxTotalConns: 1, Now: clock.Now})

	require.Equal(t, http.StatusOK, get(t, p, a.URL))

	// a's connection has only just gone idle: b's dial waits, and the
	// request's deadline ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.RoundTrip(mustRequest(t, http.MethodGet, b.URL, nil).WithContext(ctx))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	st := p.Stats()
	assert.EqualValues(t, 1, st.TotalConnections)
	assert.EqualValues(t, 1, st.ConnectionsCreated)
	assert.Zero(t, b.newConns.Load())

	clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, get(t, p, b.URL))
	st = p.Stats()
	assert.EqualValues(t, 1, st.TotalConnections)
	assert.EqualValues(t, 2, st.ConnectionsCreated)
	assert.EqualValues(t, 1, st.RetiredIdle, "a's idle connection was evicted")
	assert.EqualValues(t, 3, st.Requests)
	assert.EqualValues(t, 1, st.Errors, "the request whose wait timed out")
	require.Len(t, st.Hosts, 2)
	for _, h := range st.Hosts {
		switch h.Host {
		case addr(a):
			assert.Equal(t, HostStats{Host: addr(a), Requests: 1}, h)
		case addr(b):
			assert.Equal(t, HostStats{Host: addr(b), Open: 1, Idle: 1, Requests: 2, Errors: 1}, h)
		default:
			t.Errorf("unexpected host %q", h.Host)
		}
	}
	requireAllSlotsFree(t, p)
}

func TestConnTTL(t *testing.T) {
	clock := newFakeClock()
	var sawClose atomic.Bool
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		sawClose.Store(r.Close)
		_, _ = io.Copy(w, r.Body)
	})
	const ttl = time.Minute
	p := newPool(t, Settings{ConnTTL: ttl, Now: clock.Now})

	require.Equal(t, http.StatusOK, get(t, p, srv.URL))
	clock.Advance(ttl / 2)
	require.Equal(t, http.StatusOK, get(t, p, srv.URL))
	require.EqualValues(t, 1, srv.newConns.Load(), "younger than the TTL: reused")

	t.Run("next request after TTL uses a new connection", func(t *testing.T) {
		clock.Advance(ttl/2 + time.Second)
		require.Equal(t, http.StatusOK, get(t, p, srv.URL))
		assert.EqualValues(t, 2, srv.newConns.Load())
		st := p.Stats()
		assert.EqualValues(t, 1, st.RetiredByAge)
		assert.EqualValues(t, 1, st.ReusedRequests, "only the second request ran on a used socket")
		assert.EqualValues(t, 1, st.TotalConnections)
		assert.False(t, sawClose.Load())
	})

	t.Run("replayable body is retried on a new connection", func(t *testing.T) {
		clock.Advance(ttl + time.Second)
		code, echoed := do(t, p, mustRequest(t, http.MethodPost, srv.URL, bytes.NewReader([]byte("payload"))))
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "payload", echoed)
		assert.EqualValues(t, 3, srv.newConns.Load())
		assert.EqualValues(t, 2, p.Stats().RetiredByAge)
	})

	t.Run("unreplayable body is the connection's last request", func(t *testing.T) {
		clock.Advance(ttl + time.Second)
		req := mustRequest(t, http.MethodPost, srv.URL, io.NopCloser(strings.NewReader("stream")))
		require.Nil(t, req.GetBody)
		code, echoed := do(t, p, req)
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "stream", echoed)
		assert.True(t, sawClose.Load(), "server saw Connection: close")
		assert.Empty(t, req.Header.Get("Connection"), "caller's header untouched")
		assert.EqualValues(t, 3, srv.newConns.Load(), "sent on the aged connection")
		require.Eventually(t, func() bool { return p.Stats().RetiredByAge == 3 }, hangGuard, time.Millisecond)

		require.Equal(t, http.StatusOK, get(t, p, srv.URL))
		assert.EqualValues(t, 4, srv.newConns.Load())
	})

	t.Run("janitor closes idle connections past the TTL", func(t *testing.T) {
		p.janitorOnce()
		assert.EqualValues(t, 1, p.Stats().TotalConnections, "young: kept")
		clock.Advance(ttl + time.Second)
		p.janitorOnce()
		st := p.Stats()
		assert.Zero(t, st.TotalConnections)
		assert.EqualValues(t, 4, st.RetiredByAge)
		assert.Zero(t, st.RetiredIdle)
		require.Eventually(t, func() bool { return srv.open.Load() == 0 }, hangGuard, time.Millisecond)
	})
}

func TestErrorRule(t *testing.T) {
	tests := []struct {
		name        string
		requests    int // on one connection, the first failures of them answered 500
		failures    int
		janitor     bool // retire through the janitor instead of the next request
		wantRetired bool
	}{
		{name: "6 of 10 failed: next request on a new connection", requests: 10, failures: 6, wantRetired: true},
		{name: "6 of 10 failed: janitor closes it", requests: 10, failures: 6, janitor: true, wantRetired: true},
		{name: "5 of 10 failed: not above the threshold", requests: 10, failures: 5},
		{name: "6 of 9 failed: too few requests", requests: 9, failures: 6},
		{name: "10 of 10 failed", requests: 10, failures: 10, wantRetired: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) <= int64(tt.failures) {
					http.Error(w, "boom", http.StatusInternalServerError)
					return
				}
				ok(w, r)
			})
			p := newPool(t, Settings{})
			for range tt.requests {
				get(t, p, srv.URL)
			}
			require.EqualValues(t, 1, srv.newConns.Load())
			st := p.Stats()
			assert.EqualValues(t, tt.failures, st.Errors)
			assert.InDelta(t, 100*float64(tt.failures)/float64(tt.requests), st.ErrorRate(), 1e-9)

			wantConns, wantRetired := int64(1), int64(0)
			if tt.wantRetired {
				wantConns, wantRetired = 2, 1
			}
			if tt.janitor {
				p.janitorOnce()
				assert.Zero(t, p.Stats().TotalConnections)
			}
			require.Equal(t, http.StatusOK, get(t, p, srv.URL))
			assert.Equal(t, wantConns, srv.newConns.Load())
			st = p.Stats()
			assert.Equal(t, wantRetired, st.RetiredByErrors)
			assert.Zero(t, st.RetiredByAge)
			assert.EqualValues(t, 1, st.TotalConnections)
		})
	}
}

func TestGaugesAgesAndHosts(t *testing.T) {
	clock := newFakeClock()
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	a := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-gate
		}
		ok(w, r)
	})
	b := startServer(t, ok)
	p := newPool(t, Settings{Now: clock.Now})

	require.Equal(t, http.StatusOK, get(t, p, a.URL))
	clock.Advance(10 * time.Second)

	slow := make(chan error, 1)
	go func() {
		resp, err := p.RoundTrip(mustRequest(t, http.MethodGet, a.URL+"/slow", nil))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			err = resp.Body.Close()
		}
		slow <- err
	}()
	select {
	case <-entered:
	case <-time.After(hangGuard):
		t.Fatal("slow request did not reach the server")
	}
	st := p.Stats()
	assert.EqualValues(t, 1, st.TotalConnections)
	assert.EqualValues(t, 1, st.ActiveConnections, "during the in-flight request")
	assert.Zero(t, st.IdleConnections)
	assert.Equal(t, 10*time.Second, st.AgeMax)

	require.Equal(t, http.StatusOK, get(t, p, b.URL))
	clock.Advance(5 * time.Second)
	st = p.Stats()
	assert.EqualValues(t, 2, st.TotalConnections)
	assert.EqualValues(t, 1, st.ActiveConnections)
	assert.EqualValues(t, 1, st.IdleConnections)
	assert.Equal(t, 5*time.Second, st.AgeP50)
	assert.Equal(t, 15*time.Second, st.AgeP90)
	assert.Equal(t, 15*time.Second, st.AgeMax)
	assert.Equal(t, 5*time.Second, st.IdleP50)
	assert.Equal(t, 5*time.Second, st.IdleMax)

	close(gate)
	select {
	case err := <-slow:
		require.NoError(t, err)
	case <-time.After(hangGuard):
		t.Fatal("slow request did not finish")
	}
	clock.Advance(time.Second)
	st = p.Stats()
	assert.Zero(t, st.ActiveConnections)
	assert.EqualValues(t, 2, st.IdleConnections)
	assert.Equal(t, time.Second, st.IdleP50, "a's: idle since the slow request ended")
	assert.Equal(t, 6*time.Second, st.IdleMax, "b's")

	want := []HostStats{
		{Host: addr(a), Open: 1, Idle: 1, Requests: 2},
		{Host: addr(b), Open: 1, Idle: 1, Requests: 1},
	}
	if want[1].Host < want[0].Host {
		want[0], want[1] = want[1], want[0]
	}
	assert.Equal(t, want, st.Hosts)

	p.ResetStats()
	st = p.Stats()
	assert.Zero(t, st.Requests)
	assert.Zero(t, st.ConnectionsCreated)
	assert.EqualValues(t, 2, st.TotalConnections, "gauges are not reset")
	for _, h := range st.Hosts {
		assert.Zero(t, h.Requests)
		assert.EqualValues(t, 1, h.Open)
	}
}

func TestCallerTraceStillFires(t *testing.T) {
	srv := startServer(t, ok)
	p := newPool(t, Settings{})
	var gotConn, reused, putIdle atomic.Int64
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			gotConn.Add(1)
			if info.Reused {
				reused.Add(1)
			}
		},
		PutIdleConn: func(err error) {
			if err == nil {
				putIdle.Add(1)
			}
		},
	}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	for range 3 {
		require.Equal(t, http.StatusOK, get(t, p, srv.URL))
		req := mustRequest(t, http.MethodGet, srv.URL, nil).WithContext(ctx)
		code, _ := do(t, p, req)
		require.Equal(t, http.StatusOK, code)
	}
	assert.EqualValues(t, 3, gotConn.Load())
	assert.EqualValues(t, 3, reused.Load())
	assert.EqualValues(t, 3, putIdle.Load())
	st := p.Stats()
	assert.EqualValues(t, 6, st.Requests)
	assert.EqualValues(t, 5, st.ReusedRequests)
}

func TestHTTP2(t *testing.T) {
	clock := newFakeClock()
	srv := &testServer{Server: httptest.NewUnstartedServer(http.HandlerFunc(ok))}
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			srv.newConns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	const ttl = time.Minute
	p := newPool(t, Settings{ConnTTL: ttl, Now: clock.Now})
	p.transport.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()

	h2get := func() error {
		resp, err := p.RoundTrip(mustRequest(t, http.MethodGet, srv.URL, nil))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.ProtoMajor != 2 {
			err = errors.New("not HTTP/2: " + resp.Proto)
		}
		return errors.Join(err, resp.Body.Close())
	}
	require.NoError(t, h2get())
	var g errgroup.Group
	for range 10 {
		g.Go(func() error {
			for range 20 {
				if err := h2get(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	st := p.Stats()
	assert.EqualValues(t, 1, srv.newConns.Load())
	assert.EqualValues(t, 201, st.Requests)
	assert.EqualValues(t, 200, st.ReusedRequests)
	assert.EqualValues(t, 1, st.TotalConnections)
	assert.Zero(t, st.ActiveConnections)

	// Past its TTL an HTTP/2 connection still carries requests (others may
	// be in flight on it); the janitor closes it once idle.
	clock.Advance(ttl + time.Second)
	require.NoError(t, h2get())
	assert.EqualValues(t, 1, srv.newConns.Load())
	p.janitorOnce()
	// The Transport drops the connection, then closes it.
	require.Eventually(t, func() bool { return p.Stats().TotalConnections == 0 }, hangGuard, time.Millisecond)
	assert.EqualValues(t, 1, p.Stats().RetiredByAge)
	require.NoError(t, h2get())
	assert.EqualValues(t, 2, srv.newConns.Load())
}

func TestJanitorClosesIdle(t *testing.T) {
	clock := newFakeClock()
	srv := startServer(t, ok)
	p := newPool(t, Settings{IdleTimeout: time.Minute, Now: clock.Now})
	require.Equal(t, http.StatusOK, get(t, p, srv.URL))

	clock.Advance(time.Minute)
	p.janitorOnce()
	assert.EqualValues(t, 1, p.Stats().TotalConnections, "idle for exactly IdleTimeout: kept")
	clock.Advance(time.Second)
	p.janitorOnce()
	st := p.Stats()
	assert.Zero(t, st.TotalConnections)
	assert.EqualValues(t, 1, st.RetiredIdle)
	assert.EqualValues(t, 1, st.ConnectionsClosed)
}

func TestJanitorRuns(t *testing.T) {
	clock := newFakeClock()
	srv := startServer(t, ok)
	p := newPool(t, Settings{JanitorInterval: time.Millisecond, Now: clock.Now})
	require.Equal(t, http.StatusOK, get(t, p, srv.URL))
	clock.Advance(time.Hour)
	require.Eventually(t, func() bool { return p.Stats().RetiredByAge == 1 }, hangGuard, time.Millisecond)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())

	p := newPool(t, Settings{MaxTotalConns: 1})
	_, err = p.RoundTrip(mustRequest(t, http.MethodGet, "http://"+dead+"/", nil))
	require.Error(t, err)
	st := p.Stats()
	assert.EqualValues(t, 1, st.Requests)
	assert.EqualValues(t, 1, st.Errors)
	assert.Zero(t, st.ConnectionsCreated)
	assert.Equal(t, []HostStats{{Host: dead, Requests: 1, Errors: 1}}, st.Hosts)
	requireAllSlotsFree(t, p)

	_, err = p.RoundTrip(&http.Request{Method: http.MethodGet, Header: http.Header{}})
	require.Error(t, err, "no URL")
}

func TestSettings(t *testing.T) {
	for _, tt := range []struct {
		s    Settings
		want string
	}{
		{Settings{MaxConnsPerHost: -1}, "MaxConnsPerHost"},
		{Settings{MaxTotalConns: -1}, "MaxTotalConns"},
		{Settings{ConnTTL: -time.Second}, "ConnTTL"},
		{Settings{IdleTimeout: -time.Second}, "IdleTimeout"},
		{Settings{DialTimeout: -time.Second}, "DialTimeout"},
		{Settings{MinRequests: -1}, "MinRequests"},
		{Settings{JanitorInterval: -time.Second}, "JanitorInterval"},
		{Settings{ErrorThreshold: 1.5}, "ErrorThreshold"},
		{Settings{ErrorThreshold: -0.1}, "ErrorThreshold"},
	} {
		_, err := New(tt.s)
		assert.ErrorContains(t, err, tt.want)
	}

	p := newPool(t, Settings{})
	tr := p.transport
	assert.Equal(t, 10, tr.MaxConnsPerHost)
	assert.Equal(t, 10, tr.MaxIdleConnsPerHost)
	assert.Equal(t, 100, tr.MaxIdleConns)
	assert.Equal(t, 60*time.Second, tr.IdleConnTimeout)
	assert.Equal(t, 10*time.Second, tr.TLSHandshakeTimeout)
	assert.Equal(t, time.Second, tr.ExpectContinueTimeout)
	assert.True(t, tr.ForceAttemptHTTP2)
	assert.NotNil(t, tr.Proxy)
	assert.Equal(t, 5*time.Second, p.dialer.Timeout)
	assert.Equal(t, 300*time.Second, p.s.ConnTTL)
	assert.Equal(t, 0.5, p.s.ErrorThreshold)
	assert.Equal(t, 10, p.s.MinRequests)
	assert.Equal(t, 30*time.Second, p.s.JanitorInterval)
}
