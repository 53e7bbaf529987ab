package monitor_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/monitor"
)

const profileText = "goroutine profile: total 9\n" +
	"5 @ 0x47db6e 0x4158ee 0x4d9cb3 0x484181\n" +
	"#\t0x4d9cb2\tmain.leaky+0x32\t/tmp/main.go:9\n" +
	"#\t0x4d9c5e\tmain.main.func1+0xde\t\t\t\t/tmp/main.go:19\n" +
	"\n" +
	"3 @ 0x47db6e 0x4158ee 0x4d9cc3 0x484181\n" +
	"# labels: {\"rpc\":\"Generate\"}\n" +
	"#\t0x4d9cc2\tmain.leaky+0x42\t/tmp/main.go:10\n" +
	"#\t0x4d9c6e\tmain.main.func1+0xee\t/tmp/main.go:20\n" +
	"\n" +
	"1 @ 0x442931 0x47cf5d 0x4c7671\n" +
	"#\t0x4c7670\truntime/pprof.writeRuntimeProfile+0xb0\t/usr/local/go/src/runtime/pprof/pprof.go:851\n" +
	"#\t0x4c74a4\tgithub.com/x/y.(*T[...]).Run+0x44\t/y/t.go:784\n" +
	"#\t0x4c4328\n" +
	"\n"

func TestParseGoroutineProfile(t *testing.T) {
	got := monitor.ParseGoroutineProfile(profileText)
	want := []monitor.ParsedStack{
		// Same functions at other lines, with labels: one stack.
		{Funcs: []string{"main.leaky", "main.main.func1"}, N: 8},
		{Funcs: []string{"runtime/pprof.writeRuntimeProfile", "github.com/x/y.(*T[...]).Run", "?"}, N: 1},
	}
	assert.Equal(t, want, got)
}

func TestParseGoroutineProfileKeepsTheLargestStacks(t *testing.T) {
	var b strings.Builder
	b.WriteString("goroutine profile: total many\n")
	for i := range monitor.MaxStacks + 10 {
		fmt.Fprintf(&b, "%d @ 0x1\n#\t0x1\tpkg.f%d+0x1\tf.go:1\n\n", i+1, i)
	}
	got := monitor.ParseGoroutineProfile(b.String())
	require.Len(t, got, monitor.MaxStacks)
	assert.Equal(t, int64(monitor.MaxStacks+10), got[0].N, "largest first")
	assert.Equal(t, int64(11), got[len(got)-1].N, "the smallest are dropped")
}

func TestParseGoroutineProfileOfThisProcess(t *testing.T) {
	p := park(10, parkedForProfile)
	defer p.stop()

	var b strings.Builder
	require.NoError(t, monitor.WriteGoroutineProfile(&b))
	var found bool
	for _, s := range monitor.ParseGoroutineProfile(b.String()) {
		if strings.HasSuffix(s.Funcs[0], "monitor_test.parkedForProfile") {
			found = true
			assert.InDelta(t, 10, s.N, 1, "stack %v", s.Funcs) // one may still be in WaitGroup.Done
		}
	}
	assert.True(t, found, "parkedForProfile not in the profile:\n%s", b.String())
}

// parkedForProfile is the function the goroutines of
// TestParseGoroutineProfileOfThisProcess are parked in.
func parkedForProfile(p *parked) {
	p.started.Done()
	<-p.release
}
