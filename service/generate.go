package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/llm"
)

// Limits on Generate input. They keep one request from occupying a backend
// with something no model accepts anyway.
const (
	maxModelLen    = 256
	maxPromptBytes = 1 << 20
	maxMessages    = 1024
	maxStops       = 8
	maxStopLen     = 256
	maxTokensLimit = 1 << 20
)

// GenerateService implements vega.v1.GenerateService.
type GenerateService struct {
	vegav1.UnimplementedGenerateServiceServer

	router   *Router
	backends *Backends
	log      *slog.Logger
	timeout  time.Duration // bound of one unary backend call; 0 = none
}

// GenerateOption configures a GenerateService.
type GenerateOption func(*GenerateService)

// WithBackendTimeout bounds each unary Generate's backend call (not
// streams, which may rightly last long). A backend that has not answered
// within d while the caller still waits is a backend failure: the call
// ends DEADLINE_EXCEEDED ("upstream timed out") and the circuit breaker
// counts it, unlike the caller's own deadline. A hung backend is thus told
// from a slow one. 0 means no bound.
func WithBackendTimeout(d time.Duration) GenerateOption {
	return func(s *GenerateService) { s.timeout = d }
}

// NewGenerateService serves Generate and GenerateStream through router and
// records backend health in backends.
func NewGenerateService(router *Router, backends *Backends, log *slog.Logger, opts ...GenerateOption) *GenerateService {
	s := &GenerateService{router: router, backends: backends, log: log}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Generate implements vega.v1.GenerateService.
func (s *GenerateService) Generate(ctx context.Context, in *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	req, err := llmRequest(in)
	if err != nil {
		return nil, err
	}
	name, backend := s.router.route(req.Model)
	callCtx := ctx
	if s.timeout > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	resp, err := backend.Generate(callCtx, req)
	if err != nil && ctx.Err() == nil && errors.Is(callCtx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %s: no answer within %s", integrations.ErrTimeout, name, s.timeout)
	}
	s.backends.Observe(name, err)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &vegav1.GenerateResponse{
		Text:         resp.Text,
		Model:        firstNonEmpty(resp.Model, req.Model),
		Backend:      name,
		FinishReason: resp.FinishReason,
		Usage:        usage(resp.Usage),
	}, nil
}

// GenerateStream implements vega.v1.GenerateService.
func (s *GenerateService) GenerateStream(in *vegav1.GenerateStreamRequest, stream grpc.ServerStreamingServer[vegav1.GenerateStreamResponse]) error {
	ctx := stream.Context()
	req, err := llmRequest(in)
	if err != nil {
		return err
	}
	name, backend := s.router.route(req.Model)
	err = backend.Stream(ctx, req, func(c llm.Chunk) error {
		out := &vegav1.GenerateStreamResponse{Text: c.Text, Done: c.Done, Model: req.Model, Backend: name}
		if c.Done {
			out.FinishReason = c.FinishReason
			out.Usage = usage(c.Usage)
		}
		return stream.Send(out)
	})
	s.backends.Observe(name, err)
	return toStatus(ctx, s.log, err)
}

// generateParams is what GenerateRequest and GenerateStreamRequest share.
type generateParams interface {
	GetModel() string
	GetPrompt() string
	GetMessages() []*vegav1.ChatMessage
	GetOptions() *vegav1.SamplingOptions
	GetCacheControl() *vegav1.CacheControl
}

var validRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// llmRequest validates a Generate request and converts it.
func llmRequest(in generateParams) (*llm.Request, error) {
	if err := validateGenerate(in); err != nil {
		return nil, err
	}
	req := &llm.Request{Model: in.GetModel(), Prompt: in.GetPrompt()}
	for _, m := range in.GetMessages() {
		req.Messages = append(req.Messages, llm.Message{Role: m.GetRole(), Content: m.GetContent()})
	}
	if o := in.GetOptions(); o != nil {
		if o.Temperature != nil {
			t := o.GetTemperature()
			req.Options.Temperature = &t
		}
		if o.TopP != nil {
			p := o.GetTopP()
			req.Options.TopP = &p
		}
		if o.Seed != nil {
			seed := o.GetSeed()
			req.Options.Seed = &seed
		}
		req.Options.MaxTokens = int(o.GetMaxTokens())
		req.Options.Stop = append([]string(nil), o.GetStop()...)
	}
	return req, nil
}

// validateGenerate checks a Generate request without allocating (it runs
// on every call, in the policy plan and in the handler).
func validateGenerate(in generateParams) error {
	model := in.GetModel()
	switch {
	case model == "":
		return invalidArgument("model", `required (the built-in model is "sim")`)
	case len(model) > maxModelLen:
		return invalidArgument("model", "longer than %d bytes", maxModelLen)
	case !utf8.ValidString(model):
		return invalidArgument("model", "not valid UTF-8")
	}
	prompt, msgs := in.GetPrompt(), in.GetMessages()
	switch {
	case prompt == "" && len(msgs) == 0:
		return invalidArgument("prompt", "set prompt or messages")
	case prompt != "" && len(msgs) > 0:
		return invalidArgument("prompt", "set prompt or messages, not both")
	case len(prompt) > maxPromptBytes:
		return invalidArgument("prompt", "longer than %d bytes", maxPromptBytes)
	case len(msgs) > maxMessages:
		return invalidArgument("messages", "more than %d messages", maxMessages)
	}
	total := 0
	for i, m := range msgs {
		if !validRoles[m.GetRole()] {
			return invalidArgument("messages", "message %d: role %q is not one of system, user, assistant, tool", i, m.GetRole())
		}
		total += len(m.GetContent())
		if total > maxPromptBytes {
			return invalidArgument("messages", "longer than %d bytes in all", maxPromptBytes)
		}
	}
	if err := checkOptions(in.GetOptions()); err != nil {
		return err
	}
	return checkCacheControl(in.GetCacheControl())
}

func checkOptions(o *vegav1.SamplingOptions) error {
	if o == nil {
		return nil
	}
	if o.Temperature != nil {
		if t := o.GetTemperature(); math.IsNaN(t) || t < 0 || t > 2 {
			return invalidArgument("options.temperature", "must be between 0 and 2, got %v", t)
		}
	}
	if o.TopP != nil {
		if p := o.GetTopP(); math.IsNaN(p) || p < 0 || p > 1 {
			return invalidArgument("options.top_p", "must be between 0 and 1, got %v", p)
		}
	}
	if n := o.GetMaxTokens(); n < 0 || n > maxTokensLimit {
		return invalidArgument("options.max_tokens", "must be between 0 and %d, got %d", maxTokensLimit, n)
	}
	if len(o.GetStop()) > maxStops {
		return invalidArgument("options.stop", "at most %d stop sequences", maxStops)
	}
	for _, s := range o.GetStop() {
		if s == "" || len(s) > maxStopLen {
			return invalidArgument("options.stop", "each stop sequence must be 1 to %d bytes", maxStopLen)
		}
	}
	return nil
}

func checkCacheControl(cc *vegav1.CacheControl) error {
	if cc == nil {
		return nil
	}
	if _, ok := vegav1.CacheMode_name[int32(cc.GetMode())]; !ok {
		return invalidArgument("cache_control.mode", "unknown mode %d", cc.GetMode())
	}
	if cc.Ttl != nil {
		if err := cc.GetTtl().CheckValid(); err != nil {
			return invalidArgument("cache_control.ttl", "%v", err)
		}
		if cc.GetTtl().AsDuration() < 0 {
			return invalidArgument("cache_control.ttl", "must not be negative")
		}
	}
	return nil
}

func usage(u llm.Usage) *vegav1.Usage {
	return &vegav1.Usage{
		PromptTokens:     int32(u.PromptTokens),
		CompletionTokens: int32(u.CompletionTokens),
		TotalTokens:      int32(u.PromptTokens + u.CompletionTokens),
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
