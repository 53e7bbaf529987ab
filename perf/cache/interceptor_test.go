package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

const tenantHeader = "x-tenant"

func tenantOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(tenantHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Prompts that make the fake backend misbehave.
const (
	promptTruncate = "truncate me" // answers with FinishReason "truncated"
	promptFailMid  = "fail midway" // streams one chunk, then UNAVAILABLE
	promptAbandon  = "abandon"     // streams one chunk, waits for the client to leave, sends again, returns nil
)

// backend is the fake GenerateService: it counts its calls and numbers its
// answers, so a test can tell which call an answer came from.
type backend struct {
	vegav1.UnimplementedGenerateServiceServer
	calls   atomic.Int32 // Generate calls
	streams atomic.Int32 // GenerateStream calls

	mu   sync.Mutex
	fail error         // guarded by mu: Generate returns it while set
	hold chan struct{} // guarded by mu: Generate waits for it to close while set
}

func (b *backend) setFail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

// holdCalls makes Generate wait until the returned func is called.
func (b *backend) holdCalls() (release func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	b.hold = ch
	return sync.OnceFunc(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.hold = nil
		close(ch)
	})
}

func (b *backend) Generate(ctx context.Context, req *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	n := b.calls.Add(1)
	b.mu.Lock()
	fail, hold := b.fail, b.hold
	b.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	resp := &vegav1.GenerateResponse{
		Text:         fmt.Sprintf("%s asked %q: answer #%d", tenantOf(ctx), req.GetPrompt(), n),
		Model:        req.GetModel(),
		FinishReason: "stop",
	}
	if req.GetPrompt() == promptTruncate {
		resp.FinishReason = "truncated"
	}
	return resp, nil
}

func (b *backend) GenerateStream(req *vegav1.GenerateStreamRequest, ss grpc.ServerStreamingServer[vegav1.GenerateStreamResponse]) error {
	n := b.streams.Add(1)
	for i := range 3 {
		switch {
		case i == 1 && req.GetPrompt() == promptFailMid:
			return status.Error(codes.Unavailable, "backend went away")
		case i == 1 && req.GetPrompt() == promptAbandon:
			<-ss.Context().Done()
			_ = ss.Send(&vegav1.GenerateStreamResponse{Text: "too late"})
			return nil // a careless handler: the stream is incomplete all the same
		}
		chunk := &vegav1.GenerateStreamResponse{Text: fmt.Sprintf("%s #%d.%d ", req.GetPrompt(), n, i), Done: i == 2}
		if err := ss.Send(chunk); err != nil {
			return err
		}
	}
	return nil
}

// withoutCacheControl is the request as the key sees it: how the caller
// wants the cache used is not part of the answer's identity.
func withoutCacheControl(m proto.Message) proto.Message {
	m = proto.Clone(m)
	switch r := m.(type) {
	case *vegav1.GenerateRequest:
		r.CacheControl = nil
	case *vegav1.GenerateStreamRequest:
		r.CacheControl = nil
	}
	return m
}

// testRule plans like the service does: the key hashes the tenant, the
// method and the request; BYPASS skips reads, NO_STORE skips writes; the
// Store func refuses truncated answers.
func testRule(method string, newRequest func() proto.Message) *policy.Rule {
	return &policy.Rule{
		NewRequest: newRequest,
		Plan: func(ctx context.Context, req proto.Message) (*policy.Decision, error) {
			key, err := policy.HashKey(tenantOf(ctx), method, withoutCacheControl(req))
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			var mode vegav1.CacheMode
			if r, ok := req.(interface{ GetCacheControl() *vegav1.CacheControl }); ok {
				mode = r.GetCacheControl().GetMode()
			}
			return &policy.Decision{
				Key:        key,
				Coalesce:   true, // no coalescer here; Fill's fleet flights need it
				ReadCache:  mode != vegav1.CacheMode_CACHE_MODE_BYPASS,
				WriteCache: mode != vegav1.CacheMode_CACHE_MODE_NO_STORE,
			}, nil
		},
		Store: func(_ *policy.Decision, resp any) (time.Duration, bool, bool) {
			if r, ok := resp.(*vegav1.GenerateResponse); ok && r.GetFinishReason() == "truncated" {
				return 0, false, false
			}
			return 0, false, true
		},
	}
}

func testTable() policy.Table {
	return policy.Table{
		vegav1.GenerateService_Generate_FullMethodName: testRule(vegav1.GenerateService_Generate_FullMethodName,
			func() proto.Message { return new(vegav1.GenerateRequest) }),
		vegav1.GenerateService_GenerateStream_FullMethodName: testRule(vegav1.GenerateService_GenerateStream_FullMethodName,
			func() proto.Message { return new(vegav1.GenerateStreamRequest) }),
	}
}

