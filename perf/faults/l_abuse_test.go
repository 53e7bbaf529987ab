package faults

// L4: HTTP/2 abuse from one client, written frame by frame with
// golang.org/x/net/http2's Framer on a raw TCP connection (a gRPC client
// cannot misbehave this way).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// rawH2 is a raw HTTP/2 client connection to the gateway's gRPC port.
type rawH2 struct {
	conn   net.Conn
	fr     *http2.Framer
	wmu    sync.Mutex // serialises writes
	hbuf   bytes.Buffer
	henc   *hpack.Encoder
	closed chan struct{} // closed when the server ended the connection

	goAway     atomic.Int32 // GOAWAY error code + 1 (0: none)
	goAwayData atomic.Value // string
	rsts       atomic.Int64 // RST_STREAM frames from the server
	pingAcks   atomic.Int64
}

func dialRawH2(t testing.TB, addr string) *rawH2 {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawH2{conn: conn, closed: make(chan struct{})}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(conn, conn)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go c.read()
	t.Cleanup(func() { conn.Close(); <-c.closed })
	return c
}

// read consumes the server's frames (a client that does not read would be
// throttled by the server's flow control, not by its abuse checks).
func (c *rawH2) read() {
	defer close(c.closed)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				_ = c.fr.WriteSettingsAck()
				c.wmu.Unlock()
			}
		case *http2.GoAwayFrame:
			c.goAway.Store(int32(f.ErrCode) + 1)
			c.goAwayData.Store(string(f.DebugData()))
		case *http2.RSTStreamFrame:
			c.rsts.Add(1)
		case *http2.PingFrame:
			if f.IsAck() {
				c.pingAcks.Add(1)
			}
		}
	}
}

// openAndReset sends HEADERS and one Generate request message (so the
// gateway starts the handler and the call) on stream id, then cancels it
// with RST_STREAM.
func (c *rawH2) openAndReset(id uint32, host string, msg []byte) error {
	return c.openAndResetCT(id, host, "/vega.v1.GenerateService/Generate", "application/grpc", msg)
}

// openAndResetCT is openAndReset for any path and content type (the HTTP
// port takes Connect's application/json).
func (c *rawH2) openAndResetCT(id uint32, host, path, contentType string, msg []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hbuf.Reset()
	for _, hf := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", path},
		{":authority", host}, {"content-type", contentType}, {"te", "trailers"},
		{"x-api-key", keyB},
	} {
		_ = c.henc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	if err := c.fr.WriteData(id, true, msg); err != nil {
		return err
	}
	return c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

func (c *rawH2) ping(n uint64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], n)
	return c.fr.WritePing(false, data)
}

// grpcFrame is msg in gRPC's length-prefixed framing.
func grpcFrame(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(out[1:5], uint32(len(b)))
	copy(out[5:], b)
	return out
}

// TestL4RapidResetAndPingFlood: one client opens Generate streams (HEADERS
// + the request) and cancels each at once with RST_STREAM, as fast as it
// can for 3 s; then another floods PINGs. Meanwhile an ordinary client
// (another tenant, another connection) calls Generate 10 times a second.
// Both ports speak HTTP/2 in the clear: the gRPC port (grpc-go) and the
// HTTP port (net/http's h2c, Connect JSON). The gateway must bound the
// abuser's work (handlers, goroutines, backend calls) and keep serving the
// ordinary client; the gRPC port answers the ping flood with GOAWAY
// ENHANCE_YOUR_CALM. net/http has no ping-rate limit: on the HTTP port
// the flood is measured (pings answered, the ordinary client's latency),
// not required to end.
func TestL4RapidResetAndPingFlood(t *testing.T) {
	const maxStreams = 256 // cmd/server: grpc.MaxConcurrentStreams
	record(t, Row{ID: "L4",
		Did:      "fake Ollama (4 slots x 50 ms); on each port in turn (gRPC; HTTP with Connect JSON), a raw HTTP/2 client (x/net/http2 Framer on TCP) sends HEADERS + a Generate request + RST_STREAM(CANCEL) on new streams as fast as it can for 3 s (tenant B), then another connection sends PING frames in a loop (up to 5 s; make test: 2 s and 2 s); an ordinary client on the same port (tenant A, its own connection) calls Generate at 10/s throughout",
		MustHold: fmt.Sprintf("ordinary client: every call OK; gateway goroutines during the abuse below baseline + %d (handlers bounded: MaxConcurrentStreams %d) and back to baseline after; the abuser's calls cancelled at the backend (none left in flight); gRPC port: the ping flood ends with GOAWAY ENHANCE_YOUR_CALM and the connection closed; the gateway stays up", 8*maxStreams, maxStreams)})
	llm := newFakeLLM(t, llmOpts{Concurrency: 4, Latency: 50 * time.Millisecond})
	g := startGateway(t, llm.env())
	var measured [2]string
	t.Run("grpc port", func(t *testing.T) { measured[0] = l4Abuse(t, g, llm, false) })
	t.Run("http port", func(t *testing.T) { measured[1] = l4Abuse(t, g, llm, true) })
	record(t, Row{ID: "L4", Measured: "gRPC port: " + measured[0] + " HTTP port: " + measured[1]})
}

