package sim

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/llm"
)

// fakeSleep records the waits asked for and returns at once (or ctx.Err()).
type fakeSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	return ctx.Err()
}

// newFake returns a model whose waits are recorded, not slept.
func newFake(s Settings) (*Model, *fakeSleep) {
	m := New("sim-test", s)
	f := &fakeSleep{}
	m.sleep = f.sleep
	return m, f
}

func ptr[T any](v T) *T { return &v }

func generate(t *testing.T, m *Model, req *llm.Request) *llm.Response {
	t.Helper()
	resp, err := m.Generate(context.Background(), req)
	require.NoError(t, err)
	return resp
}

func TestDeterministic(t *testing.T) {
	m, _ := newFake(Settings{})
	base := llm.Request{Model: "sim-1", Prompt: "Tell me about rivers"}

	a := generate(t, m, &base)
	b := generate(t, m, &base)
	assert.Equal(t, a, b, "same request, same answer")
	assert.Equal(t, a, generate(t, New("other-name", Settings{}), &base), "the answer does not depend on the instance")

	variants := map[string]llm.Request{
		"prompt":      {Model: "sim-1", Prompt: "Tell me about mountains"},
		"model":       {Model: "sim-2", Prompt: base.Prompt},
		"seed":        {Model: "sim-1", Prompt: base.Prompt, Options: llm.Options{Seed: ptr(int64(1))}},
		"temperature": {Model: "sim-1", Prompt: base.Prompt, Options: llm.Options{Temperature: ptr(0.7)}},
		"messages":    {Model: "sim-1", Messages: []llm.Message{{Role: "user", Content: base.Prompt}}},
	}
	header := `Simulated answer to "Tell me about rivers": `
	for name, req := range variants {
		got := generate(t, m, &req).Text
		assert.NotEqual(t, a.Text, got, name)
		if name != "prompt" {
			// Same quoted prompt, so the generated words must differ.
			assert.True(t, strings.HasPrefix(got, header), name)
		}
	}
}

func TestHeader(t *testing.T) {
	m, _ := newFake(Settings{MaxTokens: 100})
	tests := []struct {
		name string
		req  llm.Request
		want string
	}{
		{"prompt", llm.Request{Prompt: "hi"}, `Simulated answer to "hi": `},
		{"white space collapsed", llm.Request{Prompt: "  hi\n\tthere "}, `Simulated answer to "hi there": `},
		{"long prompt cut at 40", llm.Request{Prompt: strings.Repeat("ab", 30)}, `Simulated answer to "` + strings.Repeat("ab", 20) + `...": `},
		{"last user message", llm.Request{Messages: []llm.Message{
			{Role: "system", Content: "be nice"},
			{Role: "user", Content: "first"},
			{Role: "assistant", Content: "ok"},
			{Role: "user", Content: "second"},
			{Role: "assistant", Content: "partial"},
		}}, `Simulated answer to "second": `},
		{"no user message", llm.Request{Messages: []llm.Message{{Role: "system", Content: "sys"}}}, `Simulated answer to "sys": `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.True(t, strings.HasPrefix(generate(t, m, &tt.req).Text, tt.want), "want prefix %q", tt.want)
		})
	}
}

func TestLength(t *testing.T) {
	full := generate(t, New("s", Settings{MaxTokens: 200}), &llm.Request{Model: "m", Prompt: "length test"}).Text
	words := strings.Fields(full)
	require.Len(t, words, 200)

	tests := []struct {
		name      string
		settings  int
		option    int
		wantWords int
		reason    string
	}{
		{"default setting", 0, 0, 32, "stop"},
		{"setting", 10, 0, 10, "stop"},
		{"option caps", 0, 5, 5, "length"},
		{"option overrides setting", 10, 20, 20, "length"},
		{"option shorter than header", 0, 2, 2, "length"},
		{"one word", 1, 0, 1, "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newFake(Settings{MaxTokens: tt.settings})
			resp := generate(t, m, &llm.Request{Model: "m", Prompt: "length test", Options: llm.Options{MaxTokens: tt.option}})
			assert.Equal(t, strings.Join(words[:tt.wantWords], " "), resp.Text, "a shorter answer is a prefix of a longer one")
			assert.Equal(t, tt.reason, resp.FinishReason)
			assert.Equal(t, llm.Usage{PromptTokens: 2, CompletionTokens: tt.wantWords}, resp.Usage)
			assert.Equal(t, "m", resp.Model)
		})
	}
}

