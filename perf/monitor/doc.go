// Package monitor watches the gateway's own Go runtime: the PerfAdmin
// sections "runtime" (the seed's async-monitor) and "memory_leaks".
//
// ReadRuntime reads goroutines, heap, GC cycles, scheduler latency and GC
// pause percentiles from runtime/metrics, which, unlike
// runtime.ReadMemStats, never stops the world. Percentiles come from the
// runtime's cumulative histograms, interpolated inside a bucket, so they
// describe the process since start.
//
// A SlowLog's interceptors time every RPC and keep the newest ones that
// took at least a threshold (VEGA_SLOW_RPC_THRESHOLD, 1s by default) in a
// bounded ring, with a count. The fast path is two readings of the monotonic
// clock and no allocation; the mutex is taken only to record a slow call.
//
// A LeakDetector samples, every Interval, the live heap (as marked by the
// last GC), the goroutine count and the goroutine stacks (the debug=1
// goroutine profile, each stack reduced to its function names, at most 64
// stacks per sample), keeping the samples of one Window. It suspects a leak
// only for sustained growth, not for load or a spike: over the window,
//
//  1. the series rose from the first sample to the last by at least the
//     minimum (MinGoroutineGrowth, MinHeapGrowth);
//  2. its least-squares slope is positive;
//  3. at least 80% of all pairs of samples (earlier, later) are
//     non-decreasing — noise around a level gives about 50%, a leak with
//     noise on top stays high;
//  4. no single step between successive samples is more than half of the
//     rise, so a level shift or a spike at the end is not a trend;
//
// and the window holds at least 5 samples spanning at least half of Window,
// so a start-up ramp is not taken for a leak. The report's growing stacks
// compare the newest sample with the oldest one of the window and show
// which code the new goroutines are parked in.
//
// monitor imports neither service/ nor integrations/: PerfAdmin maps its
// types to the proto messages RuntimeStats, SlowRPC, MemoryLeaksStats and
// GrowingStack field by field.
package monitor
