package faults

// Rows I9–I11: bytes the gateway must decode before any handler runs —
// malformed protobuf, gRPC framing and JSON, invalid UTF-8 in string
// fields, and messages over the 4 MiB limit, plain or compressed — sent
// to the real binary over gRPC (a pass-through codec, and raw HTTP/2
// frames) and over its HTTP port.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

const (
	generateMethod        = "/vega.v1.GenerateService/Generate"
	notifyMethod          = "/vega.v1.NotifyService/Notify"
	getNotificationMethod = "/vega.v1.NotifyService/GetNotification"
	fetchMethod           = "/vega.v1.FetchService/Fetch"
)

// invokeRaw sends raw as the request message of method, as tenant A, and
// returns the call's error.
func invokeRaw(ctx context.Context, g *gateway, method string, raw []byte) error {
	var out []byte
	return g.Conn().Invoke(ctxWithKey(ctx, keyA), method, &raw, &out, grpc.ForceCodec(rawCodec{}))
}

// pbString appends field num as a length-delimited string, even invalid UTF-8.
func pbString(b []byte, num protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// validGenerate is a well-formed GenerateRequest for the fake LLM (the
// default backend) with prompt.
func validGenerate(prompt string) []byte {
	return pbString(pbString(nil, 1, "llama"), 2, prompt)
}

// malformedCase is one hostile request body and the code it must end with.
type malformedCase struct {
	name string
	raw  []byte
	want codes.Code
}

func malformedGenerateCases() []malformedCase {
	deep := func(n int) []byte {
		var b []byte
		for range n {
			b = protowire.AppendTag(b, 9999, protowire.StartGroupType)
		}
		for range n {
			b = protowire.AppendTag(b, 9999, protowire.EndGroupType)
		}
		return append(validGenerate("I9 deep groups"), b...)
	}
	unknown := validGenerate("I9 unknown fields")
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, 999, protowire.VarintType), 42)
	unknown = pbString(unknown, 1000, "\xff not even UTF-8 in an unknown field")
	unknown = protowire.AppendFixed64(protowire.AppendTag(unknown, 1001, protowire.Fixed64Type), 7)
	rng := rand.New(rand.NewPCG(14, 9))
	garbage := make([]byte, 256)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	return []malformedCase{
		{"truncated tag varint", []byte{0x80}, codes.Internal},
		{"truncated length varint", append(validGenerate("I9"), 0x12, 0x80), codes.Internal},
		{"length past the end", append(pbString(nil, 1, "llama"), 0x12, 0x10, 'a', 'b'), codes.Internal},
		{"varint of 11 bytes", append(validGenerate("I9"), 0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), codes.Internal},
		{"field number 0", []byte{0x02, 0x00}, codes.Internal},
		{"end group without start", append(validGenerate("I9"), 0x0c), codes.Internal},
		{"start group never ended", append(validGenerate("I9"), 0x0b), codes.Internal},
		{"groups nested 100000 deep", deep(100000), codes.Internal},
		{"model sent as a varint (wrong wire type)", append(protowire.AppendVarint([]byte{0x08}, 5), pbString(nil, 2, "I9 wrong wire type")...), codes.InvalidArgument},
		{"options sent as fixed32 (wrong wire type)", append(validGenerate("I9 wrong wire type options"), 0x25, 1, 2, 3, 4), codes.OK},
		{"unknown fields around a valid request", unknown, codes.OK},
		{"empty message", nil, codes.InvalidArgument},
		{"256 random bytes", garbage, codes.Internal},
	}
}

