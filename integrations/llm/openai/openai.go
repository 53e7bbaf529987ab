// Package openai is the LLM backend for any server that speaks the OpenAI
// chat completions API: vLLM, llama.cpp, LM Studio, OpenAI itself.
//
// Every request goes to POST {base}/v1/chat/completions; a Prompt request
// is sent as a single user message. Generate sends "stream": false; Stream
// sends "stream": true with "stream_options": {"include_usage": true} and
// reads the server-sent events line by line: "data: {json}" lines carry the
// chunks, "data: [DONE]" ends the stream, and blank lines, comments and
// other fields ("event:", "id:", ...) are ignored. Each data line is one
// complete JSON object, as these servers send it.
//
// The API key is sent as "Authorization: Bearer <key>" when it is not
// empty. It never appears in an error or in the String form of a Client:
// it is redacted even from reasons echoed by the upstream.
//
// Errors follow package integrations: a non-2xx answer is an
// *integrations.StatusError whose Message is the upstream's error message
// (cleaned and cut to about 200 characters); a malformed answer, an error
// object inside a stream, or a stream that ends without "[DONE]" and
// without a finish_reason wraps integrations.ErrBadResponse; transport
// failures are classified by integrations.ClassifyTransportError.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/llm"
	"github.com/vega-gateway/vega/integrations/llm/internal/wire"
)

// Client calls one OpenAI-compatible server. It is safe for concurrent use.
type Client struct {
	name   string
	url    string // {base}/v1/chat/completions
	apiKey string // never printed
	hc     *http.Client
}

// New returns a client named name (used in errors and stats) for the
// server at baseURL, given with or without its "/v1" suffix:
// "http://host:8000" and "http://host:8000/v1" are the same server. apiKey
// may be empty for servers that need none.
//
// Callers should pass the gateway's shared, pooled *http.Client. When hc is
// nil a package default is used: it pools connections and bounds dialing
// and TLS handshakes, but has no overall timeout, so bound requests with
// the context.
//
// An empty name or a baseURL that is not an http or https URL with a host
// yields an error wrapping integrations.ErrInvalidRequest.
func New(name, baseURL, apiKey string, hc *http.Client) (*Client, error) {
	if err := wire.CheckName(name); err != nil {
		return nil, err
	}
	u, err := wire.ParseBaseURL(name, baseURL)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(u.Path, "/v1") {
		u = u.JoinPath("v1")
	}
	return &Client{
		name:   name,
		url:    u.JoinPath("chat", "completions").String(),
		apiKey: apiKey,
		hc:     wire.HTTPClient(hc),
	}, nil
}

// Name returns the backend name given to New.
func (c *Client) Name() string { return c.name }

// String describes the client by name, without its URL or API key.
func (c *Client) String() string { return "openai backend " + c.name }

// GoString is String, so that %#v does not print the API key either.
func (c *Client) GoString() string { return c.String() }

// Generate returns the complete answer to req.
func (c *Client) Generate(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	body, err := c.request(req, false)
	if err != nil {
		return nil, err
	}
	var out completion
	if err := c.do(ctx, body, &out); err != nil {
		return nil, err
	}
	if msg := errorMessage(out.Error); msg != "" {
		return nil, c.upstreamError(msg)
	}
	if len(out.Choices) == 0 || out.Choices[0].Message == nil {
		return nil, fmt.Errorf("%w: %s: answer has no choices", integrations.ErrBadResponse, c.name)
	}
	choice := out.Choices[0]
	model := out.Model
	if model == "" {
		model = req.Model
	}
	return &llm.Response{
		Text:         choice.Message.Content,
		Model:        model,
		FinishReason: finishReason(choice.FinishReason),
		Usage:        out.Usage.usage(),
	}, nil
}

