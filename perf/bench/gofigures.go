package main

import (
	"fmt"
	"sort"
	"strings"
)

// goFigures turns the Go benchmark samples into summary rows (M1, M4 and
// the building blocks of section 1.3).
func goFigures(r *Report, s samples) {
	const ns, allocs = "ns/op", "allocs/op"
	get := func(name, unit string) (float64, bool) { return s.median(name, unit) }

	// M1: the interceptor chain in process, cache miss and hit, against the bare handler.
	bare, ok1 := get("BenchmarkChainInProcess/path=bare", ns)
	miss, ok2 := get("BenchmarkChainInProcess/path=miss", ns)
	hit, ok3 := get("BenchmarkChainInProcess/path=hit", ns)
	bareA, _ := get("BenchmarkChainInProcess/path=bare", allocs)
	missA, _ := get("BenchmarkChainInProcess/path=miss", allocs)
	if ok1 && ok2 {
		dns, da := miss-bare, missA-bareA
		r.add(Row{
			Figure:   "interceptor chain, cache miss, in process (M1)",
			Goal:     "≤ 1 µs and ≤ 6 allocs over a bare handler",
			Measured: fmt.Sprintf("+%s, +%.0f allocs (bare %s, chain %s)", fmtNs(dns), da, fmtNs(bare), fmtNs(miss)),
			Ratio:    fmt.Sprintf("%.2f of the 1 µs budget", dns/1000),
			Verdict:  verdict(dns <= 1000 && da <= 6),
		})
	} else {
		r.add(Row{Figure: "interceptor chain, cache miss, in process (M1)", Goal: "≤ 1 µs and ≤ 6 allocs over a bare handler", Verdict: NotMeasured})
	}
	if ok1 && ok3 {
		oneMs := 1e6 + bare
		r.add(Row{
			Figure:   "interceptor chain, cache hit, in process (M1)",
			Goal:     "cheaper than a bare call to a 1 ms backend",
			Measured: fmt.Sprintf("%s vs ≥ %s", fmtNs(hit), fmtNs(oneMs)),
			Ratio:    ratio(hit, oneMs),
			Verdict:  verdict(hit < oneMs),
		})
	} else {
		r.add(Row{Figure: "interceptor chain, cache hit, in process (M1)", Goal: "cheaper than a bare call to a 1 ms backend", Verdict: NotMeasured})
	}

	// Building blocks against their anchors, same run.
	blocks := []struct{ figure, ours, anchor, anchorName string }{
		{"coalescer vs singleflight, 1 hot key", "BenchmarkDo/keys=hot/impl=ours", "BenchmarkDo/keys=hot/impl=singleflight", "singleflight"},
		{"coalescer vs singleflight, distinct keys", "BenchmarkDo/keys=distinct/impl=ours", "BenchmarkDo/keys=distinct/impl=singleflight", "singleflight"},
		{"limiter Acquire vs x/time/rate Allow", "BenchmarkAcquire/impl=ours", "BenchmarkAcquire/impl=xrate", "x/time/rate"},
		{"breaker, closed, vs gobreaker", "BenchmarkAllow/impl=ours", "BenchmarkAllow/impl=gobreaker", "gobreaker"},
		{"breaker, open (reject), vs gobreaker", "BenchmarkRejectOpen/impl=ours", "BenchmarkRejectOpen/impl=gobreaker", "gobreaker"},
	}
	for _, bl := range blocks {
		o, ok1 := get(bl.ours, ns)
		a, ok2 := get(bl.anchor, ns)
		row := Row{Figure: bl.figure, Goal: "≤ 1.5× " + bl.anchorName + " (same run)"}
		if !ok1 || !ok2 {
			row.Verdict = NotMeasured
		} else {
			oa, _ := get(bl.ours, allocs)
			aa, _ := get(bl.anchor, allocs)
			row.Measured = fmt.Sprintf("%s, %.0f allocs vs %s, %.0f allocs", fmtNs(o), oa, fmtNs(a), aa)
			row.Ratio = ratio(o, a)
			row.Verdict = verdict(o <= 1.5*a)
		}
		r.add(row)
	}

	// Context rows, no goal of their own.
	context := []struct{ figure, a, b, note string }{
		{"coalescer vs singleflight.DoChan + select on ctx (the closest x/sync gets to a cancellable wait), 1 hot key",
			"BenchmarkDo/keys=hot/impl=ours", "BenchmarkDo/keys=hot/impl=dochan", ""},
		{"limiter Acquire+Release (rate ceiling, concurrency slot, tenant queue) vs x/time/rate Allow + a semaphore slot (the same two limits from libraries)",
			"BenchmarkAcquire/impl=ours", "BenchmarkAcquire/impl=xrate+semaphore", ""},
		{"chain over a real gRPC server on bufconn, cache miss vs bare server",
			"BenchmarkChainBufconn/path=miss", "BenchmarkChainBufconn/path=bare", ""},
	}
	for _, c := range context {
		a, ok1 := get(c.a, ns)
		b, ok2 := get(c.b, ns)
		if !ok1 || !ok2 {
			continue
		}
		aa, _ := get(c.a, allocs)
		ba, _ := get(c.b, allocs)
		r.add(Row{Figure: c.figure, Goal: "(context)", Measured: fmt.Sprintf("%s, %.0f allocs vs %s, %.0f allocs", fmtNs(a), aa, fmtNs(b), ba), Ratio: ratio(a, b), Verdict: NoGoal})
	}

	// M4: cache hit ratio on the Zipf trace and bytes per entry.
	ours, ok1 := get("BenchmarkZipfHitRatio/impl=ours", "hit%")
	otter, ok2 := get("BenchmarkZipfHitRatio/impl=otter", "hit%")
	row := Row{Figure: "cache hit ratio, Zipf trace (M4)", Goal: "≥ otter's in the same run"}
	if ok1 && ok2 {
		row.Measured = fmt.Sprintf("%.2f %% vs otter %.2f %%", ours, otter)
		row.Ratio = ratio(ours, otter)
		row.Verdict = verdict(ours >= otter)
	} else {
		row.Verdict = NotMeasured
	}
	r.add(row)
	bpe, ok1 := get("BenchmarkBytesPerEntry/impl=ours", "bytes/entry")
	obpe, ok2 := get("BenchmarkBytesPerEntry/impl=otter", "bytes/entry")
	row = Row{Figure: "cache overhead per entry (M4)", Goal: "≤ 200 B"}
	if ok1 {
		row.Measured = fmt.Sprintf("%.0f B (otter %.0f B)", bpe, obpe)
		row.Ratio = fmt.Sprintf("%.2f of 200 B", bpe/200)
		row.Verdict = verdict(bpe <= 200)
		_ = ok2
	} else {
		row.Verdict = NotMeasured
	}
	r.add(row)
}

