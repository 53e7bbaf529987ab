package monitor_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/monitor"
)

// BenchmarkSlowLogUnary is the fast path of the unary interceptor, a call
// below the threshold: two readings of the monotonic clock.
func BenchmarkSlowLogUnary(b *testing.B) {
	info := &grpc.UnaryServerInfo{FullMethod: "/vega.v1.GenerateService/Generate"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()

	b.Run("impl=slowlog", func(b *testing.B) {
		call := monitor.NewSlowLog(time.Second, 0).UnaryServerInterceptor()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := call(ctx, nil, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("impl=timenow", func(b *testing.B) {
		// The obvious interceptor, timing with time.Now, which reads the
		// wall clock as well as the monotonic one.
		threshold := time.Second
		call := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			if time.Since(start) >= threshold {
				b.Fatal("slow")
			}
			return resp, err
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := call(ctx, nil, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkSlowLogRecord is the slow path: every call is recorded.
func BenchmarkSlowLogRecord(b *testing.B) {
	info := &grpc.UnaryServerInfo{FullMethod: "/vega.v1.GenerateService/Generate"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	call := monitor.NewSlowLog(time.Nanosecond, 0).UnaryServerInterceptor()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := call(ctx, nil, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReadRuntime is the cost of one PerfAdmin "runtime" section.
func BenchmarkReadRuntime(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		monitor.ReadRuntime()
	}
}

// BenchmarkLeakSample is the cost of one sample, goroutine profile
// included, with this test binary's few goroutines and with 10 000 more.
func BenchmarkLeakSample(b *testing.B) {
	for _, bb := range []struct {
		name  string
		extra int
	}{{"goroutines=few", 0}, {"goroutines=10k", 10000}} {
		b.Run(bb.name, func(b *testing.B) {
			p := park(bb.extra, serveOne)
			defer p.stop()
			d := monitor.NewLeakDetector(monitor.LeakSettings{})
			b.ReportAllocs()
			for b.Loop() {
				d.Sample()
			}
		})
	}
}
