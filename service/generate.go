package service

import (
	"context"
	"log/slog"
	"math"
	"unicode/utf8"

	"google.golang.org/grpc"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
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
}

// NewGenerateService serves Generate and GenerateStream through router and
// records backend health in backends.
func NewGenerateService(router *Router, backends *Backends, log *slog.Logger) *GenerateService {
	return &GenerateService{router: router, backends: backends, log: log}
}

// Generate implements vega.v1.GenerateService.
func (s *GenerateService) Generate(ctx context.Context, in *vegav1.GenerateRequest) (*vegav1.GenerateResponse, error) {
	req, err := llmRequest(in)
	if err != nil {
		return nil, err
	}
	name, backend := s.router.route(req.Model)
	resp, err := backend.Generate(ctx, req)
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
	model := in.GetModel()
	switch {
	case model == "":
		return nil, invalidArgument("model", `required (the built-in model is "sim")`)
	case len(model) > maxModelLen:
		return nil, invalidArgument("model", "longer than %d bytes", maxModelLen)
	case !utf8.ValidString(model):
		return nil, invalidArgument("model", "not valid UTF-8")
	}
	prompt, msgs := in.GetPrompt(), in.GetMessages()
	switch {
	case prompt == "" && len(msgs) == 0:
		return nil, invalidArgument("prompt", "set prompt or messages")
	case prompt != "" && len(msgs) > 0:
		return nil, invalidArgument("prompt", "set prompt or messages, not both")
	case len(prompt) > maxPromptBytes:
		return nil, invalidArgument("prompt", "longer than %d bytes", maxPromptBytes)
	case len(msgs) > maxMessages:
		return nil, invalidArgument("messages", "more than %d messages", maxMessages)
	}
	req := &llm.Request{Model: model, Prompt: prompt}
	total := 0
	for i, m := range msgs {
		if !validRoles[m.GetRole()] {
			return nil, invalidArgument("messages", "message %d: role %q is not one of system, user, assistant, tool", i, m.GetRole())
		}
		total += len(m.GetContent())
		if total > maxPromptBytes {
			return nil, invalidArgument("messages", "longer than %d bytes in all", maxPromptBytes)
		}
		req.Messages = append(req.Messages, llm.Message{Role: m.GetRole(), Content: m.GetContent()})
	}
	if err := applyOptions(&req.Options, in.GetOptions()); err != nil {
		return nil, err
	}
	if err := checkCacheControl(in.GetCacheControl()); err != nil {
		return nil, err
	}
	return req, nil
}

func applyOptions(dst *llm.Options, o *vegav1.SamplingOptions) error {
	if o == nil {
		return nil
	}
	if o.Temperature != nil {
		t := o.GetTemperature()
		if math.IsNaN(t) || t < 0 || t > 2 {
			return invalidArgument("options.temperature", "must be between 0 and 2, got %v", t)
		}
		dst.Temperature = &t
	}
	if o.TopP != nil {
		p := o.GetTopP()
		if math.IsNaN(p) || p < 0 || p > 1 {
			return invalidArgument("options.top_p", "must be between 0 and 1, got %v", p)
		}
		dst.TopP = &p
	}
	if n := o.GetMaxTokens(); n < 0 || n > maxTokensLimit {
		return invalidArgument("options.max_tokens", "must be between 0 and %d, got %d", maxTokensLimit, n)
	}
	dst.MaxTokens = int(o.GetMaxTokens())
	if o.Seed != nil {
		seed := o.GetSeed()
		dst.Seed = &seed
	}
	if len(o.GetStop()) > maxStops {
		return invalidArgument("options.stop", "at most %d stop sequences", maxStops)
	}
	for _, s := range o.GetStop() {
		if s == "" || len(s) > maxStopLen {
			return invalidArgument("options.stop", "each stop sequence must be 1 to %d bytes", maxStopLen)
		}
	}
	dst.Stop = append([]string(nil), o.GetStop()...)
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
