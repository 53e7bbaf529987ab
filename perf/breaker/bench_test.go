package breaker_test

import (
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/policy"
)

// BenchmarkAllow is the closed-state cost of one admitted, successful call:
// ours (key lookup, Allow, done) against a bare gobreaker two-step breaker
// with the same settings.
func BenchmarkAllow(b *testing.B) {
	b.Run("impl=ours", func(b *testing.B) {
		set, err := breaker.NewSet(breaker.Settings{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, err := set.Allow("ollama")
				if err != nil {
					b.Fatal(err)
				}
				done(policy.Success)
			}
		})
	})
	b.Run("impl=gobreaker", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        "ollama",
			MaxRequests: breaker.DefaultMaxProbes,
			Interval:    breaker.DefaultInterval,
			Timeout:     breaker.DefaultOpenTimeout,
		})
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, err := cb.Allow()
				if err != nil {
					b.Fatal(err)
				}
				done(nil)
			}
		})
	})
}

// BenchmarkRejectOpen is the fast-fail cost of an open breaker, including
// the UNAVAILABLE status with its RetryInfo detail.
func BenchmarkRejectOpen(b *testing.B) {
	b.Run("impl=ours", func(b *testing.B) {
		set, err := breaker.NewSet(breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		done, _ := set.Allow("ollama")
		done(policy.Failure)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := set.Allow("ollama"); err == nil {
					b.Fatal("admitted while open")
				}
			}
		})
	})
	b.Run("impl=gobreaker", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Timeout:     time.Hour,
			ReadyToTrip: func(gobreaker.Counts) bool { return true },
		})
		done, _ := cb.Allow()
		done(errTest)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := cb.Allow(); err == nil {
					b.Fatal("admitted while open")
				}
			}
		})
	})
}

var errTest = errorString("test failure")

type errorString string

func (e errorString) Error() string { return string(e) }
