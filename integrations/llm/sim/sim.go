// Package sim is the built-in simulated model, the gateway's default LLM
// backend. It needs no server and answers deterministically, which makes
// it suited to demos, load tests and tests of the gateway itself.
//
// # Answers
//
// The same model, prompt (or messages), seed, temperature and top_p always
// give the same text; different prompts give different text. An answer
// starts with
//
//	Simulated answer to "<first 40 characters of the last user prompt>":
//
// followed by words drawn from a small fixed vocabulary by a generator
// seeded from a hash of the request. One token is one word, the header
// included.
//
// # Length and finish reasons
//
// An answer is Settings.MaxTokens words long (32 when zero), and then ends
// naturally: FinishReason "stop". A request that sets Options.MaxTokens
// caps the answer at that many words instead, and gets FinishReason
// "length", as a model that writes until it is cut off would. The text
// never depends on the limit: a shorter answer is a prefix of a longer one.
// Stop sequences cut the text before the first occurrence of any of them,
// with FinishReason "stop".
//
// Usage.PromptTokens is the number of white-space separated words of the
// prompt (or of all message contents); Usage.CompletionTokens the number of
// words of the answer.
//
// # Timing
//
// Settings.Latency passes before the first token, then each token takes
// 1/Settings.TokensPerSecond. Generate waits the whole time and returns the
// whole text; Stream emits one chunk per token as it is due and the final
// Done chunk when the last token's time has passed. Waiting honours the
// context: a cancelled or expired context ends the wait at once with
// ctx.Err(), so an abandoned request does not keep the simulator busy.
//
// There are no special model names: every model behaves as above.
package sim

import (
	"context"
	"math"
	"time"

	"github.com/vega-gateway/vega/integrations/llm"
	"github.com/vega-gateway/vega/integrations/llm/internal/wire"
)

// Settings tunes a simulated model. The zero value answers instantly with
// 32 words.
type Settings struct {
	// Latency is the time before the first token. Zero means none.
	Latency time.Duration
	// TokensPerSecond paces the tokens after the first delay. Zero means
	// unlimited: no per-token delay.
	TokensPerSecond float64
	// MaxTokens is the answer length, in words, when the request sets no
	// Options.MaxTokens. Zero means 32.
	MaxTokens int
}

// defaultMaxTokens is the answer length when Settings.MaxTokens is zero.
const defaultMaxTokens = 32

// Model is a simulated LLM. It is safe for concurrent use.
type Model struct {
	name string
	s    Settings
	// sleep waits for d or until ctx is done; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// New returns a simulated model named name (used in errors and stats).
//
// New panics if a setting is negative or TokensPerSecond is NaN: settings
// come from the gateway's configuration, which must reject such values
// before it builds a backend.
func New(name string, s Settings) *Model {
	if s.Latency < 0 || s.MaxTokens < 0 || s.TokensPerSecond < 0 || math.IsNaN(s.TokensPerSecond) {
		panic("sim: New: Latency, TokensPerSecond and MaxTokens must not be negative")
	}
	if s.MaxTokens == 0 {
		s.MaxTokens = defaultMaxTokens
	}
	return &Model{name: name, s: s, sleep: sleep}
}

// Name returns the backend name given to New.
func (m *Model) Name() string { return m.name }

// Generate waits Latency plus one token interval per word of the answer,
// then returns the whole answer.
func (m *Model) Generate(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	a, err := m.answer(req)
	if err != nil {
		return nil, err
	}
	if err := m.sleep(ctx, m.s.Latency+m.tokenTime(len(a.tokens))); err != nil {
		return nil, err
	}
	return &llm.Response{
		Text:         a.text,
		Model:        a.model,
		FinishReason: a.finishReason,
		Usage:        a.usage,
	}, nil
}

// Stream emits the answer one word per chunk, each with the white space
// that follows it, the first after Latency and the others one token
// interval apart, then the final Done chunk one interval after the last
// word. The chunks' texts concatenate to the text Generate returns.
func (m *Model) Stream(ctx context.Context, req *llm.Request, fn llm.ChunkFunc) error {
	a, err := m.answer(req)
	if err != nil {
		return err
	}
	if err := m.sleep(ctx, m.s.Latency); err != nil {
		return err
	}
	for i, tok := range a.tokens {
		if i > 0 {
			if err := m.sleep(ctx, m.tokenTime(1)); err != nil {
				return err
			}
		}
		if err := fn(llm.Chunk{Text: tok}); err != nil {
			return err
		}
	}
	if len(a.tokens) > 0 {
		if err := m.sleep(ctx, m.tokenTime(1)); err != nil {
			return err
		}
	}
	return fn(llm.Chunk{Done: true, FinishReason: a.finishReason, Usage: a.usage})
}

// answer builds the deterministic answer to req.
func (m *Model) answer(req *llm.Request) (*answer, error) {
	if err := wire.CheckRequest(m.name, req); err != nil {
		return nil, err
	}
	limit, reason := m.s.MaxTokens, "stop"
	if req.Options.MaxTokens > 0 {
		limit, reason = req.Options.MaxTokens, "length"
	}
	text := compose(req, limit)
	if cut, ok := cutAtStop(text, req.Options.Stop); ok {
		text, reason = cut, "stop"
	}
	model := req.Model
	if model == "" {
		model = m.name
	}
	tokens := splitTokens(text)
	return &answer{
		text:         text,
		tokens:       tokens,
		model:        model,
		finishReason: reason,
		usage:        llm.Usage{PromptTokens: promptTokens(req), CompletionTokens: len(tokens)},
	}, nil
}

type answer struct {
	text         string
	tokens       []string // word pieces whose concatenation is text
	model        string
	finishReason string
	usage        llm.Usage
}

// tokenTime is the time n tokens take at Settings.TokensPerSecond.
func (m *Model) tokenTime(n int) time.Duration {
	if m.s.TokensPerSecond == 0 || n == 0 {
		return 0
	}
	d := float64(n) * float64(time.Second) / m.s.TokensPerSecond
	if d >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(d)
}

// sleep waits for d, returning early with ctx.Err() when ctx is done. A
// non-positive d only checks ctx.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
