package main

import "fmt"

// pgOutboxFigures lists the Notify outbox's accepts in PostgreSQL beside
// bbolt's, from BenchmarkAcceptPostgres and BenchmarkAccept
// (integrations/notify/outbox, run by goBench): the SPEC §9 goal "PostgreSQL
// outbox, group commit vs commit per notification ≥ 5× accepted/s" against
// both ways of committing each notification alone (one at a time through
// the committer, /commit=single, and a transaction per caller on the pool,
// /commit=pool), and accept p99 for each store. The benchmarks need the
// PostgreSQL of the test environment (127.0.0.1:5432); without it the rows
// say not measured.
func pgOutboxFigures(r *Report, s samples) {
	const (
		group  = "BenchmarkAcceptPostgres/commit=group"
		single = "BenchmarkAcceptPostgres/commit=single"
		pool   = "BenchmarkAcceptPostgres/commit=pool"
	)
	g, ok := s.median(group, "accepted/s")
	if !ok {
		r.add(Row{Figure: "PostgreSQL outbox, group commit vs commit per notification", Goal: "≥ 5× accepted/s",
			Measured: "BenchmarkAcceptPostgres did not run (is PostgreSQL up on 127.0.0.1:5432?)", Verdict: NotMeasured})
		return
	}
	for _, alone := range []struct{ name, how string }{{single, "one commit at a time"}, {pool, "a transaction per caller on the pool"}} {
		a, ok := s.median(alone.name, "accepted/s")
		if !ok {
			continue
		}
		r.add(Row{
			Figure:   "PostgreSQL outbox, group commit vs commit per notification (" + alone.how + ")",
			Goal:     "≥ 5× accepted/s",
			Measured: fmt.Sprintf("%.0f vs %.0f accepted/s", g, a),
			Ratio:    ratio(g, a),
			Verdict:  verdict(a > 0 && g >= 5*a),
		})
	}
	for _, st := range []struct{ store, name string }{{"PostgreSQL", group}, {"bbolt", "BenchmarkAccept/impl=group"}} {
		acc, ok1 := s.median(st.name, "accepted/s")
		p99, ok2 := s.median(st.name, "p99-µs")
		if !ok1 || !ok2 {
			continue
		}
		p50, _ := s.median(st.name, "p50-µs")
		per, _ := s.median(st.name, "writes/commit")
		r.add(Row{
			Figure:   "Notify accept, " + st.store + " outbox, group commit, 32 callers",
			Goal:     "(reported)",
			Measured: fmt.Sprintf("%.0f accepted/s, p50 %.2f ms, p99 %.2f ms, %.1f accepts per commit", acc, p50/1e3, p99/1e3, per),
			Verdict:  NoGoal,
		})
	}
}
