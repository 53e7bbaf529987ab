// Package httpface serves a *grpc.Server's services on an HTTP port: the
// Connect protocol (unary JSON and binary, server streaming), gRPC-Web
// (binary) and plain JSON POSTs from curl, through the server's own
// interceptors.
//
//	face, err := httpface.New(grpcServer, []string{"vega.v1.GenerateService", …},
//		httpface.WithCORSOrigins(origins...))
//	face.Mount(mux) // "/vega.v1.GenerateService/" …
//
// # How
//
// connectrpc.com/vanguard's vanguardgrpc transcoder turns each call into a
// gRPC call of grpcServer.ServeHTTP. The call then runs the server's
// normal unary or stream path, with every interceptor the gRPC port has
// (auth, policy, cache, coalescing, breaker, limiter, metrics, logging,
// tracing), so a call is served the same way whichever door it came in.
// The alternatives each keep a second chain: connect-go handlers have their
// own interceptor API, and grpc-gateway's in-process mode skips gRPC
// interceptors (its dial mode adds a loopback hop and has no Connect or
// gRPC-Web).
//
// What the face adds around the transcoder, outermost first:
//
//   - CORS (rs/cors), only for origins named with WithCORSOrigins (config
//     VEGA_HTTP_CORS_ORIGINS): the Connect and gRPC-Web request headers
//     plus x-api-key are allowed; grpc-status, grpc-message, Retry-After
//     and x-vega-served-from are exposed. None named: no CORS headers at
//     all, and only same-origin pages (the dashboard) can read answers.
//   - A POST of application/json or application/proto without
//     Connect-Protocol-Version is taken as a Connect unary call (vanguard
//     would read it as REST, and the services declare no REST routes, so
//     a curl user would get 404).
//   - A unary body is read once (at most the message bound, default
//     4 MiB like the gRPC port's) and decoded as the method's request: too
//     large is resource_exhausted (429, no Retry-After: it will never
//     fit), undecodable is invalid_argument (400) naming the message type.
//     Without this grpc-go reports a bad body as internal (500) and the
//     transcoder an oversized one as unavailable (503).
//   - With WithClientCertRequired (the gateway's mTLS), calls without a
//     verified TLS client certificate are unauthenticated (401).
//   - Retry-After on 429 and 503 unary answers, from the
//     grpc-retry-pushback-ms trailer when present and not negative, else
//     from the google.rpc.RetryInfo detail (rounded up to whole seconds,
//     1 s to 1 h). A negative pushback means no retry fits that call's
//     deadline; the RetryInfo delay still tells a later call when to come.
//     Streams answer 200 before their status is known; their retry advice
//     stays in the error's details.
//
// Importing the package registers a JSON codec with grpc-go, so JSON
// calls reach the server as JSON instead of being converted to binary and
// back. Unpopulated fields are emitted (zeros, empty lists, null for
// unset messages), so scripts need no defaults of their own; unknown
// fields are ignored.
//
// Errors keep their gRPC codes as Connect codes, with the HTTP statuses of
// the Connect protocol: invalid_argument 400, unauthenticated 401,
// permission_denied 403, not_found 404, resource_exhausted 429,
// unavailable 503, deadline_exceeded 504, internal 500, and the details
// (BadRequest, RetryInfo, QuotaFailure) in the body.
//
// # Streams and shutdown
//
// The transcoder needs http.Flusher; response-writer wrappers here keep
// Flush and Unwrap. The http.Server must set no ReadTimeout or
// WriteTimeout (they bound a whole call and would cut WatchStats) but
// should set ReadHeaderTimeout. Drainer ends WatchStats streams with
// UNAVAILABLE when shutdown begins; shut the HTTP server down before
// grpc.Server.GracefulStop, which would otherwise cut the streams the
// transcoder carries. Native gRPC and client or bidi streams need HTTP/2
// (vanguard answers them 505 on HTTP/1.1): serve HTTP/2 as well (the
// gateway does, over TLS or cleartext with prior knowledge) and they pass
// through to the server too. Browsers and curl use HTTP/1.1 or HTTP/2.
//
// # What the hop costs
//
// BenchmarkHop calls Generate on an echo service (a 200-byte prompt)
// through each door of one server on loopback: native gRPC (HTTP/2) and,
// over HTTP/1.1 through this face, Connect binary, Connect JSON and
// gRPC-Web (mode=seq: one call at a time; mode=par: GOMAXPROCS callers).
// Client and server share the process, so cpu-ns/op is the CPU one call
// costs both sides. On the 2-core development machine, shared with other
// builds (load average 4.7 to 9.1 during the run, so wall time swung by
// ±20-60% and is not quoted), benchstat of 8 runs each:
//
//	go test -run '^$' -bench Hop -benchmem -count 8 -benchtime 3000x ./service/httpface > hop.txt
//	benchstat -col /impl hop.txt
//
//	                 grpc      connect-proto     connect-json      grpc-web
//	cpu/op, seq      64.9µs    131.4µs (2.03×)   160.0µs (2.47×)   168.6µs (2.60×)
//	cpu/op, par      59.6µs    128.3µs (2.15×)   164.8µs (2.77×)   178.8µs (3.00×)
//	allocs/op, seq   153       226 (+73)         279 (+126)        244 (+91)
//	B/op, seq        9.96KiB   18.2KiB           20.4KiB           22.6KiB
//
// So the HTTP door costs about one more loopback gRPC call's worth of CPU,
// 65-110 µs per call on this machine: the HTTP/1.1 exchange, the
// transcoder's buffering and rewriting, grpc-go's ServeHTTP transport
// (slower than its own HTTP/2 one) and, for JSON, protojson, which this
// face also runs once more to check the body. Against LLM and web backends
// that answer in milliseconds to seconds, and a chain that serves cache
// hits and coalesced waiters without them, it is small; callers that count
// microseconds should use the gRPC port.
package httpface
