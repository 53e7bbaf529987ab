package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// genFlags are the flags of generate and stream.
type genFlags struct {
	model       string
	temperature float64
	maxTokens   int
	seed        int64
	cacheMode   string
	verbose     bool
}

func (g *genFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.model, "model", "sim", "model name")
	fs.Float64Var(&g.temperature, "temperature", -1, "sampling temperature 0..2 (unset: backend default)")
	fs.IntVar(&g.maxTokens, "max-tokens", 0, "upper bound on generated tokens (0: backend default)")
	fs.Int64Var(&g.seed, "seed", -1, "sampling seed (unset: none)")
	fs.StringVar(&g.cacheMode, "cache-mode", "auto", "auto, bypass, no_store or force")
	fs.BoolVar(&g.verbose, "v", false, "print backend, usage and how the answer was served to stderr")
}

func (g *genFlags) request(prompt string) (*vegav1.GenerateRequest, error) {
	mode, ok := vegav1.CacheMode_value["CACHE_MODE_"+strings.ToUpper(g.cacheMode)]
	if !ok {
		return nil, fmt.Errorf("--cache-mode: %q is not one of auto, bypass, no_store, force", g.cacheMode)
	}
	req := &vegav1.GenerateRequest{
		Model: g.model, Prompt: prompt,
		Options:      &vegav1.SamplingOptions{MaxTokens: int32(g.maxTokens)},
		CacheControl: &vegav1.CacheControl{Mode: vegav1.CacheMode(mode)},
	}
	if g.temperature >= 0 {
		req.Options.Temperature = &g.temperature
	}
	if g.seed >= 0 {
		req.Options.Seed = &g.seed
	}
	return req, nil
}

func generateCmd(fs *flag.FlagSet) command {
	var g genFlags
	g.register(fs)
	return func(ctx context.Context, conn *grpc.ClientConn, args []string, out, errOut io.Writer) error {
		prompt, err := joinArgs(args, "PROMPT")
		if err != nil {
			return err
		}
		req, err := g.request(prompt)
		if err != nil {
			return err
		}
		var header metadata.MD
		resp, err := vegav1.NewGenerateServiceClient(conn).Generate(ctx, req, grpc.Header(&header))
		if err != nil {
			return err
		}
		fmt.Fprintln(out, resp.GetText())
		if g.verbose {
			fmt.Fprintf(errOut, "model=%s backend=%s finish=%s tokens=%d+%d served-from=%s\n",
				resp.GetModel(), resp.GetBackend(), resp.GetFinishReason(),
				resp.GetUsage().GetPromptTokens(), resp.GetUsage().GetCompletionTokens(), servedFrom(header))
		}
		return nil
	}
}

func streamCmd(fs *flag.FlagSet) command {
	var g genFlags
	g.register(fs)
	return func(ctx context.Context, conn *grpc.ClientConn, args []string, out, errOut io.Writer) error {
		prompt, err := joinArgs(args, "PROMPT")
		if err != nil {
			return err
		}
		req, err := g.request(prompt)
		if err != nil {
			return err
		}
		stream, err := vegav1.NewGenerateServiceClient(conn).GenerateStream(ctx, &vegav1.GenerateStreamRequest{
			Model: req.Model, Prompt: req.Prompt, Options: req.Options, CacheControl: req.CacheControl,
		})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprint(out, chunk.GetText())
			if chunk.GetDone() {
				fmt.Fprintln(out)
				if g.verbose {
					header, _ := stream.Header()
					fmt.Fprintf(errOut, "backend=%s finish=%s tokens=%d+%d served-from=%s\n", chunk.GetBackend(), chunk.GetFinishReason(),
						chunk.GetUsage().GetPromptTokens(), chunk.GetUsage().GetCompletionTokens(), servedFrom(header))
				}
			}
		}
	}
}

// headerFlag collects repeated --header 'Name: value' flags.
type headerFlag map[string]string

func (h headerFlag) String() string { return "" }
func (h headerFlag) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("%q is not 'Name: value'", v)
	}
	h[strings.TrimSpace(name)] = strings.TrimSpace(value)
	return nil
}

