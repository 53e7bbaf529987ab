package faults

// Rows I1–I8: hostile destinations and hostile answers for Fetch, against
// the real binary. The guarded web site lives on 127.0.0.2 (allow-listed as
// 127.0.0.2/32 where a row needs a page), so 127.0.0.1 and every other
// internal address stay under the SSRF guard.
//
// I2, I3, I5 and I6 need names to resolve as the row says (a metadata name,
// a name that rebinds, names that a proxy rule would catch, a public name on
// a private port): the gateway runs with a stub DNS server as its only
// resolver (startGatewayResolvedBy: unshare --mount and a bind-mounted
// resolv.conf), which needs root, as CI and this machine run the suite. The
// I3 rebinding's "public" first answer is an allow-listed loopback address,
// so no test traffic leaves the machine; the guard judges both answers in
// the same dial-time check.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// iAllowWeb admits the hostile web site (and only it) past the SSRF guard.
var iAllowWeb = map[string]string{"VEGA_FETCH_ALLOW": "127.0.0.2/32"}

// iFetchAll fetches each URL once as tenant A and tallies the codes; want
// is the code every one must end with.
func iFetchAll(t *testing.T, g *gateway, urls []string, want codes.Code) *codeTally {
	t.Helper()
	var c codeTally
	fc := vegav1.NewFetchServiceClient(g.Conn())
	for _, u := range urls {
		_, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: u})
		if got := c.add(err); got != want {
			t.Errorf("Fetch %s: %v, want %v", u, err, want)
		}
	}
	return &c
}

func TestI1LoopbackSpellings(t *testing.T) {
	record(t, Row{ID: "I1",
		Did: "Fetch of loopback and unspecified addresses in every spelling (127.0.0.1, localhost, [::1], 0.0.0.0, 0, 2130706433, 0x7f.1, 127.1, " +
			"0177.0.0.1, 0x7f000001, [::ffff:127.0.0.1], [::ffff:7f00:1], LOCALHOST, [::], [0:0:0:0:0:0:0:1]), on the port of a listener that counts accepts and on port 80; the gateway allow-lists only 127.0.0.2/32, " +
			"and an ordinary Fetch of a page there",
		MustHold: "every one PERMISSION_DENIED, no connection reaches the loopback listeners (accepts = 0); the page on 127.0.0.2 is fetched (OK)"})
	v4 := listenCounting(t, "127.0.0.1:0")
	v6 := listenCounting(t, "[::1]:0")
	web := newHostileWeb(t, "127.0.0.2:0")
	g := startGateway(t, iAllowWeb)

	p4, p6 := v4.port(), v6.port()
	var urls []string
	for _, h := range []string{"127.0.0.1", "localhost", "0.0.0.0", "0", "2130706433", "0x7f.1", "127.1", "0177.0.0.1", "0x7f000001", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "LOCALHOST"} {
		urls = append(urls, "http://"+h+":"+p4+"/", "http://"+h+"/")
	}
	for _, h := range []string{"[::1]", "[::]", "[0:0:0:0:0:0:0:1]"} {
		urls = append(urls, "http://"+h+":"+p6+"/", "http://"+h+"/")
	}
	urls = append(urls, "https://127.0.0.1:"+p4+"/", "https://[::1]:"+p6+"/")
	refused := iFetchAll(t, g, urls, codes.PermissionDenied)

	// Ordinary use beside it: the allow-listed page is fetched.
	resp, err := vegav1.NewFetchServiceClient(g.Conn()).Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: web.URL + "/page"})
	if err != nil || resp.GetStatusCode() != 200 {
		t.Fatalf("ordinary Fetch of the allowed page: %v (status %d)", err, resp.GetStatusCode())
	}
	accepts4, accepts6 := v4.accepted.Load(), v6.accepted.Load()
	// The counters work: a dial by the test itself is counted.
	for _, ln := range []*acceptCounter{v4, v6} {
		c, err := net.Dial("tcp", ln.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	iWaitFor(t, 5*time.Second, func() bool { return v4.accepted.Load() == accepts4+1 && v6.accepted.Load() == accepts6+1 })
	if accepts4 != 0 || accepts6 != 0 {
		t.Errorf("the gateway connected to loopback: %d accepts on 127.0.0.1:%s, %d on [::1]:%s", accepts4, p4, accepts6, p6)
	}
	record(t, Row{ID: "I1", Measured: fmt.Sprintf("%d URLs: %s; accepts on 127.0.0.1:%s = %d, on [::1]:%s = %d (a dial by the test itself: counted 1 each); "+
		"ordinary Fetch of 127.0.0.2: OK 200, %d request at the page", len(urls), refused, p4, accepts4, p6, accepts6, web.count("/page"))})
}

func TestI2InternalAddresses(t *testing.T) {
	record(t, Row{ID: "I2",
		Did: "Fetch of cloud metadata and internal addresses: 169.254.169.254 (also as [::ffff:…], 0xa9.0xfe.0xa9.0xfe, 2852039166, 6to4 [2002:a9fe:a9fe::]), " +
			"[fd00:ec2::254], metadata.google.internal (a stub DNS server, the gateway's only resolver, answers 169.254.169.254), 169.254.170.2, " +
			"100.64.0.1 (CGNAT), [64:ff9b::a00:1] (NAT64), 10/8, 172.16/12, 192.168/16, [fe80::1], [fc00::1], 198.18.0.1, 240.0.0.1, 224.0.0.1, 255.255.255.255",
		MustHold: "every one PERMISSION_DENIED, refused at dial (the metadata name was resolved, then refused), nothing else"})
	dns := newStubDNS(t, map[string]string{"metadata.google.internal": "169.254.169.254"})
	g := startGatewayResolvedBy(t, dns, nil)
	urls := []string{
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:169.254.169.254]/",
		"http://0xa9.0xfe.0xa9.0xfe/",
		"http://2852039166/",
		"http://[2002:a9fe:a9fe::]/",
		"http://[fd00:ec2::254]/",
		"http://metadata.google.internal/computeMetadata/v1/",
		"http://169.254.170.2/v2/credentials",
		"http://100.64.0.1/",
		"http://[64:ff9b::a00:1]/",
		"http://10.0.0.1/",
		"http://172.16.0.1/",
		"http://192.168.0.1/",
		"http://[fe80::1]/",
		"http://[fc00::1]/",
		"http://198.18.0.1/",
		"http://240.0.0.1/",
		"http://224.0.0.1/",
		"http://255.255.255.255/",
	}
	refused := iFetchAll(t, g, urls, codes.PermissionDenied)
	q := dns.queries("metadata.google.internal")
	if q == 0 {
		t.Errorf("metadata.google.internal was never resolved: the refusal did not come from the dial guard")
	}
	record(t, Row{ID: "I2", Measured: fmt.Sprintf("%d URLs: %s; the stub DNS answered %d A queries for metadata.google.internal", len(urls), refused, q)})
}

