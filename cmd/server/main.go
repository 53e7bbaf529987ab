// Command server runs the Vega gateway: gRPC on VEGA_GRPC_ADDR (default
// :50051) and, on VEGA_HTTP_ADDR (default :8080), the same services over
// Connect, gRPC-Web and JSON, the live dashboard at /, health and metrics. With no LLM
// backend configured it serves the built-in "sim" model. Configuration is a
// YAML file (--config or VEGA_CONFIG) overridden by environment variables;
// see README.md for the table.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vega-server:", err)
		os.Exit(1)
	}
}

func run(args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("vega-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", getenv("VEGA_CONFIG"), "YAML config file (env VEGA_CONFIG); environment variables override it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	srv, err := NewServer(cfg, log)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	printBanner(stderr, srv, cfg)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Serve(ctx)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level)) // validated in Config.Validate
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
}

// printBanner tells a new user how to call the gateway they just started.
func printBanner(w io.Writer, srv *Server, cfg Config) {
	addr, httpAddr := displayAddr(srv.GRPCAddr()), displayAddr(srv.HTTPAddr())
	if httpAddr == "" {
		httpAddr = "off"
	}
	tlsFlag, scheme := "-plaintext ", "http"
	if cfg.TLS.CertFile != "" {
		tlsFlag, scheme = "-insecure ", "https"
	}
	curl := ""
	if httpAddr != "off" {
		curl = fmt.Sprintf("\n  curl -H 'Content-Type: application/json' -d '{\"model\":\"sim\",\"prompt\":\"hi\"}' %s://%s/vega.v1.GenerateService/Generate", scheme, httpAddr)
	}
	fmt.Fprintf(w, `
Vega Gateway is running.
  gRPC   %s   (default LLM backend: %s; backends: %s)
  HTTP   %s   (dashboard at /, Connect/gRPC-Web/JSON, /healthz, /readyz, /metrics)

Try it:
  grpcurl %s%s list
  grpcurl %s-d '{"model":"sim","prompt":"hi"}' %s vega.v1.GenerateService/Generate
  go run ./cmd/client --addr %s generate --model sim "hi"%s
Stop with Ctrl-C.

`, addr, srv.router.Default(), strings.Join(srv.router.Names(), ", "), httpAddr, tlsFlag, addr, tlsFlag, addr, addr, curl)
}

// displayAddr turns a wildcard listen address into one a client can dial.
func displayAddr(addr string) string {
	if strings.HasPrefix(addr, "[::]:") || strings.HasPrefix(addr, "0.0.0.0:") {
		return "localhost:" + addr[strings.LastIndexByte(addr, ':')+1:]
	}
	return addr
}
