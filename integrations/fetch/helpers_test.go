package fetch

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// newTestClient builds a Client with short bounds and closes its idle
// connections when the test ends (goleak watches them).
func newTestClient(t *testing.T, s Settings) *Client {
	t.Helper()
	if s.DialTimeout == 0 {
		s.DialTimeout = 500 * time.Millisecond
	}
	if s.Timeout == 0 {
		s.Timeout = 5 * time.Second
	}
	c, err := New(s)
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	installTripwire(t, c)
	return c
}

// installTripwire makes sure a test can never send a packet to a
// non-loopback address, even if the guard regresses: after the real Control
// (which must refuse first), a second check refuses anything but loopback
// and fails the test. Allow-listed host dials get the same tripwire.
func installTripwire(t *testing.T, c *Client) {
	t.Helper()
	loopbackOnly := func(address string) error {
		ap, err := netip.ParseAddrPort(address)
		if err == nil && ap.Addr().Unmap().IsLoopback() {
			return nil
		}
		t.Errorf("test tripwire: the fetcher tried to dial non-loopback %s", address)
		return errors.New("test tripwire: non-loopback dial refused")
	}
	guard := c.guardedDialer.Control
	c.guardedDialer.Control = func(network, address string, rc syscall.RawConn) error {
		if err := guard(network, address, rc); err != nil {
			return err
		}
		return loopbackOnly(address)
	}
	c.plainDialer.Control = func(_, address string, _ syscall.RawConn) error {
		return loopbackOnly(address)
	}
}

// countingServer is an httptest server on 127.0.0.1 that counts requests.
type countingServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newCountingServer(t *testing.T, h http.HandlerFunc) *countingServer {
	t.Helper()
	cs := &countingServer{}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(cs.Close)
	return cs
}

// newCountingServerOn is like newCountingServer but listens on addr
// ("127.0.0.2:0", "[::1]:0"). It skips the test when addr is not available.
func newCountingServerOn(t *testing.T, addr string, h http.HandlerFunc) *countingServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	cs := &countingServer{}
	cs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.hits.Add(1)
		h(w, r)
	}))
	cs.Listener.Close()
	cs.Listener = ln
	cs.Start()
	t.Cleanup(cs.Close)
	return cs
}

// port returns the server's port.
func (cs *countingServer) port(t *testing.T) string {
	t.Helper()
	_, p, err := net.SplitHostPort(cs.Listener.Addr().String())
	require.NoError(t, err)
	return p
}

func okHandler(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(body))
	}
}

// newSlowServer serves first(w) (may be nil) and then blocks until the
// client goes away or the test ends. The release cleanup is registered after
// the server's Close, so it runs first and Close never waits on a handler.
func newSlowServer(t *testing.T, first func(w http.ResponseWriter)) *countingServer {
	t.Helper()
	release := make(chan struct{})
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if first != nil {
			first(w)
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	return cs
}

func bg() context.Context { return context.Background() }
