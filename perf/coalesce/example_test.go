package coalesce_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/coalesce"
	"github.com/vega-gateway/vega/perf/policy"
)

func ExampleGroup_Do() {
	g := coalesce.New()
	release := make(chan struct{})
	lookup := func(ctx context.Context) (any, error) {
		<-release // a slow backend
		return "42", nil
	}

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			v, err, _ := g.Do(context.Background(), "answer", lookup)
			fmt.Println(v, err)
		})
	}
	for g.Stats().Waiting < 3 { // until the three callers wait
		runtime.Gosched()
	}
	close(release)
	wg.Wait()

	st := g.Stats()
	fmt.Printf("backend calls: %d, coalesced: %d (%.0f%%)\n", st.Flights, st.Coalesced, st.CoalesceRate())
	// Output:
	// 42 <nil>
	// 42 <nil>
	// 42 <nil>
	// backend calls: 1, coalesced: 2 (67%)
}

func ExampleGroup_DoStream() {
	g := coalesce.New()
	err, joined := g.DoStream(context.Background(), "count",
		func(ctx context.Context, emit func(msg any) error) error {
			for _, word := range []string{"one", "two", "three"} {
				if err := emit(word); err != nil {
					return err // every caller left
				}
			}
			return nil
		},
		func(msg any) error {
			fmt.Println(msg)
			return nil
		})
	fmt.Println(err, joined)
	// Output:
	// one
	// two
	// three
	// <nil> false
}

func ExampleWithPanicHandler() {
	g := coalesce.New(coalesce.WithPanicHandler(func(key string, err *coalesce.PanicError) {
		slog.Error("shared call panicked", "key", key, "panic", err.Value, "stack", string(err.Stack))
	}))
	_ = g
}

// The coalesce interceptors go inside the policy interceptor, which plans
// each request and reports x-vega-served-from.
func Example_interceptors() {
	var table policy.Table // the service's policy table
	g := coalesce.New()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(policy.UnaryServerInterceptor(table), coalesce.UnaryServerInterceptor(g)),
		grpc.ChainStreamInterceptor(policy.StreamServerInterceptor(table), coalesce.StreamServerInterceptor(g)),
	)
	defer srv.Stop()
}
