package monitor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
	"time"
)

// RuntimeStats describes the Go runtime of the process: the PerfAdmin
// "runtime" section (the seed's async-monitor) without the slow RPCs, which
// a SlowLog holds.
type RuntimeStats struct {
	Goroutines     int64
	HeapAllocBytes uint64 // bytes of heap objects, live and not yet swept (MemStats.HeapAlloc)
	HeapObjects    uint64
	GCCycles       uint32 // completed GC cycles since start
	GOMAXPROCS     int
	GoVersion      string

	// Scheduler latency since start: how long runnable goroutines waited
	// for a CPU (/sched/latencies:seconds).
	SchedLatencyP50, SchedLatencyP99 time.Duration
	// Stop-the-world GC pauses since start
	// (/sched/pauses/total/gc:seconds, /gc/pauses:seconds before Go 1.22).
	GCPauseP50, GCPauseP99, GCPauseMax time.Duration
	// LastGCPause is the most recent GC pause (0 before the first GC).
	LastGCPause time.Duration
}

// Metric names read by ReadRuntime.
const (
	metricGoroutines    = "/sched/goroutines:goroutines"
	metricHeapBytes     = "/memory/classes/heap/objects:bytes"
	metricHeapObjects   = "/gc/heap/objects:objects"
	metricGCCycles      = "/gc/cycles/total:gc-cycles"
	metricGOMAXPROCS    = "/sched/gomaxprocs:threads"
	metricSchedLatency  = "/sched/latencies:seconds"
	metricGCPauses      = "/sched/pauses/total/gc:seconds"
	metricGCPausesOld   = "/gc/pauses:seconds" // deprecated in Go 1.22
	metricHeapLiveBytes = "/gc/heap/live:bytes"
)

// gcPauseMetric is the GC pause histogram this runtime supports.
var gcPauseMetric = sync.OnceValue(func() string {
	return pickGCPauseMetric(metrics.All())
})

func pickGCPauseMetric(all []metrics.Description) string {
	if slices.ContainsFunc(all, func(d metrics.Description) bool { return d.Name == metricGCPauses }) {
		return metricGCPauses
	}
	return metricGCPausesOld
}

// ReadRuntime reads the runtime's figures from runtime/metrics, which does
// not stop the world (runtime.ReadMemStats does). LastGCPause comes from
// debug.ReadGCStats, which takes the heap lock for a copy of 256 numbers and
// does not stop the world either. Call it at the pace of a stats page, not
// per request: it allocates the two histograms.
func ReadRuntime() RuntimeStats {
	samples := []metrics.Sample{
		{Name: metricGoroutines},
		{Name: metricHeapBytes},
		{Name: metricHeapObjects},
		{Name: metricGCCycles},
		{Name: metricGOMAXPROCS},
		{Name: metricSchedLatency},
		{Name: gcPauseMetric()},
	}
	metrics.Read(samples)

	st := RuntimeStats{
		Goroutines:     int64(uint64Value(samples[0])),
		HeapAllocBytes: uint64Value(samples[1]),
		HeapObjects:    uint64Value(samples[2]),
		GCCycles:       uint32(min(uint64Value(samples[3]), math.MaxUint32)),
		GOMAXPROCS:     int(uint64Value(samples[4])),
		GoVersion:      runtime.Version(),
	}
	if h := histogramValue(samples[5]); h != nil {
		st.SchedLatencyP50 = seconds(quantile(h, 0.50))
		st.SchedLatencyP99 = seconds(quantile(h, 0.99))
	}
	if h := histogramValue(samples[6]); h != nil {
		st.GCPauseP50 = seconds(quantile(h, 0.50))
		st.GCPauseP99 = seconds(quantile(h, 0.99))
		st.GCPauseMax = seconds(quantile(h, 1))
	}
	if st.GOMAXPROCS == 0 { // a runtime without the metric
		st.GOMAXPROCS = runtime.GOMAXPROCS(0)
	}

	var gc debug.GCStats
	debug.ReadGCStats(&gc)
	if len(gc.Pause) > 0 {
		st.LastGCPause = gc.Pause[0]
	}
	return st
}

// uint64Value is s's value, or 0 when this runtime does not know s.
func uint64Value(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

// histogramValue is s's value, or nil when this runtime does not know s.
func histogramValue(s metrics.Sample) *metrics.Float64Histogram {
	if s.Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s.Value.Float64Histogram()
}

// seconds converts a non-negative number of seconds to a Duration,
// saturating instead of overflowing.
func seconds(s float64) time.Duration {
	switch {
	case !(s > 0): // also NaN
		return 0
	case s >= float64(math.MaxInt64)/float64(time.Second):
		return math.MaxInt64
	}
	return time.Duration(s * float64(time.Second))
}
