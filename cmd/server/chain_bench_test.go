package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/llm/sim"
	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/cache"
	"github.com/vega-gateway/vega/perf/coalesce"
	"github.com/vega-gateway/vega/perf/ratelimit"
	"github.com/vega-gateway/vega/service"
)

// benchChain builds the perf chain as the server wires it, over a router
// whose default backend "fast" is an instant sim (limited and broken like any
// remote backend, so every mechanism is on the path).
func benchChain(b *testing.B) (perfChain, *service.GenerateService, func()) {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	router := service.NewRouter("fast")
	router.Add("fast", sim.New("fast", sim.Settings{MaxTokens: 8}))
	router.Add(service.SimBackend, sim.New(service.SimBackend, sim.Settings{MaxTokens: 8}))
	backends := service.NewBackends()
	gen := service.NewGenerateService(router, backends, quiet)
	c, err := cache.New(cache.Settings{})
	if err != nil {
		b.Fatal(err)
	}
	breakers, err := breaker.NewSet(breaker.Settings{})
	if err != nil {
		b.Fatal(err)
	}
	limiters, err := ratelimit.NewSet(ratelimit.Settings{Initial: 1e9, Max: 1e9})
	if err != nil {
		b.Fatal(err)
	}
	table := service.PolicyTable(service.PolicySettings{GenerateTTL: time.Hour, FetchTTL: time.Hour}, router)
	return perfChain{table: table, cache: c, group: coalesce.New(), breakers: breakers, limiters: limiters}, gen, c.Close
}

// compose chains interceptors the way grpc.ChainUnaryInterceptor does.
func compose(ints []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		next := handler
		for i := len(ints) - 1; i >= 0; i-- {
			ic, n := ints[i], next
			next = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, n) }
		}
		return next(ctx, req)
	}
}

var zeroTemp = 0.0

// BenchmarkChainInProcess is M1: the perf chain around a handler that
// answers at once, against the bare handler, without gRPC. miss = a
// non-deterministic request (coalesced, limited, broken, never cached);
// hit = a deterministic request already in the cache.
func BenchmarkChainInProcess(b *testing.B) {
	chain, _, closeCache := benchChain(b)
	defer closeCache()
	resp := &vegav1.GenerateResponse{Text: "answer"}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	info := &grpc.UnaryServerInfo{FullMethod: vegav1.GenerateService_Generate_FullMethodName}
	intercept := compose(chain.unary())
	// A server transport stream in the context, as gRPC provides, so that
	// setting the served-from header succeeds as it does in a server.
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), headerSink{})
	// Each goroutine has its own requests (as every RPC has), distinct
	// prompts for misses (no two calls share a flight) and one cached
	// deterministic request for hits.
	var goroutine atomic.Int64
	requests := func(deterministic bool) []*vegav1.GenerateRequest {
		g := goroutine.Add(1)
		out := make([]*vegav1.GenerateRequest, 1024)
		for i := range out {
			out[i] = &vegav1.GenerateRequest{Model: "m", Prompt: fmt.Sprintf("prompt %d of goroutine %d", i, g)}
			if deterministic {
				out[i].Prompt = "the cached prompt"
				out[i].Options = &vegav1.SamplingOptions{Temperature: &zeroTemp}
			}
		}
		return out
	}
	warm := &vegav1.GenerateRequest{Model: "m", Prompt: "the cached prompt", Options: &vegav1.SamplingOptions{Temperature: &zeroTemp}}
	if _, err := intercept(ctx, warm, info, handler); err != nil {
		b.Fatal(err)
	}
	run := func(name string, deterministic bool, call func(req *vegav1.GenerateRequest) (any, error)) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				reqs := requests(deterministic)
				for i := 0; pb.Next(); i++ {
					if _, err := call(reqs[i%len(reqs)]); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	run("path=bare", false, func(req *vegav1.GenerateRequest) (any, error) { return handler(ctx, req) })
	run("path=miss", false, func(req *vegav1.GenerateRequest) (any, error) { return intercept(ctx, req, info, handler) })
	run("path=hit", true, func(req *vegav1.GenerateRequest) (any, error) { return intercept(ctx, req, info, handler) })
}

// BenchmarkChainBufconn is the same over a real gRPC server on bufconn, with
// the sim as the backend: bare server, chain on a miss, chain on a hit.
func BenchmarkChainBufconn(b *testing.B) {
	chain, gen, closeCache := benchChain(b)
	defer closeCache()
	dial := func(opts ...grpc.ServerOption) (vegav1.GenerateServiceClient, func()) {
		srv := grpc.NewServer(opts...)
		vegav1.RegisterGenerateServiceServer(srv, gen)
		lis := bufconn.Listen(1 << 20)
		go func() { _ = srv.Serve(lis) }()
		conn, err := grpc.NewClient("passthrough:///bench",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		return vegav1.NewGenerateServiceClient(conn), func() { conn.Close(); srv.Stop() }
	}
	run := func(name string, client vegav1.GenerateServiceClient, req *vegav1.GenerateRequest) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Generate(context.Background(), req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	miss := &vegav1.GenerateRequest{Model: "m", Prompt: "a prompt of a few words"}
	hit := &vegav1.GenerateRequest{Model: "m", Prompt: "a prompt of a few words", Options: &vegav1.SamplingOptions{Temperature: &zeroTemp}}
	bare, stopBare := dial()
	defer stopBare()
	chained, stopChained := dial(grpc.ChainUnaryInterceptor(chain.unary()...))
	defer stopChained()
	run("path=bare", bare, miss)
	run("path=miss", chained, miss)
	run("path=hit", chained, hit)
}

// headerSink is the server transport stream of the in-process benchmark.
type headerSink struct{}

func (headerSink) Method() string               { return vegav1.GenerateService_Generate_FullMethodName }
func (headerSink) SetHeader(metadata.MD) error  { return nil }
func (headerSink) SendHeader(metadata.MD) error { return nil }
func (headerSink) SetTrailer(metadata.MD) error { return nil }
