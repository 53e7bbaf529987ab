// Package policy decides, once per request, what the perf chain does with
// it: the coalescing and cache key, the backend key for the limiter and the
// breaker, and whether the answer may be read from or written to the cache.
//
// The decision comes from one table, keyed by full gRPC method name, that the
// service layer declares (service/policy.go). Methods absent from the table
// (health, reflection, PerfAdmin) pass through the whole perf chain
// untouched. The policy interceptor is the outermost perf interceptor: it
// computes the Decision, stores it in the context for the mechanisms inside,
// and sets the x-vega-served-from response header from what they report.
package policy
