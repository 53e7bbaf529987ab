package wire

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/integrations/llm"
)

func TestClean(t *testing.T) {
	long := strings.Repeat("é", MaxMessage+10)
	tests := []struct {
		name    string
		in      string
		secrets []string
		want    string
	}{
		{"plain", `model "x" not found`, nil, `model "x" not found`},
		{"white space and controls", "a\n\tb \x00 c\r\n", nil, "a b c"},
		{"url", "pull failed: Get https://registry.example/v2/x?token=abc: EOF", nil, "pull failed: Get [url] EOF"},
		{"secret", "bad key sk-SECRET-123 given", []string{"sk-SECRET-123"}, "bad key [redacted] given"},
		{"empty secret ignored", "as is", []string{""}, "as is"},
		{"invalid utf8", "a\xffb", nil, "ab"},
		{"truncated by rune", long, nil, strings.Repeat("é", MaxMessage) + "..."},
		{"exactly max", strings.Repeat("x", MaxMessage), nil, strings.Repeat("x", MaxMessage)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Clean(tt.in, tt.secrets...))
		})
	}
}

func TestCheckRequest(t *testing.T) {
	nan, inf, half := math.NaN(), math.Inf(1), 0.5
	tests := []struct {
		name string
		req  *llm.Request
		ok   bool
	}{
		{"prompt", &llm.Request{Prompt: "hi"}, true},
		{"messages", &llm.Request{Messages: []llm.Message{{Role: "user", Content: "hi"}}}, true},
		{"neither", &llm.Request{}, true},
		{"finite options", &llm.Request{Prompt: "hi", Options: llm.Options{Temperature: &half, TopP: &half, MaxTokens: 3}}, true},
		{"nil", nil, false},
		{"both", &llm.Request{Prompt: "hi", Messages: []llm.Message{{Role: "user", Content: "hi"}}}, false},
		{"negative max tokens", &llm.Request{Prompt: "hi", Options: llm.Options{MaxTokens: -1}}, false},
		{"nan temperature", &llm.Request{Prompt: "hi", Options: llm.Options{Temperature: &nan}}, false},
		{"inf top_p", &llm.Request{Prompt: "hi", Options: llm.Options{TopP: &inf}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRequest("b", tt.req)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, integrations.ErrInvalidRequest)
		})
	}
}

func TestParseBaseURL(t *testing.T) {
	good := map[string]string{
		"http://127.0.0.1:11434":   "http://127.0.0.1:11434",
		"http://127.0.0.1:11434/":  "http://127.0.0.1:11434",
		"https://h.example/proxy/": "https://h.example/proxy",
		" http://h:1 ":             "http://h:1",
	}
	for in, want := range good {
		u, err := ParseBaseURL("b", in)
		require.NoError(t, err, in)
		assert.Equal(t, want, u.String(), in)
	}
	for _, in := range []string{"", "h:11434", "ftp://h", "http://", "/api", "http://h/?x=1", "http://h/#f", "http://h/%zz"} {
		_, err := ParseBaseURL("b", in)
		require.ErrorIs(t, err, integrations.ErrInvalidRequest, in)
		assert.Contains(t, err.Error(), "base URL", in)
		if in != "" {
			assert.NotContains(t, err.Error(), in, "the error must not repeat the URL")
		}
	}
}

func TestReadLines(t *testing.T) {
	ctx := context.Background()

	var got []string
	stopped, err := ReadLines(ctx, "b", strings.NewReader("a\n\n  \r\n b \r\nstop\nafter\n"), func(l []byte) (bool, error) {
		got = append(got, string(l))
		return string(l) == "stop", nil
	})
	require.NoError(t, err)
	assert.True(t, stopped)
	assert.Equal(t, []string{"a", "b", "stop"}, got)

	stopped, err = ReadLines(ctx, "b", strings.NewReader("a\nb"), func([]byte) (bool, error) { return false, nil })
	require.NoError(t, err)
	assert.False(t, stopped, "end of input is not a stop")

	errStop := errors.New("caller stop")
	_, err = ReadLines(ctx, "b", strings.NewReader("a\nb\n"), func([]byte) (bool, error) { return false, errStop })
	assert.Same(t, errStop, err)

	_, err = ReadLines(ctx, "b", strings.NewReader(strings.Repeat("x", MaxLine+1)+"\n"), func([]byte) (bool, error) { return false, nil })
	assert.ErrorIs(t, err, integrations.ErrBadResponse)

	_, err = ReadLines(ctx, "b", io.MultiReader(strings.NewReader("a\n"), iotest.ErrReader(io.ErrUnexpectedEOF)), func([]byte) (bool, error) { return false, nil })
	assert.ErrorIs(t, err, integrations.ErrUnreachable)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = ReadLines(cctx, "b", iotest.ErrReader(errors.New("read on closed body")), func([]byte) (bool, error) { return false, nil })
	assert.ErrorIs(t, err, context.Canceled)
}

func TestReadBody(t *testing.T) {
	ctx := context.Background()
	data, err := ReadBody(ctx, "b", strings.NewReader(`{"ok":true}`))
	require.NoError(t, err)
	assert.Equal(t, `{"ok":true}`, string(data))

	_, err = ReadBody(ctx, "b", io.LimitReader(zeros{}, MaxBody+1))
	assert.ErrorIs(t, err, integrations.ErrBadResponse)

	_, err = ReadBody(ctx, "b", iotest.ErrReader(io.ErrUnexpectedEOF))
	assert.ErrorIs(t, err, integrations.ErrUnreachable)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestHTTPClient(t *testing.T) {
	assert.Same(t, defaultClient, HTTPClient(nil))
	hc := &http.Client{}
	assert.Same(t, hc, HTTPClient(hc))
	assert.Zero(t, defaultClient.Timeout, "an overall timeout would cut long streams")
}
