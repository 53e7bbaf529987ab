package main

// The overload scenarios of SPEC §9 and issue 10 (overload-anchors §7):
// bursts an idle backend can serve, a backend that queues instead of
// answering 429 (an LLM server), and two tenants on it, one flooding.
// Each runs the gateway in three modes: adaptive (the defaults), fixed
// (the concurrency limit pinned at the backend's parallelism) and none.
// The 429 backend (M6) is limiter.go.

import (
	"context"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gonum.org/v1/plot/plotter"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// The queueing backend: N slots of service time S, an unbounded FIFO
// behind them and never a 429, like Ollama, vLLM or llama-server.
const (
	queueSlots    = 4
	queueLatency  = 100 * time.Millisecond
	queueCapacity = queueSlots / 0.1 // C, calls/s: N / S
	queueDeadline = 2 * time.Second

	burstLatency = 400 * time.Millisecond // the idle backend of the bursts
)

func queueBackend(latency time.Duration) []string {
	return []string{"--latency", latency.String(), "--concurrency", fmt.Sprint(queueSlots), "--queue"}
}

// overloadModes are the three configurations of each overload scenario.
func overloadModes() []limiterMode {
	n := fmt.Sprint(queueSlots)
	return []limiterMode{
		{"adaptive", nil, "the gateway's defaults: concurrency limit 4 adapting in 1–64, rate ceiling 10 adapting in 1–100 req/s, queue target auto (½ the unloaded latency, ≥ 5 ms), max queue wait 30 s"},
		{"fixed", append([]string{"VEGA_CONCURRENCY_INITIAL=" + n, "VEGA_CONCURRENCY_MIN=" + n, "VEGA_CONCURRENCY_MAX=" + n}, highRate...),
			"concurrency MIN = MAX = INITIAL = N = 4 (the backend's parallelism), rate ceiling 100000 req/s; the queue as by default"},
		{"none", highLimits, "rate and concurrency limits 100000: every call goes on to the backend at once"},
	}
}

// overloadState carries what the overload scenarios share.
type overloadState struct {
	unloaded *ghzResult // the queueing backend at 0.2 C, measured once
}

// unloadedQueue measures the queueing backend unloaded (0.2 C, open loop,
// limits out of the way) once for the queueing and tenants scenarios.
func (d *driver) unloadedQueue(ctx context.Context) (*ghzResult, error) {
	if d.ov.unloaded != nil {
		return d.ov.unloaded, nil
	}
	_, g, stop, err := d.startStack("queue-unloaded", queueBackend(queueLatency), highLimits...)
	if err != nil {
		return nil, err
	}
	defer stop()
	r, err := d.ghz(ctx, "queue-unloaded", g, generateCall, `{"model":"llama3","prompt":"unloaded {{.RequestNumber}}"}`,
		"--async", "-r", fmt.Sprint(queueCapacity/5), "-z", "10s", "-t", queueDeadline.String(), "-c", "4")
	if err != nil {
		return nil, err
	}
	if r.StatusCodes["OK"] == 0 {
		return nil, fmt.Errorf("unloaded run: no OK call (%v)", r.StatusCodes)
	}
	d.ov.unloaded = r
	return r, nil
}

// autoTarget is the gateway's automatic queue target for a backend whose
// unloaded latency is p50: half of it, at least 5 ms.
func autoTarget(p50 time.Duration) time.Duration { return max(5*time.Millisecond, p50/2) }

// --- (a) bursts an idle backend can serve ---------------------------------

type burst struct {
	mode     string
	deadline time.Duration
	n        int
	r        *ghzResult
}

// fits is how many of the burst the backend can finish before the
// deadline: its slots times the whole service times that fit.
func (b burst) fits() int {
	return min(b.n, queueSlots*int(b.deadline/burstLatency))
}

// drain is how long the backend takes to serve the whole burst.
func (b burst) drain() time.Duration {
	return time.Duration((b.n+queueSlots-1)/queueSlots) * burstLatency
}

func (d *driver) bursts(ctx context.Context) error {
	sizes := []int{20, 50, 200}
	if d.quick {
		sizes = []int{20, 50}
	}
	deadlines := []time.Duration{30 * time.Second, 5 * time.Second}
	modes := overloadModes()
	var all []burst
	finals := map[string]*vegav1.LimiterStats{}
	for _, m := range modes {
		name := "bursts-" + m.name
		_, g, stop, err := d.startStack(name, queueBackend(burstLatency), m.env...)
		if err != nil {
			return err
		}
		for _, dl := range deadlines {
			for _, n := range sizes {
				run := fmt.Sprintf("%s-%d-%s", name, n, dl)
				r, err := d.ghz(ctx, run, g, generateCall, fmt.Sprintf(`{"model":"llama3","prompt":"%s {{.RequestNumber}}"}`, run),
					"-c", fmt.Sprint(n), "-n", fmt.Sprint(n), "-t", dl.String(), "--connections", fmt.Sprint(max(1, (n+199)/200)))
				if err != nil {
					stop()
					return err
				}
				all = append(all, burst{m.name, dl, n, r})
				// The backend is idle again once ghz returns; half a
				// second more lets any standing-queue state lapse.
				if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
					stop()
					return err
				}
			}
		}
		if s, err := g.stats(vegav1.StatsSection_STATS_SECTION_RATE_LIMITERS); err == nil {
			finals[m.name] = limiterStats(s, "ollama")
		}
		stop()
	}

	var body strings.Builder
	fmt.Fprintf(&body, "Backend: fakeupstream `--latency %s --concurrency %d --queue`: %d calls at a time, %s each, the rest wait in its FIFO without bound and it never answers 429 (an LLM server), idle before each burst. "+
		"Each burst is N distinct `Generate` calls sent at once by ghz (`-c N -n N`, distinct prompts, so nothing coalesces) with a deadline of 30 s, then of 5 s (`-t`), one burst after another with half a second's pause, on one gateway per mode. "+
		"*Drain* is how long the backend needs for the whole burst (⌈N/%d⌉ × %s); *fit* is how many calls it can finish within the deadline (%d × ⌊deadline / %s⌋). "+
		"With 30 s every burst fits, so the goal is no refusal at all. With 5 s only the calls predicted to miss should be refused, at once (refusal latency), and an admitted call should not miss its deadline (DEADLINE_EXCEEDED).\n\n",
		burstLatency, queueSlots, queueSlots, burstLatency, queueSlots, burstLatency, queueSlots, burstLatency)
	body.WriteString("| mode | deadline | N | OK | refused (RESOURCE_EXHAUSTED) | DEADLINE_EXCEEDED | other | fit | slowest OK | drain | refusal p50 / p99 |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, b := range all {
		ok, ref, de := b.r.StatusCodes["OK"], b.r.StatusCodes["ResourceExhausted"], b.r.StatusCodes["DeadlineExceeded"]
		refs := latencies(b.r, "ResourceExhausted")
		rl := "—"
		if len(refs) > 0 {
			rl = ms(quantile(refs, 0.5)) + " / " + ms(quantile(refs, 0.99))
		}
		fmt.Fprintf(&body, "| %s | %s | %d | %d | %d | %d | %d | %d | %s | %s | %s |\n", b.mode, b.deadline, b.n, ok, ref, de,
			int64(b.n)-ok-ref-de, b.fits(), ms(maxLatency(b.r, "OK")), ms(b.drain()), rl)
	}
	for _, m := range modes {
		var short []burst
		for _, b := range all {
			if b.mode == m.name {
				d.report.add(burstRow(b))
				if b.deadline < 30*time.Second {
					short = append(short, b)
				}
			}
		}
		d.report.add(refusalRow(m.name, short))
	}
	body.WriteString("\n| mode | configuration | gateway's shed counts after all bursts (deadline / standing / full / retry-after) | concurrency limit at the end | base latency |\n|---|---|---|---|---|\n")
	for _, m := range modes {
		l := finals[m.name]
		fmt.Fprintf(&body, "| %s | %s | %d / %d / %d / %d | %d | %.0f ms |\n", m.name, m.note,
			l.GetShedDeadline(), l.GetShedStanding(), l.GetShedFull(), l.GetShedRetryAfter(), l.GetConcurrencyLimit(), l.GetBaseLatencyMs())
	}
	body.WriteString("\nHow to read it: \"none\" sends every call on and the backend queues them, so with 30 s deadlines it serves every burst too, and with 5 s deadlines the calls that cannot fit wait until their deadline and end DEADLINE_EXCEEDED after 5 s instead of being told at once. " +
		"The limiting modes should serve every 30-s burst, and with 5 s serve what fits and refuse the rest on arrival with RetryInfo. " +
		"A refusal on arrival still waits for the gateway (one core, GOMAXPROCS=1, shared with whatever else runs on this machine) to take in the calls of the burst that arrived before it, a fraction of a millisecond each with the core to itself, so the refusal latency of a 200-call burst is tens of milliseconds at p50 or more when the core is busy; the goal therefore counts refusals returned before the burst's first answer (on arrival) against those returned after it (after waiting in the queue, often just before the deadline); the per-burst p50 and p99 are in the table. " +
		"The plot shows the 200-call bursts: each call's latency, calls ranked by latency; refused calls are the flat run near 0, the staircase is the backend serving 4 at a time.\n")
	d.report.section("Bursts an idle backend can serve (overload a)", "%s", body.String())

	big := sizes[len(sizes)-1]
	d.savePlot("bursts.png", fmt.Sprintf("Bursts of %d distinct calls at once on an idle backend (4 slots × 400 ms, queueing): each call's latency, ranked, per mode; solid 30 s deadlines, dashed 5 s.", big),
		func(path string) error {
			var lines []series
			for _, b := range all {
				if b.n != big {
					continue
				}
				lines = append(lines, series{name: fmt.Sprintf("%s, %s", b.mode, b.deadline), color: modeColors[b.mode], dashed: b.deadline != 30*time.Second, xy: rankedLatencies(b.r)})
			}
			return plotLines(fmt.Sprintf("Bursts of %d at once, latency of each call", big), "calls, ranked by latency", "latency, s", lines, path, legendLeft)
		})
	return nil
}

