package ratelimit_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/policy"
	"github.com/vega-gateway/vega/perf/ratelimit"
)

// A limiter admits a call, learns from its result, and refuses at once a
// call whose turn cannot come before its deadline: here the backend asked
// for 30 s of quiet (Retry-After), and the caller gives itself 5 s.
func ExampleSet_Acquire() {
	set, err := ratelimit.NewSet(ratelimit.Settings{Initial: 1, Min: 1, Max: 10})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	p, err := set.Acquire(ctx, "ollama", "")
	if err != nil {
		log.Fatal(err)
	}
	// ... call the backend, which answers 429 ...
	p.Release(policy.Result{Outcome: policy.Overload, RetryAfter: 30 * time.Second})

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = set.Acquire(ctx, "ollama", "")
	st := status.Convert(err)
	fmt.Println(st.Code(), policy.RetryDelay(st).Round(time.Second))
	fmt.Println(set.Stats()[0].Rate, "requests/s")
	// Output:
	// ResourceExhausted 31s
	// 1 requests/s
}

// The interceptors are the innermost of the perf chain: inside the policy
// interceptor, which names each request's backend, and inside the breaker.
func ExampleUnaryServerInterceptor() {
	set, err := ratelimit.NewSet(ratelimit.Settings{}) // the defaults: see Settings
	if err != nil {
		log.Fatal(err)
	}
	var table policy.Table // the service's policy table
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(policy.UnaryServerInterceptor(table), ratelimit.UnaryServerInterceptor(set)),
		grpc.ChainStreamInterceptor(policy.StreamServerInterceptor(table), ratelimit.StreamServerInterceptor(set)),
	)
	defer srv.Stop()
	fmt.Println(len(set.Stats()))
	// Output:
	// 0
}
