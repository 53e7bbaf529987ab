package promstats

import (
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// figures are the series read from one message type T, all with the same
// variable labels.
type figures[T any] struct {
	descs  *[]*prometheus.Desc // the collector's, to which add appends
	labels []string
	list   []figure[T]
}

// figure is one series family: its Desc, its type and how to read its value
// from a T. ok false means "no sample" (an unset timestamp).
type figure[T any] struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(T) (v float64, ok bool)
}

func newFigures[T any](descs *[]*prometheus.Desc, labels ...string) figures[T] {
	return figures[T]{descs: descs, labels: labels}
}

// add declares the family "vega_"+name.
func (f *figures[T]) add(typ prometheus.ValueType, name, help string, value func(T) (float64, bool)) {
	f.list = append(f.list, figure[T]{desc: newDesc(f.descs, name, help, f.labels...), typ: typ, value: value})
}

func (f *figures[T]) counter(name, help string, value func(T) float64) {
	f.add(prometheus.CounterValue, name, help, func(m T) (float64, bool) { return value(m), true })
}

func (f *figures[T]) gauge(name, help string, value func(T) float64) {
	f.add(prometheus.GaugeValue, name, help, func(m T) (float64, bool) { return value(m), true })
}

// timestamp declares a gauge of seconds since the Unix epoch, absent while
// the timestamp is unset.
func (f *figures[T]) timestamp(name, help string, value func(T) *timestamppb.Timestamp) {
	f.add(prometheus.GaugeValue, name, help, func(m T) (float64, bool) {
		ts := value(m)
		if ts == nil {
			return 0, false
		}
		return float64(ts.GetSeconds()) + float64(ts.GetNanos())/1e9, true
	})
}

// collect sends m's samples; labelValues match f.labels.
func (f *figures[T]) collect(ch chan<- prometheus.Metric, m T, labelValues ...string) {
	for _, fig := range f.list {
		if v, ok := fig.value(m); ok {
			ch <- prometheus.MustNewConstMetric(fig.desc, fig.typ, v, labelValues...)
		}
	}
}

func newDesc(descs *[]*prometheus.Desc, name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc("vega_"+name, help, labels, nil)
	*descs = append(*descs, d)
	return d
}

// seconds is d in seconds; an unset duration is 0.
func seconds(d *durationpb.Duration) float64 {
	return float64(d.GetSeconds()) + float64(d.GetNanos())/1e9
}

// ratio turns a PerfAdmin percentage (0-100) into a Prometheus ratio (0-1).
func ratio(percent float64) float64 { return percent / 100 }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
