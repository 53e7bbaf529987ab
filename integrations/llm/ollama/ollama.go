// Package ollama is the LLM backend for an Ollama server.
//
// Prompt requests go to POST /api/generate and Messages requests to POST
// /api/chat. Generate sends "stream": false (Ollama streams unless told
// not to); Stream sends "stream": true and reads the NDJSON answer line by
// line. Only the options a request sets are sent, so the server's defaults
// apply to the others; Options.MaxTokens is sent as num_predict.
//
// Errors follow package integrations: a non-2xx answer is an
// *integrations.StatusError whose Message is Ollama's "error" field
// (cleaned and cut to about 200 characters); a malformed answer or an
// {"error": ...} line inside a stream wraps integrations.ErrBadResponse;
// transport failures are classified by integrations.ClassifyTransportError.
package ollama

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/llm"
	"github.com/vega-gateway/vega/integrations/llm/internal/wire"
)

// Client calls one Ollama server. It is safe for concurrent use.
type Client struct {
	name        string
	generateURL string
	chatURL     string
	hc          *http.Client
}

// New returns a client named name (used in errors and stats) for the
// Ollama server at baseURL, e.g. "http://127.0.0.1:11434"; a trailing
// slash and a path prefix (for a reverse proxy) are accepted.
//
// Callers should pass the gateway's shared, pooled *http.Client. When hc is
// nil a package default is used: it pools connections and bounds dialing
// and TLS handshakes, but has no overall timeout, so bound requests with
// the context.
//
// An empty name or a baseURL that is not an http or https URL with a host
// yields an error wrapping integrations.ErrInvalidRequest.
func New(name, baseURL string, hc *http.Client) (*Client, error) {
	if err := wire.CheckName(name); err != nil {
		return nil, err
	}
	u, err := wire.ParseBaseURL(name, baseURL)
	if err != nil {
		return nil, err
	}
	return &Client{
		name:        name,
		generateURL: u.JoinPath("api", "generate").String(),
		chatURL:     u.JoinPath("api", "chat").String(),
		hc:          wire.HTTPClient(hc),
	}, nil
}

// Name returns the backend name given to New.
func (c *Client) Name() string { return c.name }

// Generate returns the complete answer to req.
func (c *Client) Generate(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	url, body, err := c.request(req, false)
	if err != nil {
		return nil, err
	}
	var out response
	if err := c.do(ctx, url, body, &out); err != nil {
		return nil, err
	}
	if out.Error != "" {
		return nil, c.upstreamError(out.Error)
	}
	if !out.Done {
		return nil, fmt.Errorf("%w: %s: answer not marked done", integrations.ErrBadResponse, c.name)
	}
	model := out.Model
	if model == "" {
		model = req.Model
	}
	return &llm.Response{
		Text:         out.text(),
		Model:        model,
		FinishReason: finishReason(out.DoneReason),
		Usage:        out.usage(),
	}, nil
}

// Stream streams the answer to req through fn, one chunk per NDJSON line
// that carries text, then a final chunk with Done set. An answer that ends
// before Ollama's final "done" line is an error wrapping
// integrations.ErrBadResponse, so a truncated answer never looks complete.
func (c *Client) Stream(ctx context.Context, req *llm.Request, fn llm.ChunkFunc) error {
	url, body, err := c.request(req, true)
	if err != nil {
		return err
	}
	return c.stream(ctx, url, body, func(line []byte) (bool, error) {
		var r response
		if err := json.Unmarshal(line, &r); err != nil {
			return false, fmt.Errorf("%w: %s: stream line is not JSON", integrations.ErrBadResponse, c.name)
		}
		if r.Error != "" {
			return false, c.upstreamError(r.Error)
		}
		if r.Done {
			return true, fn(llm.Chunk{
				Text:         r.text(),
				Done:         true,
				FinishReason: finishReason(r.DoneReason),
				Usage:        r.usage(),
			})
		}
		if t := r.text(); t != "" {
			return false, fn(llm.Chunk{Text: t})
		}
		return false, nil
	})
}

// request picks the endpoint for req and encodes its body.
func (c *Client) request(req *llm.Request, stream bool) (string, []byte, error) {
	if err := wire.CheckRequest(c.name, req); err != nil {
		return "", nil, err
	}
	opts := newOptions(req.Options)
	var (
		url string
		in  any
	)
	if len(req.Messages) > 0 {
		msgs := make([]message, len(req.Messages))
		for i, m := range req.Messages {
			msgs[i] = message{Role: m.Role, Content: m.Content}
		}
		url, in = c.chatURL, chatRequest{Model: req.Model, Messages: msgs, Stream: stream, Options: opts}
	} else {
		url, in = c.generateURL, generateRequest{Model: req.Model, Prompt: req.Prompt, Stream: stream, Options: opts}
	}
	body, err := json.Marshal(in)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: cannot encode request", integrations.ErrInvalidRequest, c.name)
	}
	return url, body, nil
}

// post sends body to url and returns a 2xx response; any other status
// becomes an *integrations.StatusError.
func (c *Client) post(ctx context.Context, url string, body []byte, accept string) (*http.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: cannot build request", integrations.ErrInvalidRequest, c.name)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", accept)
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return nil, integrations.ClassifyTransportError(ctx.Err(), c.name, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, wire.StatusError(c.name, resp, errorMessage)
	}
	return resp, nil
}

// do posts body and decodes the JSON answer into out.
func (c *Client) do(ctx context.Context, url string, body []byte, out any) error {
	resp, err := c.post(ctx, url, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return wire.DecodeJSON(ctx, c.name, resp.Body, out)
}

// stream posts body and hands each NDJSON line to fn until fn reports the
// final line.
func (c *Client) stream(ctx context.Context, url string, body []byte, fn func(line []byte) (done bool, err error)) error {
	resp, err := c.post(ctx, url, body, "application/x-ndjson")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	done, err := wire.ReadLines(ctx, c.name, resp.Body, fn)
	if err != nil {
		return err
	}
	if !done {
		return fmt.Errorf("%w: %s: stream ended early", integrations.ErrBadResponse, c.name)
	}
	wire.Drain(resp.Body)
	return nil
}

// upstreamError reports an error Ollama sent with a 2xx status.
func (c *Client) upstreamError(msg string) error {
	return fmt.Errorf("%w: %s: upstream error: %s", integrations.ErrBadResponse, c.name, wire.Clean(msg))
}

// finishReason maps Ollama's done_reason; a done answer without one
// stopped naturally.
func finishReason(doneReason string) string {
	if doneReason == "" {
		return "stop"
	}
	return doneReason
}
