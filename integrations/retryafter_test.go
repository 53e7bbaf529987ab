package integrations

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"2", 2 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"3600", time.Hour},
		{"3601", MaxRetryAfter},
		{"99999999999999999999999", MaxRetryAfter},
		{"-1", 0},
		{"1.5", 0},
		{"soon", 0},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-30 * time.Second).Format(http.TimeFormat), 0},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), MaxRetryAfter},
		{"Friday, 02-Jan-26 15:04:35 GMT", 30 * time.Second}, // RFC 850
		{"Fri Jan  2 15:04:35 2026", 30 * time.Second},       // asctime
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, RetryAfter(tt.in, now))
		})
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "2", "120", "-1", "99999999999999999999", "Fri, 02 Jan 2026 15:04:35 GMT", "garbage"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d := RetryAfter(v, now)
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("RetryAfter(%q) = %v, outside [0, %v]", v, d, MaxRetryAfter)
		}
	})
}
