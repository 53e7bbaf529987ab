package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// httpClient is a client of its own whose idle connections are closed when
// the test ends (goleak).
func httpClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (g *gateway) baseURL() string { return "http://" + g.srv.HTTPAddr() }

// connectClient is a connect-go client of one RPC on the HTTP face.
func connectClient[Req, Res any](t *testing.T, g *gateway, procedure string, opts ...connect.ClientOption) *connect.Client[Req, Res] {
	return connect.NewClient[Req, Res](httpClient(t), g.baseURL()+procedure, opts...)
}

// rawResult is what a curl-style call saw.
type rawResult struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// postJSON posts body as a plain JSON request, the way curl does: no
// Connect-Protocol-Version header.
func postJSON(t *testing.T, g *gateway, procedure, body string, header map[string]string) rawResult {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxTimeout(t, 20*time.Second), http.MethodPost, g.baseURL()+procedure, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient(t).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := rawResult{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(raw, &r.body), "body: %s", raw)
	}
	return r
}

func TestHTTPConnectClientCallsEveryService(t *testing.T) {
	ollama := newFakeOllama(t)
	slack := newFakeSlack(t)
	web := newFakeWeb(t)
	g := startGateway(t, map[string]string{
		"VEGA_ADMIN_API_KEY": "adm", "VEGA_OLLAMA_URL": ollama.URL, "SLACK_WEBHOOK_URL": slack.URL,
		"VEGA_FETCH_ALLOW": "127.0.0.1",
	})
	ctx := ctxTimeout(t, 20*time.Second)

	for name, opts := range map[string][]connect.ClientOption{
		"proto": nil, "json": {connect.WithProtoJSON()}, "grpc-web": {connect.WithGRPCWeb()},
	} {
		t.Run(name, func(t *testing.T) {
			gen := connectClient[vegav1.GenerateRequest, vegav1.GenerateResponse](t, g, "/vega.v1.GenerateService/Generate", opts...)
			resp, err := gen.CallUnary(ctx, connect.NewRequest(&vegav1.GenerateRequest{Model: "sim", Prompt: "hello " + name}))
			require.NoError(t, err)
			assert.Equal(t, "sim", resp.Msg.GetBackend())
			assert.NotEmpty(t, resp.Msg.GetText())
			assert.Equal(t, "backend", resp.Header().Get(policy.ServedFromHeader), "the perf chain answered")

			stream := connectClient[vegav1.GenerateStreamRequest, vegav1.GenerateStreamResponse](t, g, "/vega.v1.GenerateService/GenerateStream", opts...)
			ss, err := stream.CallServerStream(ctx, connect.NewRequest(&vegav1.GenerateStreamRequest{Model: "ollama-model", Prompt: "one two three " + name}))
			require.NoError(t, err)
			var text strings.Builder
			chunks := 0
			for ss.Receive() {
				chunks++
				text.WriteString(ss.Msg().GetText())
			}
			require.NoError(t, ss.Err())
			require.NoError(t, ss.Close())
			assert.Greater(t, chunks, 1, "streamed in chunks")
			assert.Equal(t, "ollama says: one two three "+name, text.String())

			fetch := connectClient[vegav1.FetchRequest, vegav1.FetchResponse](t, g, "/vega.v1.FetchService/Fetch", opts...)
			fr, err := fetch.CallUnary(ctx, connect.NewRequest(&vegav1.FetchRequest{Url: web.URL + "/page?" + name}))
			require.NoError(t, err)
			assert.Equal(t, int32(200), fr.Msg.GetStatusCode())
			assert.Contains(t, string(fr.Msg.GetBody()), "hello from the fake web")

			notify := connectClient[vegav1.NotifyRequest, vegav1.NotifyResponse](t, g, "/vega.v1.NotifyService/Notify", opts...)
			nr, err := notify.CallUnary(ctx, connect.NewRequest(&vegav1.NotifyRequest{Channel: "slack", Text: "over http " + name}))
			require.NoError(t, err)
			assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, nr.Msg.GetStatus())
			assert.Equal(t, 1, slack.count("over http "+name))

			stats := connectClient[vegav1.GetStatsRequest, vegav1.GetStatsResponse](t, g, "/vega.v1.PerfAdminService/GetStats", opts...)
			req := connect.NewRequest(&vegav1.GetStatsRequest{})
			req.Header().Set("x-api-key", "adm")
			sr, err := stats.CallUnary(ctx, req)
			require.NoError(t, err)
			assert.Positive(t, sr.Msg.GetStats().GetRuntime().GetGoroutines())

			watch := connectClient[vegav1.WatchStatsRequest, vegav1.WatchStatsResponse](t, g, "/vega.v1.PerfAdminService/WatchStats", opts...)
			wctx, cancel := context.WithCancel(ctx)
			wreq := connect.NewRequest(&vegav1.WatchStatsRequest{Interval: durationpb.New(100 * time.Millisecond)})
			wreq.Header().Set("x-api-key", "adm")
			ws, err := watch.CallServerStream(wctx, wreq)
			require.NoError(t, err)
			var times []time.Time
			for len(times) < 3 && ws.Receive() {
				times = append(times, ws.Msg().GetStats().GetTime().AsTime())
			}
			cancel()
			_ = ws.Close()
			require.Len(t, times, 3, "three snapshots: %v", ws.Err())
			assert.True(t, times[0].Before(times[1]) && times[1].Before(times[2]), "fresh snapshots: %v", times)
		})
	}
	// The stream calls reached the fake Ollama once per face: not cached.
	assert.Equal(t, int64(3), ollama.calls.Load())
}

