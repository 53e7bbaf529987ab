package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// chromiumPath is Debian's Chromium, which .ci/run installs when missing.
const chromiumPath = "/usr/bin/chromium"

// browserEvents is what the page did that the test checks at the end.
type browserEvents struct {
	mu       sync.Mutex
	errors   []string // console.error calls, uncaught exceptions, browser log errors
	requests []string // every URL the page asked for
}

func (b *browserEvents) listen(ev any) { // runs in the tab's loop: quick, no commands
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, fmt.Sprint(a.Value, a.Description))
			}
			b.errors = append(b.errors, "console.error: "+strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		b.errors = append(b.errors, "exception: "+ev.ExceptionDetails.Text+" "+ev.ExceptionDetails.URL)
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			b.errors = append(b.errors, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
		}
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	}
}

func (b *browserEvents) snapshot() (errs, reqs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...), append([]string(nil), b.requests...)
}

// newBrowser starts a headless Chromium with a fresh profile and returns a
// tab. Without Chromium the test is skipped on a developer's machine and
// fails in CI (CI=true), where .ci/run installs it.
func newBrowser(t *testing.T, events *browserEvents) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing; .ci/run installs it (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("%s is missing (apt-get install chromium); CI runs this test", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1700),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(events.listen))
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	require.NoError(t, chromedp.Do(ctx)) // start the browser, attach the tab
	_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
	require.NoError(t, err)
	_, err = chromedp.Call(ctx, log.Enable, struct{}{})
	require.NoError(t, err)
	return ctx
}

// waitFor polls a JavaScript condition in the page.
func waitFor(t *testing.T, ctx context.Context, what, js string, within time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		shot(t, ctx)
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v\npage text:\n%s", what, err, html)
	}
}

// shot saves a screenshot of a failing page where the test log says.
func shot(t *testing.T, ctx context.Context) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return
	}
	path := filepath.Join(os.TempDir(), "vega-dashboard-"+strings.ReplaceAll(t.Name(), "/", "_")+".png")
	if os.WriteFile(path, buf, 0o644) == nil {
		t.Logf("screenshot: %s", path)
	}
}