// burstRow is the verdict on one burst. Within 30 s every burst fits: no
// call may be refused. With less, the backend can serve b.fits() of them:
// at least 0.9 of those must be OK and ≤ 1 % of the burst end late.
func burstRow(b burst) Row {
	ok, ref, de := b.r.StatusCodes["OK"], b.r.StatusCodes["ResourceExhausted"], b.r.StatusCodes["DeadlineExceeded"]
	other := int64(b.n) - ok - ref - de
	slowest := maxLatency(b.r, "OK")
	if b.deadline >= 30*time.Second {
		return Row{
			Figure:   fmt.Sprintf("burst of %d at once on an idle backend, %s deadlines, %s", b.n, secs(b.deadline), b.mode),
			Goal:     "0 refusals (all OK)",
			Measured: fmt.Sprintf("%d refused, %d OK, %d other errors; slowest OK %s (backend drains in %s)", ref, ok, de+other, ms(slowest), ms(b.drain())),
			Ratio:    fmt.Sprintf("%d/%d refused", ref, b.n),
			Verdict:  verdict(ref == 0 && ok == int64(b.n)),
		}
	}
	fit := b.fits()
	return Row{
		Figure:   fmt.Sprintf("burst of %d at once, %s deadlines, %s: served vs what fits, admitted calls late", b.n, secs(b.deadline), b.mode),
		Goal:     fmt.Sprintf("OK ≥ 0.9 × fit (%d); DEADLINE_EXCEEDED ≤ 1 %% of N", fit),
		Measured: fmt.Sprintf("%d OK, %d refused, %d DEADLINE_EXCEEDED, %d other; slowest OK %s", ok, ref, de, other, ms(slowest)),
		Ratio:    fmt.Sprintf("%.2f of fit", float64(ok)/float64(fit)),
		Verdict:  verdict(float64(ok) >= 0.9*float64(fit) && float64(de) <= 0.01*float64(b.n)),
	}
}

