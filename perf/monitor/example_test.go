package monitor_test

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/monitor"
)

// A SlowLog's interceptors go outermost, after recovery, to time what the
// caller sees; PerfAdmin reads its Snapshot.
func ExampleSlowLog() {
	slow := monitor.NewSlowLog(250*time.Millisecond, 0)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(slow.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(slow.StreamServerInterceptor()),
	)
	defer srv.Stop()

	count, threshold, recent := slow.Snapshot()
	fmt.Println(count, threshold, len(recent))
	// Output:
	// 0 250ms 0
}

// The leak detector samples in the background until the server stops;
// PerfAdmin reads its Report.
func ExampleLeakDetector() {
	leaks := monitor.NewLeakDetector(monitor.LeakSettings{Interval: 10 * time.Second, Window: 5 * time.Minute})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		leaks.Run(ctx)
	}()

	// … serve …

	stop()
	<-done
	r := leaks.Report()
	fmt.Println(r.Suspected, r.Window, r.Samples)
	// Output:
	// false 5m0s 1
}

func ExampleReadRuntime() {
	st := monitor.ReadRuntime()
	fmt.Println(st.Goroutines > 0, st.GOMAXPROCS > 0, st.SchedLatencyP99 >= st.SchedLatencyP50)
	// Output:
	// true true true
}