func TestI3DNSRebinding(t *testing.T) {
	record(t, Row{ID: "I3",
		Did: "a stub DNS server is the real binary's only resolver (its own mount namespace, resolv.conf bind-mounted); rebind.vega.test first resolves to " +
			"a permitted address (127.0.0.2, allow-listed: the stand-in for a public one, so no traffic leaves the machine), the page answers and closes " +
			"its connection; then the same name resolves to 127.0.0.1, where a listener counts accepts, and is fetched again (another path: no cache)",
		MustHold: "first Fetch OK; second PERMISSION_DENIED naming the host, not the address; 0 accepts on 127.0.0.1; the name was resolved for each dial"})
	probe := listenCounting(t, "127.0.0.1:0")
	web := newHostileWeb(t, "127.0.0.2:"+probe.port()) // the same port on both addresses
	dns := newStubDNS(t, map[string]string{"rebind.vega.test": "127.0.0.2"})
	g := startGatewayResolvedBy(t, dns, iAllowWeb)
	fc := vegav1.NewFetchServiceClient(g.Conn())
	base := "http://rebind.vega.test:" + probe.port()

	first, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: base + "/close?n=1"})
	if err != nil || first.GetStatusCode() != 200 {
		t.Fatalf("first Fetch (permitted answer): %v", err)
	}
	dns.set("rebind.vega.test", "127.0.0.1")
	_, err = fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: base + "/close?n=2"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Fetch after rebinding: %v, want PermissionDenied", err)
	}
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, "rebind.vega.test resolves to a loopback address") || strings.Contains(msg, "127.0.0.1") {
		t.Errorf("refusal message %q: want the host named and the address not disclosed", msg)
	}
	if n := probe.accepted.Load(); n != 0 {
		t.Errorf("%d connections reached 127.0.0.1 after rebinding", n)
	}
	if n := web.count("/close"); n != 1 {
		t.Errorf("the permitted page saw %d requests, want 1", n)
	}
	if q := dns.queries("rebind.vega.test"); q < 2 {
		t.Errorf("the name was resolved %d times, want one per dial (2)", q)
	}
	record(t, Row{ID: "I3", Measured: fmt.Sprintf("first Fetch: OK %d (page hit %d); after rebinding: %s (%q); accepts on 127.0.0.1:%s = %d; A queries for the name: %d",
		first.GetStatusCode(), web.count("/close"), status.Code(err), msg, probe.port(), probe.accepted.Load(), dns.queries("rebind.vega.test"))})
}

