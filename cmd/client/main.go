// Command client is the command-line client of the Vega gateway, built on
// the generated Go SDK (gen/vega/v1).
//
//	vega [flags] generate [--model sim] PROMPT
//	vega [flags] stream   [--model sim] PROMPT
//	vega [flags] fetch    [--method GET] [--header 'Accept: text/html'] URL
//	vega [flags] notify   --channel slack [--idempotency-key K] TEXT
//	vega [flags] notification ID
//	vega [flags] redrive  [--channel slack] [ID...]
//	vega [flags] stats    [--section cache,runtime]
//	vega [flags] watch    [--interval 1s] [--section runtime]
//
// Flags (before or after the command): --addr (env VEGA_ADDR, default
// localhost:50051), --api-key (env VEGA_API_KEY; PerfAdmin needs the admin
// key), --timeout, --tls, --insecure-skip-verify.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const usage = `usage: vega [--addr host:port] [--api-key KEY] COMMAND [flags] [args]

commands:
  generate  PROMPT      one completion (--model, --temperature, --max-tokens, --seed, --cache-mode)
  stream    PROMPT      a streamed completion, printed as it arrives
  fetch     URL         fetch a URL through the SSRF guard (--method, --header, --max-bytes)
  notify    TEXT        send to a channel (--channel, --idempotency-key, --payload);
                        prints the id and DELIVERED, QUEUED (delivery goes on) or FAILED
  notification ID       what became of a notification
  redrive   [ID...]     queue dead-lettered notifications again (--channel); needs the admin key
  stats                 PerfAdmin snapshot as JSON (--section); needs the admin key
  watch                 PerfAdmin snapshots every --interval; needs the admin key

Run 'vega COMMAND --help' for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if s, ok := status.FromError(err); ok && s.Code() != 0 {
			fmt.Fprintf(os.Stderr, "vega: %s: %s\n", s.Code(), s.Message())
		} else if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "vega:", err)
		}
		os.Exit(1)
	}
}

// common are the connection flags every command accepts.
type common struct {
	addr, apiKey  string
	timeout       time.Duration
	useTLS, noVer bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", envOr("VEGA_ADDR", "localhost:50051"), "gateway address (env VEGA_ADDR)")
	fs.StringVar(&c.apiKey, "api-key", os.Getenv("VEGA_API_KEY"), "x-api-key to send (env VEGA_API_KEY)")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "deadline of the call (0 = none; watch ignores it)")
	fs.BoolVar(&c.useTLS, "tls", false, "connect with TLS")
	fs.BoolVar(&c.noVer, "insecure-skip-verify", false, "with --tls: do not verify the server certificate")
}

func (c *common) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: c.noVer}) //nolint:gosec // opt-in flag for test servers
	}
	return grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds), grpc.WithDefaultServiceConfig(retryServiceConfig))
}

// retryServiceConfig is the service config the README gives users to
// paste: gRPC's built-in retry of Generate and Fetch on RESOURCE_EXHAUSTED
// (the gateway's overload control or a backend's 429) and UNAVAILABLE (an
// open breaker, a backend down), at most 3 attempts, after the server's
// grpc-retry-pushback-ms when it sends one, and throttled when most calls
// fail (retryThrottling), so retries never pile onto an overloaded gateway.
// Notify is left out: without an idempotency key a retry could send a
// message twice.
const retryServiceConfig = `{
  "methodConfig": [{
    "name": [{"service": "vega.v1.GenerateService"}, {"service": "vega.v1.FetchService"}],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.2s",
      "maxBackoff": "2s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    }
  }],
  "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
}`

func (c *common) context(ctx context.Context, stream bool) (context.Context, context.CancelFunc) {
	if c.apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", c.apiKey)
	}
	if c.timeout > 0 && !stream {
		return context.WithTimeout(ctx, c.timeout)
	}
	return context.WithCancel(ctx)
}

type command func(ctx context.Context, conn *grpc.ClientConn, args []string, out, errOut io.Writer) error

type commandSpec struct {
	flags func(fs *flag.FlagSet) command
	long  bool // a stream with no natural end: --timeout does not apply
}

var commands = map[string]commandSpec{
	"generate":     {flags: generateCmd},
	"stream":       {flags: streamCmd},
	"fetch":        {flags: fetchCmd},
	"notify":       {flags: notifyCmd},
	"notification": {flags: notificationCmd},
	"redrive":      {flags: redriveCmd},
	"stats":        {flags: statsCmd},
	"watch":        {flags: watchCmd, long: true},
}

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	var c common
	global := flag.NewFlagSet("vega", flag.ContinueOnError)
	global.SetOutput(errOut)
	global.Usage = func() { fmt.Fprint(errOut, usage); global.PrintDefaults() }
	c.register(global)
	if err := global.Parse(args); err != nil {
		return err
	}
	if global.NArg() == 0 {
		global.Usage()
		return errors.New("no command given")
	}
	name := global.Arg(0)
	spec, ok := commands[name]
	if !ok {
		global.Usage()
		return fmt.Errorf("unknown command %q", name)
	}
	fs := flag.NewFlagSet("vega "+name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	sub := c // command flags may repeat the connection flags
	sub.register(fs)
	// Keep values given before the command unless repeated after it.
	fs.VisitAll(func(f *flag.Flag) {
		if g := global.Lookup(f.Name); g != nil {
			_ = f.Value.Set(g.Value.String())
		}
	})
	cmd := spec.flags(fs)
	if err := fs.Parse(global.Args()[1:]); err != nil {
		return err
	}
	conn, err := sub.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := sub.context(ctx, spec.long)
	defer cancel()
	return cmd(ctx, conn, fs.Args(), out, errOut)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func joinArgs(args []string, what string) (string, error) {
	s := strings.TrimSpace(strings.Join(args, " "))
	if s == "" {
		return "", fmt.Errorf("missing %s", what)
	}
	return s, nil
}
