package integrations

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps an upstream's Retry-After so that a buggy or hostile
// value cannot park the outbox, or hold every call to a backend, for days.
const MaxRetryAfter = time.Hour

// RetryAfter reads a Retry-After header: delay-seconds or an HTTP-date
// (RFC 9110 10.2.3). Absent, malformed or past values give 0; values are
// capped at MaxRetryAfter.
func RetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter // all digits, so only overflow fails
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d < 0 {
		return 0
	}
	return min(d.Round(time.Second), MaxRetryAfter)
}
