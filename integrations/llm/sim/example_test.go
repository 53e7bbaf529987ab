package sim_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/vega-gateway/vega/integrations/llm"
	"github.com/vega-gateway/vega/integrations/llm/sim"
)

func Example() {
	m := sim.New("sim", sim.Settings{MaxTokens: 12})
	req := &llm.Request{Model: "sim-small", Prompt: "What is a gateway?"}

	resp, err := m.Generate(context.Background(), req)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Text)
	fmt.Println(resp.FinishReason, resp.Usage.PromptTokens, resp.Usage.CompletionTokens)

	var streamed strings.Builder
	err = m.Stream(context.Background(), req, func(c llm.Chunk) error {
		streamed.WriteString(c.Text)
		return nil
	})
	fmt.Println(err == nil && streamed.String() == resp.Text)
	// Output:
	// Simulated answer to "What is a gateway?": Number number through beside some
	// stop 4 12
	// true
}
