package connpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Settings sizes a Pool. Zero values mean the seed's defaults, stated at
// each field; negative values are invalid.
type Settings struct {
	MaxConnsPerHost int           // MAX_CONNECTIONS_PER_HOST; 0 means 10. Also MaxIdleConnsPerHost, so reuse holds at that concurrency.
	MaxTotalConns   int           // MAX_TOTAL_CONNECTIONS; 0 means 100: open connections across hosts; dials wait for a slot.
	ConnTTL         time.Duration // CONNECTION_TTL; 0 means 300s: an older connection is not reused.
	IdleTimeout     time.Duration // IDLE_TIMEOUT; 0 means 60s: Transport.IdleConnTimeout, and the janitor's.
	DialTimeout     time.Duration // 0 means 5s.
	ErrorThreshold  float64       // 0 means 0.5: a connection whose error rate exceeds it over MinRequests or more requests is retired. At most 1.
	MinRequests     int           // 0 means 10.
	JanitorInterval time.Duration // 0 means 30s: how often idle connections are checked for age, errors and idleness.

	// Now is the clock for connection ages and idle times; nil means time.Now.
	Now func() time.Time
	// Proxy chooses the proxy per request; nil means http.ProxyFromEnvironment,
	// which suits destinations from the operator's configuration (not
	// callers' URLs).
	Proxy func(*http.Request) (*url.URL, error)
}

const (
	// drainLimit is the largest unread HTTP/1 body (by Content-Length) that
	// Close reads to EOF so its connection can be reused.
	drainLimit = 4 << 10
	// evictGrace is how long a connection must have been idle before a dial
	// waiting for a slot may close it: net/http hands a freed connection to
	// a waiting request before that request's GotConn marks it in use.
	evictGrace = 10 * time.Millisecond
	// evictPoll is how often a dial waiting for a slot looks for an idle
	// connection to evict.
	evictPoll = 10 * time.Millisecond
)

// withDefaults validates s and fills in its defaults.
func (s Settings) withDefaults() (Settings, error) {
	var errs []error
	negative := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("connpool: %s must not be negative, got %d", name, v))
		}
	}
	negative("MaxConnsPerHost", int64(s.MaxConnsPerHost))
	negative("MaxTotalConns", int64(s.MaxTotalConns))
	negative("ConnTTL", int64(s.ConnTTL))
	negative("IdleTimeout", int64(s.IdleTimeout))
	negative("DialTimeout", int64(s.DialTimeout))
	negative("MinRequests", int64(s.MinRequests))
	negative("JanitorInterval", int64(s.JanitorInterval))
	if s.ErrorThreshold < 0 || s.ErrorThreshold > 1 {
		errs = append(errs, fmt.Errorf("connpool: ErrorThreshold must be within [0, 1], got %v", s.ErrorThreshold))
	}
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	setDefault(&s.MaxConnsPerHost, 10)
	setDefault(&s.MaxTotalConns, 100)
	setDefault(&s.ConnTTL, 300*time.Second)
	setDefault(&s.IdleTimeout, 60*time.Second)
	setDefault(&s.DialTimeout, 5*time.Second)
	setDefault(&s.ErrorThreshold, 0.5)
	setDefault(&s.MinRequests, 10)
	setDefault(&s.JanitorInterval, 30*time.Second)
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Proxy == nil {
		s.Proxy = http.ProxyFromEnvironment
	}
	return s, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Pool is the instrumented outbound transport. Its methods are safe for
// concurrent use.
type Pool struct {
	s         Settings // with defaults; read-only
	transport *http.Transport
	dialer    *net.Dialer
	slots     *semaphore.Weighted // MaxTotalConns; one held by each open connection

	mu    sync.Mutex
	conns map[*trackedConn]struct{} // guarded by mu: open connections
	hosts map[string]*hostCounters  // guarded by mu: by dialed address; entries are never removed

	counters counters // atomic

	stop      chan struct{} // closed by Close to stop the janitor
	janitor   sync.WaitGroup
	closeOnce sync.Once
}

