package main

import (
	"strings"
	"testing"
)

func TestPGOutboxFigures(t *testing.T) {
	raw := `BenchmarkAccept/impl=group-2   1000   57753 ns/op   17315 accepted/s   1159 p50-µs   12344 p99-µs   16.05 writes/commit
BenchmarkAcceptPostgres/commit=group-2   1000   42574 ns/op   23488 accepted/s   1243 p50-µs   4827 p99-µs   16.01 writes/commit
BenchmarkAcceptPostgres/commit=single-2   1000   434497 ns/op   2302 accepted/s   12838 p50-µs   26507 p99-µs   1.000 writes/commit
BenchmarkAcceptPostgres/commit=pool-2   1000   280316 ns/op   5000 accepted/s   7698 p50-µs   27563 p99-µs   1.000 writes/commit
`
	s, err := parseBench(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	pgOutboxFigures(&r, s)
	got := map[string]Row{}
	for _, row := range r.Rows {
		got[row.Figure] = row
	}
	want := map[string]Verdict{
		"PostgreSQL outbox, group commit vs commit per notification (one commit at a time)":                 Met,    // 10.2×
		"PostgreSQL outbox, group commit vs commit per notification (a transaction per caller on the pool)": Missed, // 4.7×
		"Notify accept, PostgreSQL outbox, group commit, 32 callers":                                        NoGoal,
		"Notify accept, bbolt outbox, group commit, 32 callers":                                             NoGoal,
	}
	for fig, v := range want {
		if row, ok := got[fig]; !ok || row.Verdict != v {
			t.Errorf("%s: %+v (present %v), want verdict %v", fig, row, ok, v)
		}
	}
	if m := got["Notify accept, PostgreSQL outbox, group commit, 32 callers"].Measured; !strings.Contains(m, "p99 4.83 ms") {
		t.Errorf("accept figures = %q, want the p99", m)
	}

	var none Report
	pgOutboxFigures(&none, samples{})
	if len(none.Rows) != 1 || none.Rows[0].Verdict != NotMeasured {
		t.Errorf("without the benchmarks: %+v, want one not-measured row", none.Rows)
	}
}