func TestI9MalformedProtobuf(t *testing.T) {
	record(t, Row{ID: "I9",
		Did: "Generate requests of malformed protobuf through the gateway's codec (a pass-through client codec: truncated varints and lengths, an " +
			"11-byte varint, field 0, unbalanced groups, groups nested 100000 deep, wrong wire types, unknown fields, random bytes); raw HTTP/2 " +
			"gRPC frames that lie (length past the end, compressed flag without an encoding, an unknown encoding, two messages on a unary call, " +
			"none); malformed JSON and proto bodies on the HTTP port; the seed corpus of FuzzI9RawRequest",
		MustHold: "each ends with a clean status (INTERNAL from decoding, INVALID_ARGUMENT from validation, OK where the bytes are a valid " +
			"request with unknown fields ignored); HTTP answers 4xx with a JSON error; no panic, the process stays up with its goroutine count; " +
			"the backend sees only the valid requests"})
	llm := newFakeLLM(t, llmOpts{})
	g := startGateway(t, llm.env())
	before := g.Runtime(t)

	var grpcCodes codeTally
	valid := 0
	for _, c := range malformedGenerateCases() {
		err := invokeRaw(ctxFor(t, 20*time.Second), g, generateMethod, c.raw)
		if got := grpcCodes.add(err); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if c.want == codes.OK {
			valid++
		}
	}
	if got := int(llm.calls.Load()); got != valid {
		t.Errorf("the backend saw %d calls, want %d (the valid requests only)", got, valid)
	}

	var frameCodes codeTally
	for _, c := range lyingFrames() {
		code := postGRPCFrames(t, g, generateMethod, c.encoding, c.body)
		frameCodes.add(status.Error(code, ""))
		if code != c.want {
			t.Errorf("frames %s: %v, want %v", c.name, code, c.want)
		}
	}

	httpStatus := map[int]int{}
	for _, c := range badHTTPBodies() {
		var out struct{ Code string }
		code := iPostHTTP(t, g, "/vega.v1.GenerateService/Generate", http.Header{"Content-Type": {c.contentType}, "X-Api-Key": {keyA}}, bytes.NewReader(c.body), &out)
		httpStatus[code]++
		if code != c.status || out.Code != c.code {
			t.Errorf("HTTP %s: %d %q, want %d %q", c.name, code, out.Code, c.status, c.code)
		}
	}
	if got := int(llm.calls.Load()); got != valid+2 {
		t.Errorf("the backend saw %d calls, want %d", got, valid+2)
	}
	var after runtimeSnap
	if !iWaitFor(t, 20*time.Second, func() bool { after = g.Runtime(t); return after.Goroutines <= before.Goroutines+5 }) {
		t.Errorf("goroutines %d after, %d before", after.Goroutines, before.Goroutines)
	}
	record(t, Row{ID: "I9", Measured: fmt.Sprintf("%d malformed or odd messages over gRPC: %s; %d lying HTTP/2 framings: %s; %d bad HTTP bodies: status %v; "+
		"backend calls %d (the %d valid + 2 valid over HTTP); gateway before %s, after %s, still serving",
		len(malformedGenerateCases()), &grpcCodes, len(lyingFrames()), &frameCodes, len(badHTTPBodies()), httpStatus, llm.calls.Load(), valid, before, after)})
}

type frameCase struct {
	name, encoding string
	body           []byte
	want           codes.Code
}

// frame is one gRPC length-prefixed message.
func frame(flag byte, msg []byte, claimed int) []byte {
	b := []byte{flag, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(claimed))
	return append(b, msg...)
}

func lyingFrames() []frameCase {
	ok := validGenerate("I9 frames")
	return []frameCase{
		{"length prefix past the end of the stream", "", frame(0, ok, len(ok)+1000), codes.Internal},
		{"compressed flag without an encoding", "", frame(1, ok, len(ok)), codes.Internal},
		{"unknown compressed-flag value", "", frame(0x80, ok, len(ok)), codes.Internal},
		{"unknown grpc-encoding", "snappy", frame(1, ok, len(ok)), codes.Unimplemented},
		{"gzip flag with bytes that are not gzip", "gzip", frame(1, ok, len(ok)), codes.Internal},
		{"two messages on a unary call", "", append(frame(0, ok, len(ok)), frame(0, ok, len(ok))...), codes.Internal},
		{"no message at all", "", nil, codes.Internal},
		{"half a prefix", "", []byte{0, 0, 0}, codes.Internal},
	}
}

