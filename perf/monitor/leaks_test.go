package monitor_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/monitor"
)

// leakOne is the function the leaking goroutines of
// TestLeakDetectorFlagsLeakingGoroutines are stuck in.
func leakOne(p *parked) {
	p.started.Done()
	<-p.release
}

// serveOne is the function the goroutines of the load tests wait in.
func serveOne(p *parked) {
	p.started.Done()
	<-p.release
}

func TestLeakDetectorFlagsLeakingGoroutines(t *testing.T) {
	clock := newFakeClock()
	d := monitor.NewLeakDetector(monitor.LeakSettings{Interval: 10 * time.Second, Window: 2 * time.Minute, Now: clock.Now})
	var leaks []*parked
	defer func() {
		for _, p := range leaks {
			p.stop()
		}
	}()

	d.Sample()
	for range 10 { // 30 more goroutines every 10s
		clock.Advance(10 * time.Second)
		leaks = append(leaks, park(30, leakOne))
		d.Sample()
	}

	r := d.Report()
	require.True(t, r.Suspected, "report: %+v", r)
	assert.Equal(t, 11, r.Samples)
	assert.Equal(t, 2*time.Minute, r.Window)
	assert.InDelta(t, 180, r.GoroutineGrowthPerMinute, 10, "30 per 10s")
	assert.Contains(t, r.Reason, "goroutines grew from ")
	assert.Contains(t, r.Reason, " in 1m40s (+18")
	require.NotEmpty(t, r.GrowingStacks)
	top := r.GrowingStacks[0]
	assert.True(t, hasFunc(top.Functions, "monitor_test.leakOne"), "top growing stack: %v", top.Functions)
	// ±1 a batch: the last goroutine of a batch may still be in
	// WaitGroup.Done when the sample is taken.
	assert.InDelta(t, 300, top.Growth, 3)
	assert.InDelta(t, 300, top.Count, 3)
	assert.LessOrEqual(t, len(r.GrowingStacks), 10)

	// The leak is mended; once the window has slid past it, all is quiet.
	for _, p := range leaks {
		p.stop()
	}
	leaks = nil
	for range 13 {
		clock.Advance(10 * time.Second)
		d.Sample()
	}
	r = d.Report()
	assert.False(t, r.Suspected, "report: %+v", r)
	assert.Equal(t, 13, r.Samples, "the window holds Window/Interval+1 samples")
	for _, s := range r.GrowingStacks {
		assert.False(t, hasFunc(s.Functions, "monitor_test.leakOne"), "stack %v still growing", s.Functions)
	}
	assert.LessOrEqual(t, monitor.Interned(d), 13*monitor.MaxStacks)
}

// setLevel starts or stops batches of 100 goroutines until there are level
// batches.
func setLevel(batches *[]*parked, level int) {
	for len(*batches) < level {
		*batches = append(*batches, park(100, serveOne))
	}
	for len(*batches) > level {
		(*batches)[len(*batches)-1].stop()
		*batches = (*batches)[:len(*batches)-1]
	}
}

func TestLeakDetectorQuietUnderSteadyLoad(t *testing.T) {
	clock := newFakeClock()
	d := monitor.NewLeakDetector(monitor.LeakSettings{Interval: 10 * time.Second, Window: 2 * time.Minute, Now: clock.Now})
	var batches []*parked
	defer setLevel(&batches, 0)

	// Load goes up and down; the last sample is 300 goroutines above the
	// first, more than MinGoroutineGrowth, but the series does not rise
	// steadily.
	for _, level := range []int{0, 2, 1, 3, 0, 2, 1, 3, 0, 2, 3} {
		setLevel(&batches, level)
		d.Sample()
		clock.Advance(10 * time.Second)
	}

	r := d.Report()
	assert.False(t, r.Suspected, "report: %+v", r)
	assert.Empty(t, r.Reason)
	require.NotEmpty(t, r.GrowingStacks)
	assert.True(t, hasFunc(r.GrowingStacks[0].Functions, "monitor_test.serveOne"), "top growing stack: %v", r.GrowingStacks[0].Functions)
	assert.InDelta(t, 300, r.GrowingStacks[0].Growth, 3, "the rise the rule saw")
}

func TestLeakDetectorQuietOnASpike(t *testing.T) {
	clock := newFakeClock()
	d := monitor.NewLeakDetector(monitor.LeakSettings{Interval: 10 * time.Second, Window: 2 * time.Minute, Now: clock.Now})
	var batches []*parked
	defer setLevel(&batches, 0)

	for _, level := range []int{0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0} {
		setLevel(&batches, level)
		d.Sample()
		clock.Advance(10 * time.Second)
	}
	r := d.Report()
	assert.False(t, r.Suspected, "report: %+v", r)
	assert.Equal(t, 11, r.Samples)
}

// synthetic makes d read its heap and goroutine figures from heap and gs,
// one pair per Sample, and no stacks.
func synthetic(d *monitor.LeakDetector, heap []uint64, gs []int) {
	i := 0
	monitor.SetReader(d, func() (uint64, int) {
		defer func() { i++ }()
		return heap[i], gs[i]
	})
	monitor.SetProfile(d, func(io.Writer) error { return errors.New("no profile") })
}

