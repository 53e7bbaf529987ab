package monitor

// The sustained-growth rule, explained in the package documentation: a
// series grew when it rose by the minimum, its slope is positive, at least
// steadyPairs of its pairs of samples are non-decreasing and no step is
// more than maxStepShare of the rise; and only a window of at least
// minSamples samples spanning half the Window is judged.
const (
	steadyPairs  = 0.8
	maxStepShare = 0.5
	minSamples   = 5
)

// sustained reports whether ys, sampled at xs, rose by at least minRise
// under the rule above. xs and ys have the same length, at least 2.
func sustained(xs, ys []float64, minRise float64) bool {
	n := len(ys)
	rise := ys[n-1] - ys[0]
	if rise <= 0 || rise < minRise || slope(xs, ys) <= 0 {
		return false
	}
	var up, pairs int
	for i := range n {
		if i > 0 && ys[i]-ys[i-1] > maxStepShare*rise {
			return false
		}
		for j := i + 1; j < n; j++ {
			pairs++
			if ys[j] >= ys[i] {
				up++
			}
		}
	}
	return float64(up) >= steadyPairs*float64(pairs)
}

// slope is the least-squares slope of ys over xs (0 when xs do not vary).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx, my = mx/n, my/n
	var sxy, sxx float64
	for i := range xs {
		dx := xs[i] - mx
		sxy += dx * (ys[i] - my)
		sxx += dx * dx
	}
	if sxx == 0 {
		return 0
	}
	return sxy / sxx
}