// postGRPCFrames sends body as the request stream of a gRPC call over
// HTTP/2 without TLS, and returns grpc-status.
func postGRPCFrames(t *testing.T, g *gateway, method, encoding string, body []byte) codes.Code {
	t.Helper()
	// One connection per call, closed when the call is over, whatever state
	// the client left its stream in.
	var conns []net.Conn
	tr := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer func() {
		tr.CloseIdleConnections()
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	req, err := http.NewRequestWithContext(ctxFor(t, 20*time.Second), http.MethodPost, "http://"+g.Addr+method, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("X-Api-Key", keyA)
	if encoding != "" {
		req.Header.Set("Grpc-Encoding", encoding)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("raw HTTP/2 call: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	s := resp.Trailer.Get("Grpc-Status")
	if s == "" {
		s = resp.Header.Get("Grpc-Status") // trailers-only answer
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("no grpc-status in the answer (HTTP %d)", resp.StatusCode)
	}
	return codes.Code(n)
}

type httpBodyCase struct {
	name, contentType string
	body              []byte
	status            int
	code              string
}

func badHTTPBodies() []httpBodyCase {
	deep := strings.Repeat(`{"options":`, 20000) + "1" + strings.Repeat("}", 20000)
	validProto := validGenerate("I9 HTTP control")
	return []httpBodyCase{
		{"truncated JSON", "application/json", []byte(`{"model":"llama","prompt":`), 400, "invalid_argument"},
		{"a JSON array", "application/json", []byte(`[1,2,3]`), 400, "invalid_argument"},
		{"a number for a string field", "application/json", []byte(`{"model":5,"prompt":"x"}`), 400, "invalid_argument"},
		{"JSON nested 20000 deep", "application/json", []byte(deep), 400, "invalid_argument"},
		{"not JSON at all", "application/json", []byte("\x00\x01\x02"), 400, "invalid_argument"},
		{"truncated binary proto (Connect)", "application/proto", validProto[:len(validProto)-3], 400, "invalid_argument"},
		{"binary proto with an 11-byte varint (Connect)", "application/proto", append(slices.Clone(validProto), 0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), 400, "invalid_argument"},
		// Unknown fields are ignored, as in binary protobuf (connect-go's JSON codec discards them).
		{"valid JSON with an unknown field", "application/json", []byte(`{"model":"llama","prompt":"I9 HTTP unknown field","bogus":1}`), 200, ""},
		{"valid binary proto (Connect), control", "application/proto", validProto, 200, ""},
	}
}

// FuzzI9RawRequest sends arbitrary bytes as the request message of
// Generate, Notify and GetNotification to the real binary (one gateway for
// the whole run; default backend: the built-in sim, no channels, so no
// input reaches the network). Whatever the bytes, the call must end with a
// status a decoder or validator gives, and the process must stay up. As a
// normal test it runs the seeds; to fuzz for longer:
//
//	go test -run '^$' -fuzz FuzzI9RawRequest -fuzztime 5m -parallel 1 ./perf/faults
//
// Each fuzz worker builds and starts its own gateway. The coverage that
// guides the fuzzer is the test process's (the client), not the gateway's,
// so the mutation is close to blind: about 10 inputs a second on 2 cores,
// measured; the in-process FuzzGenerateValidation (package service) is the
// coverage-guided one.
func FuzzI9RawRequest(f *testing.F) {
	for _, c := range malformedGenerateCases() {
		f.Add(uint8(0), c.raw)
	}
	notify, _ := proto.Marshal(&vegav1.NotifyRequest{Channel: "nowhere", Text: "hi", IdempotencyKey: "k"})
	f.Add(uint8(1), notify)
	f.Add(uint8(1), append(slices.Clone(notify), 0x1a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff)) // a payload Struct cut short
	f.Add(uint8(2), []byte{0x0a, 0x03, 'a', 'b', 'c'})
	f.Add(uint8(2), pbString(nil, 1, "\xc3\x28"))
	g := startGateway(f, nil)
	methods := []string{generateMethod, notifyMethod, getNotificationMethod}
	allowed := []codes.Code{codes.OK, codes.InvalidArgument, codes.Internal, codes.NotFound, codes.FailedPrecondition, codes.ResourceExhausted}
	f.Fuzz(func(t *testing.T, m uint8, raw []byte) {
		method := methods[int(m)%len(methods)]
		err := invokeRaw(ctxFor(t, 20*time.Second), g, method, raw)
		if code := status.Code(err); !slices.Contains(allowed, code) {
			t.Fatalf("%s with %x: %v (the gateway may have crashed)", method, raw, err)
		}
	})
	f.Cleanup(func() { g.Runtime(f) }) // the process is still up after every input
}

func TestI10InvalidUTF8InStringFields(t *testing.T) {
	record(t, Row{ID: "I10",
		Did: "requests whose string fields hold invalid UTF-8 (a pass-through codec): Generate model, prompt and a chat message's content, " +
			"Notify text and idempotency key, Fetch url; the same over the HTTP port as JSON with raw invalid bytes and as Connect binary proto; " +
			"a valid Generate, Notify and Fetch as ordinary use beside them",
		MustHold: "refused while decoding (gRPC INTERNAL, HTTP 400), before any handler: 0 calls at the LLM, 0 deliveries at the webhook, 0 requests " +
			"at the web site; the valid ones are served (1 each)"})
	llm := newFakeLLM(t, llmOpts{})
	hook := newFakeHook(t)
	web := newHostileWeb(t, "127.0.0.2:0")
	g := startGateway(t, iMerge(llm.env(), hook.webhookEnv(), iAllowWeb))
	chat := protowire.AppendBytes(protowire.AppendTag(pbString(nil, 1, "llama"), 3, protowire.BytesType),
		pbString(pbString(nil, 1, "user"), 2, "caf\xe9"))
	bad := []struct {
		name, method string
		raw          []byte
	}{
		{"Generate model", generateMethod, pbString(pbString(nil, 1, "ll\xffama"), 2, "I10")},
		{"Generate prompt", generateMethod, validGenerate("caf\xe9")},
		{"Generate chat content", generateMethod, chat},
		{"Notify text", notifyMethod, pbString(pbString(nil, 1, "webhook"), 2, "I10 \xc3\x28")},
		{"Notify idempotency key", notifyMethod, pbString(pbString(pbString(nil, 1, "webhook"), 2, "I10 key"), 4, "k\xe2\x82")},
		{"Fetch url", fetchMethod, pbString(nil, 1, web.URL+"/page?\xff")},
	}
	var c codeTally
	for _, b := range bad {
		err := invokeRaw(ctxFor(t, 20*time.Second), g, b.method, b.raw)
		if c.add(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "invalid UTF-8") {
			t.Errorf("%s: %v, want INTERNAL naming invalid UTF-8", b.name, err)
		}
	}
	httpStatus := map[int]int{}
	for _, b := range []struct{ path, contentType, body string }{
		{"/vega.v1.GenerateService/Generate", "application/json", `{"model":"llama","prompt":"caf` + "\xe9" + `"}`},
		{"/vega.v1.NotifyService/Notify", "application/json", `{"channel":"webhook","text":"I10 ` + "\xc3\x28" + `"}`},
		{"/vega.v1.GenerateService/Generate", "application/proto", string(validGenerate("caf\xe9"))},
	} {
		var out struct{ Code string }
		code := iPostHTTP(t, g, b.path, http.Header{"Content-Type": {b.contentType}, "X-Api-Key": {keyA}}, strings.NewReader(b.body), &out)
		httpStatus[code]++
		if code != 400 || out.Code != "invalid_argument" {
			t.Errorf("HTTP %s (%s): %d %q, want 400 invalid_argument", b.path, b.contentType, code, out.Code)
		}
	}
	handled := fmt.Sprintf("LLM calls %d, webhook deliveries %d, web requests %d", llm.calls.Load(), hook.counts().Attempts, web.total("/"))
	if llm.calls.Load() != 0 || hook.counts().Attempts != 0 || web.total("/") != 0 {
		t.Errorf("a handler ran for an invalid request: %s", handled)
	}
	// Ordinary use beside it.
	ctx := ctxWithKey(ctxFor(t, 20*time.Second), keyA)
	if _, err := vegav1.NewGenerateServiceClient(g.Conn()).Generate(ctx, &vegav1.GenerateRequest{Model: "llama", Prompt: "café"}); err != nil {
		t.Errorf("valid Generate: %v", err)
	}
	if _, err := vegav1.NewNotifyServiceClient(g.Conn()).Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "I10 café"}); err != nil {
		t.Errorf("valid Notify: %v", err)
	}
	if _, err := vegav1.NewFetchServiceClient(g.Conn()).Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + "/page"}); err != nil {
		t.Errorf("valid Fetch: %v", err)
	}
	ok := fmt.Sprintf("LLM calls %d, webhook attempts %d, web requests %d", llm.calls.Load(), hook.counts().Attempts, web.total("/"))
	if llm.calls.Load() != 1 || hook.counts().Attempts != 1 || web.total("/") != 1 {
		t.Errorf("ordinary calls: %s, want 1 each", ok)
	}
	record(t, Row{ID: "I10", Measured: fmt.Sprintf("%d invalid requests over gRPC: %s; 3 over HTTP: status %v; after them: %s; after the 3 valid ones: %s",
		len(bad), &c, httpStatus, handled, ok)})
}

