package promstats_test

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/service/promstats"
)

// The collector goes into the registry /metrics serves (promhttp.HandlerFor)
// next to the gRPC server metrics; snapshot is PerfAdmin's, all sections.
func Example() {
	snapshot := func() *vegav1.Stats {
		return &vegav1.Stats{RequestCoalescing: &vegav1.RequestCoalescingStats{
			Requests: 200, Coalesced: 50, CoalesceRate: 25, Flights: 150,
			InFlightCount: 3, Waiting: 7, AvgWaitTimeMs: 12.5,
		}}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(promstats.NewCollector(snapshot))

	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() // one of them is set
			fmt.Printf("%s %s %g\n", f.GetType(), f.GetName(), v)
		}
	}
	// Output:
	// COUNTER vega_request_coalescing_abandoned_total 0
	// GAUGE vega_request_coalescing_avg_wait_seconds 0.0125
	// GAUGE vega_request_coalescing_coalesce_ratio 0.25
	// COUNTER vega_request_coalescing_coalesced_total 50
	// COUNTER vega_request_coalescing_flights_total 150
	// GAUGE vega_request_coalescing_in_flight 3
	// COUNTER vega_request_coalescing_panics_total 0
	// COUNTER vega_request_coalescing_requests_total 200
	// GAUGE vega_request_coalescing_waiting 7
}
