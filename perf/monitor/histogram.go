package monitor

import (
	"math"
	"runtime/metrics"
)

// quantile returns the q-quantile (q in [0, 1], clamped) of h, in h's unit.
//
// h.Counts[i] values fell in [h.Buckets[i], h.Buckets[i+1]). The value of
// rank q·total is interpolated linearly inside its bucket, as if the bucket's
// values were spread evenly; q = 1 is the upper boundary of the highest
// non-empty bucket and q = 0 the lower boundary of the lowest. An infinite
// edge cannot be interpolated: a bucket (-Inf, b) answers b and a bucket
// [a, +Inf) answers a. An empty or nil histogram answers 0.
func quantile(h *metrics.Float64Histogram, q float64) float64 {
	if h == nil || len(h.Buckets) != len(h.Counts)+1 {
		return 0
	}
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	switch {
	case !(q > 0): // also NaN
		q = 0
	case q > 1:
		q = 1
	}
	rank := q * float64(total)

	var below uint64 // values in the buckets before i
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if float64(below+c) < rank {
			below += c
			continue
		}
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		switch {
		case math.IsInf(lo, -1) && math.IsInf(hi, 1):
			return 0
		case math.IsInf(lo, -1):
			return hi
		case math.IsInf(hi, 1):
			return lo
		}
		frac := (rank - float64(below)) / float64(c)
		return lo + (hi-lo)*frac
	}
	return 0 // not reached: the last non-empty bucket always holds rank
}