func TestI11OverTheMessageLimit(t *testing.T) {
	record(t, Row{ID: "I11",
		Did: "Generate with a 5 MiB prompt; with a 5 MiB prompt gzip-compressed to a few KiB (grpc-encoding gzip); 3 such compressed " +
			"requests at once; both again as native gRPC on the HTTP port; there a 5 MiB JSON body, and a gzip-compressed JSON and Connect body expanding to 5 MiB; as ordinary " +
			"use a 512 KiB prompt compressed, over gRPC and HTTP",
		MustHold: "RESOURCE_EXHAUSTED (HTTP 429 resource_exhausted) every time, 0 backend calls for them; the ordinary ones are served; the gateway's " +
			"heap stays bounded (< 128 MiB) and its goroutines return to their level"})
	llm := newFakeLLM(t, llmOpts{})
	g := startGateway(t, llm.env())
	gc := vegav1.NewGenerateServiceClient(g.Conn())
	before := g.Runtime(t)
	huge := strings.Repeat("a", 5<<20)
	ctx := func() context.Context { return ctxWithKey(ctxFor(t, 30*time.Second), keyA) }
	var c codeTally
	_, err := gc.Generate(ctx(), &vegav1.GenerateRequest{Model: "llama", Prompt: huge})
	if c.add(err) != codes.ResourceExhausted {
		t.Errorf("5 MiB prompt: %v, want ResourceExhausted", err)
	}
	wire, _ := proto.Marshal(&vegav1.GenerateRequest{Model: "llama", Prompt: huge})
	compressed := gzipBytes(wire)
	_, err = gc.Generate(ctx(), &vegav1.GenerateRequest{Model: "llama", Prompt: huge}, grpc.UseCompressor(grpcgzip.Name))
	if c.add(err) != codes.ResourceExhausted {
		t.Errorf("5 MiB prompt, gzip: %v, want ResourceExhausted", err)
	}
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := gc.Generate(ctx(), &vegav1.GenerateRequest{Model: "llama", Prompt: huge}, grpc.UseCompressor(grpcgzip.Name))
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; c.add(err) != codes.ResourceExhausted {
			t.Errorf("concurrent 5 MiB gzip: %v", err)
		}
	}
	// The HTTP port serves native gRPC too (HTTP/2 with prior knowledge).
	hc, err := grpc.NewClient(g.HTTPAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]grpc.CallOption{nil, {grpc.UseCompressor(grpcgzip.Name)}} {
		_, err := vegav1.NewGenerateServiceClient(hc).Generate(ctx(), &vegav1.GenerateRequest{Model: "llama", Prompt: huge}, opts...)
		if c.add(err) != codes.ResourceExhausted {
			t.Errorf("5 MiB prompt, native gRPC on the HTTP port (%d options): %v, want ResourceExhausted", len(opts), err)
		}
	}
	_ = hc.Close()
	peak := g.Runtime(t)
	refusedCalls := llm.calls.Load()

	httpStatus := map[int]int{}
	jsonHuge := []byte(`{"model":"llama","prompt":"` + huge + `"}`)
	for _, b := range []struct {
		name   string
		header http.Header
		body   []byte
	}{
		{"5 MiB JSON", http.Header{"Content-Type": {"application/json"}}, jsonHuge},
		{"gzip JSON expanding to 5 MiB", http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}, gzipBytes(jsonHuge)},
		{"gzip Connect proto expanding to 5 MiB", http.Header{"Content-Type": {"application/proto"}, "Content-Encoding": {"gzip"}}, compressed},
	} {
		b.header.Set("X-Api-Key", keyA)
		var out struct{ Code string }
		code := iPostHTTP(t, g, "/vega.v1.GenerateService/Generate", b.header, bytes.NewReader(b.body), &out)
		httpStatus[code]++
		if code != 429 || out.Code != "resource_exhausted" {
			t.Errorf("HTTP %s: %d %q, want 429 resource_exhausted", b.name, code, out.Code)
		}
	}
	if refusedCalls != 0 || llm.calls.Load() != 0 {
		t.Errorf("oversized requests reached the backend: %d calls", llm.calls.Load())
	}

	// Ordinary use: a large but allowed prompt, compressed, both ports.
	ordinary := strings.Repeat("b", 512<<10)
	if _, err := gc.Generate(ctx(), &vegav1.GenerateRequest{Model: "llama", Prompt: ordinary}, grpc.UseCompressor(grpcgzip.Name)); err != nil {
		t.Errorf("512 KiB prompt, gzip: %v", err)
	}
	okJSON := gzipBytes([]byte(`{"model":"llama","prompt":"` + strings.Repeat("c", 512<<10) + `"}`))
	if code := iPostHTTP(t, g, "/vega.v1.GenerateService/Generate", http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}, "X-Api-Key": {keyA}}, bytes.NewReader(okJSON), nil); code != 200 {
		t.Errorf("HTTP 512 KiB gzip JSON: %d", code)
	}
	if n := llm.calls.Load(); n != 2 {
		t.Errorf("backend calls for the ordinary requests: %d, want 2", n)
	}
	var after runtimeSnap
	if !iWaitFor(t, 20*time.Second, func() bool { after = g.Runtime(t); return after.Goroutines <= before.Goroutines+5 }) {
		t.Errorf("goroutines %d after, %d before", after.Goroutines, before.Goroutines)
	}
	if peak.HeapBytes > 128<<20 || after.HeapBytes > 128<<20 {
		t.Errorf("heap %d MiB after the refusals, %d MiB at the end", peak.HeapBytes>>20, after.HeapBytes>>20)
	}
	record(t, Row{ID: "I11", Measured: fmt.Sprintf("gRPC 5 MiB (plain 1, gzip %d KiB on the wire 1, then 3 at once; the same plain and gzip as native gRPC on the HTTP port): %s; HTTP (5 MiB JSON, gzip JSON, gzip Connect): status %v; "+
		"backend calls for them 0; ordinary 512 KiB gzip over gRPC and HTTP: OK, 2 backend calls; gateway before %s, after the refusals %s, at the end %s",
		len(compressed)>>10, &c, httpStatus, before, peak, after)})
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}