// l4Abuse runs L4 on one port and returns its figures.
func l4Abuse(t *testing.T, g *gateway, llm *fakeLLM, httpPort bool) string {
	const maxStreams = 256
	gen := vegav1.NewGenerateServiceClient(g.Conn())
	ctx := ctxFor(t, 2*time.Minute)
	port, addr := "grpc", g.Addr
	if httpPort {
		port, addr = "http", g.HTTPAddr
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	ordinary := func(prompt string) error {
		if !httpPort {
			_, err := gen.Generate(ctxWithKey(ctx, keyA), &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt})
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+g.HTTPAddr+"/vega.v1.GenerateService/Generate",
			strings.NewReader(fmt.Sprintf(`{"model":"llama3","prompt":%q}`, prompt)))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-api-key", keyA)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
		}
		return nil
	}
	abuse := func(c *rawH2, id uint32) error {
		prompt := fmt.Sprintf("l4-%s-abuse-%d", port, id)
		if httpPort {
			return c.openAndResetCT(id, addr, "/vega.v1.GenerateService/Generate", "application/json",
				[]byte(fmt.Sprintf(`{"model":"llama3","prompt":%q}`, prompt)))
		}
		return c.openAndReset(id, addr, grpcFrame(t, &vegav1.GenerateRequest{Model: "llama3", Prompt: prompt}))
	}

	// Warm up (the connection pool, the limiter) and take the baseline.
	for i := range 5 {
		if err := ordinary(fmt.Sprintf("l4-%s-warm-%d", port, i)); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	base := g.Runtime(t)
	callsBefore := llm.calls.Load()

	// The ordinary client, for the whole abuse.
	var (
		victim    codeTally
		victimLat latencies
		stop      = make(chan struct{})
		bg        sync.WaitGroup
		peak      atomic.Int64
	)
	paceCtx, stopPace := context.WithCancel(ctx)
	bg.Go(func() {
		pace(paceCtx, 10, time.Hour, func(i int) {
			start := time.Now()
			err := ordinary(fmt.Sprintf("l4-%s-ordinary-%d", port, i))
			if victim.add(err) == codes.OK {
				victimLat.add(time.Since(start))
			} else {
				t.Errorf("ordinary call during the abuse: %v", err)
			}
		})
	})
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if r := g.Runtime(t); r.Goroutines > peak.Load() {
				peak.Store(r.Goroutines)
			}
		}
	})

	// make faults: 3 s of rapid reset, 5 s of ping flood; make test: 2 s each.
	resetFor, floodFor := 2*time.Second, 2*time.Second
	if allRows() {
		resetFor, floodFor = 3*time.Second, 5*time.Second
	}

	// Rapid reset. A server that stops reading the connection blocks a
	// write: the deadline ends it when the time is up.
	abuser := dialRawH2(t, addr)
	var opened int
	var writeErr error
	resetStart := time.Now()
	_ = abuser.conn.SetWriteDeadline(resetStart.Add(resetFor))
	var longestWrite time.Duration // the server reading slower than the abuser writes
	for id := uint32(1); time.Since(resetStart) < resetFor; id += 2 {
		w := time.Now()
		writeErr = abuse(abuser, id)
		longestWrite = max(longestWrite, time.Since(w))
		if writeErr != nil {
			break
		}
		opened++
	}
	resetTook := time.Since(resetStart)
	time.Sleep(2 * time.Second) // cancelled calls leave the backend
	abuserCalls := llm.calls.Load() - callsBefore
	resetGoAway := abuser.goAway.Load()

	// Ping flood on a connection of its own.
	pinger := dialRawH2(t, addr)
	pings := 0
	var pingErr error
	floodStart := time.Now()
	_ = pinger.conn.SetWriteDeadline(floodStart.Add(floodFor))
	for ; time.Since(floodStart) < floodFor && pinger.goAway.Load() == 0; pings++ {
		if pingErr = pinger.ping(uint64(pings)); pingErr != nil {
			break
		}
		if pings%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	floodTook := time.Since(floodStart)
	if !httpPort {
		select {
		case <-pinger.closed:
		case <-time.After(5 * time.Second):
		}
	}
	pingClosed := false
	select {
	case <-pinger.closed:
		pingClosed = true
	default:
	}
	time.Sleep(time.Second) // the ordinary client goes on a little after the abuse
	stopPace()
	close(stop)
	bg.Wait()

	after := settleGoroutines(t, g, base.Goroutines+10, 20*time.Second)
	inFlight := llm.inFlight.Load() + llm.queued.Load()
	abusePrompts := 0
	for id := uint32(1); id < uint32(2*opened+1); id += 2 {
		abusePrompts += llm.callsFor(fmt.Sprintf("l4-%s-abuse-%d", port, id))
	}

	if n := victim.total() - victim.get(codes.OK); n != 0 || victim.total() == 0 {
		t.Errorf("ordinary client: %s during the abuse", &victim)
	}
	if peak.Load() > base.Goroutines+8*maxStreams {
		t.Errorf("gateway goroutines peaked at %d (baseline %d): the abuser's handlers are not bounded", peak.Load(), base.Goroutines)
	}
	if after.Goroutines > base.Goroutines+10 {
		t.Errorf("goroutines did not come back: %d after, %d before", after.Goroutines, base.Goroutines)
	}
	if inFlight != 0 {
		t.Errorf("%d calls still at the backend 2 s after the abuse: cancelled streams left orphans", inFlight)
	}
	code := http2.ErrCode(pinger.goAway.Load() - 1)
	if !httpPort {
		if pinger.goAway.Load() == 0 || code != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("ping flood: no GOAWAY ENHANCE_YOUR_CALM after %d pings (got %v)", pings, code)
		}
		if !pingClosed {
			t.Errorf("ping flood: the connection stayed open")
		}
	}
	if g.Pid() == 0 {
		t.Errorf("the gateway is gone")
	}
	if err := ordinary(fmt.Sprintf("l4-%s-after", port)); err != nil {
		t.Errorf("after the abuse: %v", err)
	}
	resetEnd := "the connection stayed open"
	var ne net.Error
	switch {
	case resetGoAway != 0:
		resetEnd = fmt.Sprintf("GOAWAY %v", http2.ErrCode(resetGoAway-1))
	case errors.As(writeErr, &ne) && ne.Timeout():
		resetEnd = "the connection stayed open (the last write was cut by the time limit)"
	case writeErr != nil:
		resetEnd = fmt.Sprintf("the server closed the connection (%v)", writeErr)
	}
	pingEnd := fmt.Sprintf("and no GOAWAY in %s: the connection stayed open", floodTook.Round(100*time.Millisecond))
	if pinger.goAway.Load() != 0 {
		gaData, _ := pinger.goAwayData.Load().(string)
		pingEnd = fmt.Sprintf("then GOAWAY %v %q, connection closed: %t", code, gaData, pingClosed)
	}
	return fmt.Sprintf(
		"rapid reset: %d streams opened and reset in %s (%.0f/s; the longest write waited %s for the server to read), %d RST_STREAM back, %s; %d of them reached the backend, %d calls still there 2 s later (%d backend calls in all meanwhile). ping flood: %d PINGs (%d acked) %s. ordinary client: %s, latency %s. gateway goroutines: %d before, peak %d during, %d after; heap %.1f → %.1f MiB.",
		opened, resetTook.Round(10*time.Millisecond), float64(opened)/resetTook.Seconds(), ms(longestWrite), abuser.rsts.Load(), resetEnd,
		abusePrompts, inFlight, abuserCalls,
		pings, pinger.pingAcks.Load(), pingEnd,
		&victim, &victimLat, base.Goroutines, peak.Load(), after.Goroutines,
		float64(base.HeapBytes)/(1<<20), float64(after.HeapBytes)/(1<<20))
}