func TestI4Redirects(t *testing.T) {
	record(t, Row{ID: "I4",
		Did: "an allow-listed page (127.0.0.2) redirects (302, 301, 307, 308) to 169.254.169.254, to 127.0.0.1 (a listener counting accepts), to " +
			"[::1], to a name of the metadata service via a decimal IP, to file:///etc/passwd, gopher:// and a protocol-relative //169.254.169.254/; " +
			"a 20-hop chain and a redirect loop; and, as ordinary use, a 3-hop chain on the page's own host",
		MustHold: "internal hops and other schemes PERMISSION_DENIED with 0 accepts on loopback; the chain and the loop stop after 5 redirects " +
			"(UNAVAILABLE, exactly 6 requests each reach the site); the 3-hop chain is OK with its final URL"})
	probe := listenCounting(t, "127.0.0.1:0")
	web := newHostileWeb(t, "127.0.0.2:0")
	g := startGateway(t, iAllowWeb)
	fc := vegav1.NewFetchServiceClient(g.Conn())
	to := func(target string, code int) string {
		return web.URL + "/redirect-to?code=" + fmt.Sprint(code) + "&u=" + url.QueryEscape(target)
	}
	var internal []string
	for _, code := range []int{301, 302, 307, 308} {
		internal = append(internal, to("http://169.254.169.254/latest/meta-data/", code))
	}
	internal = append(internal,
		to("http://127.0.0.1:"+probe.port()+"/", 302),
		to("http://localhost:"+probe.port()+"/", 302),
		to("http://[::1]/", 302),
		to("http://2852039166/", 302),
		to("file:///etc/passwd", 302),
		to("gopher://127.0.0.1:"+probe.port()+"/", 302),
		to("//169.254.169.254/latest/meta-data/", 302),
	)
	refused := iFetchAll(t, g, internal, codes.PermissionDenied)
	if n := probe.accepted.Load(); n != 0 {
		t.Errorf("%d connections reached 127.0.0.1 through redirects", n)
	}

	long := iFetchAll(t, g, []string{web.URL + "/hop/0?last=20", web.URL + "/loop"}, codes.Unavailable)
	hops, loops := web.total("/hop/"), web.count("/loop")
	if hops != 6 || loops != 6 {
		t.Errorf("requests that reached the site: chain %d, loop %d; want 6 each (the first + 5 redirects)", hops, loops)
	}

	resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: web.URL + "/hop/100?last=103"})
	if err != nil || string(resp.GetBody()) != "end of the chain" || !strings.HasSuffix(resp.GetFinalUrl(), "/hop/103?last=103") {
		t.Errorf("ordinary 3-hop chain: %v, body %q, final URL %q", err, resp.GetBody(), resp.GetFinalUrl())
	}
	record(t, Row{ID: "I4", Measured: fmt.Sprintf("%d internal or non-http redirects: %s, accepts on 127.0.0.1 = %d; 20-hop chain and loop: %s, "+
		"requests at the site %d and %d; 3-hop chain: OK, final URL …%s",
		len(internal), refused, probe.accepted.Load(), long, hops, loops, resp.GetFinalUrl()[len(web.URL):])})
}

