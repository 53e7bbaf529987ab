package outbox

import (
	"testing"
	"time"
)

func TestBackoffStaysWithinItsBounds(t *testing.T) {
	for _, tc := range []struct {
		base, limit time.Duration
		attempt     int
		want        time.Duration // before jitter: the result is in [want/2, want]
	}{
		{time.Second, 5 * time.Minute, 1, time.Second},
		{time.Second, 5 * time.Minute, 4, 8 * time.Second},
		{time.Second, 5 * time.Minute, 40, 5 * time.Minute},
		{time.Minute, time.Hour, 31, time.Hour}, // base << 30 would overflow
		{10 * time.Second, 10 * time.Second, 1000, 10 * time.Second},
	} {
		for range 50 {
			if got := backoff(tc.base, tc.limit, tc.attempt); got < tc.want/2 || got > tc.want {
				t.Fatalf("backoff(%v, %v, %d) = %v, want in [%v, %v]", tc.base, tc.limit, tc.attempt, got, tc.want/2, tc.want)
			}
		}
	}
}