func TestHTTPCurlStyleJSON(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_ADMIN_API_KEY": "adm"})

	r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"sim","prompt":"hi"}`, nil)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	assert.Equal(t, "sim", r.body["backend"])
	assert.NotEmpty(t, r.body["text"])
	assert.Equal(t, "backend", r.header.Get(policy.ServedFromHeader))
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))

	// charset and proto-JSON names (lowerCamel and the proto's own) both work.
	req, err := http.NewRequest(http.MethodPost, g.baseURL()+"/vega.v1.GenerateService/Generate",
		strings.NewReader(`{"model":"sim","prompt":"hi","cache_control":{"mode":"CACHE_MODE_BYPASS"}}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := httpClient(t).Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// Admin over plain JSON, with a Duration as JSON text.
	r = postJSON(t, g, "/vega.v1.PerfAdminService/GetStats", `{"sections":["STATS_SECTION_RUNTIME"]}`, map[string]string{"x-api-key": "adm"})
	require.Equal(t, http.StatusOK, r.status, r.raw)
	stats, _ := r.body["stats"].(map[string]any)
	assert.NotNil(t, stats["runtime"])
	assert.Nil(t, stats["cache"], "sections not asked for are null (unpopulated fields are emitted)")

	// curl -d without -H 'Content-Type: application/json': told what to send.
	resp, err = httpClient(t).Post(g.baseURL()+"/vega.v1.GenerateService/Generate", "application/x-www-form-urlencoded", strings.NewReader(`{"model":"sim","prompt":"hi"}`))
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnsupportedMediaType, resp.StatusCode)
	assert.Contains(t, string(raw), "Content-Type: application/json")

	// A plain JSON POST to a streaming method: told how to call it.
	r = postJSON(t, g, "/vega.v1.GenerateService/GenerateStream", `{"model":"sim","prompt":"hi"}`, nil)
	assert.Equal(t, http.StatusUnsupportedMediaType, r.status)
	assert.Contains(t, r.body["message"], "application/connect+json")

	// Unknown method, unknown path, GET of a method with side effects.
	assert.Equal(t, http.StatusNotFound, postJSON(t, g, "/vega.v1.GenerateService/Nope", `{}`, nil).status)
	resp, err = httpClient(t).Get(g.baseURL() + "/nothing-here")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, err = httpClient(t).Get(g.baseURL() + "/vega.v1.GenerateService/Generate?connect=v1&encoding=json&message=%7B%7D")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	// Health and reflection stay on the gRPC port.
	assert.Equal(t, http.StatusNotFound, postJSON(t, g, "/grpc.health.v1.Health/Check", `{}`, nil).status)
}

