package monitor

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"time"
)

// LeakReport is the PerfAdmin "memory_leaks" section.
type LeakReport struct {
	Suspected bool          // the heap or the goroutines grew steadily over the window
	Window    time.Duration // the configured window
	Samples   int           // samples in the window
	// Least-squares slopes over the window: live heap bytes and goroutines
	// per minute.
	HeapGrowthPerMinute, GoroutineGrowthPerMinute float64
	// Reason says what grew, in words, when Suspected.
	Reason string
	// GrowingStacks are the goroutine stacks whose count grew from the
	// oldest sample of the window to the newest, most growth first, at
	// most 10.
	GrowingStacks []GrowingStack
}

// GrowingStack is a goroutine stack whose count grew over the window.
type GrowingStack struct {
	Count     int64    // goroutines with this stack now
	Growth    int64    // since the oldest sample of the window
	Functions []string // innermost first, function names only
}

// maxGrowingStacks bounds LeakReport.GrowingStacks.
const maxGrowingStacks = 10

// LeakDetector samples the live heap, the goroutine count and the
// goroutine stacks, and reports sustained growth (see the rule in the
// package documentation). A LeakDetector is safe for concurrent use.
type LeakDetector struct {
	s    LeakSettings // defaults applied; read-only
	keep int          // samples one Window holds at Interval; read-only

	// read and profile are the sources of a sample; tests replace them
	// before first use.
	read    func() (heap uint64, goroutines int)
	profile func(io.Writer) error

	sampleMu sync.Mutex       // serialises Sample; guards buf and metric
	buf      bytes.Buffer     // guarded by sampleMu: the profile text
	metric   []metrics.Sample // guarded by sampleMu

	mu       sync.Mutex
	samples  []leakSample      // guarded by mu: oldest first, within Window, at most keep
	interned map[string]*stack // guarded by mu: the stacks samples refer to
}

// leakSample is one sample: numbers for the series, and the stacks in case
// it becomes the oldest of the window.
type leakSample struct {
	at         time.Time
	heap       uint64
	goroutines int
	stacks     []stackCount // most goroutines first, at most maxStacks
}

// NewLeakDetector returns a LeakDetector with settings s. It panics, naming
// the setting, when s is invalid.
func NewLeakDetector(s LeakSettings) *LeakDetector {
	s, err := s.withDefaults()
	if err != nil {
		panic(err)
	}
	d := &LeakDetector{
		s:        s,
		keep:     int(s.Window/s.Interval) + 1,
		profile:  writeGoroutineProfile,
		metric:   []metrics.Sample{{Name: metricHeapLiveBytes}},
		interned: make(map[string]*stack),
	}
	d.read = d.readRuntime
	return d
}

// readRuntime reads the live heap (as marked by the last GC, which is
// steadier than the allocated heap's saw-tooth) and the goroutine count.
// Called with sampleMu held.
func (d *LeakDetector) readRuntime() (heap uint64, goroutines int) {
	metrics.Read(d.metric)
	return uint64Value(d.metric[0]), runtime.NumGoroutine()
}

