package monitor_test

import (
	"math"
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/vega-gateway/vega/perf/monitor"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	type q struct{ q, want float64 }
	run := func(t *testing.T, name string, h *metrics.Float64Histogram, qs ...q) {
		t.Helper()
		for _, c := range qs {
			if got := monitor.Quantile(h, c.q); math.Abs(got-c.want) > 1e-9 {
				t.Errorf("%s: quantile(%v) = %v; want %v", name, c.q, got, c.want)
			}
		}
	}
	hist := func(buckets []float64, counts ...uint64) *metrics.Float64Histogram {
		return &metrics.Float64Histogram{Buckets: buckets, Counts: counts}
	}

	run(t, "nil", nil, q{0.5, 0}, q{1, 0})
	run(t, "empty", hist([]float64{0, 1, 2}, 0, 0), q{0.5, 0}, q{1, 0})
	run(t, "malformed", hist([]float64{0, 1}, 1, 1), q{0.5, 0})
	run(t, "one bucket, interpolated", hist([]float64{0, 10}, 10),
		q{0, 0}, q{0.5, 5}, q{0.99, 9.9}, q{1, 10})
	run(t, "several buckets", hist([]float64{0, 1, 2, 4}, 1, 1, 2),
		q{0.25, 1}, q{0.5, 2}, q{0.75, 3}, q{1, 4})
	run(t, "empty buckets are skipped", hist([]float64{0, 1, 2, 3}, 0, 4, 0),
		q{0, 1}, q{0.5, 1.5}, q{1, 2})
	run(t, "-Inf lower edge answers its upper boundary", hist([]float64{-inf, 0, 1}, 2, 2),
		q{0, 0}, q{0.25, 0}, q{0.75, 0.5}, q{1, 1})
	run(t, "+Inf upper edge answers its lower boundary", hist([]float64{0, 1, inf}, 1, 3),
		q{0.1, 0.4}, q{0.5, 1}, q{0.99, 1}, q{1, 1})
	run(t, "only infinite edges", hist([]float64{-inf, inf}, 5), q{0.5, 0})
	run(t, "q is clamped", hist([]float64{0, 10}, 10),
		q{-1, 0}, q{math.NaN(), 0}, q{2, 10})
}

func TestPickGCPauseMetric(t *testing.T) {
	newer := []metrics.Description{{Name: "/gc/pauses:seconds"}, {Name: "/sched/pauses/total/gc:seconds"}}
	older := []metrics.Description{{Name: "/gc/pauses:seconds"}}
	assert.Equal(t, "/sched/pauses/total/gc:seconds", monitor.PickGCPauseMetric(newer))
	assert.Equal(t, "/gc/pauses:seconds", monitor.PickGCPauseMetric(older))
}

func TestReadRuntime(t *testing.T) {
	runtime.GC() // at least one pause to report
	st := monitor.ReadRuntime()

	assert.Positive(t, st.Goroutines)
	assert.Positive(t, st.HeapAllocBytes)
	assert.Positive(t, st.HeapObjects)
	assert.Positive(t, st.GCCycles)
	assert.Equal(t, runtime.GOMAXPROCS(0), st.GOMAXPROCS)
	assert.Equal(t, runtime.Version(), st.GoVersion)
	assert.GreaterOrEqual(t, st.SchedLatencyP99, st.SchedLatencyP50)
	assert.Positive(t, st.GCPauseP50)
	assert.GreaterOrEqual(t, st.GCPauseP99, st.GCPauseP50)
	assert.GreaterOrEqual(t, st.GCPauseMax, st.GCPauseP99)
	assert.Positive(t, st.LastGCPause)
}
