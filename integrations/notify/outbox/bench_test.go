package outbox

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkAccept measures accepted notifications per second and the
// latency of one accept (recorded and fsynced) with 32 concurrent callers:
// group commit (up to 128 writes per fsync) against one fsync per write.
//
//	go test -run '^$' -bench Accept -count 5 ./integrations/notify/outbox/
func BenchmarkAccept(b *testing.B) {
	for _, impl := range []struct {
		name     string
		maxBatch int
	}{{"group", 128}, {"fsync", 1}} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			o, err := Open(Settings{Path: filepath.Join(b.TempDir(), "outbox.db"), MaxBatch: impl.maxBatch})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = o.Close(context.Background()) }()
			var (
				mu        sync.Mutex
				latencies = make([]time.Duration, 0, b.N)
			)
			b.SetParallelism(16) // 32 callers on 2 cores
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				local := make([]time.Duration, 0, 1024)
				i := 0
				for pb.Next() {
					i++
					text := "bench " + strconv.Itoa(i)
					fp := sha256.Sum256([]byte(text))
					t0 := time.Now()
					// "bench" is not a configured channel: records stay
					// queued, so only the accept path is measured.
					if _, _, err := o.Submit(context.Background(), Submission{Channel: "bench", Text: text, Fingerprint: fp[:]}); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(t0))
				}
				mu.Lock()
				latencies = append(latencies, local...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(latencies)
			if len(latencies) > 0 {
				b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "accepted/s")
				b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds()), "p99-µs")
				st := o.Stats().Batch
				b.ReportMetric(float64(st.Operations)/float64(max(st.Commits, 1)), "writes/commit")
			}
		})
	}
}