// TestHTTPErrorMapping: each gRPC code the gateway returns becomes its
// Connect code and HTTP status; retryable refusals carry Retry-After.
func TestHTTPErrorMapping(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{
		"VEGA_ADMIN_API_KEY": "adm", "VEGA_API_KEYS": "client-1=team", "VEGA_OLLAMA_URL": ollama.URL,
	})
	key := map[string]string{"x-api-key": "client-1"}
	admin := map[string]string{"x-api-key": "adm"}
	check := func(t *testing.T, r rawResult, status int, code string) {
		t.Helper()
		require.Equal(t, status, r.status, r.raw)
		assert.Equal(t, code, r.body["code"], r.raw)
		assert.NotEmpty(t, r.body["message"], r.raw)
	}

	t.Run("401 no key", func(t *testing.T) {
		check(t, postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"sim","prompt":"hi"}`, nil), 401, "unauthenticated")
		check(t, postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"sim","prompt":"hi"}`, map[string]string{"x-api-key": "wrong"}), 401, "unauthenticated")
		check(t, postJSON(t, g, "/vega.v1.PerfAdminService/GetStats", `{}`, nil), 401, "unauthenticated")
		assert.Zero(t, ollama.calls.Load())
	})
	t.Run("403 SSRF guard", func(t *testing.T) {
		check(t, postJSON(t, g, "/vega.v1.FetchService/Fetch", `{"url":"http://127.0.0.1:1/x"}`, key), 403, "permission_denied")
	})
	t.Run("400 bad input", func(t *testing.T) {
		r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"prompt":"no model"}`, key)
		check(t, r, 400, "invalid_argument")
		assert.Contains(t, r.raw, "google.rpc.BadRequest", "details travel")
		r = postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"sim","prompt":`, key)
		check(t, r, 400, "invalid_argument")
		assert.Contains(t, r.body["message"], "vega.v1.GenerateRequest")
		check(t, postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":5}`, key), 400, "invalid_argument")
	})
	t.Run("429 with Retry-After", func(t *testing.T) {
		r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"ratelimited","prompt":"hi"}`, key)
		check(t, r, 429, "resource_exhausted")
		// The backend's Retry-After: 3 travels as RetryInfo (3 s) and as the
		// grpc-retry-pushback-ms trailer, which the gateway jitters by
		// [0.5, 1.5) so refused clients do not return together: 2 to 5 s
		// once rounded up.
		assert.Contains(t, []string{"2", "3", "4", "5"}, r.header.Get("Retry-After"), "the backend's Retry-After: 3, jittered")
		assert.Contains(t, r.raw, "google.rpc.RetryInfo")
	})
	t.Run("503 breaker forced open, with Retry-After", func(t *testing.T) {
		r := postJSON(t, g, "/vega.v1.PerfAdminService/SetBreakerMode", `{"key":"ollama","mode":"BREAKER_MODE_FORCE_OPEN"}`, admin)
		require.Equal(t, 200, r.status, r.raw)
		before := ollama.calls.Load()
		r = postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"m","prompt":"hi"}`, key)
		check(t, r, 503, "unavailable")
		secs, err := strconv.Atoi(r.header.Get("Retry-After"))
		require.NoError(t, err, "Retry-After: %q", r.header.Get("Retry-After"))
		assert.Positive(t, secs)
		assert.Equal(t, before, ollama.calls.Load(), "an open breaker does not call the backend")
	})
	t.Run("429 message over the bound", func(t *testing.T) {
		big := fmt.Sprintf(`{"model":"sim","prompt":%q}`, strings.Repeat("x", maxRecvMsgBytes+1))
		r := postJSON(t, g, "/vega.v1.GenerateService/Generate", big, key)
		check(t, r, 429, "resource_exhausted")
		assert.Empty(t, r.header.Get("Retry-After"), "no retry advice for a message that will never fit")
	})
}

