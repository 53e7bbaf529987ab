package main

import (
	"image/color"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

var modeColors = map[string]color.Color{
	"adaptive":         color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"fixed":            color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"none":             color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	"adaptive/wait30s": color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"fixed/wait30s":    color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	"none/wait30s":     color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	"capacity":         color.Black,
}

func line(p *plot.Plot, name string, xys plotter.XYs, dashed bool) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = modeColors[name]
	l.Width = vg.Points(1.5)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// plotLimiterRate draws each mode's limiter rate and the backend capacity
// over time.
func plotLimiterRate(runs []*limiterRun, file string) error {
	p := plot.New()
	p.Title.Text = "Limiter rate vs backend capacity (M6)"
	p.X.Label.Text = "seconds since overload started"
	p.Y.Label.Text = "requests/s"
	p.Legend.Top = true
	var capXY plotter.XYs
	yMax := 0.0
	for _, run := range runs {
		var xy plotter.XYs
		for _, s := range run.samples {
			rate := s.rate
			xy = append(xy, plotter.XY{X: s.t.Seconds(), Y: rate})
			if !strings.HasPrefix(run.mode, "none") {
				yMax = max(yMax, rate)
			}
		}
		if strings.HasPrefix(run.mode, "none") {
			continue // 100000 req/s: off the scale; said in the caption
		}
		if err := line(p, run.mode, xy, false); err != nil {
			return err
		}
	}
	if len(runs) > 0 {
		for _, s := range runs[0].samples {
			capXY = append(capXY, plotter.XY{X: s.t.Seconds(), Y: s.capacity})
			yMax = max(yMax, s.capacity)
		}
		if err := line(p, "capacity", capXY, true); err != nil {
			return err
		}
	}
	p.Y.Min, p.Y.Max = 0, yMax*1.15
	p.Add(plotter.NewGrid())
	return p.Save(8*vg.Inch, 4.5*vg.Inch, file)
}

// plotGoodput draws each mode's goodput per second and the capacity.
func plotGoodput(runs []*limiterRun, capacity func(t float64) float64, file string) error {
	p := plot.New()
	p.Title.Text = "Goodput per second by limiter mode (M6)"
	p.X.Label.Text = "seconds since overload started"
	p.Y.Label.Text = "OK answers/s"
	p.Legend.Top = true
	yMax := 0.0
	var capXY plotter.XYs
	for _, run := range runs {
		var xy plotter.XYs
		for i, g := range run.goodput {
			xy = append(xy, plotter.XY{X: float64(i) + 0.5, Y: g})
			yMax = max(yMax, g)
		}
		if err := line(p, run.mode, xy, false); err != nil {
			return err
		}
		if capXY == nil {
			for i := range run.goodput {
				c := capacity(float64(i) + 0.5)
				capXY = append(capXY, plotter.XY{X: float64(i) + 0.5, Y: c})
				yMax = max(yMax, c)
			}
		}
	}
	if capXY != nil {
		if err := line(p, "capacity", capXY, true); err != nil {
			return err
		}
	}
	p.Y.Min, p.Y.Max = 0, yMax*1.15
	p.Add(plotter.NewGrid())
	return p.Save(8*vg.Inch, 4.5*vg.Inch, file)
}

func (d *driver) plots() {
	if len(d.limiterRuns) == 0 {
		return
	}
	rateFile, goodFile := "limiter-rate.png", "limiter-goodput.png"
	if err := plotLimiterRate(d.limiterRuns, filepath.Join(d.out, rateFile)); err != nil {
		d.report.fail("plot "+rateFile, err)
	} else {
		d.report.Plots = append(d.report.Plots, Plot{rateFile, "PerfAdmin rate_limiters.ollama.current_rate per mode (sampled every 250 ms) and the backend's capacity, halved mid-run. The none modes (100000 req/s) are off the scale and not drawn."})
	}
	run := d.limiterRuns[0]
	half := run.duration.Seconds() / 2
	c0 := run.phase[0].capacity
	capAt := func(t float64) float64 {
		if t < half {
			return c0
		}
		return c0 / 2
	}
	for _, set := range []struct{ file, suffix, caption string }{
		{goodFile, "", "OK answers per second received by ghz per limiter mode, the gateway's default VEGA_RATE_LIMIT_MAX_WAIT, against the backend's capacity."},
		{"limiter-goodput-wait30s.png", "/wait30s", "The same with VEGA_RATE_LIMIT_MAX_WAIT=30s."},
	} {
		var runs []*limiterRun
		for _, r := range d.limiterRuns {
			if strings.HasSuffix(r.mode, "/wait30s") == (set.suffix != "") {
				runs = append(runs, r)
			}
		}
		if len(runs) == 0 {
			continue
		}
		if err := plotGoodput(runs, capAt, filepath.Join(d.out, set.file)); err != nil {
			d.report.fail("plot "+set.file, err)
		} else {
			d.report.Plots = append(d.report.Plots, Plot{set.file, set.caption})
		}
	}
}