func TestI5ProxyFromEnvironmentIgnored(t *testing.T) {
	record(t, Row{ID: "I5",
		Did: "the gateway runs with HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, http_proxy and https_proxy naming a listener that counts accepts; " +
			"Fetch of web.vega.test (a stub DNS name for the allow-listed 127.0.0.2: a name, so Go's proxy rules would use the proxy) and of " +
			"internal.vega.test (resolving to 127.0.0.1)",
		MustHold: "the page is fetched directly (OK, 1 request at the site); the internal name is PERMISSION_DENIED; the proxy is never contacted (0 accepts)"})
	proxy := listenCounting(t, "127.0.0.1:0")
	probe := listenCounting(t, "127.0.0.1:0")
	web := newHostileWeb(t, "127.0.0.2:0")
	_, webPort, _ := net.SplitHostPort(web.Listener.Addr().String())
	dns := newStubDNS(t, map[string]string{"web.vega.test": "127.0.0.2", "internal.vega.test": "127.0.0.1"})
	proxyURL := "http://" + proxy.ln.Addr().String()
	g := startGatewayResolvedBy(t, dns, map[string]string{
		"VEGA_FETCH_ALLOW": "127.0.0.2/32",
		"HTTP_PROXY":       proxyURL, "HTTPS_PROXY": proxyURL, "ALL_PROXY": proxyURL,
		"http_proxy": proxyURL, "https_proxy": proxyURL,
	})
	fc := vegav1.NewFetchServiceClient(g.Conn())
	resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: "http://web.vega.test:" + webPort + "/page"})
	if err != nil || resp.GetStatusCode() != 200 {
		t.Fatalf("Fetch of the allowed name with proxies in the environment: %v", err)
	}
	_, err2 := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: "http://internal.vega.test:" + probe.port() + "/"})
	if status.Code(err2) != codes.PermissionDenied {
		t.Errorf("Fetch of a name resolving to loopback: %v, want PermissionDenied", err2)
	}
	if n := proxy.accepted.Load(); n != 0 {
		t.Errorf("the proxy from the environment was contacted %d times", n)
	}
	if n := probe.accepted.Load(); n != 0 {
		t.Errorf("%d connections reached 127.0.0.1", n)
	}
	if n := web.count("/page"); n != 1 {
		t.Errorf("the site saw %d requests, want 1 (direct)", n)
	}
	record(t, Row{ID: "I5", Measured: fmt.Sprintf("web.vega.test: OK %d, %d request at the site; internal.vega.test: %s; accepts at the proxy = %d, at 127.0.0.1 = %d",
		resp.GetStatusCode(), web.count("/page"), status.Code(err2), proxy.accepted.Load(), probe.accepted.Load())})
}

func TestI6NonWebPorts(t *testing.T) {
	record(t, Row{ID: "I6",
		Did:      "Fetch of a public name (example.vega.test, stub DNS answer 93.184.215.14) and of that IP on ports 6379, 22, 25, 5432, 11211, 6443 (https) and 9200",
		MustHold: "every one PERMISSION_DENIED naming the port, refused in the dial guard before connect (so nothing leaves the machine)"})
	dns := newStubDNS(t, map[string]string{"example.vega.test": "93.184.215.14"})
	g := startGatewayResolvedBy(t, dns, nil)
	var urls []string
	for _, p := range []string{"6379", "22", "25", "5432", "11211", "9200"} {
		urls = append(urls, "http://example.vega.test:"+p+"/", "http://93.184.215.14:"+p+"/")
	}
	urls = append(urls, "https://example.vega.test:6443/")
	var c codeTally
	fc := vegav1.NewFetchServiceClient(g.Conn())
	for _, u := range urls {
		_, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: u})
		c.add(err)
		port := u[strings.LastIndex(u, ":")+1 : len(u)-1]
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "port "+port+" not allowed") {
			t.Errorf("Fetch %s: %v, want PermissionDenied naming port %s", u, err, port)
		}
	}
	record(t, Row{ID: "I6", Measured: fmt.Sprintf("%d URLs: %s, each message naming its port; A queries for example.vega.test: %d",
		len(urls), &c, dns.queries("example.vega.test"))})
}

