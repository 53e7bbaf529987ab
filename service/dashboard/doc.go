// Package dashboard is the gateway's live page at GET / on the HTTP port:
// one HTML file, one script and one style sheet, embedded in the binary
// (go:embed), so it works on an air-gapped host and `make run` needs only
// Go. The page fetches nothing from anywhere but its own origin, and says
// so to the browser: Content-Security-Policy default-src 'self'.
//
//	dashboard.Mount(mux) // GET /, GET /assets/…, GET /favicon.ico
//
// # What the page does
//
// It asks once for the admin key in a form on the page, keeps it in
// sessionStorage (this tab only, gone when the tab closes) and sends it as
// x-api-key. It opens one PerfAdminService/WatchStats stream over the
// Connect protocol (application/connect+json, read with a hand-written
// envelope reader: a flags byte, a 4-byte big-endian length, the JSON),
// plots each snapshot, and reconnects with a doubling backoff (1 s to
// 30 s) when the stream ends for any reason but a refused key; on
// unauthenticated or permission_denied it stops, forgets the key and says
// why. It pauses while the tab is hidden. One stream per page, because an
// HTTP/1.1 browser shares about six connections per origin across tabs.
//
// Panels: calls per second and how they were served (backend calls,
// cache hits, coalesced waiters, stale answers, counted from the deltas of
// the snapshot's counters), coalesce and cache hit ratios over the last
// interval, each circuit breaker's state with the transitions the page
// saw, each backend's limiter (rate, concurrency limit against calls in
// flight, queue length and delay, sheds by reason, tenants), outbound
// connection reuse, the notification outbox per channel (depth, oldest
// pending, deliveries per second, dead letters), runtime (goroutines,
// heap, GC pause) and the leak detector's verdict. Buttons call the admin
// actions that exist — SetBreakerMode, PurgeCache (by prefix) and
// RedriveNotifications — after a confirmation on the page, as Connect
// unary POSTs.
//
// # Why hand-drawn SVG, not a plotting library
//
// Every chart is a few polylines over the last 120 snapshots (two minutes
// at the default 1 s interval): at most a few hundred points per chart,
// redrawn once a second. That is a hundred lines of plain JavaScript
// building SVG elements, with no third-party code to vendor, audit,
// license or update, no npm step, and no build output to keep in sync with
// a lockfile. A library such as uPlot earns its 50 KB at thousands of
// points at 60 fps, zooming and cursors; this page needs none of those.
// Grafana (deploy/grafana) is there for long ranges and history.
package dashboard
