package llm_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/integrations/llm"
	"github.com/vega-gateway/vega/integrations/llm/ollama"
	"github.com/vega-gateway/vega/integrations/llm/openai"
	"github.com/vega-gateway/vega/integrations/llm/sim"
)

// backend is the shape service/ is expected to declare for the backends;
// the assertions below keep the three interchangeable.
type backend interface {
	Name() string
	Generate(ctx context.Context, req *llm.Request) (*llm.Response, error)
	Stream(ctx context.Context, req *llm.Request, fn llm.ChunkFunc) error
}

var (
	_ backend = (*ollama.Client)(nil)
	_ backend = (*openai.Client)(nil)
	_ backend = (*sim.Model)(nil)
)

func TestBackendNames(t *testing.T) {
	o, err := ollama.New("local-ollama", "http://127.0.0.1:11434", nil)
	require.NoError(t, err)
	a, err := openai.New("local-vllm", "http://127.0.0.1:8000", "", nil)
	require.NoError(t, err)
	for want, b := range map[string]backend{
		"local-ollama": o,
		"local-vllm":   a,
		"default-sim":  sim.New("default-sim", sim.Settings{}),
	} {
		assert.Equal(t, want, b.Name())
	}
}
