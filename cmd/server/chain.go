package main

import (
	"google.golang.org/grpc"

	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/cache"
	"github.com/vega-gateway/vega/perf/coalesce"
	"github.com/vega-gateway/vega/perf/policy"
	"github.com/vega-gateway/vega/perf/ratelimit"
)

// perfChain is the data path's interceptor chain, outermost first:
//
//		policy → cache lookup → coalesce → cache fill → breaker → limiter → handler
//
//	(streams, in a fleet: … → coalesce → fleet stream → cache fill → …)
//
//	  - policy plans the request once (key, backend, cacheability) from the one
//	    table in service/policy.go and sends x-vega-served-from;
//	  - a cache hit returns before anything else is spent;
//	  - identical calls in flight share one call of everything inside;
//	  - in a fleet, a stream's local flight leads the key's stream flight for
//	    the whole fleet or follows the replica that leads it (unary flights
//	    do that in the fill step);
//	  - the fill step checks the cache again inside that shared call and
//	    stores its answer, once;
//	  - an open breaker fails fast without waiting for a rate token;
//	  - the limiter is innermost, so its refusals never count as backend
//	    failures and only real backend calls spend tokens.
//
// The policy table is the selector: a method that is not in it (health,
// reflection, PerfAdmin) gets no Decision, and every mechanism passes a call
// without a Decision straight through, untouched. (go-grpc-middleware's
// selector would need the six interceptors chained into one, which costs a
// closure per interceptor per call; the Decision check costs a context
// lookup.)
type perfChain struct {
	table    policy.Table
	cache    *cache.Cache
	group    *coalesce.Group
	breakers *breaker.Set
	limiters *ratelimit.Set
	streams  cache.StreamFlights // nil without a fleet
}

func (c perfChain) unary() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{
		policy.UnaryServerInterceptor(c.table),
		cache.LookupUnaryServerInterceptor(c.cache),
		coalesce.UnaryServerInterceptor(c.group),
		cache.FillUnaryServerInterceptor(c.cache),
		breaker.UnaryServerInterceptor(c.breakers),
		ratelimit.UnaryServerInterceptor(c.limiters),
	}
}

func (c perfChain) stream() []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{
		policy.StreamServerInterceptor(c.table),
		cache.LookupStreamServerInterceptor(c.cache),
		coalesce.StreamServerInterceptor(c.group),
		cache.FleetStreamServerInterceptor(c.cache, c.streams),
		cache.FillStreamServerInterceptor(c.cache),
		breaker.StreamServerInterceptor(c.breakers),
		ratelimit.StreamServerInterceptor(c.limiters),
	}
}
