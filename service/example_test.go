package service_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/llm/sim"
	"github.com/vega-gateway/vega/service"
)

// Example shows the Go SDK (gen/vega/v1) calling GenerateService. Against a
// running gateway, dial its address (grpc.NewClient("localhost:50051", ...))
// instead of the in-memory listener used here.
func Example() {
	// An in-memory gateway serving the built-in sim model.
	router := service.NewRouter(service.SimBackend)
	router.Add(service.SimBackend, sim.New(service.SimBackend, sim.Settings{}))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := grpc.NewServer()
	vegav1.RegisterGenerateServiceServer(srv, service.NewGenerateService(router, service.NewBackends(), quiet))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient("passthrough:///vega",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	client := vegav1.NewGenerateServiceClient(conn)
	resp, err := client.Generate(context.Background(), &vegav1.GenerateRequest{
		Model:   "sim",
		Prompt:  "hello",
		Options: &vegav1.SamplingOptions{MaxTokens: 6},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetBackend(), resp.GetFinishReason(), resp.GetUsage().GetCompletionTokens())
	fmt.Println(resp.GetText())
	// Output:
	// sim length 6
	// Simulated answer to "hello": Idea under
}