// harness is a real gRPC server over bufconn with the chain
// policy → cache.Lookup → cache.Fill → backend.
type harness struct {
	client  vegav1.GenerateServiceClient
	backend *backend
	cache   *Cache
	clock   *fakeClock
	done    chan struct{} // one value per finished RPC, after the whole chain returned
}

func newHarness(t *testing.T, s Settings) *harness {
	t.Helper()
	return newHarnessOn(t, s, newFakeClock())
}

// newHarnessOn is newHarness on a given clock, for gateways of one fleet.
func newHarnessOn(t *testing.T, s Settings, clk *fakeClock) *harness {
	t.Helper()
	h := &harness{backend: &backend{}, clock: clk, done: make(chan struct{}, 64)}
	h.cache = newTestCache(t, h.clock, s)
	table := testTable()
	finishedUnary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		defer func() { h.done <- struct{}{} }()
		return handler(ctx, req)
	}
	finishedStream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		defer func() { h.done <- struct{}{} }()
		return handler(srv, ss)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(finishedUnary, policy.UnaryServerInterceptor(table),
			LookupUnaryServerInterceptor(h.cache), FillUnaryServerInterceptor(h.cache)),
		grpc.ChainStreamInterceptor(finishedStream, policy.StreamServerInterceptor(table),
			LookupStreamServerInterceptor(h.cache), FillStreamServerInterceptor(h.cache)),
	)
	vegav1.RegisterGenerateServiceServer(srv, h.backend)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	h.client = vegav1.NewGenerateServiceClient(conn)
	return h
}

type result struct {
	text       string
	servedFrom string
	err        error
}

func (h *harness) generate(ctx context.Context, tenant string, req *vegav1.GenerateRequest) result {
	var header metadata.MD
	resp, err := h.client.Generate(metadata.AppendToOutgoingContext(ctx, tenantHeader, tenant), req, grpc.Header(&header))
	<-h.done
	return result{resp.GetText(), first(header.Get(policy.ServedFromHeader)), err}
}

type streamResult struct {
	chunks     []string
	servedFrom string
	err        error
}

