package ollama

import (
	"encoding/json"

	"github.com/vega-gateway/vega/integrations/llm"
)

// Wire types of the Ollama API, limited to the fields the gateway uses.

type generateRequest struct {
	Model   string   `json:"model"`
	Prompt  string   `json:"prompt"`
	Stream  bool     `json:"stream"` // always sent: Ollama streams by default
	Options *options `json:"options,omitempty"`
}

type chatRequest struct {
	Model    string    `json:"model"`
	Messages []message `json:"messages"`
	Stream   bool      `json:"stream"`
	Options  *options  `json:"options,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type options struct {
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	NumPredict  int      `json:"num_predict,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
	Stop        []string `json:"stop,omitempty"`
}

// newOptions returns the options to send, or nil when o sets none.
func newOptions(o llm.Options) *options {
	if o.Temperature == nil && o.TopP == nil && o.MaxTokens == 0 && o.Seed == nil && len(o.Stop) == 0 {
		return nil
	}
	return &options{
		Temperature: o.Temperature,
		TopP:        o.TopP,
		NumPredict:  o.MaxTokens,
		Seed:        o.Seed,
		Stop:        o.Stop,
	}
}

// response is an answer of /api/generate or /api/chat, whole or one
// streamed line: generate fills Response, chat fills Message.
type response struct {
	Model           string   `json:"model"`
	Response        string   `json:"response"`
	Message         *message `json:"message"`
	Done            bool     `json:"done"`
	DoneReason      string   `json:"done_reason"`
	PromptEvalCount int      `json:"prompt_eval_count"`
	EvalCount       int      `json:"eval_count"`
	Error           string   `json:"error"`
}

func (r *response) text() string {
	if r.Message != nil {
		return r.Response + r.Message.Content
	}
	return r.Response
}

func (r *response) usage() llm.Usage {
	return llm.Usage{PromptTokens: r.PromptEvalCount, CompletionTokens: r.EvalCount}
}

// errorMessage extracts the "error" field of an Ollama error body.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Error
}