// Run samples now and then every Interval until ctx is done.
func (d *LeakDetector) Run(ctx context.Context) {
	t := time.NewTicker(d.s.Interval)
	defer t.Stop()
	for {
		d.Sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample now. Its goroutine profile costs time in
// proportion to the goroutines (about 2ms per 1000, BenchmarkLeakSample)
// and stops the world briefly; at Run's pace that is negligible. The
// window keeps at most Window/Interval+1 samples, so sampling more often
// than Interval shortens it.
func (d *LeakDetector) Sample() {
	d.sampleMu.Lock()
	defer d.sampleMu.Unlock()
	heap, goroutines := d.read()
	d.buf.Reset()
	var parsed []parsedStack
	if err := d.profile(&d.buf); err == nil {
		parsed = parseGoroutineProfile(d.buf.Bytes())
	}
	at := d.s.Now()

	d.mu.Lock()
	defer d.mu.Unlock()
	s := leakSample{at: at, heap: heap, goroutines: goroutines, stacks: make([]stackCount, 0, len(parsed))}
	for _, p := range parsed {
		st := d.interned[p.key]
		if st == nil {
			st = &stack{key: p.key, funcs: p.funcs}
			d.interned[p.key] = st
		}
		st.refs++
		s.stacks = append(s.stacks, stackCount{st: st, n: p.n})
	}
	d.samples = append(d.samples, s)

	drop, since := 0, at.Add(-d.s.Window)
	for drop < len(d.samples)-1 && (len(d.samples)-drop > d.keep || d.samples[drop].at.Before(since)) {
		d.releaseLocked(d.samples[drop])
		drop++
	}
	d.samples = slices.Delete(d.samples, 0, drop)
}

// releaseLocked drops s's references to its stacks.
func (d *LeakDetector) releaseLocked(s leakSample) {
	for _, c := range s.stacks {
		if c.st.refs--; c.st.refs == 0 {
			delete(d.interned, c.st.key)
		}
	}
}

// Reset forgets every sample.
func (d *LeakDetector) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.samples = nil
	clear(d.interned)
}

// Report judges the samples of the window.
func (d *LeakDetector) Report() LeakReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := LeakReport{Window: d.s.Window, Samples: len(d.samples)}
	if len(d.samples) < 2 {
		return r
	}
	first, last := d.samples[0], d.samples[len(d.samples)-1]
	xs := make([]float64, len(d.samples)) // minutes since the first sample
	heap := make([]float64, len(d.samples))
	gs := make([]float64, len(d.samples))
	for i, s := range d.samples {
		xs[i] = s.at.Sub(first.at).Minutes()
		heap[i] = float64(s.heap)
		gs[i] = float64(s.goroutines)
	}
	r.HeapGrowthPerMinute = slope(xs, heap)
	r.GoroutineGrowthPerMinute = slope(xs, gs)

	if span := last.at.Sub(first.at); len(d.samples) >= minSamples && span >= d.s.Window/2 {
		span = span.Round(time.Second)
		var why []string
		if sustained(xs, gs, float64(d.s.MinGoroutineGrowth)) {
			why = append(why, fmt.Sprintf("goroutines grew from %d to %d in %v (%+.0f/min)",
				first.goroutines, last.goroutines, span, r.GoroutineGrowthPerMinute))
		}
		if sustained(xs, heap, float64(d.s.MinHeapGrowth)) {
			why = append(why, fmt.Sprintf("live heap grew from %s to %s in %v (%+.1f MiB/min)",
				mib(first.heap), mib(last.heap), span, r.HeapGrowthPerMinute/(1<<20)))
		}
		r.Suspected, r.Reason = len(why) > 0, strings.Join(why, "; ")
	}
	r.GrowingStacks = growingStacks(first.stacks, last.stacks)
	return r
}

// growingStacks compares the stacks of the newest sample with those of the
// oldest and returns the ones that grew, most growth first.
func growingStacks(oldest, newest []stackCount) []GrowingStack {
	before := make(map[*stack]int64, len(oldest))
	for _, c := range oldest {
		before[c.st] = c.n
	}
	var out []GrowingStack
	for _, c := range newest {
		if g := c.n - before[c.st]; g > 0 {
			out = append(out, GrowingStack{Count: c.n, Growth: g, Functions: c.st.funcs})
		}
	}
	// newest is in a fixed order (count, then stack), so ties stay put.
	slices.SortStableFunc(out, func(a, b GrowingStack) int {
		return cmp.Or(cmp.Compare(b.Growth, a.Growth), cmp.Compare(b.Count, a.Count))
	})
	out = out[:min(len(out), maxGrowingStacks)]
	for i := range out {
		out[i].Functions = slices.Clone(out[i].Functions) // the caller's to keep
	}
	return out
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