// refusalRow is the verdict on a mode's refusals in the bursts that do not
// all fit: were they given at once, on arrival, or only after the call
// had waited in the queue? A refusal on arrival comes back before the
// burst's first answer (which takes a service time, 400 ms, after the
// first dispatch); one after queueing comes later. The latency itself
// also holds the gateway's intake of the calls of the burst that arrived
// before it (one core, a fraction of a millisecond each with the machine
// to itself, more when other work shares the core), so its p50 is
// reported, and the verdict is on the on-arrival share.
func refusalRow(mode string, bursts []burst) Row {
	var refs []time.Duration
	onArrival := 0
	for _, b := range bursts {
		var start, firstAnswer time.Time
		for _, x := range b.r.Details {
			if s := x.Timestamp.Add(-time.Duration(x.Latency)); start.IsZero() || s.Before(start) {
				start = s
			}
			if x.Status == "OK" && (firstAnswer.IsZero() || x.Timestamp.Before(firstAnswer)) {
				firstAnswer = x.Timestamp
			}
		}
		if firstAnswer.IsZero() {
			firstAnswer = start.Add(burstLatency)
		}
		for _, x := range b.r.Details {
			if x.Status == "ResourceExhausted" {
				refs = append(refs, time.Duration(x.Latency))
				if x.Timestamp.Before(firstAnswer) {
					onArrival++
				}
			}
		}
	}
	slices.Sort(refs)
	row := Row{Figure: fmt.Sprintf("bursts with 5 s deadlines, %s: refusals on arrival", mode),
		Goal: "≥ 99 % refused on arrival (before the burst's first answer), not after queueing"}
	if len(refs) == 0 {
		row.Measured, row.Verdict = "no call refused", NoGoal
		return row
	}
	share := float64(onArrival) / float64(len(refs))
	row.Measured = fmt.Sprintf("%d of %d on arrival; refusal latency p50 %s, p99 %s", onArrival, len(refs), ms(quantile(refs, 0.5)), ms(quantile(refs, 0.99)))
	row.Ratio = fmt.Sprintf("%.3f", share)
	row.Verdict = verdict(share >= 0.99)
	return row
}

