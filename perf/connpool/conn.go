package connpool

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"time"
)

// retireReason is why the pool closed a connection.
type retireReason uint8

const (
	notRetired retireReason = iota
	retiredByAge
	retiredByErrors
	retiredIdle
)

// trackedConn is a dialed connection registered in its Pool. The Transport
// holds it as its net.Conn; closing it, by whoever, unregisters it and frees
// its slot under MaxTotalConns.
type trackedConn struct {
	net.Conn

	pool      *Pool
	host      string        // dialed address, host:port; immutable
	counters  *hostCounters // of host; immutable
	createdAt time.Time     // pool clock at dial; immutable

	protoKnown atomic.Bool // multiplexed has been decided (at the first GotConn)

	// Guarded by pool.mu.
	lastUsed    time.Time    // when inflight last fell to 0; createdAt before
	inflight    int          // requests between GotConn and the end of their body
	uses        int64        // requests handed this connection (GotConn)
	requests    int64        // outcomes recorded on it: the error rule's denominator
	errors      int64        // of which transport errors or 5xx responses
	multiplexed bool         // HTTP/2: several requests at once; retired only when idle
	closing     bool         // the Transport closes it after a response; not an idle close
	retire      retireReason // why the pool closes or closed it
	closed      bool
}

// Close closes the connection and unregisters it. It is called by the
// Transport when it drops the connection and by the pool when it retires it.
func (c *trackedConn) Close() error {
	c.pool.forget(c)
	return c.Conn.Close()
}

// idleForLocked is how long c has carried no request, or 0 while it carries
// one. pool.mu must be held.
func (c *trackedConn) idleForLocked(now time.Time) time.Duration {
	if c.inflight > 0 {
		return 0
	}
	return nonNegative(now.Sub(c.lastUsed))
}

// trackedOf finds the tracked connection under a connection the Transport
// reports in GotConn: the tracked one itself for plain HTTP/1, a *tls.Conn
// (or anything else with NetConn) wrapping it for TLS and HTTP/2. It returns
// nil for a connection the pool did not dial.
func trackedOf(nc net.Conn) *trackedConn {
	for range 4 { // a TLS tunnel through an HTTPS proxy nests twice
		switch c := nc.(type) {
		case *trackedConn:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// negotiatedH2 reports whether nc, as reported in GotConn, speaks HTTP/2.
func negotiatedH2(nc net.Conn) bool {
	tc, ok := nc.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}

func nonNegative(d time.Duration) time.Duration {
	return max(d, 0)
}
