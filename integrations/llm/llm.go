// Package llm holds the types shared by the gateway's LLM backends.
//
// A backend lives in a subpackage and exposes one concrete type with three
// methods:
//
//	Name() string
//	Generate(ctx context.Context, req *llm.Request) (*llm.Response, error)
//	Stream(ctx context.Context, req *llm.Request, fn llm.ChunkFunc) error
//
// The subpackages are:
//
//   - ollama: an Ollama server (/api/generate and /api/chat).
//   - openai: any OpenAI-compatible server (vLLM, llama.cpp, LM Studio,
//     OpenAI) through /v1/chat/completions.
//   - sim: the built-in simulated model, the gateway's default backend.
//
// Interfaces over these methods are declared by their consumers (service/),
// not here. Errors leave the backends in the vocabulary of package
// integrations: *integrations.StatusError for non-success HTTP answers, the
// sentinels integrations.ErrUnreachable, ErrTimeout, ErrBadResponse and
// ErrInvalidRequest, and the caller's own context.Canceled or
// context.DeadlineExceeded unchanged. An error returned by a ChunkFunc is
// returned by Stream as it is.
package llm

// Message is one turn of a chat conversation.
type Message struct {
	Role    string // "system", "user" or "assistant"
	Content string
}

// Options are the sampling parameters of a request. Zero values mean "use
// the backend's default" and are not sent upstream.
type Options struct {
	Temperature *float64 // nil = backend default
	TopP        *float64 // nil = backend default
	MaxTokens   int      // 0 = backend default; negative is invalid
	Seed        *int64   // nil = backend default
	Stop        []string // stop sequences; empty = none
}

// Request is one completion request. Exactly one of Prompt and Messages is
// set: a Prompt is a single user turn, Messages a whole conversation. The
// caller validates this; backends reject a request that sets both with an
// error wrapping integrations.ErrInvalidRequest.
type Request struct {
	Model    string
	Prompt   string
	Messages []Message
	Options  Options
}

// Usage counts the tokens of one answer as the backend reported them.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
}

// Response is a complete, non-streamed answer.
type Response struct {
	Text  string
	Model string // the model that answered, as the backend names it
	// FinishReason is "stop" (natural end or stop sequence), "length" (cut
	// by the token limit), or whatever else the backend says.
	FinishReason string
	Usage        Usage
}

// Chunk is one piece of a streamed answer. The last chunk has Done=true and
// carries FinishReason and Usage (its Text may be empty).
type Chunk struct {
	Text         string
	Done         bool
	FinishReason string
	Usage        Usage
}

// ChunkFunc receives the chunks of a streamed answer in order. Returning an
// error stops the stream; Stream then returns that error unchanged.
type ChunkFunc func(Chunk) error