func secs(d time.Duration) string { return fmt.Sprintf("%g s", d.Seconds()) }

// --- (b) a queueing backend at 2× and 4× ----------------------------------

// loadSpec is one open-loop ghz client of a run.
type loadSpec struct {
	who    string  // names its files; a tenant's name when apiKey is set
	rate   float64 // offered calls/s
	apiKey string  // x-api-key metadata, "" for none
}

// loadRun is what one mode produced under open-loop load.
type loadRun struct {
	mode    string
	offered float64
	dur     time.Duration
	results []*ghzResult // per loadSpec
	goodput [][]float64  // per loadSpec: OK answers per second, by arrival
	samples []sample
	final   *vegav1.LimiterStats // PerfAdmin at the end
}

// openLoop starts the queueing backend and a gateway in mode m (plus env),
// runs one ghz per load at once, open loop with 2 s deadlines, for dur,
// and samples PerfAdmin and the backend every 250 ms meanwhile.
func (d *driver) openLoop(ctx context.Context, name string, m limiterMode, env []string, loads []loadSpec, dur time.Duration) (*loadRun, error) {
	f, g, stop, err := d.startStack(name, queueBackend(queueLatency), append(append([]string(nil), m.env...), env...)...)
	if err != nil {
		return nil, err
	}
	defer stop()
	run := &loadRun{mode: m.name, dur: dur, results: make([]*ghzResult, len(loads))}
	errs := make([]error, len(loads))
	start := time.Now()
	stopSampling := sampleLoop(ctx, f, g, 250*time.Millisecond, start)
	var wg sync.WaitGroup
	for i, l := range loads {
		run.offered += l.rate
		file := name
		if l.who != "" {
			file += "-" + l.who
		}
		args := []string{"--async", "-r", fmt.Sprint(l.rate), "-z", dur.String(), "-t", queueDeadline.String(),
			"-c", fmt.Sprint(min(100, max(2, int(l.rate/2))))}
		if l.apiKey != "" {
			md := fmt.Sprintf(`{"x-api-key":%q}`, l.apiKey)
			args = append(args, "--metadata", md, "--reflect-metadata", md) // ghz finds the method by server reflection, a call of its own
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			run.results[i], errs[i] = d.ghz(ctx, file, g, generateCall, fmt.Sprintf(`{"model":"llama3","prompt":"%s {{.RequestNumber}}"}`, file), args...)
		}()
	}
	wg.Wait()
	run.samples = stopSampling()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if s, err := g.stats(vegav1.StatsSection_STATS_SECTION_RATE_LIMITERS); err == nil {
		run.final = limiterStats(s, "ollama")
	}
	writeSamples(filepath.Join(d.work, name+".samples.csv"), run.samples)
	for _, r := range run.results {
		run.goodput = append(run.goodput, goodputPerSecond(r, start, dur))
	}
	return run, nil
}

