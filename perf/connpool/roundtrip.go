package connpool

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"
)

// roundTripKey is the context key under which a request's roundTrip rides
// into the Transport's dial.
type roundTripKey struct{}

// roundTrip is the state of one RoundTrip call, from the request to the end
// of its response body.
type roundTrip struct {
	pool       *Pool
	ctx        context.Context // the caller's: bounds a dial's wait for a slot
	out        *http.Request   // what the Transport sends
	rewindable bool            // out's body can be replayed, so the Transport may retry it elsewhere
	trace      httptrace.ClientTrace

	// conn is written by GotConn on the goroutine running RoundTrip, under
	// pool.mu because finish reads it from the body's goroutine.
	conn   *trackedConn
	reused bool // the socket of the latest GotConn had carried a request before
	http1  bool // the response came over HTTP/1; set before the body is handed out

	pooled   atomic.Bool // PutIdleConn(nil): net/http took the HTTP/1 connection back after the response
	finished atomic.Bool // the request no longer counts on conn
	body     body
}

func newRoundTrip(p *Pool, req *http.Request) *roundTrip {
	rt := &roundTrip{
		pool:       p,
		ctx:        req.Context(),
		rewindable: req.Body == nil || req.Body == http.NoBody || req.GetBody != nil,
	}
	rt.trace = httptrace.ClientTrace{GotConn: rt.gotConn, PutIdleConn: rt.putIdleConn}
	// WithClientTrace runs our hooks, then those of any trace already there.
	ctx := httptrace.WithClientTrace(context.WithValue(req.Context(), roundTripKey{}, rt), &rt.trace)
	rt.out = req.WithContext(ctx)
	if !rt.rewindable {
		// gotConn may add "Connection: close", and the caller's header map is
		// not ours to change.
		rt.out.Header = req.Header.Clone()
		if rt.out.Header == nil {
			rt.out.Header = make(http.Header)
		}
	}
	return rt
}

// gotConn runs when the Transport hands the request a connection: before
// anything is written on it, which makes it the one safe moment to retire a
// connection that must not carry another request.
func (rt *roundTrip) gotConn(info httptrace.GotConnInfo) {
	p := rt.pool
	c := trackedOf(info.Conn)
	checkProto := c != nil && !c.protoKnown.Load()
	h2 := checkProto && negotiatedH2(info.Conn)
	now := p.s.Now()

	p.mu.Lock()
	if rt.conn != nil {
		// The Transport is retrying: the previous connection failed before
		// the request was written, and is closed or closing.
		p.releaseLocked(rt.conn, now, true)
	}
	rt.conn = c
	if c == nil {
		p.mu.Unlock()
		rt.reused = info.Reused
		return
	}
	if checkProto {
		c.multiplexed = c.multiplexed || h2
		c.protoKnown.Store(true)
	}
	rt.reused = c.uses > 0
	c.uses++
	c.inflight++
	reason := notRetired
	if info.Reused && !c.multiplexed {
		if reason = p.retireReasonLocked(c, now); reason != notRetired {
			c.retire = reason
		}
	}
	p.mu.Unlock()

	switch {
	case reason == notRetired:
	case rt.rewindable:
		// Nothing is written yet: the Transport treats this like a server
		// closing an idle connection and retries on another one.
		_ = c.Close()
	default:
		// The body cannot be replayed: this request is the last one.
		rt.out.Header.Set("Connection", "close")
	}
}

func (rt *roundTrip) putIdleConn(err error) {
	if err == nil {
		rt.pooled.Store(true)
	}
}

// done records the outcome of the Transport's RoundTrip and hands the
// response back with its body wrapped.
func (rt *roundTrip) done(req *http.Request, resp *http.Response, err error) (*http.Response, error) {
	p := rt.pool
	failed := err != nil || resp.StatusCode >= http.StatusInternalServerError
	p.counters.requests.Add(1)
	if rt.reused {
		p.counters.reused.Add(1)
	}
	if failed {
		p.counters.errors.Add(1)
	}
	// Without a body to wait for, the request is over now.
	over := err != nil || resp.Body == nil || resp.Body == http.NoBody
	if !over {
		rt.http1 = resp.ProtoMajor == 1
	}
	var addr string
	if rt.conn == nil {
		addr = canonicalAddr(req.URL) // the dial failed, or was not ours
	}
	var now time.Time
	if over {
		now = p.s.Now()
	}

	p.mu.Lock()
	var hc *hostCounters
	if c := rt.conn; c == nil {
		hc = p.hostLocked(addr)
	} else {
		hc = c.counters
		c.requests++
		if failed {
			c.errors++
		}
		if resp != nil && resp.ProtoMajor == 2 {
			c.multiplexed = true
		}
		if over {
			// On error or, over HTTP/1, when net/http did not take the
			// connection back, the Transport is closing it.
			closing := err != nil || (resp.ProtoMajor == 1 && !rt.pooled.Load())
			p.releaseLocked(c, now, closing)
		}
	}
	hc.requests++
	if failed {
		hc.errors++
	}
	p.mu.Unlock()

	if err != nil {
		return nil, err
	}
	resp.Request = req
	if over {
		rt.finished.Store(true)
		return resp, nil
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The caller owns the connection now; it carries their stream until
		// they close it.
		return resp, nil
	}
	rt.body = body{
		rc:    resp.Body,
		rt:    rt,
		drain: rt.http1 && resp.ContentLength >= 0 && resp.ContentLength <= drainLimit,
	}
	resp.Body = &rt.body
	return resp, nil
}

// finish marks the end of the request's use of its connection, once.
func (rt *roundTrip) finish() {
	if !rt.finished.CompareAndSwap(false, true) {
		return
	}
	p := rt.pool
	now := p.s.Now()
	p.mu.Lock()
	// Over HTTP/1, net/http closes a connection it did not take back.
	p.releaseLocked(rt.conn, now, rt.http1 && !rt.pooled.Load())
	p.mu.Unlock()
}

// releaseLocked ends one request's use of c (nil: none). closing says the
// Transport is closing c, so that close is not counted as an idle
// retirement. p.mu must be held.
func (p *Pool) releaseLocked(c *trackedConn, now time.Time, closing bool) {
	if c == nil {
		return
	}
	c.closing = c.closing || closing
	c.inflight--
	if c.inflight == 0 {
		c.lastUsed = now
	}
}

// body wraps a response body so that the request counts as carried by its
// connection until the body is read to EOF, fails, or is closed.
type body struct {
	rc    io.ReadCloser
	rt    *roundTrip
	drain bool         // Close reads the rest first: HTTP/1 with Content-Length ≤ drainLimit
	reads atomic.Int32 // Reads in progress: Close must not drain under one, it may be closing to abort it
}

func (b *body) Read(p []byte) (int, error) {
	b.reads.Add(1)
	n, err := b.rc.Read(p)
	b.reads.Add(-1)
	if err != nil {
		b.rt.finish()
	}
	return n, err
}

// Close reads what is left of a small HTTP/1 body, so that net/http can
// reuse its connection, and closes it.
func (b *body) Close() error {
	if b.drain && b.reads.Load() == 0 && !b.rt.finished.Load() {
		_, _ = io.CopyN(io.Discard, b, drainLimit+1) // an error just means no reuse
	}
	err := b.rc.Close()
	b.rt.finish()
	return err
}

// canonicalAddr is the host:port net/http dials for u without a proxy.
func canonicalAddr(u *url.URL) string {
	if u == nil {
		return "" // the Transport rejects the request
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}