// hostCounters are one host's request outcomes. Guarded by Pool.mu.
type hostCounters struct {
	requests, errors int64
}

// counters are the Pool's cumulative statistics; ResetStats zeroes them.
type counters struct {
	connsCreated, connsClosed              atomic.Int64
	requests, reused, errors               atomic.Int64
	retiredAge, retiredErrors, retiredIdle atomic.Int64
}

// New returns a Pool and starts its janitor; Close stops it. It fails, naming
// the setting, if a setting is invalid.
func New(s Settings) (*Pool, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		s:      s,
		dialer: &net.Dialer{Timeout: s.DialTimeout, KeepAlive: 30 * time.Second},
		slots:  semaphore.NewWeighted(int64(s.MaxTotalConns)),
		conns:  make(map[*trackedConn]struct{}),
		hosts:  make(map[string]*hostCounters),
		stop:   make(chan struct{}),
	}
	p.transport = &http.Transport{
		Proxy:                 s.Proxy,
		DialContext:           p.dial,
		ForceAttemptHTTP2:     true,
		MaxConnsPerHost:       s.MaxConnsPerHost,
		MaxIdleConnsPerHost:   s.MaxConnsPerHost,
		MaxIdleConns:          s.MaxTotalConns,
		IdleConnTimeout:       s.IdleTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	p.janitor.Add(1)
	go p.runJanitor()
	return p, nil
}

// RoundTrip implements http.RoundTripper over the pool's Transport.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := newRoundTrip(p, req)
	resp, err := p.transport.RoundTrip(rt.out)
	return rt.done(req, resp, err)
}

// CloseIdleConnections closes the connections that carry no request.
func (p *Pool) CloseIdleConnections() {
	p.transport.CloseIdleConnections()
}

// Close stops the janitor and closes idle connections. Connections carrying
// a request close when their response is done. The Pool remains usable as a
// RoundTripper, without its janitor.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		close(p.stop)
		p.janitor.Wait()
	})
	p.transport.CloseIdleConnections()
	return nil
}

// dial is the Transport's DialContext: it takes a slot under MaxTotalConns,
// dials, and registers the tracked connection.
func (p *Pool) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := p.acquireSlot(ctx); err != nil {
		return nil, err
	}
	nc, err := p.dialer.DialContext(ctx, network, addr)
	if err != nil {
		p.slots.Release(1)
		return nil, err
	}
	now := p.s.Now()
	c := &trackedConn{Conn: nc, pool: p, host: addr, createdAt: now, lastUsed: now}
	p.mu.Lock()
	c.counters = p.hostLocked(addr)
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.counters.connsCreated.Add(1)
	return c, nil
}

// acquireSlot takes one of MaxTotalConns slots. When none is free it waits,
// evicting idle connections, until one is or ctx, or the context of the
// request the dial is for, is done. net/http detaches dials from the
// request's cancellation so that a dial can serve a later request; waiting
// for a slot on behalf of a request that has gone serves no one.
func (p *Pool) acquireSlot(ctx context.Context) error {
	if p.slots.TryAcquire(1) {
		return nil
	}
	if rt, ok := ctx.Value(roundTripKey{}).(*roundTrip); ok {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		defer context.AfterFunc(rt.ctx, func() { cancel(context.Cause(rt.ctx)) })()
	}
	for {
		if p.evictIdle() && p.slots.TryAcquire(1) {
			return nil
		}
		wait, cancel := context.WithTimeout(ctx, evictPoll)
		err := p.slots.Acquire(wait, 1)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("connpool: waiting for one of %d connection slots: %w", p.s.MaxTotalConns, context.Cause(ctx))
		}
	}
}

