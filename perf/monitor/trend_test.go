package monitor_test

import (
	"math"
	"testing"

	"github.com/vega-gateway/vega/perf/monitor"
)

func TestSustained(t *testing.T) {
	tests := []struct {
		name string
		ys   []float64
		want bool
	}{
		{"linear leak", []float64{0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300}, true},
		{"leak with noise on top", []float64{0, 55, 40, 120, 95, 160, 150, 230, 230, 295, 300}, true},
		{"staircase of three steps", []float64{0, 0, 100, 100, 200, 200, 300, 300}, true},
		{"flat", []float64{500, 500, 500, 500, 500, 500}, false},
		{"noise around a level, last above first", []float64{500, 620, 480, 590, 450, 640, 470, 560, 490, 610}, false},
		{"spike in the middle", []float64{100, 100, 100, 900, 100, 100, 100}, false},
		{"spike at the end (a jump, not a trend)", []float64{100, 100, 100, 100, 100, 100, 900}, false},
		{"dip and recovery (pairs rule)", []float64{300, 250, 200, 150, 100, 50, 100, 150, 200, 250, 300, 350, 400}, false},
		{"steady but below the minimum", []float64{0, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90}, false},
		{"falling", []float64{300, 270, 240, 210, 180, 150}, false},
	}
	for _, tt := range tests {
		xs := make([]float64, len(tt.ys))
		for i := range xs {
			xs[i] = float64(i)
		}
		if got := monitor.Sustained(xs, tt.ys, 100); got != tt.want {
			t.Errorf("%s: sustained(%v) = %v; want %v", tt.name, tt.ys, got, tt.want)
		}
	}
}

func TestSlope(t *testing.T) {
	tests := []struct {
		xs, ys []float64
		want   float64
	}{
		{[]float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}, 2},
		{[]float64{0, 0.5, 1}, []float64{10, 10, 10}, 0},
		{[]float64{0, 1, 2, 3}, []float64{0, 2, 0, 2}, 0.4},
		{[]float64{5, 5, 5}, []float64{1, 2, 3}, 0}, // no spread in time
		{[]float64{1}, []float64{1}, 0},
	}
	for _, tt := range tests {
		if got := monitor.Slope(tt.xs, tt.ys); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("slope(%v, %v) = %v; want %v", tt.xs, tt.ys, got, tt.want)
		}
	}
}