func (h *harness) generateStream(ctx context.Context, req *vegav1.GenerateStreamRequest) streamResult {
	var r streamResult
	stream, err := h.client.GenerateStream(metadata.AppendToOutgoingContext(ctx, tenantHeader, "acme"), req)
	if err == nil {
		for {
			var m *vegav1.GenerateStreamResponse
			if m, err = stream.Recv(); err != nil {
				break
			}
			r.chunks = append(r.chunks, m.GetText())
		}
		header, _ := stream.Header()
		r.servedFrom = first(header.Get(policy.ServedFromHeader))
	}
	if !errors.Is(err, io.EOF) {
		r.err = err
	}
	<-h.done
	return r
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func ask(prompt string, mode vegav1.CacheMode) *vegav1.GenerateRequest {
	return &vegav1.GenerateRequest{Model: "m", Prompt: prompt, CacheControl: &vegav1.CacheControl{Mode: mode}}
}

func TestUnarySecondCallIsServedFromCache(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()

	r1 := h.generate(ctx, "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO))
	require.NoError(t, r1.err)
	assert.Equal(t, policy.FromBackend, r1.servedFrom)

	r2 := h.generate(ctx, "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO))
	require.NoError(t, r2.err)
	assert.Equal(t, policy.FromCache, r2.servedFrom)
	assert.Equal(t, r1.text, r2.text)
	assert.Equal(t, int32(1), h.backend.calls.Load(), "the second call never reached the backend")

	s := h.cache.Stats()
	assert.Equal(t, int64(1), s.Hits)
	assert.Equal(t, int64(1), s.Misses)
	assert.Equal(t, int64(1), s.Stores)
	assert.Equal(t, int64(1), s.Entries)
}

func TestUnaryErrorsAreNeverCached(t *testing.T) {
	for _, tc := range []struct {
		name string
		code codes.Code
		call func(h *harness) result
	}{
		{"unavailable", codes.Unavailable, func(h *harness) result {
			h.backend.setFail(status.Error(codes.Unavailable, "backend down"))
			defer h.backend.setFail(nil)
			return h.generate(context.Background(), "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO))
		}},
		{"backend deadline", codes.DeadlineExceeded, func(h *harness) result {
			h.backend.setFail(status.Error(codes.DeadlineExceeded, "backend timed out"))
			defer h.backend.setFail(nil)
			return h.generate(context.Background(), "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO))
		}},
		{"caller cancelled", codes.Canceled, func(h *harness) result {
			release := h.backend.holdCalls()
			defer release()
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				// Cancel once the call is inside the backend, so that the
				// server side ran and ends with the cancellation.
				for h.backend.calls.Load() == 0 {
					time.Sleep(time.Millisecond)
				}
				cancel()
			}()
			return h.generate(ctx, "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Settings{})
			r := tc.call(h)
			assert.Equal(t, tc.code, status.Code(r.err))

			r = h.generate(context.Background(), "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO))
			require.NoError(t, r.err)
			assert.Equal(t, policy.FromBackend, r.servedFrom, "the error was not served from the cache")
			assert.Equal(t, int32(2), h.backend.calls.Load())
			assert.Equal(t, int64(1), h.cache.Stats().Stores, "only the success was stored")
		})
	}
}

func TestUnaryTenantsAreIsolated(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()
	req := ask("same question", vegav1.CacheMode_CACHE_MODE_AUTO)

	acme := h.generate(ctx, "acme", req)
	globex := h.generate(ctx, "globex", req)
	require.NoError(t, acme.err)
	require.NoError(t, globex.err)
	assert.Equal(t, policy.FromBackend, globex.servedFrom, "one tenant's answer is not another's hit")
	assert.Equal(t, int32(2), h.backend.calls.Load())
	assert.Contains(t, acme.text, "acme asked")
	assert.Contains(t, globex.text, "globex asked")

	for tenant, want := range map[string]string{"acme": acme.text, "globex": globex.text} {
		r := h.generate(ctx, tenant, req)
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromCache, r.servedFrom, tenant)
		assert.Equal(t, want, r.text, "%s gets its own answer", tenant)
	}
	assert.Equal(t, int32(2), h.backend.calls.Load())
}

func TestUnaryNoStoreIsNeverStored(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()
	for range 2 {
		r := h.generate(ctx, "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_NO_STORE))
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
	}
	// The same request allowed to read: nothing was stored under its key.
	r := h.generate(ctx, "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO))
	require.NoError(t, r.err)
	assert.Equal(t, policy.FromBackend, r.servedFrom)
	assert.Equal(t, int32(3), h.backend.calls.Load())
	s := h.cache.Stats()
	assert.Equal(t, int64(1), s.Stores, "only the AUTO answer")
	assert.Equal(t, int64(0), s.Rejected, "NO_STORE is policy, not a refused answer")
}

func TestUnaryBypassAlwaysReachesBackend(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()
	require.NoError(t, h.generate(ctx, "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO)).err)
	for range 2 {
		r := h.generate(ctx, "acme", ask("hi", vegav1.CacheMode_CACHE_MODE_BYPASS))
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
	}
	assert.Equal(t, int32(3), h.backend.calls.Load(), "a cached answer exists, BYPASS ignores it")
	assert.Equal(t, int64(0), h.cache.Stats().Hits)
}

func TestUnaryRefusedAnswerIsNotStored(t *testing.T) {
	h := newHarness(t, Settings{})
	for range 2 {
		r := h.generate(context.Background(), "acme", ask(promptTruncate, vegav1.CacheMode_CACHE_MODE_AUTO))
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromBackend, r.servedFrom)
	}
	assert.Equal(t, int32(2), h.backend.calls.Load())
	s := h.cache.Stats()
	assert.Equal(t, int64(0), s.Stores)
	assert.Equal(t, int64(2), s.Rejected)
}

func TestUnaryStaleWhileRevalidate(t *testing.T) {
	const staleReaders = 8
	h := newHarness(t, Settings{DefaultTTL: 10 * time.Second, StaleFor: time.Minute})
	ctx := context.Background()
	req := ask("hi", vegav1.CacheMode_CACHE_MODE_AUTO)

	first := h.generate(ctx, "acme", req)
	require.NoError(t, first.err)
	h.clock.Advance(11 * time.Second) // expired, within StaleFor

	release := h.backend.holdCalls() // the refresh waits here until released
	var wg sync.WaitGroup
	results := make([]result, staleReaders)
	for i := range results {
		wg.Go(func() { results[i] = h.generate(ctx, "acme", req) })
	}
	wg.Wait()
	for _, r := range results {
		require.NoError(t, r.err)
		assert.Equal(t, policy.FromStale, r.servedFrom)
		assert.Equal(t, first.text, r.text)
	}
	waitFor(t, "the refresh to reach the backend", func() bool { return h.backend.calls.Load() == 2 })

	release()
	waitFor(t, "the refresh to store", func() bool { return h.cache.Stats().Stores == 2 })
	fresh := h.generate(ctx, "acme", req)
	require.NoError(t, fresh.err)
	assert.Equal(t, policy.FromCache, fresh.servedFrom)
	assert.Contains(t, fresh.text, "answer #2")
	assert.Equal(t, int32(2), h.backend.calls.Load(), "exactly one refresh for all stale readers")
	assert.Equal(t, int64(1), h.cache.Stats().Refreshes)
}

func TestFillChecksAgainInsideTheFlight(t *testing.T) {
	c := newTestCache(t, newFakeClock(), Settings{})
	fill := FillUnaryServerInterceptor(c)
	stored := &vegav1.GenerateResponse{Text: "stored by an earlier flight"}
	c.Set("k", stored, proto.Size(stored), 0, false)

	d := &policy.Decision{Key: "k", ReadCache: true, WriteCache: true, ServedFrom: policy.FromBackend}
	resp, err := fill(policy.NewContext(context.Background(), d), nil, &grpc.UnaryServerInfo{},
		func(context.Context, any) (any, error) {
			t.Error("the backend was called although the answer was in the cache")
			return nil, nil
		})
	require.NoError(t, err)
	assert.Same(t, stored, resp)
	assert.Equal(t, policy.FromCache, d.ServedFrom)
	assert.Equal(t, int64(0), c.Stats().Misses+c.Stats().Hits, "the second look is not a second lookup")
}

func TestStreamIsReplayedFromCache(t *testing.T) {
	h := newHarness(t, Settings{})
	req := &vegav1.GenerateStreamRequest{Model: "m", Prompt: "tell me"}

	r1 := h.generateStream(context.Background(), req)
	require.NoError(t, r1.err)
	require.Len(t, r1.chunks, 3)
	assert.Equal(t, policy.FromBackend, r1.servedFrom)

	r2 := h.generateStream(context.Background(), req)
	require.NoError(t, r2.err)
	assert.Equal(t, r1.chunks, r2.chunks, "the same messages in the same order")
	assert.Equal(t, policy.FromCache, r2.servedFrom)
	assert.Equal(t, int32(1), h.backend.streams.Load())
}

func TestStreamThatFailedIsNotStored(t *testing.T) {
	t.Run("handler error midway", func(t *testing.T) {
		h := newHarness(t, Settings{})
		req := &vegav1.GenerateStreamRequest{Model: "m", Prompt: promptFailMid}
		for range 2 {
			r := h.generateStream(context.Background(), req)
			assert.Equal(t, codes.Unavailable, status.Code(r.err))
			assert.Len(t, r.chunks, 1)
		}
		assert.Equal(t, int32(2), h.backend.streams.Load())
		assert.Equal(t, int64(0), h.cache.Stats().Stores)
	})
	t.Run("client left midway", func(t *testing.T) {
		h := newHarness(t, Settings{})
		req := &vegav1.GenerateStreamRequest{Model: "m", Prompt: promptAbandon}
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), tenantHeader, "acme"))
		stream, err := h.client.GenerateStream(ctx, req)
		require.NoError(t, err)
		_, err = stream.Recv()
		require.NoError(t, err)
		cancel()
		<-h.done // the whole server chain returned, Fill included

		s := h.cache.Stats()
		assert.Equal(t, int64(0), s.Stores, "the handler returned nil, but the stream was incomplete")
		assert.Equal(t, int64(0), s.Entries)
	})
}

func TestStreamStaleWhileRevalidate(t *testing.T) {
	h := newHarness(t, Settings{DefaultTTL: 10 * time.Second, StaleFor: time.Minute})
	req := &vegav1.GenerateStreamRequest{Model: "m", Prompt: "tell me"}

	r1 := h.generateStream(context.Background(), req)
	require.NoError(t, r1.err)
	h.clock.Advance(11 * time.Second)

	r2 := h.generateStream(context.Background(), req)
	require.NoError(t, r2.err)
	assert.Equal(t, policy.FromStale, r2.servedFrom)
	assert.Equal(t, r1.chunks, r2.chunks)

	waitFor(t, "the refresh to store", func() bool { return h.cache.Stats().Stores == 2 })
	r3 := h.generateStream(context.Background(), req)
	require.NoError(t, r3.err)
	assert.Equal(t, policy.FromCache, r3.servedFrom)
	assert.Equal(t, []string{"tell me #2.0 ", "tell me #2.1 ", "tell me #2.2 "}, r3.chunks)
	assert.Equal(t, int32(2), h.backend.streams.Load())
}