func TestI7HugeEndlessAndBomb(t *testing.T) {
	record(t, Row{ID: "I7",
		Did: "Fetch (max_bytes 1 MiB) of a page claiming 10 GB, an endless chunked stream and a gzip bomb (1 GiB of zeros in ~1 MiB of gzip " +
			"members); the bomb again at the server's 10 MiB default (a client allowing 16 MiB answers); then 6 of them at once (max_bytes 1 MiB)",
		MustHold: "each is cut at the limit: OK with truncated = true and exactly max bytes (the product's documented answer; the matrix's " +
			"RESOURCE_EXHAUSTED would discard the bytes), the bomb's body all zeros; the site writes a bounded amount; the gateway's heap stays bounded " +
			"(< 256 MiB) and its goroutines return to their level"})
	web := newHostileWeb(t, "127.0.0.2:0")
	g := startGateway(t, iAllowWeb)
	fc := vegav1.NewFetchServiceClient(g.Conn())
	before := g.Runtime(t)
	big := grpc.MaxCallRecvMsgSize(16 << 20)
	check := func(path string, maxBytes int64, want int) {
		t.Helper()
		resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 60*time.Second), keyA), &vegav1.FetchRequest{Url: web.URL + path, MaxBytes: maxBytes}, big)
		if err != nil {
			t.Errorf("Fetch %s (max %d): %v", path, maxBytes, err)
			return
		}
		if !resp.GetTruncated() || len(resp.GetBody()) != want {
			t.Errorf("Fetch %s (max %d): truncated %v, %d bytes; want truncated, %d", path, maxBytes, resp.GetTruncated(), len(resp.GetBody()), want)
		}
		if path == "/bomb" && !bytes.Equal(resp.GetBody(), make([]byte, want)) {
			t.Errorf("the bomb's body is not its decompressed zeros")
		}
	}
	for _, p := range []string{"/huge", "/endless", "/bomb"} {
		check(p, 1<<20, 1<<20)
	}
	check("/bomb", 0, 10<<20) // the server's own limit
	afterOne := web.written.Load()
	errs := make(chan error, 6)
	for i := range 6 {
		p := []string{"/huge", "/endless", "/bomb"}[i%3]
		go func() {
			resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 60*time.Second), keyA), &vegav1.FetchRequest{Url: web.URL + p, MaxBytes: 1 << 20})
			if err == nil && (!resp.GetTruncated() || len(resp.GetBody()) != 1<<20) {
				err = fmt.Errorf("%s: truncated %v, %d bytes", p, resp.GetTruncated(), len(resp.GetBody()))
			}
			errs <- err
		}()
	}
	for range 6 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Fetch: %v", err)
		}
	}
	peak := g.Runtime(t)
	var after runtimeSnap
	settled := iWaitFor(t, 20*time.Second, func() bool {
		after = g.Runtime(t)
		return after.Goroutines <= before.Goroutines+5
	})
	if !settled {
		t.Errorf("goroutines %d after, %d before", after.Goroutines, before.Goroutines)
	}
	if peak.HeapBytes > 256<<20 || after.HeapBytes > 256<<20 {
		t.Errorf("heap %d MiB right after, %d MiB settled: not bounded", peak.HeapBytes>>20, after.HeapBytes>>20)
	}
	written := web.written.Load()
	if written > 1<<30 {
		t.Errorf("the site wrote %d MiB: the gateway kept reading past its limit", written>>20)
	}
	record(t, Row{ID: "I7", Measured: fmt.Sprintf("3 fetches at 1 MiB, the bomb at the 10 MiB default, 6 at once at 1 MiB: every one OK, truncated, "+
		"exactly at the limit; bytes the site wrote: %d MiB for the first four, %d MiB in all (a bomb is 1 GiB decompressed, the other two pages endless); "+
		"gateway before: %s; right after the concurrent six: %s; settled: %s",
		afterOne>>20, written>>20, before, peak, after)})
}