func TestLeakDetectorHeap(t *testing.T) {
	const mib = 1 << 20
	flat := []int{50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50}
	tests := []struct {
		name   string
		heap   []uint64 // MiB, one every 10s
		want   bool
		reason string
	}{
		{"steady growth", []uint64{100, 116, 132, 148, 164, 180, 196, 212, 228, 244, 260}, true,
			"live heap grew from 100.0 MiB to 260.0 MiB in 1m40s (+96.0 MiB/min)"},
		{"growth in GC steps", []uint64{100, 100, 130, 130, 130, 160, 160, 190, 190, 190, 220}, true,
			"live heap grew from 100.0 MiB to 220.0 MiB in 1m40s"},
		{"saw-tooth around a level", []uint64{100, 180, 90, 170, 120, 200, 100, 190, 110, 185, 180}, false, ""},
		{"one big allocation", []uint64{100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 900}, false, ""},
		{"slow growth under the minimum", []uint64{100, 105, 110, 115, 120, 125, 130, 135, 140, 145, 150}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			d := monitor.NewLeakDetector(monitor.LeakSettings{Interval: 10 * time.Second, Window: 2 * time.Minute, Now: clock.Now})
			heap := make([]uint64, len(tt.heap))
			for i, h := range tt.heap {
				heap[i] = h * mib
			}
			synthetic(d, heap, flat)
			for range heap {
				d.Sample()
				clock.Advance(10 * time.Second)
			}
			r := d.Report()
			assert.Equal(t, tt.want, r.Suspected, "report: %+v", r)
			assert.Contains(t, r.Reason, tt.reason)
			assert.NotContains(t, r.Reason, "goroutines")
			assert.Zero(t, r.GoroutineGrowthPerMinute)
			assert.Empty(t, r.GrowingStacks, "no profile, no stacks")
		})
	}
	t.Run("slope", func(t *testing.T) {
		clock := newFakeClock()
		d := monitor.NewLeakDetector(monitor.LeakSettings{Now: clock.Now})
		synthetic(d, []uint64{0, mib, 2 * mib}, []int{10, 10, 10})
		for range 3 {
			d.Sample()
			clock.Advance(30 * time.Second)
		}
		assert.InDelta(t, 2*mib, d.Report().HeapGrowthPerMinute, 1)
	})
}

func TestLeakDetectorNeedsAWindowOfSamples(t *testing.T) {
	steep := []int{0, 1000, 2000, 3000, 4000, 5000, 6000}
	heap := make([]uint64, len(steep))
	run := func(t *testing.T, n int, every time.Duration) monitor.LeakReport {
		t.Helper()
		clock := newFakeClock()
		d := monitor.NewLeakDetector(monitor.LeakSettings{Interval: 10 * time.Second, Window: 2 * time.Minute, Now: clock.Now})
		synthetic(d, heap, steep)
		for range n {
			d.Sample()
			clock.Advance(every)
		}
		return d.Report()
	}
	assert.False(t, run(t, 4, 20*time.Second).Suspected, "4 samples")
	assert.False(t, run(t, 6, 10*time.Second).Suspected, "50s of 2m")
	assert.True(t, run(t, 7, 10*time.Second).Suspected, "60s of 2m")
}

func TestLeakDetectorReset(t *testing.T) {
	clock := newFakeClock()
	d := monitor.NewLeakDetector(monitor.LeakSettings{Now: clock.Now})
	for range 3 {
		d.Sample()
		clock.Advance(10 * time.Second)
	}
	require.Equal(t, 3, d.Report().Samples)
	require.Positive(t, monitor.Interned(d))
	d.Reset()
	assert.Equal(t, monitor.LeakReport{Window: monitor.DefaultLeakWindow}, d.Report())
	assert.Zero(t, monitor.Interned(d))
}

func TestLeakSettings(t *testing.T) {
	assert.Equal(t, 5*time.Minute, monitor.NewLeakDetector(monitor.LeakSettings{}).Report().Window)

	bad := []struct {
		s    monitor.LeakSettings
		name string
	}{
		{monitor.LeakSettings{Interval: -time.Second}, "LeakSettings.Interval"},
		{monitor.LeakSettings{Window: -time.Second}, "LeakSettings.Window"},
		{monitor.LeakSettings{MinGoroutineGrowth: -1}, "LeakSettings.MinGoroutineGrowth"},
		{monitor.LeakSettings{Interval: 10 * time.Second, Window: 30 * time.Second}, "LeakSettings.Window must hold 4 to 360 Intervals"},
		{monitor.LeakSettings{Interval: time.Second, Window: time.Hour}, "LeakSettings.Window must hold 4 to 360 Intervals"},
	}
	for _, b := range bad {
		err, _ := panicValue(func() { monitor.NewLeakDetector(b.s) }).(error)
		assert.ErrorContains(t, err, b.name, "settings %+v", b.s)
	}
}

func TestLeakDetectorRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := monitor.NewLeakDetector(monitor.LeakSettings{Interval: 10 * time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			d.Run(ctx)
		}()
		time.Sleep(35 * time.Second) // fake time: samples at 0, 10, 20, 30s
		synctest.Wait()
		assert.Equal(t, 4, d.Report().Samples)
		cancel()
		<-done
	})
}

// Sample, Report and Reset may run at the same time (run with -race).
func TestLeakDetectorConcurrentUse(t *testing.T) {
	d := monitor.NewLeakDetector(monitor.LeakSettings{Interval: time.Second, Window: 10 * time.Second})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 20 {
				switch (i + j) % 3 {
				case 0:
					d.Sample()
				case 1:
					_ = d.Report()
				default:
					if j%7 == 0 {
						d.Reset()
					}
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, d.Report().Samples, 11)
}

// panicValue returns what f panics with, or nil.
func panicValue(f func()) (v any) {
	defer func() { v = recover() }()
	f()
	return nil
}
