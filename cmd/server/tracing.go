package main

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc"
)

// tracing sets up OpenTelemetry tracing through the otelgrpc stats handler,
// exported over OTLP/gRPC, when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. The exporter reads the other
// standard OTEL_EXPORTER_OTLP_* variables itself (headers, TLS, timeout).
// Without an endpoint, tracing is off and costs nothing.
type tracing struct {
	provider *sdktrace.TracerProvider // nil when off
}

func newTracing(enabled bool) (*tracing, error) {
	if !enabled {
		return &tracing{}, nil
	}
	exp, err := otlptracegrpc.New(context.Background()) // connects lazily; never blocks start-up
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("vega-gateway"))),
	)
	return &tracing{provider: tp}, nil
}

// serverOption returns the stats handler, or nothing when tracing is off.
func (t *tracing) serverOption() []grpc.ServerOption {
	if t.provider == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
	))}
}

// shutdown flushes the spans still buffered.
func (t *tracing) shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}
