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

	"github.com/vega-gateway/vega/integrations/notify/outbox/pgtest"
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
			benchAccept(b, o)
		})
	}
}

// benchAccept submits from 32 concurrent callers and reports accepted/s,
// the p50 and p99 of one accept, and writes per commit.
func benchAccept(b *testing.B, o store) {
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
}

// BenchmarkAcceptPostgres measures the PostgreSQL store's accepts the same
// way: 32 concurrent callers, each accept committed (synchronous_commit on)
// before it returns; /commit=group shares one transaction among the accepts
// waiting (up to 128), /commit=single commits each on its own through the
// committer (one at a time, as bbolt's impl=fsync), and /commit=pool gives
// each its own transaction concurrently on the pool of 8 connections (what
// a store without a committer would do; PostgreSQL then shares WAL flushes
// among the concurrent commits by itself).
//
//	go test -run '^$' -bench AcceptPostgres -count 5 ./integrations/notify/outbox/
func BenchmarkAcceptPostgres(b *testing.B) {
	url := pgtest.NewDatabase(b)
	for _, mode := range []struct {
		name     string
		maxBatch int
	}{{"group", 128}, {"single", 1}, {"pool", 1}} {
		b.Run("commit="+mode.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			o, err := OpenPostgres(ctx, PostgresSettings{URL: url}, Settings{MaxBatch: mode.maxBatch})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = o.Close(context.Background()) }()
			if mode.name == "pool" {
				benchAccept(b, perRequestCommits{o})
				return
			}
			benchAccept(b, o)
		})
	}
}

// perRequestCommits submits each notification in a transaction of its own,
// on the caller's goroutine, bypassing the committer.
type perRequestCommits struct{ *Postgres }

func (p perRequestCommits) Submit(_ context.Context, sub Submission) (Record, bool, error) {
	start := time.Now()
	res, err := p.insert([]pgWrite{{sub: sub, suffix: strconv.FormatInt(time.Now().UnixNano(), 16)}})
	p.counts.record(1, flushIdle, time.Since(start))
	if err != nil {
		return Record{}, false, err
	}
	return res[0].rec, res[0].replayed, res[0].err
}
