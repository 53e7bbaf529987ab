package faults

// Helpers of the bad-input rows (I1–I14): loopback listeners that count
// what reaches them, a web site with the hostile pages the rows need (on an
// address of its own, 127.0.0.2, so that the gateway's allow list can admit
// it while 127.0.0.1 stays guarded), a stub DNS server the real binary can
// be pointed at, and a pass-through gRPC codec for raw request bytes.

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// acceptCounter is a TCP listener that counts the connections it accepts
// and closes each at once: the proof that nothing dialled an address.
type acceptCounter struct {
	ln       net.Listener
	accepted atomic.Int64
}

func listenCounting(t *testing.T, addr string) *acceptCounter {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	a := &acceptCounter{ln: ln}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.accepted.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return a
}

func (a *acceptCounter) port() string {
	_, p, _ := net.SplitHostPort(a.ln.Addr().String())
	return p
}

// hostileWeb is a web site on a loopback address with the pages the rows
// fetch (the harness's fakeWeb has no redirects, bombs or lying headers).
// It counts requests per path and the body bytes its endless pages managed
// to write before the reader went away.
type hostileWeb struct {
	*httptest.Server
	mu      sync.Mutex
	hits    map[string]int
	written atomic.Int64 // body bytes of /huge, /endless and /bomb written
	serial  atomic.Int64 // answers of /numbered
	bomb    []byte       // one gzip member: 1 MiB of zeros
}

// iBombMembers is how many gzip members /bomb sends: 1024 × 1 MiB = 1 GiB
// decompressed from about 1 MiB on the wire.
const iBombMembers = 1024

func newHostileWeb(t *testing.T, addr string) *hostileWeb {
	t.Helper()
	w := &hostileWeb{hits: map[string]int{}}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(make([]byte, 1<<20))
	_ = zw.Close()
	w.bomb = buf.Bytes()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	w.Server = httptest.NewUnstartedServer(http.HandlerFunc(w.serve))
	_ = w.Server.Listener.Close()
	w.Server.Listener = ln
	w.Server.Start()
	t.Cleanup(w.Server.Close)
	return w
}

func (w *hostileWeb) count(path string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[path]
}

// total counts requests whose path starts with prefix.
func (w *hostileWeb) total(prefix string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for p, c := range w.hits {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

// writeUntilGone writes chunk until the client stops reading or limit bytes
// are written.
func (w *hostileWeb) writeUntilGone(rw http.ResponseWriter, chunk []byte, limit int64) {
	for n := int64(0); n < limit; n += int64(len(chunk)) {
		if _, err := rw.Write(chunk); err != nil {
			return
		}
		w.written.Add(int64(len(chunk)))
	}
}

func (w *hostileWeb) serve(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	w.hits[r.URL.Path]++
	w.mu.Unlock()
	p := r.URL.Path
	switch {
	case p == "/page":
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(rw, "<!DOCTYPE html><html><body>hello</body></html>")
	case p == "/close":
		// Answers and closes the connection, so the next fetch dials again.
		rw.Header().Set("Connection", "close")
		rw.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(rw, "served by "+r.Host)
	case p == "/numbered":
		// Each answer is numbered, so a caller can tell whose fetch it got.
		rw.Header().Set("Cache-Control", "max-age=60")
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(rw, "answer #%d", w.serial.Add(1))
	case strings.HasPrefix(p, "/redirect-to"):
		// /redirect-to?u=<target>&code=302
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code == 0 {
			code = http.StatusFound
		}
		rw.Header().Set("Location", r.URL.Query().Get("u"))
		rw.WriteHeader(code)
	case strings.HasPrefix(p, "/hop/"):
		// /hop/N redirects to /hop/N+1 until /hop/<last>, which answers.
		n, _ := strconv.Atoi(strings.TrimPrefix(p, "/hop/"))
		last, _ := strconv.Atoi(r.URL.Query().Get("last"))
		if n >= last {
			_, _ = io.WriteString(rw, "end of the chain")
			return
		}
		http.Redirect(rw, r, fmt.Sprintf("/hop/%d?last=%d", n+1, last), http.StatusFound)
	case p == "/loop":
		http.Redirect(rw, r, "/loop", http.StatusFound)
	case p == "/huge":
		// Claims 10 GB and writes until the reader goes away.
		rw.Header().Set("Content-Length", strconv.FormatInt(10<<30, 10))
		rw.Header().Set("Content-Type", "application/octet-stream")
		w.writeUntilGone(rw, make([]byte, 64<<10), 10<<30)
	case p == "/endless":
		// Chunked, never ends on its own.
		rw.Header().Set("Content-Type", "text/plain")
		w.writeUntilGone(rw, bytes.Repeat([]byte("endless "), 8<<10), 1<<40)
	case p == "/bomb":
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			http.Error(rw, "gzip expected", http.StatusBadRequest)
			return
		}
		rw.Header().Set("Content-Encoding", "gzip")
		rw.Header().Set("Content-Type", "text/plain")
		for range iBombMembers {
			if _, err := rw.Write(w.bomb); err != nil {
				return
			}
			w.written.Add(int64(len(w.bomb)))
		}
	case p == "/lying-png":
		// Says HTML, sends a PNG header and bytes that are not UTF-8.
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = rw.Write(iPNGBytes)
	case p == "/lying-binary":
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write(iBinaryBytes)
	case p == "/latin1-header":
		// A header value in Latin-1: legal obs-text in HTTP, invalid UTF-8.
		rw.Header()["X-Title"] = []string{"caf\xe9 cr\xe8me"}
		rw.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
		_, _ = rw.Write([]byte("<html><body>caf\xe9</body></html>"))
	case p == "/latin1-redirect":
		rw.Header()["Location"] = []string{"/caf\xe9"}
		rw.WriteHeader(http.StatusFound)
	case p == "/latin1-query-redirect":
		rw.Header()["Location"] = []string{"/page?q=caf\xe9"}
		rw.WriteHeader(http.StatusFound)
	default:
		http.NotFound(rw, r)
	}
}

var (
	iPNGBytes    = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd\x80\x81")
	iBinaryBytes = []byte{0x00, 0x80, 0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82, 0x00, 0xf0, 0x90}
)

// stubDNS is a DNS server on a loopback address of its own, port 53 (UDP),
// with one scripted IPv4 answer per name that a row may change between
// calls (set): A queries get it (TTL 0), AAAA queries an empty answer, other
// names NXDOMAIN. startGatewayResolvedBy points the real binary at it.
type stubDNS struct {
	ip   string
	conn net.PacketConn
	mu   sync.Mutex
	ans  map[string]netip.Addr // guarded by mu; lower-case FQDN with the trailing dot
	seen map[string]int        // guarded by mu; A queries per name
}

var stubDNSSeq atomic.Int64

func newStubDNS(t testing.TB, answers map[string]string) *stubDNS {
	t.Helper()
	s := &stubDNS{ans: map[string]netip.Addr{}, seen: map[string]int{}}
	for name, ip := range answers {
		s.set(name, ip)
	}
	// 127.53.<pid>.<n>: an address no other test or process uses.
	s.ip = fmt.Sprintf("127.53.%d.%d", os.Getpid()%250+1, stubDNSSeq.Add(1)%250+1)
	conn, err := net.ListenPacket("udp4", s.ip+":53")
	if err != nil {
		t.Fatalf("stub DNS on %s:53 (binding port 53 needs root, as the suite runs): %v", s.ip, err)
	}
	s.conn = conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if out, ok := s.answer(buf[:n]); ok {
				_, _ = conn.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return s
}

func fqdn(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) + "." }

// set makes name resolve to ip from now on.
func (s *stubDNS) set(name, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ans[fqdn(name)] = netip.MustParseAddr(ip)
}

// queries is how many A queries name has had.
func (s *stubDNS) queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[fqdn(name)]
}