func TestStop(t *testing.T) {
	m, _ := newFake(Settings{})
	req := llm.Request{Model: "m", Prompt: "stop test", Options: llm.Options{MaxTokens: 20}}
	full := generate(t, m, &req)
	require.Equal(t, "length", full.FinishReason)
	words := strings.Fields(full.Text)
	require.Len(t, words, 20)

	// Stop sequences inside the generated part: the 10th and 5th words,
	// listed in that order; the earliest occurrence in the text wins.
	late, early := " "+words[9]+" ", " "+words[4]+" "
	at := min(strings.Index(full.Text, late), strings.Index(full.Text, early))
	require.Positive(t, at)

	req.Options.Stop = []string{"", late, "never-in-vocabulary", early}
	resp := generate(t, m, &req)
	assert.Equal(t, full.Text[:at], resp.Text)
	assert.Equal(t, "stop", resp.FinishReason, "cut by a stop sequence before the limit")
	assert.Equal(t, len(strings.Fields(full.Text[:at])), resp.Usage.CompletionTokens)

	req.Options.Stop = []string{"never-in-vocabulary"}
	resp = generate(t, m, &req)
	assert.Equal(t, full.Text, resp.Text)
	assert.Equal(t, "length", resp.FinishReason, "a stop sequence that is not met changes nothing")

	req.Options.Stop = []string{"Simulated"}
	resp = generate(t, m, &req)
	assert.Equal(t, &llm.Response{Model: "m", FinishReason: "stop", Usage: llm.Usage{PromptTokens: 2}}, resp)
}

func TestPromptTokens(t *testing.T) {
	m, _ := newFake(Settings{})
	assert.Equal(t, 4, generate(t, m, &llm.Request{Prompt: " one two\nthree  four "}).Usage.PromptTokens)
	assert.Equal(t, 5, generate(t, m, &llm.Request{Messages: []llm.Message{
		{Role: "system", Content: "be brief"},
		{Role: "user", Content: "say three words"},
	}}).Usage.PromptTokens)
	assert.Equal(t, "sim-test", generate(t, m, &llm.Request{Prompt: "x"}).Model, "the backend name stands in for a missing model")
}

func TestStreamMatchesGenerate(t *testing.T) {
	reqs := map[string]*llm.Request{
		"default": {Model: "m", Prompt: "stream me"},
		"length":  {Model: "m", Prompt: "stream me", Options: llm.Options{MaxTokens: 7}},
		"stop":    {Model: "m", Prompt: "stream me", Options: llm.Options{Stop: []string{"me\""}}},
		"empty":   {Model: "m", Prompt: "x", Options: llm.Options{Stop: []string{"Sim"}}},
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			m, _ := newFake(Settings{})
			want := generate(t, m, req)

			var chunks []llm.Chunk
			require.NoError(t, m.Stream(context.Background(), req, func(c llm.Chunk) error {
				chunks = append(chunks, c)
				return nil
			}))
			require.NotEmpty(t, chunks)
			last := chunks[len(chunks)-1]
			assert.Equal(t, llm.Chunk{Done: true, FinishReason: want.FinishReason, Usage: want.Usage}, last)

			var text strings.Builder
			for _, c := range chunks[:len(chunks)-1] {
				assert.False(t, c.Done)
				assert.Len(t, strings.Fields(c.Text), 1, "one word per chunk: %q", c.Text)
				text.WriteString(c.Text)
			}
			assert.Equal(t, want.Text, text.String())
			assert.Len(t, chunks, want.Usage.CompletionTokens+1)
		})
	}
}