// TestHTTPHerdIsCoalesced: identical calls over HTTP go through the same
// coalescing as gRPC ones: one backend call, the others coalesced.
func TestHTTPHerdIsCoalesced(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL, "INITIAL_RATE_LIMIT": "1000", "MAX_RATE_LIMIT": "1000"})
	const n = 30
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		from = map[string]int{}
	)
	client := httpClient(t)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				sf  string
				err error
			)
			if i%2 == 0 { // half curl-style JSON, half connect-go binary
				var resp *http.Response
				resp, err = client.Post(g.baseURL()+"/vega.v1.GenerateService/Generate", "application/json",
					strings.NewReader(`{"model":"wait-400","prompt":"the http herd"}`))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					sf = resp.Header.Get(policy.ServedFromHeader)
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
			} else {
				c := connect.NewClient[vegav1.GenerateRequest, vegav1.GenerateResponse](client, g.baseURL()+"/vega.v1.GenerateService/Generate")
				var resp *connect.Response[vegav1.GenerateResponse]
				resp, err = c.CallUnary(context.Background(), connect.NewRequest(&vegav1.GenerateRequest{Model: "wait-400", Prompt: "the http herd"}))
				if err == nil {
					sf = resp.Header().Get(policy.ServedFromHeader)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if assert.NoError(t, err) {
				from[sf]++
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(1), ollama.calls.Load(), "exactly one backend call")
	assert.Equal(t, map[string]int{"backend": 1, "coalesced": n - 1}, from)

	// A deterministic answer is cached: the next call is a cache hit.
	for _, want := range []string{"backend", "cache"} {
		r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"m","prompt":"cache me","options":{"temperature":0}}`, nil)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, want, r.header.Get(policy.ServedFromHeader))
	}
	assert.Equal(t, int64(2), ollama.calls.Load())
}

// grpcWebCall posts one gRPC-Web (binary) request and returns the data
// frames' messages and the trailer frame's fields, as a browser's
// grpc-web client reads them.
func grpcWebCall(t *testing.T, g *gateway, procedure string, msg proto.Message, header map[string]string) (int, [][]byte, map[string]string) {
	t.Helper()
	payload, err := proto.Marshal(msg)
	require.NoError(t, err)
	var body bytes.Buffer
	body.WriteByte(0)
	_ = binary.Write(&body, binary.BigEndian, uint32(len(payload)))
	body.Write(payload)
	req, err := http.NewRequestWithContext(ctxTimeout(t, 20*time.Second), http.MethodPost, g.baseURL()+procedure, &body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	req.Header.Set("X-Grpc-Web", "1")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient(t).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	trailer := map[string]string{}
	for k := range resp.Header { // a trailers-only answer sends them as headers
		if strings.HasPrefix(strings.ToLower(k), "grpc-") {
			trailer[strings.ToLower(k)] = resp.Header.Get(k)
		}
	}
	var msgs [][]byte
	rd := bufio.NewReader(resp.Body)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(rd, hdr[:]); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		frame := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		_, err := io.ReadFull(rd, frame)
		require.NoError(t, err)
		if hdr[0]&0x80 == 0 {
			msgs = append(msgs, frame)
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(frame)), "\r\n") {
			k, v, _ := strings.Cut(line, ":")
			trailer[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	return resp.StatusCode, msgs, trailer
}

func TestHTTPGRPCWebWire(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_API_KEYS": "k1"})
	key := map[string]string{"x-api-key": "k1"}

	status, msgs, trailer := grpcWebCall(t, g, "/vega.v1.GenerateService/Generate", &vegav1.GenerateRequest{Model: "sim", Prompt: "web"}, key)
	require.Equal(t, 200, status)
	assert.Equal(t, "0", trailer["grpc-status"])
	require.Len(t, msgs, 1)
	var resp vegav1.GenerateResponse
	require.NoError(t, proto.Unmarshal(msgs[0], &resp))
	assert.Equal(t, "sim", resp.GetBackend())

	status, msgs, trailer = grpcWebCall(t, g, "/vega.v1.GenerateService/GenerateStream", &vegav1.GenerateStreamRequest{Model: "sim", Prompt: "a b c d"}, key)
	require.Equal(t, 200, status)
	assert.Equal(t, "0", trailer["grpc-status"])
	assert.Greater(t, len(msgs), 1, "several chunks")

	status, msgs, trailer = grpcWebCall(t, g, "/vega.v1.GenerateService/Generate", &vegav1.GenerateRequest{Model: "sim", Prompt: "web"}, nil)
	require.Equal(t, 200, status, "gRPC-Web errors travel in the trailers")
	assert.Empty(t, msgs)
	assert.Equal(t, "16", trailer["grpc-status"], "UNAUTHENTICATED: %v", trailer)
}

// TestHTTPStreamErrorsAndShutdown: a stream's error is its end frame, and
// shutdown ends an open WatchStats with UNAVAILABLE promptly rather than
// waiting out the shutdown timeout.
func TestHTTPStreamErrorsAndShutdown(t *testing.T) {
	g, stop := startGatewayWith(t, map[string]string{"VEGA_ADMIN_API_KEY": "adm", "VEGA_SHUTDOWN_TIMEOUT": "20s"}, nil)
	ctx := ctxTimeout(t, 30*time.Second)
	watch := connectClient[vegav1.WatchStatsRequest, vegav1.WatchStatsResponse](t, g, "/vega.v1.PerfAdminService/WatchStats", connect.WithProtoJSON())

	ws, err := watch.CallServerStream(ctx, connect.NewRequest(&vegav1.WatchStatsRequest{}))
	require.NoError(t, err)
	assert.False(t, ws.Receive())
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(ws.Err()))
	_ = ws.Close()

	req := connect.NewRequest(&vegav1.WatchStatsRequest{Interval: durationpb.New(time.Hour)})
	req.Header().Set("x-api-key", "adm")
	ws, err = watch.CallServerStream(ctx, req)
	require.NoError(t, err)
	require.True(t, ws.Receive(), "first snapshot: %v", ws.Err())

	start := time.Now()
	require.NoError(t, stop())
	assert.Less(t, time.Since(start), 10*time.Second, "the open stream did not hold shutdown for its 20s timeout")
	assert.False(t, ws.Receive())
	assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(ws.Err()), "err: %v", ws.Err())
	_ = ws.Close()
}

func TestHTTPCORS(t *testing.T) {
	preflight := func(t *testing.T, g *gateway, origin string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodOptions, g.baseURL()+"/vega.v1.GenerateService/Generate", nil)
		require.NoError(t, err)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "connect-protocol-version,content-type,x-api-key")
		resp, err := httpClient(t).Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	t.Run("off by default", func(t *testing.T) {
		g := startGateway(t, nil)
		resp := preflight(t, g, "https://app.example.com")
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
		r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"sim","prompt":"hi"}`, map[string]string{"Origin": "https://app.example.com"})
		assert.Equal(t, 200, r.status)
		assert.Empty(t, r.header.Get("Access-Control-Allow-Origin"), "a cross-origin page cannot read it")
	})
	t.Run("named origins", func(t *testing.T) {
		g := startGateway(t, map[string]string{"VEGA_HTTP_CORS_ORIGINS": "https://app.example.com, http://localhost:3000/"})
		resp := preflight(t, g, "https://app.example.com")
		assert.Equal(t, "https://app.example.com", resp.Header.Get("Access-Control-Allow-Origin"))
		assert.Contains(t, strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")), "x-api-key")
		assert.Equal(t, "7200", resp.Header.Get("Access-Control-Max-Age"))
		assert.Equal(t, "http://localhost:3000", preflight(t, g, "http://localhost:3000").Header.Get("Access-Control-Allow-Origin"))
		assert.Empty(t, preflight(t, g, "https://evil.example.com").Header.Get("Access-Control-Allow-Origin"))
		r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"sim","prompt":"hi"}`, map[string]string{"Origin": "https://app.example.com"})
		assert.Equal(t, 200, r.status)
		assert.Equal(t, "https://app.example.com", r.header.Get("Access-Control-Allow-Origin"))
		assert.Contains(t, r.header.Get("Access-Control-Expose-Headers"), "X-Vega-Served-From")
	})
	t.Run("bad origins stop start-up", func(t *testing.T) {
		for _, bad := range []string{"*", "https://*.example.com", "app.example.com", "https://app.example.com/path", "ftp://x"} {
			_, err := LoadConfig("", func(k string) string {
				if k == "VEGA_HTTP_CORS_ORIGINS" {
					return bad
				}
				return ""
			})
			require.Error(t, err, bad)
			assert.True(t, strings.HasPrefix(err.Error(), "VEGA_HTTP_CORS_ORIGINS: "), err.Error())
		}
	})
}

// TestHTTPLimiterRefusalAndTelemetry: the gateway's own overload control
// refuses an HTTP call whose turn cannot come before its deadline
// (Connect-Timeout-Ms) with 429 and Retry-After, without reaching the
// backend, and the call is counted in the gRPC server metrics like any
// other.
func TestHTTPLimiterRefusalAndTelemetry(t *testing.T) {
	ollama := newFakeOllama(t)
	g := startGateway(t, map[string]string{"VEGA_OLLAMA_URL": ollama.URL,
		"VEGA_CONCURRENCY_INITIAL": "1", "VEGA_CONCURRENCY_MIN": "1", "VEGA_CONCURRENCY_MAX": "1"})
	// One call teaches the limiter the service time (400 ms), one holds the slot.
	r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"wait-400","prompt":"first"}`, nil)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	held := make(chan int, 1) // the status; require must not run outside the test's goroutine
	client := httpClient(t)
	go func() {
		resp, err := client.Post(g.baseURL()+"/vega.v1.GenerateService/Generate", "application/json", strings.NewReader(`{"model":"wait-400","prompt":"held"}`))
		if err != nil {
			held <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	require.Eventually(t, func() bool { return ollama.calls.Load() == 2 }, 5*time.Second, time.Millisecond)

	start := time.Now()
	r = postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"wait-400","prompt":"late"}`, map[string]string{"Connect-Timeout-Ms": "200"})
	require.Equal(t, http.StatusTooManyRequests, r.status, r.raw)
	assert.Less(t, time.Since(start), 150*time.Millisecond, "refused at once")
	assert.Equal(t, "resource_exhausted", r.body["code"])
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After %q", r.header.Get("Retry-After"))
	assert.Positive(t, secs)
	assert.Contains(t, r.raw, "google.rpc.QuotaFailure")
	assert.Equal(t, http.StatusOK, <-held)
	assert.Equal(t, int64(2), ollama.calls.Load(), "the refused call never reached the backend")

	resp, err := httpClient(t).Get(g.baseURL() + "/metrics")
	require.NoError(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Generate",grpc_service="vega.v1.GenerateService",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="Generate",grpc_service="vega.v1.GenerateService",grpc_type="unary"} 1`,
	} {
		assert.Contains(t, string(metrics), want)
	}
}

// TestHTTPPortServesNativeGRPC: a native gRPC client (HTTP/2 with prior
// knowledge) can use the HTTP port too, through the same chain.
func TestHTTPPortServesNativeGRPC(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_API_KEYS": "k1"})
	conn, err := grpc.NewClient(g.srv.HTTPAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	c := vegav1.NewGenerateServiceClient(conn)
	ctx := ctxTimeout(t, 10*time.Second)
	_, err = c.Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
	requireCode(t, err, codes.Unauthenticated)
	var header metadata.MD
	resp, err := c.Generate(withKey(ctx, "k1"), &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"}, grpc.Header(&header))
	require.NoError(t, err)
	assert.Equal(t, "sim", resp.GetBackend())
	assert.Equal(t, []string{"backend"}, header.Get(policy.ServedFromHeader))
	stream, err := c.GenerateStream(withKey(ctx, "k1"), &vegav1.GenerateStreamRequest{Model: "sim", Prompt: "a b c"})
	require.NoError(t, err)
	chunks := 0
	for {
		if _, err := stream.Recv(); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		chunks++
	}
	assert.Greater(t, chunks, 1)
}