func (s *stubDNS) answer(req []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := strings.ToLower(q.Name.String())
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	s.mu.Lock()
	addr, known := s.ans[name]
	if known && q.Type == dnsmessage.TypeA {
		s.seen[name]++
	}
	s.mu.Unlock()
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	if known && q.Type == dnsmessage.TypeA {
		_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}, dnsmessage.AResource{A: addr.As4()})
	}
	out, err := b.Finish()
	return out, err == nil
}

// startGatewayResolvedBy is startGateway with dns as the gateway's only
// name server. The real binary runs in a private mount namespace (unshare
// --mount) where a resolv.conf naming the stub is bind-mounted over
// /etc/resolv.conf, with GODEBUG=netdns=go so Go's own resolver reads it;
// nothing outside that process sees the change. (The harness's
// startGateway has no command prefix, hence this variant; Restart would
// start the binary without the stub.)
func startGatewayResolvedBy(t testing.TB, dns *stubDNS, env map[string]string) *gateway {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver "+dns.ip+"\noptions timeout:1 attempts:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, DataDir: t.TempDir()}
	g.Addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	g.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	full := map[string]string{
		"VEGA_GRPC_ADDR":     g.Addr,
		"VEGA_HTTP_ADDR":     g.HTTPAddr,
		"VEGA_DATA_DIR":      g.DataDir,
		"VEGA_API_KEYS":      keyA + "=tenant-a," + keyB + "=tenant-b",
		"VEGA_ADMIN_API_KEY": adminKey,
		"VEGA_LOG_LEVEL":     "warn",
		"GODEBUG":            "netdns=go",
	}
	maps.Copy(full, env)
	g.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(), "GORACE=halt_on_error=0"}
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

	f, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// sh -c '…' conf server: $0 is the resolv.conf, "$@" the gateway.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /etc/resolv.conf && exec "$@"`, conf, bins.server)
	cmd.Env = g.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start gateway under unshare: %v", err)
	}
	exited := make(chan struct{})
	g.mu.Lock()
	g.cmd, g.exited = cmd, exited
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		g.mu.Lock()
		g.exitErr = err
		g.mu.Unlock()
		close(exited)
	}()
	if err := g.waitServing(exited, 60*time.Second); err != nil {
		t.Fatalf("start gateway: %v\n%s", err, g.Log())
	}
	return g
}

// rawCodec sends and receives message bytes as they are: *[]byte in, *[]byte
// out. Its name is "proto", so the gateway decodes the bytes with its proto
// codec, as it would a real client's.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, errors.New("rawCodec: want *[]byte")
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return errors.New("rawCodec: want *[]byte")
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// iMerge is the union of envs, later ones winning.
func iMerge(envs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, e := range envs {
		maps.Copy(out, e)
	}
	return out
}
