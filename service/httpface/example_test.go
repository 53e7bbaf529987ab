package httpface_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vega-gateway/vega/service/httpface"
)

// A gRPC server's service answers plain JSON over HTTP through the face,
// with the server's interceptors in the path.
func ExampleNew() {
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	face, err := httpface.New(srv, []string{healthpb.Health_ServiceDesc.ServiceName})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	face.Mount(mux)
	hs := httptest.NewServer(mux)
	defer hs.Close()

	resp, err := http.Post(hs.URL+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader(`{}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 {"status":"SERVING"}
}