// evictIdle closes the least recently used connection that has carried no
// request for at least evictGrace, and reports whether there was one.
// Connections already being retired or closed are left to finish.
func (p *Pool) evictIdle() bool {
	now := p.s.Now()
	var lru *trackedConn
	p.mu.Lock()
	for c := range p.conns {
		if c.inflight == 0 && !c.closing && c.retire == notRetired &&
			now.Sub(c.lastUsed) >= evictGrace &&
			(lru == nil || c.lastUsed.Before(lru.lastUsed)) {
			lru = c
		}
	}
	p.mu.Unlock()
	return lru != nil && p.retireConn(lru, retiredIdle, true)
}

// retireConn closes c for reason r, unless it is already closed or, with
// onlyIdle, carries a request. It reports whether it did.
//
// An HTTP/1 connection is closed outright: should the Transport be handing
// it out at this very moment, the request's write fails with nothing written
// and the Transport retries it elsewhere if its body can be replayed. The
// HTTP/2 client does not retry that, so an HTTP/2 connection is retired by
// failing its reader instead: the Transport then marks it dead, so that no
// new stream picks it, before it closes it.
func (p *Pool) retireConn(c *trackedConn, r retireReason, onlyIdle bool) bool {
	p.mu.Lock()
	if c.closed || (onlyIdle && c.inflight > 0) {
		p.mu.Unlock()
		return false
	}
	if c.retire == notRetired {
		c.retire = r
	}
	multiplexed := c.multiplexed
	p.mu.Unlock()
	if multiplexed {
		_ = c.SetReadDeadline(aLongTimeAgo)
		return true
	}
	_ = c.Close() // the error of closing a connection no one uses is of no interest
	return true
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// forget unregisters c once, counts why it closed, and frees its slot.
func (p *Pool) forget(c *trackedConn) {
	p.mu.Lock()
	if c.closed {
		p.mu.Unlock()
		return
	}
	c.closed = true
	delete(p.conns, c)
	reason := c.retire
	if reason == notRetired && c.inflight == 0 && !c.closing && c.uses > 0 {
		// Closed while idle by someone else: the Transport's idle timeout
		// or CloseIdleConnections, or the peer.
		reason = retiredIdle
	}
	p.mu.Unlock()

	p.counters.connsClosed.Add(1)
	switch reason {
	case retiredByAge:
		p.counters.retiredAge.Add(1)
	case retiredByErrors:
		p.counters.retiredErrors.Add(1)
	case retiredIdle:
		p.counters.retiredIdle.Add(1)
	}
	p.slots.Release(1)
}

// retireReasonLocked is why c must not carry another request at now, if it
// must not. p.mu must be held.
func (p *Pool) retireReasonLocked(c *trackedConn, now time.Time) retireReason {
	switch {
	case c.retire != notRetired:
		return c.retire
	case now.Sub(c.createdAt) > p.s.ConnTTL:
		return retiredByAge
	case c.requests >= int64(p.s.MinRequests) &&
		float64(c.errors) > p.s.ErrorThreshold*float64(c.requests):
		return retiredByErrors
	}
	return notRetired
}

// hostLocked returns the counters of host, creating them. p.mu must be held.
func (p *Pool) hostLocked(host string) *hostCounters {
	hc := p.hosts[host]
	if hc == nil {
		hc = &hostCounters{}
		p.hosts[host] = hc
	}
	return hc
}

func (p *Pool) runJanitor() {
	defer p.janitor.Done()
	t := time.NewTicker(p.s.JanitorInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.janitorOnce()
		}
	}
}

// janitorOnce closes the idle connections that are too old, too
// error-prone, or idle for longer than IdleTimeout.
func (p *Pool) janitorOnce() {
	type victim struct {
		c      *trackedConn
		reason retireReason
	}
	var victims []victim
	now := p.s.Now()
	p.mu.Lock()
	for c := range p.conns {
		if c.inflight > 0 {
			continue
		}
		r := p.retireReasonLocked(c, now)
		if r == notRetired && now.Sub(c.lastUsed) > p.s.IdleTimeout {
			r = retiredIdle
		}
		if r != notRetired {
			victims = append(victims, victim{c, r})
		}
	}
	p.mu.Unlock()
	for _, v := range victims {
		p.retireConn(v.c, v.reason, true)
	}
}