// TestDashboardInABrowser drives the page in Chromium: it asks for the
// key, refuses a wrong one with a clear message, plots figures that move
// while traffic flows, shows a breaker forced open from its own form, and
// neither logs an error nor asks anything of another host.
//
// VEGA_DASHBOARD_SCREENSHOT=docs/dashboard.png saves the page at the end
// (how the README's picture is made).
func TestDashboardInABrowser(t *testing.T) {
	ollama := newFakeOllama(t)
	slack := newFakeSlack(t)
	g := startGateway(t, map[string]string{
		"VEGA_ADMIN_API_KEY": "dash-key", "VEGA_OLLAMA_URL": ollama.URL, "SLACK_WEBHOOK_URL": slack.URL,
		"INITIAL_RATE_LIMIT": "50", "MAX_RATE_LIMIT": "100",
	})
	events := &browserEvents{}
	ctx := newBrowser(t, events) // stopped before the gateway (cleanups run last first)
	base := g.baseURL()

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	waitFor(t, ctx, "the key form", `!document.getElementById("keyform").hidden && document.getElementById("board").hidden`, 10*time.Second)

	// A wrong key: a clear message, the form again, nothing kept.
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#key", "not-the-key"), chromedp.Click("#keyform button")))
	waitFor(t, ctx, "the wrong-key message",
		`!document.getElementById("banner").hidden && document.getElementById("banner").textContent.includes("Wrong admin key") && !document.getElementById("keyform").hidden`, 15*time.Second)
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("vega.adminKey") || ""`))
	require.NoError(t, err)
	assert.Empty(t, stored, "a refused key is forgotten")

	// Traffic while the page watches: cached repeats, and every tenth tick
	// a herd of five identical calls (one backend call, four coalesced).
	trafficCtx, stopTraffic := context.WithCancel(context.Background())
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-trafficCtx.Done():
				return
			case <-tick.C:
			}
			cctx, cancel := context.WithTimeout(trafficCtx, 5*time.Second)
			if i%40 == 5 {
				_, _ = g.notify().Notify(cctx, &vegav1.NotifyRequest{Channel: "slack", Text: fmt.Sprintf("note %d", i)})
			}
			if i%10 == 0 {
				var herd sync.WaitGroup
				for range 5 {
					herd.Go(func() {
						_, _ = g.generate().Generate(cctx, &vegav1.GenerateRequest{Model: "wait-150", Prompt: fmt.Sprintf("herd %d", i)})
					})
				}
				herd.Wait()
			} else {
				_, _ = g.generate().Generate(cctx, &vegav1.GenerateRequest{Model: "m", Prompt: fmt.Sprintf("p%d", i%7), Options: &vegav1.SamplingOptions{Temperature: zero()}})
			}
			cancel()
			sent.Add(1)
		}
	}()
	t.Cleanup(func() { stopTraffic(); wg.Wait() })

	// The right key: live, and the figures move.
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#key", "dash-key"), chromedp.Click("#keyform button")))
	waitFor(t, ctx, "live", `document.getElementById("conn").textContent === "live" && !document.getElementById("board").hidden`, 15*time.Second)
	stored, err = chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("vega.adminKey") || ""`))
	require.NoError(t, err)
	assert.Equal(t, "dash-key", stored)
	callsPerSecond := `Number(document.querySelector("#fig-traffic .figure b").textContent)`
	waitFor(t, ctx, "calls per second above 0", callsPerSecond+` > 0`, 15*time.Second)
	waitFor(t, ctx, "cache hits plotted", `Number(document.querySelectorAll("#fig-traffic .figure b")[2].textContent) > 0`, 15*time.Second)
	waitFor(t, ctx, "coalesced calls plotted", `series.coalesced.some((v) => v > 0) && series.backend.some((v) => v > 0)`, 15*time.Second)
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("uptime").textContent`))
	require.NoError(t, err)
	waitFor(t, ctx, "a new snapshot", fmt.Sprintf(`document.getElementById("uptime").textContent !== %q`, first), 5*time.Second)
	waitFor(t, ctx, "the ollama breaker and limiter listed",
		`document.querySelector('tr[data-breaker="ollama"]') !== null && document.querySelector("#limiters tbody").textContent.includes("ollama")`, 15*time.Second)
	assert.Positive(t, sent.Load())

	// Force the ollama breaker open from the page: confirm, then it shows open.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SetValue("#breaker-key", "ollama"),
		chromedp.SetValue("#breaker-mode", "BREAKER_MODE_FORCE_OPEN"),
		chromedp.Click("#breaker-form button"),
	))
	waitFor(t, ctx, "the confirmation", `!document.getElementById("confirm").hidden && document.getElementById("confirm-text").textContent.includes("ollama")`, 5*time.Second)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#confirm-yes")))
	waitFor(t, ctx, "the breaker shown open",
		`document.querySelector('tr[data-breaker="ollama"]').dataset.state === "open" && document.getElementById("transitions").textContent.includes("ollama: closed → open")`, 15*time.Second)

	// The outbox panel lists the channel; redrive its dead letters (none).
	waitFor(t, ctx, "the slack channel in the outbox panel", `document.querySelector("#outbox tbody").textContent.startsWith("slack")`, 10*time.Second)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#outbox tbody button")))
	waitFor(t, ctx, "the redrive confirmation", `!document.getElementById("confirm").hidden && document.getElementById("confirm-text").textContent.includes("slack")`, 5*time.Second)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#confirm-yes")))
	waitFor(t, ctx, "the redrive result", `document.getElementById("banner").textContent === "0 notifications queued again on slack."`, 10*time.Second)

	// Purge a prefix from the page: confirm, then the answer is shown.
	require.NoError(t, chromedp.Do(ctx, chromedp.SetValue("#purge-prefix", "generate/"), chromedp.Click("#purge button")))
	waitFor(t, ctx, "the purge confirmation", `!document.getElementById("confirm").hidden && document.getElementById("confirm-text").textContent.includes("generate/")`, 5*time.Second)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#confirm-yes")))
	waitFor(t, ctx, "the purge result", `/^[1-9][0-9]* cached answers purged/.test(document.getElementById("banner").textContent)`, 10*time.Second)

	if path := os.Getenv("VEGA_DASHBOARD_SCREENSHOT"); path != "" {
		// Back to auto, so the picture shows all the ways calls are served.
		require.NoError(t, chromedp.Do(ctx, chromedp.SetValue("#breaker-mode", "BREAKER_MODE_AUTO"), chromedp.Click("#breaker-form button")))
		waitFor(t, ctx, "the confirmation", `!document.getElementById("confirm").hidden`, 5*time.Second)
		require.NoError(t, chromedp.Do(ctx, chromedp.Click("#confirm-yes")))
		waitFor(t, ctx, "a minute of history", `series.total.length >= 60`, 75*time.Second)
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		if !filepath.IsAbs(path) {
			path = filepath.Join("..", "..", path) // relative to the repository root
		}
		require.NoError(t, os.WriteFile(path, buf, 0o644))
	}

	errs, reqs := events.snapshot()
	assert.Empty(t, errs, "the page logged errors")
	require.NotEmpty(t, reqs, "the listener saw the page's requests")
	own, err := url.Parse(base)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, r := range reqs {
		u, err := url.Parse(r)
		require.NoError(t, err)
		assert.Equal(t, own.Host, u.Host, "a request left the host: %s", r)
		seen[u.Path] = true
	}
	for _, p := range []string{"/", "/assets/app.js", "/assets/style.css", "/vega.v1.PerfAdminService/WatchStats", "/vega.v1.PerfAdminService/SetBreakerMode", "/vega.v1.PerfAdminService/PurgeCache", "/vega.v1.PerfAdminService/RedriveNotifications"} {
		assert.True(t, seen[p], "the page asked for %s: %v", p, seen)
	}
}
