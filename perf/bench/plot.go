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
	"adaptive": color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"fixed":    color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"none":     color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	"capacity": color.Black,
}

// series is one line of a plot: its legend name, its colour (the mode's
// when nil) and whether it is dashed.
type series struct {
	name   string
	color  color.Color
	dashed bool
	xy     plotter.XYs
}

// plotLines draws series on one pair of axes from y = 0, with headroom
// above the highest point; opts adjust the plot before it is saved.
func plotLines(title, xLabel, yLabel string, lines []series, file string, opts ...func(*plot.Plot)) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	yMax := 0.0
	for _, s := range lines {
		if len(s.xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return err
		}
		l.Color = s.color
		if l.Color == nil {
			l.Color = modeColors[s.name]
		}
		l.Width = vg.Points(1.5)
		if s.dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(s.name, l)
		for _, xy := range s.xy {
			yMax = max(yMax, xy.Y)
		}
	}
	if yMax == 0 {
		yMax = 1
	}
	p.Y.Min, p.Y.Max = 0, yMax*1.15
	p.Add(plotter.NewGrid())
	for _, o := range opts {
		o(p)
	}
	return p.Save(8*vg.Inch, 4.5*vg.Inch, file)
}

// legendLeft moves the legend to the top left corner.
func legendLeft(p *plot.Plot) { p.Legend.Left = true }

// savePlot writes a plot next to the report and lists it with its
// caption, or records why it could not.
func (d *driver) savePlot(file, caption string, draw func(path string) error) {
	if err := draw(filepath.Join(d.out, file)); err != nil {
		d.report.fail("plot "+file, err)
		return
	}
	d.report.Plots = append(d.report.Plots, Plot{file, caption})
}

// perSecond is a per-second series drawn at the middle of each second.
func perSecond(v []float64) plotter.XYs {
	xy := make(plotter.XYs, len(v))
	for i, y := range v {
		xy[i] = plotter.XY{X: float64(i) + 0.5, Y: y}
	}
	return xy
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
	d.savePlot(rateFile, "M6, 429 backend: PerfAdmin rate_limiters.ollama.current_rate per mode (sampled every 250 ms) and the backend's capacity, halved mid-run. The none mode (100000 req/s) is off the scale and not drawn.",
		func(path string) error { return plotLimiterRate(d.limiterRuns, path) })
	run := d.limiterRuns[0]
	half := run.duration.Seconds() / 2
	c0 := run.phase[0].capacity
	capAt := func(t float64) float64 {
		if t < half {
			return c0
		}
		return c0 / 2
	}
	d.savePlot(goodFile, "M6, 429 backend: OK answers per second received by ghz per limiter mode, against the backend's capacity.",
		func(path string) error { return plotGoodput(d.limiterRuns, capAt, path) })
}
