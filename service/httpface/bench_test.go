package httpface

import (
	"context"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// echoGenerate answers Generate with the prompt: the benchmark measures
// the doors, not a backend.
type echoGenerate struct {
	vegav1.UnimplementedGenerateServiceServer
}

func (echoGenerate) Generate(_ context.Context, in *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	return &vegav1.GenerateResponse{Text: in.GetPrompt(), Model: in.GetModel(), Backend: "echo", FinishReason: "stop"}, nil
}

// stack is one gRPC server behind both doors, on loopback.
type stack struct {
	grpcAddr, httpURL string
	stop              func()
}

func startStack(tb testing.TB, interceptors ...grpc.UnaryServerInterceptor) stack {
	tb.Helper()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(interceptors...))
	vegav1.RegisterGenerateServiceServer(srv, echoGenerate{})
	face, err := New(srv, []string{vegav1.GenerateService_ServiceDesc.ServiceName})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	face.Mount(mux)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(gl) }()
	go func() { _ = hs.Serve(hl) }()
	return stack{grpcAddr: gl.Addr().String(), httpURL: "http://" + hl.Addr().String(), stop: func() {
		_ = hs.Close()
		srv.Stop()
	}}
}

// processCPU is the user and system CPU time the process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHop is the cost of one Generate call through each door of the
// same gRPC server, over loopback, sequential (one call at a time, so the
// figure is latency) and parallel (so it is throughput):
//
//	go test -run '^$' -bench Hop -benchmem -count 6 ./service/httpface | tee hop.txt
//	benchstat -col /impl hop.txt
func BenchmarkHop(b *testing.B) {
	st := startStack(b)
	defer st.stop()
	req := &vegav1.GenerateRequest{Model: "sim", Prompt: strings.Repeat("word ", 40)}

	conn, err := grpc.NewClient(st.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	native := vegav1.NewGenerateServiceClient(conn)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := st.httpURL + "/vega.v1.GenerateService/Generate"
	connectProto := connect.NewClient[vegav1.GenerateRequest, vegav1.GenerateResponse](hc, url)
	connectJSON := connect.NewClient[vegav1.GenerateRequest, vegav1.GenerateResponse](hc, url, connect.WithProtoJSON())
	grpcWeb := connect.NewClient[vegav1.GenerateRequest, vegav1.GenerateResponse](hc, url, connect.WithGRPCWeb())

	impls := []struct {
		name string
		call func(context.Context) error
	}{
		{"grpc", func(ctx context.Context) error { _, err := native.Generate(ctx, req); return err }},
		{"connect-proto", func(ctx context.Context) error {
			_, err := connectProto.CallUnary(ctx, connect.NewRequest(req))
			return err
		}},
		{"connect-json", func(ctx context.Context) error {
			_, err := connectJSON.CallUnary(ctx, connect.NewRequest(req))
			return err
		}},
		{"grpc-web", func(ctx context.Context) error {
			_, err := grpcWeb.CallUnary(ctx, connect.NewRequest(req))
			return err
		}},
	}
	for _, mode := range []string{"seq", "par"} {
		for _, impl := range impls {
			b.Run("mode="+mode+"/impl="+impl.name, func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				cpu0 := processCPU(b)
				if mode == "seq" {
					for b.Loop() {
						if err := impl.call(ctx); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := impl.call(ctx); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				// Client and server share the process: this is the CPU one
				// call costs both sides, which other load on the machine
				// disturbs less than wall time.
				b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
