package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Verdict is whether a figure met its goal.
type Verdict int

const (
	NoGoal Verdict = iota // shown for context, no pass/fail
	Met
	Missed
	NotMeasured // the scenario failed or was skipped
)

func (v Verdict) String() string {
	switch v {
	case Met:
		return "met"
	case Missed:
		return "**missed**"
	case NotMeasured:
		return "not measured"
	}
	return "—"
}

func verdict(ok bool) Verdict {
	if ok {
		return Met
	}
	return Missed
}

// Row is one line of the summary table.
type Row struct {
	Figure, Goal, Measured, Ratio string
	Verdict                       Verdict
}

// Section is the detail of one scenario.
type Section struct {
	Title string
	Body  string // Markdown
}

// Report is everything make bench writes to REPORT.md.
type Report struct {
	Date     time.Time
	Machine  []string // "key: value" lines
	Settings []string
	Rows     []Row
	Sections []Section
	Commands []string
	Plots    []Plot
	WallTime time.Duration // of make bench, when known
	Errors   []string
}

// Plot is a PNG written next to the report.
type Plot struct{ File, Caption string }

func (r *Report) add(row Row) { r.Rows = append(r.Rows, row) }

func (r *Report) section(title, format string, args ...any) {
	r.Sections = append(r.Sections, Section{Title: title, Body: fmt.Sprintf(format, args...)})
}

func (r *Report) fail(scenario string, err error) {
	r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", scenario, err))
}

// render writes the report as Markdown.
func (r *Report) render(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# Vega Gateway benchmark report\n\n")
	b.WriteString("Written by `make bench` (`perf/bench`); do not edit by hand. Goals are SPEC §9;\n")
	b.WriteString("methods are `perf-anchors.md` M1–M8. Every figure is measured in this one run on this machine; comparisons with an anchor are side by side in that run.\n\n")
	b.WriteString("## Machine\n\n")
	for _, m := range r.Machine {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	fmt.Fprintf(&b, "- date: %s\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	if r.WallTime > 0 {
		fmt.Fprintf(&b, "- wall time of `make bench`: **%s** (about 15–18 min expected on 2 cores with the fleet scenarios; tools already built)\n", r.WallTime.Round(time.Second))
	}
	if len(r.Settings) > 0 {
		b.WriteString("\n## Settings\n\n")
		for _, s := range r.Settings {
			fmt.Fprintf(&b, "- %s\n", s)
		}
	}
	b.WriteString("\n## Summary\n\n")
	b.WriteString("| figure | goal (SPEC §9) | measured | ratio | met/missed |\n|---|---|---|---|---|\n")
	met, missed := 0, 0
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(row.Figure), cell(row.Goal), cell(row.Measured), cell(row.Ratio), row.Verdict)
		switch row.Verdict {
		case Met:
			met++
		case Missed:
			missed++
		}
	}
	fmt.Fprintf(&b, "\n%d met, %d missed.\n", met, missed)
	if len(r.Errors) > 0 {
		b.WriteString("\n## Scenarios that failed to run\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	if len(r.Plots) > 0 {
		b.WriteString("\n## Plots\n\n")
		for _, p := range r.Plots {
			fmt.Fprintf(&b, "![%s](%s)\n\n*%s*\n\n", p.Caption, p.File, p.Caption)
		}
	}
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n", s.Title, strings.TrimSpace(s.Body))
	}
	if len(r.Commands) > 0 {
		b.WriteString("\n## Commands\n\n```sh\n")
		for _, c := range r.Commands {
			b.WriteString(c + "\n")
		}
		b.WriteString("```\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cell keeps a table cell on one line.
func cell(s string) string {
	if s == "" {
		return "—"
	}
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// ratio formats a/b as "1.23×", or "—" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}