func (d *driver) queueing(ctx context.Context) error {
	dur := 15 * time.Second // the last 10 s give the steady figures; 20 s would take make bench past 12 min
	if d.quick {
		dur = 8 * time.Second
	}
	un, err := d.unloadedQueue(ctx)
	if err != nil {
		return err
	}
	unP50, unP99 := un.pct(50), un.pct(99)
	target := autoTarget(unP50)
	p99Goal := 2*unP99 + target
	modes := overloadModes()
	const c = queueCapacity
	var body strings.Builder
	fmt.Fprintf(&body, "Backend: fakeupstream `--latency %s --concurrency %d --queue`: %d calls at a time, the rest wait in its FIFO without bound, never a 429 (how Ollama, vLLM and llama-server behave), so C = %.0f calls/s. "+
		"ghz offers distinct `Generate` calls open loop at 2× and 4× C (`--async -r R -t %s`, 2 s deadlines) for %s per mode, each mode on a fresh gateway and backend. "+
		"Unloaded (0.2 C, limits off): p50 %s, p99 %s; the goal for the p99 of OK calls is 2 × unloaded p99 + the automatic queue target (½ unloaded p50 = %s) = %s. "+
		"*Steady goodput* is the mean of OK answers per second (by arrival) over the last 10 s; *convergence* as in M6 (the 5-s rolling goodput stays ≥ 0.9 C from then to the end). "+
		"PerfAdmin's `rate_limiters.ollama` (concurrency_limit, in_flight, queue_length, standing) and the backend's busy slots and own queue are sampled every 250 ms (`.tmp/bench/queue-*.samples.csv`); the mean and range of the limit are over the last 10 s.\n\n",
		queueLatency, queueSlots, queueSlots, c, queueDeadline, dur, ms(unP50), ms(unP99), ms(target), ms(p99Goal))
	body.WriteString("| mode | offered | steady goodput | convergence | OK p50 / p99 | concurrency limit, last 10 s: mean (min–max) | gateway queue, mean | backend's own queue, mean | status codes | shed (deadline / standing / full / retry-after) | queue target, base / sample latency (PerfAdmin) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	byRate := map[float64][]*loadRun{}
	var rates []float64
	for _, x := range []float64{2, 4} {
		offered := x * c
		rates = append(rates, offered)
		for _, m := range modes {
			name := fmt.Sprintf("queue-%.0fx-%s", x, m.name)
			run, err := d.openLoop(ctx, name, m, nil, []loadSpec{{rate: offered}}, dur)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			byRate[offered] = append(byRate[offered], run)
			r := run.results[0]
			pf := phaseOf(run.goodput[0], 0, dur, c)
			okLat := latencies(r, "OK")
			p99 := quantile(okLat, 0.99)
			de := r.StatusCodes["DeadlineExceeded"]
			lim := limitFigures(run.samples, dur-10*time.Second)
			fmt.Fprintf(&body, "| %s | %.0f/s (%.0f×) | %.1f/s (%.2f C) | %s | %s / %s | %s | %.1f | %.1f | %v | %d / %d / %d / %d | %.0f ms, %.0f / %.0f ms |\n",
				m.name, offered, x, pf.goodput, pf.goodput/c, conv(pf.convergence), ms(quantile(okLat, 0.5)), ms(p99), lim,
				meanOf(run.samples, func(s sample) float64 { return float64(s.queued) }),
				meanOf(run.samples, func(s sample) float64 { return float64(s.backendQueued) }),
				r.StatusCodes, run.final.GetShedDeadline(), run.final.GetShedStanding(), run.final.GetShedFull(), run.final.GetShedRetryAfter(),
				run.final.GetQueueTargetMs(), run.final.GetBaseLatencyMs(), run.final.GetSampleLatencyMs())
			fig := fmt.Sprintf("queueing backend, %.0f× (%.0f/s), %s", x, offered, m.name)
			d.report.add(Row{
				Figure: fig + ": steady goodput", Goal: fmt.Sprintf("≥ 0.9 C (%.0f/s)", 0.9*c),
				Measured: fmt.Sprintf("%.1f/s of %.0f/s", pf.goodput, c), Ratio: fmt.Sprintf("%.2f", pf.goodput/c),
				Verdict: verdict(pf.goodput >= 0.9*c),
			})
			row := Row{Figure: fig + ": p99 of OK calls", Goal: "≤ 2× unloaded p99 + queue target"}
			if len(okLat) == 0 {
				row.Measured, row.Ratio, row.Verdict = "no OK call", "—", Missed
			} else {
				row.Measured = fmt.Sprintf("%s vs %s (2 × %s + %s)", ms(p99), ms(p99Goal), ms(unP99), ms(target))
				row.Ratio = ratio(float64(p99), float64(p99Goal))
				row.Verdict = verdict(p99 <= p99Goal)
			}
			d.report.add(row)
			d.report.add(Row{
				Figure: fig + ": convergence", Goal: "≤ 10 s",
				Measured: conv(pf.convergence), Ratio: convRatio(pf.convergence),
				Verdict: verdict(pf.convergence >= 0 && pf.convergence <= 10*time.Second),
			})
			d.report.add(Row{
				Figure: fig + ": DEADLINE_EXCEEDED", Goal: "≈ 0 (≤ 1 % of calls)",
				Measured: fmt.Sprintf("%d of %d calls", de, r.Count), Ratio: fmt.Sprintf("%.3f", float64(de)/float64(max(1, r.Count))),
				Verdict: verdict(float64(de) <= 0.01*float64(r.Count)),
			})
		}
	}
	body.WriteString("\nHow to read it: with \"none\" the backend's queue fills with calls that have already spent their deadline there, so each served call ends late and goodput falls towards 0 even though the backend works at full speed; DEADLINE_EXCEEDED counts it. " +
		"A limiting mode keeps that queue in the gateway, where a call that cannot be served within its deadline is refused at once (RESOURCE_EXHAUSTED, shed \"deadline\") and a queue that stays above the target while more arrives than is served sheds (\"standing\"); the backend then holds about N calls and answers in its unloaded time. " +
		"The fixed mode knows N; the adaptive one must find it from latency (the concurrency-limit plots), starting from its default 4 and its rate ceiling's 10 req/s.\n")
	d.report.section("Queueing backend at 2× and 4× (overload b)", "%s", body.String())

	for _, offered := range rates {
		runs := byRate[offered]
		x := offered / c
		d.savePlot(fmt.Sprintf("queue-goodput-%.0fx.png", x),
			fmt.Sprintf("Queueing backend (4 slots × 100 ms, C = 40/s) offered %.0f/s (%.0f×), 2 s deadlines: OK calls per second per mode against C.", offered, x),
			func(path string) error {
				var lines []series
				for _, run := range runs {
					lines = append(lines, series{name: run.mode, xy: perSecond(run.goodput[0])})
				}
				lines = append(lines, series{name: "capacity", dashed: true, xy: flat(c, dur)})
				return plotLines(fmt.Sprintf("Goodput, queueing backend at %.0f× (%.0f/s offered)", x, offered), "seconds since the load started", "OK answers/s", lines, path)
			})
		d.savePlot(fmt.Sprintf("queue-limit-%.0fx.png", x),
			fmt.Sprintf("Queueing backend at %.0f×: PerfAdmin concurrency_limit (solid) and queue_length in the gateway (dashed) every 250 ms, adaptive and fixed; the backend's 4 slots for reference. \"none\" (limit 100000, never queues in the gateway) is not drawn.", x),
			func(path string) error {
				var lines []series
				for _, run := range runs {
					if run.mode == "none" {
						continue
					}
					var lim, q plotter.XYs
					for _, s := range run.samples {
						lim = append(lim, plotter.XY{X: s.t.Seconds(), Y: float64(s.limit)})
						q = append(q, plotter.XY{X: s.t.Seconds(), Y: float64(s.queued)})
					}
					lines = append(lines, series{name: run.mode + " limit", color: modeColors[run.mode], xy: lim},
						series{name: run.mode + " queue", color: modeColors[run.mode], dashed: true, xy: q})
				}
				lines = append(lines, series{name: "backend slots", color: modeColors["capacity"], dashed: true, xy: flat(queueSlots, dur)})
				return plotLines(fmt.Sprintf("Concurrency limit and gateway queue, queueing backend at %.0f×", x), "seconds since the load started", "calls", lines, path)
			})
	}
	return nil
}

// --- (d) two tenants, one flooding ----------------------------------------

func (d *driver) tenants(ctx context.Context) error {
	dur := 15 * time.Second
	if d.quick {
		dur = 8 * time.Second
	}
	un, err := d.unloadedQueue(ctx)
	if err != nil {
		return err
	}
	unP99 := un.pct(99)
	const c = queueCapacity
	flood, trickle := 5*c, 4.0
	keys := []string{"VEGA_API_KEYS=key-alpha=alpha,key-beta=beta"}
	loads := []loadSpec{{"alpha", flood, "key-alpha"}, {"beta", trickle, "key-beta"}}
	modes := overloadModes()
	var runs []*loadRun
	var body strings.Builder
	fmt.Fprintf(&body, "The queueing backend of (b) (C = %.0f/s), `VEGA_API_KEYS=key-alpha=alpha,key-beta=beta`. Two ghz at once for %s, open loop, 2 s deadlines: "+
		"tenant alpha (`--metadata '{\"x-api-key\":\"key-alpha\"}'`) floods at %.0f/s (5 C), tenant beta sends %.0f calls/s. "+
		"Goals: beta's success ≥ 99 %% and its p99 ≤ 2 × the unloaded p99 (%s, so ≤ %s); alpha gets the rest: its steady goodput (last 10 s) ≥ 0.9 C − beta's steady goodput. "+
		"*Idle while queued* is the share of 250-ms samples in which calls waited in the gateway while it had fewer calls at the backend than its limit and the backend's 4 slots, and the backend had a free slot both just before and just after PerfAdmin was read (the gateway's rate ceiling, which starts at 10 req/s by default, can hold calls back that way).\n\n",
		c, dur, flood, trickle, ms(unP99), ms(2*unP99))
	body.WriteString("| mode | beta OK / sent | beta p50 / p99 | beta status codes | alpha steady goodput | beta steady goodput | alpha status codes | idle while queued | per tenant at the end (admitted / shed) |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, m := range modes {
		name := "tenants-" + m.name
		run, err := d.openLoop(ctx, name, m, keys, loads, dur)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		runs = append(runs, run)
		alpha, beta := run.results[0], run.results[1]
		aGood := phaseOf(run.goodput[0], 0, dur, c).goodput
		bGood := phaseOf(run.goodput[1], 0, dur, c).goodput
		bLat := latencies(beta, "OK")
		bOK := beta.StatusCodes["OK"]
		success := float64(bOK) / float64(max(1, beta.Count))
		idle, n := 0, len(run.samples)
		for _, s := range run.samples {
			if s.idleWhileQueued {
				idle++
			}
		}
		idleFrac := float64(idle) / float64(max(1, n))
		var per []string
		for _, t := range run.final.GetTenants() {
			per = append(per, fmt.Sprintf("%s %d / %d", orNone(t.GetTenant()), t.GetAdmitted(), t.GetShed()))
		}
		fmt.Fprintf(&body, "| %s | %d / %d (%.1f %%) | %s / %s | %v | %.1f/s | %.1f/s | %v | %d of %d samples | %s |\n",
			m.name, bOK, beta.Count, 100*success, ms(quantile(bLat, 0.5)), ms(quantile(bLat, 0.99)), beta.StatusCodes,
			aGood, bGood, alpha.StatusCodes, idle, n, strings.Join(per, ", "))
		fig := "flood + trickle, " + m.name
		d.report.add(Row{
			Figure: fig + ": beta (trickle, 4/s) success", Goal: "≥ 99 %",
			Measured: fmt.Sprintf("%d of %d OK", bOK, beta.Count), Ratio: fmt.Sprintf("%.3f", success),
			Verdict: verdict(beta.Count > 0 && success >= 0.99),
		})
		row := Row{Figure: fig + ": beta p99 of OK calls", Goal: "≤ 2× unloaded"}
		if len(bLat) == 0 {
			row.Measured, row.Ratio, row.Verdict = "no OK call", "—", Missed
		} else {
			p99 := quantile(bLat, 0.99)
			row.Measured = fmt.Sprintf("%s vs unloaded %s", ms(p99), ms(unP99))
			row.Ratio, row.Verdict = ratio(float64(p99), float64(unP99)), verdict(p99 <= 2*unP99)
		}
		d.report.add(row)
		d.report.add(Row{
			Figure: fig + ": alpha (flood, 5 C) steady goodput", Goal: "≥ 0.9 C − beta's share",
			Measured: fmt.Sprintf("%.1f/s vs %.1f/s (0.9 × %.0f − beta's %.1f/s)", aGood, 0.9*c-bGood, c, bGood), Ratio: fmt.Sprintf("%.2f", aGood/(0.9*c-bGood)),
			Verdict: verdict(aGood >= 0.9*c-bGood),
		})
		d.report.add(Row{
			Figure: fig + ": backend slot idle while calls wait in the gateway", Goal: "< 1 % of the time (overload-anchors §7)",
			Measured: fmt.Sprintf("%d of %d samples (every 250 ms)", idle, n), Ratio: fmt.Sprintf("%.3f", idleFrac),
			Verdict: verdict(n > 0 && idleFrac < 0.01),
		})
	}
	body.WriteString("\nHow to read it: with \"none\" beta's calls join the same backend queue as alpha's flood and wait behind it past their deadline. " +
		"A limiting mode queues each tenant apart in the gateway and serves the queues in turn, so a beta call waits at most for the next free slot while alpha's excess is refused; " +
		"alpha alone would get all of C, and it should still get everything beta leaves.\n")
	d.report.section("Two tenants, one flooding (overload d)", "%s", body.String())
	d.savePlot("tenants-goodput.png",
		fmt.Sprintf("Queueing backend (C = 40/s), alpha floods at %.0f/s, beta sends %.0f/s: OK calls per second per tenant (alpha solid, beta dashed) per mode.", flood, trickle),
		func(path string) error {
			var lines []series
			for _, run := range runs {
				lines = append(lines, series{name: run.mode + " alpha", color: modeColors[run.mode], xy: perSecond(run.goodput[0])},
					series{name: run.mode + " beta", color: modeColors[run.mode], dashed: true, xy: perSecond(run.goodput[1])})
			}
			lines = append(lines, series{name: "capacity", color: color.Black, dashed: true, xy: flat(c, dur)})
			return plotLines("Goodput per tenant: alpha floods, beta trickles", "seconds since the load started", "OK answers/s", lines, path)
		})
	return nil
}

// --- helpers ----------------------------------------------------------------

// latencies are the sorted latencies of a run's calls that ended in status.
func latencies(r *ghzResult, status string) []time.Duration {
	var out []time.Duration
	for _, x := range r.Details {
		if x.Status == status {
			out = append(out, time.Duration(x.Latency))
		}
	}
	slices.Sort(out)
	return out
}

func maxLatency(r *ghzResult, status string) time.Duration {
	l := latencies(r, status)
	if len(l) == 0 {
		return 0
	}
	return l[len(l)-1]
}

// rankedLatencies is every call's latency in seconds, ascending, by rank.
func rankedLatencies(r *ghzResult) plotter.XYs {
	all := make([]time.Duration, 0, len(r.Details))
	for _, x := range r.Details {
		all = append(all, time.Duration(x.Latency))
	}
	slices.Sort(all)
	xy := make(plotter.XYs, len(all))
	for i, l := range all {
		xy[i] = plotter.XY{X: float64(i + 1), Y: l.Seconds()}
	}
	return xy
}

// flat is a horizontal line at y over [0, dur].
func flat(y float64, dur time.Duration) plotter.XYs {
	return plotter.XYs{{X: 0, Y: y}, {X: dur.Seconds(), Y: y}}
}

// limitFigures is the mean and range of the concurrency limit sampled from
// t = from on.
func limitFigures(samples []sample, from time.Duration) string {
	lo, hi, sum, n := int64(math.MaxInt64), int64(0), 0.0, 0
	for _, s := range samples {
		if s.t < from {
			continue
		}
		lo, hi, sum, n = min(lo, s.limit), max(hi, s.limit), sum+float64(s.limit), n+1
	}
	if n == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f (%d–%d)", sum/float64(n), lo, hi)
}

func meanOf(samples []sample, f func(sample) float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	sum := 0.0
	for _, s := range samples {
		sum += f(s)
	}
	return sum / float64(len(samples))
}

func orNone(tenant string) string {
	if tenant == "" {
		return "(no key)"
	}
	return tenant
}

// writeSamples keeps a run's time series for a closer look than the plots
// give; a failure to write it costs nothing but that.
func writeSamples(path string, samples []sample) {
	var b strings.Builder
	b.WriteString("t_s,capacity,backend_200_total,limiter_rate,concurrency_limit,in_flight,queue_length,standing,backend_busy,backend_queued,idle_while_queued\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.3f,%g,%d,%.2f,%d,%d,%d,%t,%d,%d,%t\n", s.t.Seconds(), s.capacity, s.ok200, s.rate,
			s.limit, s.inFlight, s.queued, s.standing, s.backendBusy, s.backendQueued, s.idleWhileQueued)
	}
	_ = os.WriteFile(path, []byte(b.String()), 0o644)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
