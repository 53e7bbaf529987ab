package coalesce_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/vega-gateway/vega/perf/coalesce"
)

// BenchmarkDo compares Group.Do with x/sync singleflight; compare with
// `benchstat -col /impl`.
//
//	impl=ours          Group.Do
//	impl=singleflight  singleflight.Group.Do: fn on the first caller's goroutine, nobody can leave early
//	impl=dochan        singleflight.Group.DoChan + select on ctx.Done(): the closest x/sync gets to
//	                   letting callers leave (fn on its own goroutine too), without the refcounted
//	                   cancel or the panic recovery
//
//	keys=hot       every call on one key, trivial fn
//	keys=distinct  every call on its own key, trivial fn: no coalescing, all overhead
//	keys=hot-slow  every call on one key, fn sleeps 50µs, 64 callers: mostly joins
func BenchmarkDo(b *testing.B) {
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "generate/ollama/" + strconv.Itoa(i)
	}
	trivial := func() {}
	slow := func() { time.Sleep(50 * time.Microsecond) }
	impls := []struct {
		name string
		new  func(work func()) func(ctx context.Context, key string) any
	}{
		{"ours", func(work func()) func(context.Context, string) any {
			g := coalesce.New()
			fn := func(context.Context) (any, error) { work(); return 1, nil }
			return func(ctx context.Context, key string) any {
				v, _, _ := g.Do(ctx, key, fn)
				return v
			}
		}},
		{"singleflight", func(work func()) func(context.Context, string) any {
			var g singleflight.Group
			fn := func() (any, error) { work(); return 1, nil }
			return func(_ context.Context, key string) any {
				v, _, _ := g.Do(key, fn)
				return v
			}
		}},
		{"dochan", func(work func()) func(context.Context, string) any {
			var g singleflight.Group
			fn := func() (any, error) { work(); return 1, nil }
			return func(ctx context.Context, key string) any {
				select {
				case r := <-g.DoChan(key, fn):
					return r.Val
				case <-ctx.Done():
					return nil
				}
			}
		}},
	}
	for _, w := range []struct {
		name        string
		work        func()
		distinct    bool
		parallelism int
	}{
		{"hot", trivial, false, 1},
		{"distinct", trivial, true, 1},
		{"hot-slow", slow, false, 32},
	} {
		for _, impl := range impls {
			b.Run("keys="+w.name+"/impl="+impl.name, func(b *testing.B) {
				do := impl.new(w.work)
				// A request context can be cancelled, as a gRPC one can.
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var worker atomic.Int64
				b.ReportAllocs()
				b.SetParallelism(w.parallelism)
				b.RunParallel(func(pb *testing.PB) {
					i := int(worker.Add(1)) << 10 // each worker its own run of keys
					for pb.Next() {
						key := keys[0]
						if w.distinct {
							key = keys[i&(len(keys)-1)]
							i++
						}
						if do(ctx, key) != 1 {
							b.Error("wrong value")
						}
					}
				})
			})
		}
	}
}