func fetchCmd(fs *flag.FlagSet) command {
	method := fs.String("method", "GET", "GET or HEAD")
	maxBytes := fs.Int64("max-bytes", 0, "upper bound on body bytes (0: server limit)")
	fetchTimeout := fs.Duration("fetch-timeout", 0, "upper bound on the fetch (0: server limit)")
	headers := headerFlag{}
	fs.Var(headers, "header", "request header 'Name: value' (repeatable)")
	return func(ctx context.Context, conn *grpc.ClientConn, args []string, out, errOut io.Writer) error {
		if len(args) != 1 {
			return errors.New("give exactly one URL")
		}
		req := &vegav1.FetchRequest{Url: args[0], Method: *method, Headers: headers, MaxBytes: *maxBytes}
		if *fetchTimeout > 0 {
			req.Timeout = durationpb.New(*fetchTimeout)
		}
		resp, err := vegav1.NewFetchServiceClient(conn).Fetch(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(errOut, "status %d, %d bytes, %s, final URL %s", resp.GetStatusCode(), len(resp.GetBody()), resp.GetContentType(), resp.GetFinalUrl())
		if resp.GetTruncated() {
			fmt.Fprint(errOut, " (truncated)")
		}
		fmt.Fprintln(errOut)
		_, err = out.Write(resp.GetBody())
		return err
	}
}

func notifyCmd(fs *flag.FlagSet) command {
	channel := fs.String("channel", "slack", "configured channel name")
	key := fs.String("idempotency-key", "", "makes retries safe: the same key and text send once")
	payload := fs.String("payload", "", "optional JSON object sent as the structured payload")
	return func(ctx context.Context, conn *grpc.ClientConn, args []string, out, _ io.Writer) error {
		req := &vegav1.NotifyRequest{Channel: *channel, Text: strings.Join(args, " "), IdempotencyKey: *key}
		if *payload != "" {
			req.Payload = &structpb.Struct{}
			if err := protojson.Unmarshal([]byte(*payload), req.Payload); err != nil {
				return fmt.Errorf("--payload: %w", err)
			}
		}
		resp, err := vegav1.NewNotifyServiceClient(conn).Notify(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s %s on %s", resp.GetId(), statusWord(resp.GetStatus()), resp.GetChannel())
		if resp.GetLastError() != "" {
			fmt.Fprintf(out, " (attempts %d, last error: %s)", resp.GetAttempts(), resp.GetLastError())
		}
		fmt.Fprintln(out)
		return nil
	}
}

// statusWord is DELIVERED, QUEUED or FAILED.
func statusWord(s vegav1.NotificationStatus) string {
	return strings.TrimPrefix(s.String(), "NOTIFICATION_STATUS_")
}

func notificationCmd(*flag.FlagSet) command {
	return func(ctx context.Context, conn *grpc.ClientConn, args []string, out, _ io.Writer) error {
		if len(args) != 1 {
			return errors.New("notification: give the id Notify returned")
		}
		resp, err := vegav1.NewNotifyServiceClient(conn).GetNotification(ctx, &vegav1.GetNotificationRequest{Id: args[0]})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, jsonOut.Format(resp))
		return nil
	}
}

func redriveCmd(fs *flag.FlagSet) command {
	channel := fs.String("channel", "", "only this channel's dead letters (default: every channel)")
	return func(ctx context.Context, conn *grpc.ClientConn, ids []string, out, _ io.Writer) error {
		resp, err := vegav1.NewPerfAdminServiceClient(conn).RedriveNotifications(ctx, &vegav1.RedriveNotificationsRequest{Channel: *channel, Ids: ids})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d dead letters queued again\n", resp.GetRedriven())
		return nil
	}
}

// sectionsFlag parses --section cache,runtime into StatsSection values.
func sectionsFlag(fs *flag.FlagSet) func() ([]vegav1.StatsSection, error) {
	raw := fs.String("section", "", "comma-separated sections (circuit_breakers, cache, streaming, runtime, memory_leaks, batch, request_coalescing, connection_pool, rate_limiters, integrations); empty: all")
	return func() ([]vegav1.StatsSection, error) {
		var out []vegav1.StatsSection
		for _, name := range strings.Split(*raw, ",") {
			if name = strings.TrimSpace(name); name == "" {
				continue
			}
			v, ok := vegav1.StatsSection_value["STATS_SECTION_"+strings.ToUpper(name)]
			if !ok {
				return nil, fmt.Errorf("--section: unknown section %q", name)
			}
			out = append(out, vegav1.StatsSection(v))
		}
		return out, nil
	}
}

var jsonOut = protojson.MarshalOptions{Multiline: true, Indent: "  "}

func statsCmd(fs *flag.FlagSet) command {
	sections := sectionsFlag(fs)
	return func(ctx context.Context, conn *grpc.ClientConn, _ []string, out, _ io.Writer) error {
		secs, err := sections()
		if err != nil {
			return err
		}
		resp, err := vegav1.NewPerfAdminServiceClient(conn).GetStats(ctx, &vegav1.GetStatsRequest{Sections: secs})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, jsonOut.Format(resp.GetStats()))
		return nil
	}
}

func watchCmd(fs *flag.FlagSet) command {
	sections := sectionsFlag(fs)
	interval := fs.Duration("interval", time.Second, "time between snapshots (at least 100ms)")
	return func(ctx context.Context, conn *grpc.ClientConn, _ []string, out, _ io.Writer) error {
		secs, err := sections()
		if err != nil {
			return err
		}
		stream, err := vegav1.NewPerfAdminServiceClient(conn).WatchStats(ctx, &vegav1.WatchStatsRequest{
			Interval: durationpb.New(*interval), Sections: secs,
		})
		if err != nil {
			return err
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) || ctx.Err() != nil {
					return nil
				}
				return err
			}
			fmt.Fprintln(out, protojson.Format(resp.GetStats()))
		}
	}
}

// servedFrom reads the x-vega-served-from response header.
func servedFrom(md metadata.MD) string {
	if v := md.Get(policy.ServedFromHeader); len(v) > 0 {
		return v[0]
	}
	return "-"
}
