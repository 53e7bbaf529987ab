package ratelimit_test

import (
	"context"
	"testing"

	"github.com/vega-gateway/vega/perf/ratelimit"
)

func newSet(t *testing.T, s ratelimit.Settings) *ratelimit.Set {
	t.Helper()
	set, err := ratelimit.NewSet(s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// acquire admits a call of tenant "" to key, failing the test if refused.
func acquire(t *testing.T, s *ratelimit.Set, key string) ratelimit.Permit {
	t.Helper()
	p, err := s.Acquire(context.Background(), key, "")
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return p
}

func statsOf(t *testing.T, s *ratelimit.Set, key string) ratelimit.Stats {
	t.Helper()
	for _, st := range s.Stats() {
		if st.Key == key {
			return st
		}
	}
	t.Fatalf("no limiter for %q", key)
	return ratelimit.Stats{}
}
