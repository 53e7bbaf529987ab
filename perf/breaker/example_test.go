package breaker_test

import (
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/policy"
)

// The breaker of one backend trips after two failures and then refuses
// calls with UNAVAILABLE and retry advice.
func ExampleSet_Allow() {
	set, err := breaker.NewSet(breaker.Settings{
		ConsecutiveFailures: 2,
		OpenTimeout:         15 * time.Second,
		OnStateChange: func(e breaker.Event) {
			fmt.Printf("%s: %s → %s\n", e.Key, e.From, e.To)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, outcome := range []policy.Outcome{policy.Success, policy.Neutral, policy.Failure, policy.Failure} {
		done, err := set.Allow("ollama")
		if err != nil {
			log.Fatal(err)
		}
		done(outcome) // exactly once per admitted call
	}
	_, err = set.Allow("ollama")
	st := status.Convert(err)
	fmt.Println(st.Code(), st.Message())
	// Output:
	// ollama: closed → open
	// Unavailable circuit breaker for "ollama" is open; retry in 15s
}

// The interceptors go inside the policy interceptor, which names each
// request's backend, and outside the rate limiter.
func ExampleUnaryServerInterceptor() {
	set, err := breaker.NewSet(breaker.Settings{})
	if err != nil {
		log.Fatal(err)
	}
	var table policy.Table // the service's policy table
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(policy.UnaryServerInterceptor(table), breaker.UnaryServerInterceptor(set)),
		grpc.ChainStreamInterceptor(policy.StreamServerInterceptor(table), breaker.StreamServerInterceptor(set)),
	)
	defer srv.Stop()
	// Operators may force a backend's breaker (PerfAdmin).
	set.SetMode("ollama", breaker.ForceOpen)
	fmt.Println(set.Stats()[0].State, set.Stats()[0].Mode)
	// Output:
	// open force-open
}
