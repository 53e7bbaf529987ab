package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/perf/policy"
)

// The M4 trace: a Zipf (s = 1.01) draw of 1M requests over 100k keys, with
// room for a tenth of them.
const (
	zipfRequests = 1_000_000
	zipfKeys     = 100_000
	zipfCapacity = 10_000
)

// payload is the value the comparisons store: pointer-shaped, so putting it
// in an interface allocates nothing.
type payload = *[16]byte

const payloadSize = 16

// zipfTrace returns n keys drawn from keys distinct ones with a Zipf
// distribution (s = 1.01, v = 1), all of the same length so that a byte
// budget is an entry budget.
func zipfTrace(n, keys int, seed uint64) []string {
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("key-%08d", i)
	}
	z := rand.NewZipf(rand.New(rand.NewPCG(seed, seed)), 1.01, 1, uint64(keys-1))
	trace := make([]string, n)
	for i := range trace {
		trace[i] = names[z.Uint64()]
	}
	return trace
}

// zipfHitRatio replays trace on an empty cache of impl ("ours" or "otter")
// that holds capacity entries, storing every miss, and returns the
// percentage of requests that hit.
func zipfHitRatio(tb testing.TB, impl string, capacity int, trace []string) float64 {
	tb.Helper()
	val := new([16]byte)
	hits := 0
	switch impl {
	case "ours":
		c, err := New(Settings{
			MaxBytes:        int64(capacity) * int64(weight(len(trace[0]), payloadSize)),
			ExpectedEntries: capacity, // what raw otter's MaximumSize tells it
			DefaultTTL:      time.Hour,
		})
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		for _, k := range trace {
			if _, st := c.Get(k); st == Fresh {
				hits++
			} else {
				c.Set(k, val, payloadSize, 0, false)
			}
		}
	case "otter":
		c := newRawOtter(capacity)
		defer c.StopAllGoroutines()
		for _, k := range trace {
			if _, ok := c.GetIfPresent(k); ok {
				hits++
			} else {
				c.Set(k, val)
			}
		}
	default:
		tb.Fatalf("unknown impl %q", impl)
	}
	return 100 * float64(hits) / float64(len(trace))
}

// newRawOtter is the baseline: otter v2 bounded by entries, with a fixed
// TTL so that it pays for expiry as ours does.
func newRawOtter(capacity int) *otter.Cache[string, payload] {
	return otter.Must(&otter.Options[string, payload]{
		MaximumSize:      capacity,
		ExpiryCalculator: otter.ExpiryWriting[string, payload](time.Hour),
	})
}

var (
	traceOnce sync.Once
	trace     []string
)

func BenchmarkZipfHitRatio(b *testing.B) {
	traceOnce.Do(func() { trace = zipfTrace(zipfRequests, zipfKeys, 42) })
	for _, impl := range []string{"ours", "otter"} {
		b.Run("impl="+impl, func(b *testing.B) {
			b.ReportAllocs()
			var sum float64
			for b.Loop() {
				sum += zipfHitRatio(b, impl, zipfCapacity, trace)
			}
			b.ReportMetric(sum/float64(b.N), "hit%")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(trace)), "ns/req")
		})
	}
}

func BenchmarkGet(b *testing.B) {
	const n = 1 << 14
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%08d", i)
	}
	val := new([16]byte)

	b.Run("impl=ours", func(b *testing.B) {
		c, err := New(Settings{MaxBytes: 4 * n * int64(weight(len(keys[0]), payloadSize)), DefaultTTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		for _, k := range keys {
			c.Set(k, val, payloadSize, 0, false)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(n)
			for pb.Next() {
				if _, st := c.Get(keys[i&(n-1)]); st != Fresh {
					b.Error("miss")
					return
				}
				i++
			}
		})
	})
	b.Run("impl=otter", func(b *testing.B) {
		c := newRawOtter(4 * n)
		defer c.StopAllGoroutines()
		for _, k := range keys {
			c.Set(k, val)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(n)
			for pb.Next() {
				if _, ok := c.GetIfPresent(keys[i&(n-1)]); !ok {
					b.Error("miss")
					return
				}
				i++
			}
		})
	})
}

// BenchmarkBytesPerEntry measures the heap one entry costs beyond its key
// and value: the keys and values are allocated before the first reading, so
// the difference is the cache's own structure. It is the figure behind
// entryOverhead (goal ≤ 200 B).
func BenchmarkBytesPerEntry(b *testing.B) {
	const n = 1 << 20
	keys := make([]string, n)
	vals := make([]payload, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%027d", i) // 32 bytes
		vals[i] = new([16]byte)
	}
	measure := func(b *testing.B, fill func() any) {
		b.ReportAllocs()
		var perEntry float64
		for b.Loop() {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			c := fill()
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(c)
			perEntry = float64(after.HeapAlloc-before.HeapAlloc) / n
			if cl, ok := c.(interface{ Close() }); ok {
				cl.Close()
			} else {
				c.(*otter.Cache[string, payload]).StopAllGoroutines()
			}
		}
		b.ReportMetric(perEntry, "bytes/entry")
	}
	b.Run("impl=ours", func(b *testing.B) {
		measure(b, func() any {
			c, err := New(Settings{MaxBytes: 2 * n * int64(weight(32, payloadSize)), DefaultTTL: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			for i, k := range keys {
				c.Set(k, vals[i], payloadSize, 0, false)
			}
			if got := c.Stats().Entries; got != n {
				b.Fatalf("entries: got %d, want %d", got, n)
			}
			return c
		})
	})
	b.Run("impl=otter", func(b *testing.B) {
		measure(b, func() any {
			c := newRawOtter(2 * n)
			for i, k := range keys {
				c.Set(k, vals[i])
			}
			c.CleanUp()
			if got := c.EstimatedSize(); got != n {
				b.Fatalf("entries: got %d, want %d", got, n)
			}
			return c
		})
	})
}

// BenchmarkLookupUnary is the interceptor pair's cost per request with no
// backend: a hit answered by Lookup, and a miss that passes Lookup and Fill
// to a handler whose answer is not stored.
func BenchmarkLookupUnary(b *testing.B) {
	c, err := New(Settings{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	lookup, fill := LookupUnaryServerInterceptor(c), FillUnaryServerInterceptor(c)
	resp := &vegav1.GenerateResponse{Text: "cached answer"}
	backend := func(context.Context, any) (any, error) { return resp, nil }
	info := &grpc.UnaryServerInfo{FullMethod: vegav1.GenerateService_Generate_FullMethodName}
	chain := func(ctx context.Context, req any) (any, error) { return fill(ctx, req, info, backend) }
	c.Set("hit", resp, proto.Size(resp), time.Hour, false)

	for _, path := range []struct{ name, key string }{{"hit", "hit"}, {"miss", "miss"}} {
		b.Run("path="+path.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				d := &policy.Decision{Key: path.key, ReadCache: true}
				ctx := policy.NewContext(context.Background(), d)
				for pb.Next() {
					if _, err := lookup(ctx, nil, info, chain); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