func TestI8LyingAndInvalidUTF8Answers(t *testing.T) {
	record(t, Row{ID: "I8",
		Did: "Fetch over gRPC and over the HTTP port (JSON) of a PNG labelled text/html, binary bytes labelled application/json (invalid UTF-8), " +
			"a page whose header value is Latin-1 (invalid UTF-8), a redirect to a Latin-1 path and one to a Latin-1 query",
		MustHold: "every answer OK (no INTERNAL): the body is the exact bytes, content_type is sniffed (image/png, application/octet-stream), " +
			"invalid header bytes arrive as U+FFFD, the final URL is valid UTF-8 (invalid bytes percent-encoded)"})
	web := newHostileWeb(t, "127.0.0.2:0")
	g := startGateway(t, iAllowWeb)
	fc := vegav1.NewFetchServiceClient(g.Conn())
	var c codeTally
	pages := []struct {
		path, sniffed string
		body          []byte
	}{
		{"/lying-png", "image/png", iPNGBytes},
		{"/lying-binary", "application/octet-stream", iBinaryBytes},
		{"/latin1-header", "text/html; charset=utf-8", []byte("<html><body>caf\xe9</body></html>")},
	}
	for _, p := range pages {
		resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: web.URL + p.path})
		if c.add(err) != codes.OK {
			t.Errorf("Fetch %s: %v", p.path, err)
			continue
		}
		if !bytes.Equal(resp.GetBody(), p.body) || resp.GetContentType() != p.sniffed {
			t.Errorf("Fetch %s: body %q, type %q; want %q, %q", p.path, resp.GetBody(), resp.GetContentType(), p.body, p.sniffed)
		}
		if p.path == "/latin1-header" && resp.GetHeaders()["X-Title"] != "caf\uFFFD cr\uFFFDme" {
			t.Errorf("Latin-1 header arrived as %q", resp.GetHeaders()["X-Title"])
		}
	}
	resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: web.URL + "/latin1-redirect"})
	if c.add(err) != codes.OK || resp.GetStatusCode() != 404 || !utf8.ValidString(resp.GetFinalUrl()) {
		t.Errorf("redirect to a Latin-1 path: %v (status %d, final URL %q)", err, resp.GetStatusCode(), resp.GetFinalUrl())
	}
	qresp, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), keyA), &vegav1.FetchRequest{Url: web.URL + "/latin1-query-redirect"})
	if c.add(err) != codes.OK || qresp.GetStatusCode() != 200 || !strings.HasSuffix(qresp.GetFinalUrl(), "/page?q=caf%E9") {
		t.Errorf("redirect to a Latin-1 query: %v (status %d, final URL %q)", err, qresp.GetStatusCode(), qresp.GetFinalUrl())
	}

	// The HTTP port, plain JSON: bytes arrive base64-encoded and exact.
	httpCodes := map[int]int{}
	for _, p := range pages {
		var out struct {
			Body        string            `json:"body"`
			ContentType string            `json:"contentType"`
			Headers     map[string]string `json:"headers"`
		}
		code := iPostJSON(t, g, "/vega.v1.FetchService/Fetch", keyA, fmt.Sprintf(`{"url":%q}`, web.URL+p.path), &out)
		httpCodes[code]++
		body, _ := base64.StdEncoding.DecodeString(out.Body)
		if code != 200 || !bytes.Equal(body, p.body) || out.ContentType != p.sniffed {
			t.Errorf("HTTP Fetch %s: %d, body %q, type %q", p.path, code, body, out.ContentType)
		}
	}
	record(t, Row{ID: "I8", Measured: fmt.Sprintf("gRPC: %s (the 3 bodies exact, types sniffed, Latin-1 header as U+FFFD, final URLs …%s and …%s); HTTP port: status %v. "+
		"Before the fixes in this issue the Latin-1 header page and the Latin-1 query redirect answered INTERNAL ('string field contains invalid UTF-8')",
		&c, strings.TrimPrefix(resp.GetFinalUrl(), web.URL), strings.TrimPrefix(qresp.GetFinalUrl(), web.URL), httpCodes)})
}

// iPostJSON posts body to the gateway's HTTP port as plain JSON with key
// (none when "") and decodes a JSON answer into out (when not nil); it
// returns the HTTP status.
func iPostJSON(t *testing.T, g *gateway, path, key, body string, out any) int {
	t.Helper()
	return iPostHTTP(t, g, path, http.Header{"Content-Type": {"application/json"}, "X-Api-Key": iNonEmpty(key)}, strings.NewReader(body), out)
}

func iNonEmpty(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}

// iPostHTTP posts body to the gateway's HTTP port with header (names sent
// as written) and decodes a JSON answer into out (when not nil); it returns
// the HTTP status. Its connection is closed afterwards, so a row's
// goroutine counts are not inflated by idle keep-alives.
func iPostHTTP(t *testing.T, g *gateway, path string, header http.Header, body io.Reader, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxFor(t, 30*time.Second), http.MethodPost, "http://"+g.HTTPAddr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the answer: %v", path, err)
	}
	if out != nil && len(raw) > 0 && strings.Contains(resp.Header.Get("Content-Type"), "json") {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Errorf("POST %s: answer %d is not JSON: %q", path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode
}

// iWaitFor polls cond every 50 ms until it holds or d passes.
func iWaitFor(t *testing.T, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