// Stream streams the answer to req through fn: one chunk per event that
// carries text, then a final chunk with Done set, the last finish_reason
// seen ("stop" if none) and the usage the server reported.
func (c *Client) Stream(ctx context.Context, req *llm.Request, fn llm.ChunkFunc) error {
	body, err := c.request(req, true)
	if err != nil {
		return err
	}
	var (
		reason string
		usage  llm.Usage
	)
	err = c.stream(ctx, body, func(data []byte) error {
		var ev completion
		if err := json.Unmarshal(data, &ev); err != nil {
			return fmt.Errorf("%w: %s: stream event is not JSON", integrations.ErrBadResponse, c.name)
		}
		if msg := errorMessage(ev.Error); msg != "" {
			return c.upstreamError(msg)
		}
		if ev.Usage != nil {
			usage = ev.Usage.usage()
		}
		if len(ev.Choices) == 0 {
			return nil
		}
		ch := ev.Choices[0]
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			reason = *ch.FinishReason
		}
		if ch.Delta != nil && ch.Delta.Content != "" {
			return fn(llm.Chunk{Text: ch.Delta.Content})
		}
		return nil
	}, func(sawDone bool) error {
		if !sawDone && reason == "" {
			return fmt.Errorf("%w: %s: stream ended early", integrations.ErrBadResponse, c.name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return fn(llm.Chunk{Done: true, FinishReason: finishReason(&reason), Usage: usage})
}

// request encodes the chat completion body for req.
func (c *Client) request(req *llm.Request, stream bool) ([]byte, error) {
	if err := wire.CheckRequest(c.name, req); err != nil {
		return nil, err
	}
	var msgs []message
	if len(req.Messages) > 0 {
		msgs = make([]message, len(req.Messages))
		for i, m := range req.Messages {
			msgs[i] = message{Role: m.Role, Content: m.Content}
		}
	} else {
		msgs = []message{{Role: "user", Content: req.Prompt}}
	}
	in := chatRequest{
		Model:       req.Model,
		Messages:    msgs,
		Temperature: req.Options.Temperature,
		TopP:        req.Options.TopP,
		MaxTokens:   req.Options.MaxTokens,
		Seed:        req.Options.Seed,
		Stop:        req.Options.Stop,
		Stream:      stream,
	}
	if stream {
		in.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: cannot encode request", integrations.ErrInvalidRequest, c.name)
	}
	return body, nil
}

// post sends body and returns a 2xx response; any other status becomes an
// *integrations.StatusError.
func (c *Client) post(ctx context.Context, body []byte, accept string) (*http.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: cannot build request", integrations.ErrInvalidRequest, c.name)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", accept)
	if c.apiKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return nil, integrations.ClassifyTransportError(ctx.Err(), c.name, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, wire.StatusError(c.name, resp, errorBodyMessage, c.apiKey)
	}
	return resp, nil
}

// do posts body and decodes the JSON answer into out.
func (c *Client) do(ctx context.Context, body []byte, out any) error {
	resp, err := c.post(ctx, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return wire.DecodeJSON(ctx, c.name, resp.Body, out)
}

// stream posts body and hands the payload of each SSE data line to fn
// until "data: [DONE]" or the end of the body; then end is called with
// whether [DONE] was seen and decides whether the stream was complete.
func (c *Client) stream(ctx context.Context, body []byte, fn func(data []byte) error, end func(sawDone bool) error) error {
	resp, err := c.post(ctx, body, "text/event-stream")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sawDone, err := wire.ReadLines(ctx, c.name, resp.Body, func(line []byte) (bool, error) {
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			return false, nil // comment, event:, id:, retry: or unknown field
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			return true, nil
		}
		return false, fn(data)
	})
	if err != nil {
		return err
	}
	if err := end(sawDone); err != nil {
		return err
	}
	if sawDone {
		wire.Drain(resp.Body)
	}
	return nil
}

// upstreamError reports an error object sent with a 2xx status.
func (c *Client) upstreamError(msg string) error {
	return fmt.Errorf("%w: %s: upstream error: %s", integrations.ErrBadResponse, c.name, wire.Clean(msg, c.apiKey))
}

// finishReason returns the upstream's finish_reason, "stop" when it sent
// none.
func finishReason(r *string) string {
	if r == nil || *r == "" {
		return "stop"
	}
	return *r
}
