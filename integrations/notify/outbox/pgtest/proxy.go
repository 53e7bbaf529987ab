package pgtest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy in front of a database that a test can break: Down
// resets every connection and refuses new ones (as a database that is
// gone), Up serves again on the same address.
type Proxy struct {
	target string
	addr   string
	dials  atomic.Int64 // connections accepted, also while down

	mu    sync.Mutex
	ln    net.Listener // guarded by mu
	up    bool         // guarded by mu
	conns []net.Conn   // guarded by mu
	wg    sync.WaitGroup
}

// NewProxy proxies the host of dbURL and returns the proxy and the URL to
// give the code under test. It is closed when the test ends.
func NewProxy(tb testing.TB, dbURL string) (*Proxy, string) {
	tb.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{target: u.Host, addr: ln.Addr().String(), ln: ln, up: true}
	u.Host = p.addr
	p.wg.Go(p.serve)
	tb.Cleanup(func() {
		p.mu.Lock()
		p.ln.Close()
		p.mu.Unlock()
		p.Down()
		p.wg.Wait()
	})
	return p, u.String()
}

// Dials is how many connections the code under test opened so far,
// including those refused while down.
func (p *Proxy) Dials() int64 { return p.dials.Load() }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.dials.Add(1)
		p.mu.Lock()
		up := p.up
		p.mu.Unlock()
		if !up {
			c.Close()
			continue
		}
		db, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, db)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(db, c); db.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, db); c.Close() })
	}
}

// Down cuts every connection and refuses new ones.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = false
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Up lets connections through again.
func (p *Proxy) Up() {
	p.mu.Lock()
	p.up = true
	p.mu.Unlock()
}