// goDetails is the prose and tables of the Go benchmark section.
func goDetails(s samples, count int, benchtime string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "`go test -run '^$' -bench . -benchmem -count %d -benchtime %s`; medians of %d runs. ", count, benchtime, count)
	b.WriteString("The full benchstat tables (p-values; confidence intervals need -count ≥ 6) follow.\n\n")
	b.WriteString("| benchmark | ns/op | B/op | allocs/op | other |\n|---|---|---|---|---|\n")
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ns, _ := s.median(n, "ns/op")
		bop, _ := s.median(n, "B/op")
		al, _ := s.median(n, "allocs/op")
		var other []string
		units := make([]string, 0, len(s[n]))
		for u := range s[n] {
			units = append(units, u)
		}
		sort.Strings(units)
		for _, u := range units {
			if u == "ns/op" || u == "B/op" || u == "allocs/op" {
				continue
			}
			v, _ := s.median(n, u)
			other = append(other, fmt.Sprintf("%.4g %s", v, u))
		}
		fmt.Fprintf(&b, "| `%s` | %s | %.0f | %.0f | %s |\n", n, fmtNs(ns), bop, al, strings.Join(other, ", "))
	}
	return b.String()
}

// outboxFigures lists the group-commit outbox against fsync per message
// when that package's benchmarks ran (no SPEC §9 goal yet: shown only).
func outboxFigures(r *Report, s samples) {
	names := make([]string, 0)
	for n := range s {
		if strings.Contains(n, "impl=group") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, g := range names {
		f := strings.Replace(g, "impl=group", "impl=fsync", 1)
		gv, ok1 := s.median(g, "ns/op")
		fv, ok2 := s.median(f, "ns/op")
		if !ok1 || !ok2 {
			continue
		}
		r.add(Row{
			Figure:   "outbox, group commit vs fsync per message (" + strings.TrimPrefix(g, "Benchmark") + ")",
			Goal:     "(none in SPEC §9)",
			Measured: fmt.Sprintf("%s vs %s", fmtNs(gv), fmtNs(fv)),
			Ratio:    ratio(gv, fv),
			Verdict:  NoGoal,
		})
	}
}