func TestPacing(t *testing.T) {
	s := Settings{Latency: 200 * time.Millisecond, TokensPerSecond: 10, MaxTokens: 5}
	req := &llm.Request{Prompt: "pace"}

	m, f := newFake(s)
	generate(t, m, req)
	assert.Equal(t, []time.Duration{700 * time.Millisecond}, f.waits, "latency + 5 tokens at 10/s")

	m, f = newFake(s)
	require.NoError(t, m.Stream(context.Background(), req, func(llm.Chunk) error { return nil }))
	step := 100 * time.Millisecond
	assert.Equal(t, []time.Duration{200 * time.Millisecond, step, step, step, step, step}, f.waits,
		"first token after the latency, then one interval per token, the last before Done")

	m, f = newFake(Settings{Latency: time.Second})
	generate(t, m, req)
	assert.Equal(t, []time.Duration{time.Second}, f.waits, "unlimited tokens per second adds nothing")
}

func TestCancelDuringLatency(t *testing.T) {
	m := New("s", Settings{Latency: time.Hour})
	req := &llm.Request{Prompt: "wait"}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	start := time.Now()
	resp, err := m.Generate(ctx, req)
	assert.Nil(t, resp)
	assert.ErrorIs(t, err, context.Canceled)

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err = m.Stream(ctx, req, func(llm.Chunk) error {
		t.Error("no chunk expected")
		return nil
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second, "the waits end with the context")
}

func TestCancelDuringStream(t *testing.T) {
	m := New("s", Settings{TokensPerSecond: 0.001}) // 1000 s per token
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chunks []llm.Chunk
	err := m.Stream(ctx, &llm.Request{Prompt: "slow"}, func(c llm.Chunk) error {
		chunks = append(chunks, c)
		cancel()
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Len(t, chunks, 1)
}

func TestRealLatency(t *testing.T) {
	m := New("s", Settings{Latency: 20 * time.Millisecond, TokensPerSecond: 1000, MaxTokens: 10})
	start := time.Now()
	resp, err := m.Generate(context.Background(), &llm.Request{Prompt: "time me"})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond, "20 ms latency + 10 tokens at 1000/s")
	assert.Equal(t, 10, resp.Usage.CompletionTokens)
}

func TestStreamCallbackErrorStops(t *testing.T) {
	m, _ := newFake(Settings{})
	errStop := errors.New("client went away")
	calls := 0
	err := m.Stream(context.Background(), &llm.Request{Prompt: "p"}, func(llm.Chunk) error {
		calls++
		return errStop
	})
	assert.Same(t, errStop, err)
	assert.Equal(t, 1, calls)
}

func TestInvalidRequest(t *testing.T) {
	m, f := newFake(Settings{Latency: time.Second})
	for _, req := range []*llm.Request{
		nil,
		{Prompt: "p", Messages: []llm.Message{{Role: "user", Content: "p"}}},
		{Prompt: "p", Options: llm.Options{MaxTokens: -3}},
	} {
		_, err := m.Generate(context.Background(), req)
		assert.ErrorIs(t, err, integrations.ErrInvalidRequest)
		assert.ErrorIs(t, m.Stream(context.Background(), req, func(llm.Chunk) error { return nil }), integrations.ErrInvalidRequest)
	}
	assert.Empty(t, f.waits, "an invalid request does not wait")
}

func TestNew(t *testing.T) {
	assert.Equal(t, "sim", New("sim", Settings{}).Name())
	for _, s := range []Settings{{Latency: -1}, {TokensPerSecond: -1}, {MaxTokens: -1}} {
		assert.Panics(t, func() { New("sim", s) }, "%+v", s)
	}
}
