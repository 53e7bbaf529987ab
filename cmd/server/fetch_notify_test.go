package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

func TestFetchAllowed(t *testing.T) {
	web := newFakeWeb(t)
	g := startGateway(t, map[string]string{"VEGA_FETCH_ALLOW": "127.0.0.1/32"})
	ctx := ctxTimeout(t, 10*time.Second)

	resp, err := g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + "/page"})
	require.NoError(t, err)
	assert.Equal(t, int32(200), resp.GetStatusCode())
	assert.Equal(t, "<!DOCTYPE html><html><body>hello from the fake web</body></html>", string(resp.GetBody()))
	assert.Equal(t, "text/html; charset=utf-8", resp.GetContentType())
	assert.Equal(t, web.URL+"/page", resp.GetFinalUrl())
	assert.Equal(t, "yes", resp.GetHeaders()["X-Custom"])
	assert.NotContains(t, resp.GetHeaders(), "Set-Cookie", "cookies stay with the gateway")
	assert.False(t, resp.GetTruncated())

	resp, err = g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + "/big", MaxBytes: 1000})
	require.NoError(t, err)
	assert.Len(t, resp.GetBody(), 1000)
	assert.True(t, resp.GetTruncated())

	// Bodies are bytes: invalid UTF-8 travels intact.
	resp, err = g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + "/binary"})
	require.NoError(t, err)
	assert.Equal(t, []byte{0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28}, resp.GetBody())

	// An upstream 404 is a successful fetch of a 404.
	resp, err = g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + "/missing", Method: "HEAD"})
	require.NoError(t, err)
	assert.Equal(t, int32(404), resp.GetStatusCode())
	assert.Empty(t, resp.GetBody())

	_, err = g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + "/page", Headers: map[string]string{"Accept": "text/html"}})
	require.NoError(t, err)
}

func TestFetchBadInput(t *testing.T) {
	web := newFakeWeb(t)
	g := startGateway(t, map[string]string{"VEGA_FETCH_ALLOW": "127.0.0.1/32"})
	ctx := ctxTimeout(t, 10*time.Second)
	cases := map[string]*vegav1.FetchRequest{
		"no url":           {},
		"POST":             {Url: web.URL + "/page", Method: "POST"},
		"auth header":      {Url: web.URL + "/page", Headers: map[string]string{"Authorization": "Bearer x"}},
		"cookie header":    {Url: web.URL + "/page", Headers: map[string]string{"Cookie": "a=b"}},
		"negative size":    {Url: web.URL + "/page", MaxBytes: -1},
		"negative timeout": {Url: web.URL + "/page", Timeout: durationpb.New(-time.Second)},
		"userinfo":         {Url: strings.Replace(web.URL, "http://", "http://user:pw@", 1) + "/page"},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := g.fetch().Fetch(ctx, req)
			requireCode(t, err, codes.InvalidArgument)
		})
	}
	assert.Equal(t, int64(0), web.hits.Load(), "bad input never reaches the upstream")
}

func TestFetchSSRFRefused(t *testing.T) {
	web := newFakeWeb(t)
	port := web.URL[strings.LastIndexByte(web.URL, ':')+1:]
	g := startGateway(t, nil) // no allow-list: the guard is fully on
	ctx := ctxTimeout(t, 20*time.Second)
	urls := []string{
		"http://127.0.0.1:" + port + "/page",
		"http://localhost:" + port + "/page", // a name that resolves to loopback
		"http://[::1]:" + port + "/page",
		"http://[::ffff:127.0.0.1]:" + port + "/page",
		"http://0.0.0.0:" + port + "/page",
		"http://2130706433:" + port + "/page", // 127.0.0.1 as a decimal
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1/",
		"http://[fd00::1]/",
		"file:///etc/passwd",
		"gopher://127.0.0.1:" + port + "/",
		"ftp://127.0.0.1/",
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			_, err := g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: u})
			requireCode(t, err, codes.PermissionDenied)
		})
	}
	assert.Equal(t, int64(0), web.hits.Load(), "no refused fetch reached the server")
}

func TestFetchRedirectToPrivateRefused(t *testing.T) {
	web := newFakeWeb(t)
	// 127.0.0.1 is allowed (a trusted internal host); where it redirects is not.
	g := startGateway(t, map[string]string{"VEGA_FETCH_ALLOW": "127.0.0.1/32"})
	ctx := ctxTimeout(t, 10*time.Second)
	for _, path := range []string{"/to-private", "/to-metadata"} {
		_, err := g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + path})
		requireCode(t, err, codes.PermissionDenied)
	}
	assert.Equal(t, int64(2), web.hits.Load(), "only the redirecting hops were served")
}

func TestNotifySlack(t *testing.T) {
	slack := newFakeSlack(t)
	secret := "/services/T000/B000/XXXXSECRETXXXX"
	g := startGateway(t, map[string]string{"SLACK_WEBHOOK_URL": slack.URL + secret, "VEGA_NOTIFY_RATE": "1000", "VEGA_NOTIFY_BURST": "100"})
	ctx := ctxTimeout(t, 20*time.Second)

	resp, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "deploy finished"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, resp.GetStatus())
	assert.Len(t, resp.GetId(), 32)
	assert.Equal(t, int32(1), resp.GetAttempts())
	assert.Equal(t, 1, slack.count("deploy finished"))

	// Never coalesced: 20 identical notifications are 20 messages.
	errs := make(chan error, 20)
	for range 20 {
		go func() {
			resp, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "same text"})
			if err == nil && resp.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
				err = fmt.Errorf("status %v", resp.GetStatus())
			}
			errs <- err
		}()
	}
	for range 20 {
		require.NoError(t, <-errs)
	}
	assert.Equal(t, 20, slack.count("same text"))

	payload, err := structpb.NewStruct(map[string]any{"username": "vega-bot", "blocks": []any{map[string]any{"type": "divider"}}})
	require.NoError(t, err)
	_, err = g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "with blocks", Payload: payload})
	require.NoError(t, err)
	last := slack.last()
	assert.Equal(t, "with blocks", last["text"])
	assert.Equal(t, "vega-bot", last["username"])
	assert.Len(t, last["blocks"], 1)

	// A permanent refusal is a dead letter: FAILED with the reason.
	resp, err = g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "fail-404"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_FAILED, resp.GetStatus())
	assert.Contains(t, resp.GetLastError(), "404")
	assert.NotContains(t, resp.GetLastError(), "SECRET")

	// A retryable failure (a 500 is TestNotifyIdempotency's): QUEUED before
	// the caller's deadline, with the reason.
	for text, want := range map[string]string{"fail-429": "429"} {
		short := ctxTimeout(t, time.Second)
		start := time.Now()
		resp, err := g.notify().Notify(short, &vegav1.NotifyRequest{Channel: "slack", Text: text})
		require.NoError(t, err, text)
		assert.Less(t, time.Since(start), time.Second, "answered before the deadline")
		assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, resp.GetStatus(), text)
		assert.Contains(t, resp.GetLastError(), want)
		assert.NotContains(t, resp.GetLastError(), "SECRET")
		got, err := g.notify().GetNotification(ctx, &vegav1.GetNotificationRequest{Id: resp.GetId()})
		require.NoError(t, err)
		assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, got.GetStatus())
		assert.NotNil(t, got.GetCreateTime())
	}
	assert.NotContains(t, g.logs.String(), "SECRET", "the webhook path never reaches the logs")
}

// A Notify whose channel is paused (here by a receiver's Retry-After: 30)
// answers QUEUED at once instead of waiting out VEGA_NOTIFY_MAX_WAIT for a
// delivery that cannot come: the one that met the 429 within a pause check,
// the next ones at once.
func TestNotifyAnswersQueuedAtOnceWhileTheChannelIsPaused(t *testing.T) {
	slack := newFakeSlack(t)
	g := startGateway(t, map[string]string{"SLACK_WEBHOOK_URL": slack.URL + "/services/SECRET", "VEGA_NOTIFY_MAX_WAIT": "5s"})
	ctx := ctxTimeout(t, 20*time.Second)
	start := time.Now()
	resp, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "fail-429-long"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, resp.GetStatus())
	assert.Less(t, time.Since(start), 2*time.Second, "not the whole 5 s")

	start = time.Now()
	resp, err = g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "after the 429"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, resp.GetStatus())
	assert.Less(t, time.Since(start), 300*time.Millisecond, "at once")
}

func TestNotifyIdempotency(t *testing.T) {
	slack := newFakeSlack(t)
	g := startGateway(t, map[string]string{"SLACK_WEBHOOK_URL": slack.URL + "/hook"})
	ctx := ctxTimeout(t, 10*time.Second)

	first, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "once", IdempotencyKey: "k1"})
	require.NoError(t, err)
	second, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "once", IdempotencyKey: "k1"})
	require.NoError(t, err)
	assert.Equal(t, first.GetId(), second.GetId(), "the first result comes back")
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, second.GetStatus())
	assert.Equal(t, 1, slack.count("once"), "no second message")

	_, err = g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "different", IdempotencyKey: "k1"})
	requireCode(t, err, codes.FailedPrecondition)
	assert.Equal(t, 0, slack.count("different"))

	// A notification still being retried: the repeat gets the same id and
	// records nothing new.
	q1, err := g.notify().Notify(ctxTimeout(t, time.Second), &vegav1.NotifyRequest{Channel: "slack", Text: "fail-500", IdempotencyKey: "k2"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, q1.GetStatus())
	q2, err := g.notify().Notify(ctxTimeout(t, time.Second), &vegav1.NotifyRequest{Channel: "slack", Text: "fail-500", IdempotencyKey: "k2"})
	require.NoError(t, err)
	assert.Equal(t, q1.GetId(), q2.GetId())

	_, err = g.notify().GetNotification(ctx, &vegav1.GetNotificationRequest{Id: "0000000000000000ffffffffffffffff"})
	requireCode(t, err, codes.NotFound)
	_, err = g.notify().GetNotification(ctx, &vegav1.GetNotificationRequest{})
	requireCode(t, err, codes.InvalidArgument)
}

func TestNotifyWebhookAndBadInput(t *testing.T) {
	hook := newFakeSlack(t) // records JSON bodies; answers "ok" (any 2xx is success for webhooks)
	down := newFakeSlack(t)
	down.Close()
	g := startGateway(t, map[string]string{"VEGA_WEBHOOK_URL": hook.URL, "SLACK_WEBHOOK_URL": down.URL + "/services/SECRET"})
	ctx := ctxTimeout(t, 10*time.Second)

	payload, err := structpb.NewStruct(map[string]any{"severity": "high"})
	require.NoError(t, err)
	resp, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "disk full", Payload: payload})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, resp.GetStatus())
	last := hook.last()
	assert.Equal(t, "disk full", last["text"])
	assert.Equal(t, map[string]any{"severity": "high"}, last["payload"])

	// The receiver is down: accepted and queued, the reason says why.
	resp, err = g.notify().Notify(ctxTimeout(t, time.Second), &vegav1.NotifyRequest{Channel: "slack", Text: "x"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, resp.GetStatus())
	assert.Contains(t, resp.GetLastError(), "unreachable")
	assert.NotContains(t, resp.GetLastError(), "SECRET")
	assert.NotContains(t, resp.GetLastError(), "127.0.0.1")

	for name, req := range map[string]*vegav1.NotifyRequest{
		"no channel":      {Text: "x"},
		"unknown channel": {Channel: "pager", Text: "x"},
		"empty":           {Channel: "webhook"},
		"long key":        {Channel: "webhook", Text: "x", IdempotencyKey: strings.Repeat("k", 300)},
		"NUL in key":      {Channel: "webhook", Text: "x", IdempotencyKey: "k\x00"},
		"long text":       {Channel: "webhook", Text: strings.Repeat("é", 40001)},
	} {
		_, err := g.notify().Notify(ctx, req)
		st := requireCode(t, err, codes.InvalidArgument)
		if name == "unknown channel" {
			assert.Contains(t, st.Message(), "slack, webhook", "lists the configured channels")
		}
	}
	assert.Len(t, hook.received, 1, "bad input sent nothing")
}

func TestAdminAuth(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_ADMIN_API_KEY": "admin-key-123"})
	ctx := ctxTimeout(t, 10*time.Second)

	_, err := g.admin().GetStats(ctx, &vegav1.GetStatsRequest{})
	requireCode(t, err, codes.Unauthenticated)
	_, err = g.admin().GetStats(withKey(ctx, "admin-key-124"), &vegav1.GetStatsRequest{})
	requireCode(t, err, codes.Unauthenticated)
	_, err = g.admin().GetStats(withKey(ctx, "admin-key-1234567"), &vegav1.GetStatsRequest{})
	requireCode(t, err, codes.Unauthenticated)
	stream, err := g.admin().WatchStats(ctx, &vegav1.WatchStatsRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireCode(t, err, codes.Unauthenticated)

	// The data path is open when no client keys are configured.
	_, err = g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
	require.NoError(t, err)

	resp, err := g.admin().GetStats(withKey(ctx, "admin-key-123"), &vegav1.GetStatsRequest{})
	require.NoError(t, err)
	st := resp.GetStats()
	assert.Positive(t, st.GetRuntime().GetGoroutines())
	assert.NotEmpty(t, st.GetRuntime().GetGoVersion())
	require.NotNil(t, st.GetIntegrations())
	var sim *vegav1.BackendHealth
	for _, b := range st.GetIntegrations().GetBackends() {
		if b.GetName() == "sim" {
			sim = b
		}
	}
	require.NotNil(t, sim)
	assert.Equal(t, int64(1), sim.GetCalls())
	assert.NotNil(t, sim.GetLastSuccess())

	only, err := g.admin().GetStats(withKey(ctx, "admin-key-123"), &vegav1.GetStatsRequest{
		Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_RUNTIME},
	})
	require.NoError(t, err)
	assert.NotNil(t, only.GetStats().GetRuntime())
	assert.Nil(t, only.GetStats().GetIntegrations(), "sections not asked for stay unset")

	_, err = g.admin().ResetStats(withKey(ctx, "admin-key-123"), &vegav1.ResetStatsRequest{})
	require.NoError(t, err)
	resp, err = g.admin().GetStats(withKey(ctx, "admin-key-123"), &vegav1.GetStatsRequest{})
	require.NoError(t, err)
	for _, b := range resp.GetStats().GetIntegrations().GetBackends() {
		assert.Zero(t, b.GetCalls(), b.GetName())
	}

	watch, err := g.admin().WatchStats(withKey(ctx, "admin-key-123"), &vegav1.WatchStatsRequest{Interval: durationpb.New(100 * time.Millisecond)})
	require.NoError(t, err)
	var times []time.Time
	for range 3 {
		snap, err := watch.Recv()
		require.NoError(t, err)
		times = append(times, snap.GetStats().GetTime().AsTime())
	}
	assert.True(t, times[0].Before(times[1]) && times[1].Before(times[2]), "fresh snapshots: %v", times)

	_, err = g.admin().WatchStats(withKey(ctx, "admin-key-123"), &vegav1.WatchStatsRequest{Interval: durationpb.New(time.Millisecond)})
	require.NoError(t, err) // the error arrives on Recv
}

func TestAdminDisabledWithoutKey(t *testing.T) {
	g := startGateway(t, nil)
	_, err := g.admin().GetStats(withKey(ctxTimeout(t, 5*time.Second), "anything"), &vegav1.GetStatsRequest{})
	st := requireCode(t, err, codes.PermissionDenied)
	assert.Contains(t, st.Message(), "VEGA_ADMIN_API_KEY")
}

func TestClientKeys(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_API_KEYS": "alpha=team-a, beta"})
	ctx := ctxTimeout(t, 10*time.Second)
	_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
	requireCode(t, err, codes.Unauthenticated)
	_, err = g.generate().Generate(withKey(ctx, "gamma"), &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
	requireCode(t, err, codes.Unauthenticated)
	for _, key := range []string{"alpha", "beta"} {
		_, err = g.generate().Generate(withKey(ctx, key), &vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
		require.NoError(t, err, key)
	}
	stream, err := g.generate().GenerateStream(ctx, &vegav1.GenerateStreamRequest{Model: "sim", Prompt: "hi"})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireCode(t, err, codes.Unauthenticated)
	// A client key is not an admin key.
	_, err = g.admin().GetStats(withKey(ctx, "alpha"), &vegav1.GetStatsRequest{})
	requireCode(t, err, codes.PermissionDenied)
}

// With client keys on, reflection (what grpcurl lists and describes with)
// takes a client key or the admin key: an operator who holds only the
// admin key can still use grpcurl against PerfAdmin.
func TestReflectionTakesAClientOrTheAdminKey(t *testing.T) {
	g := startGateway(t, map[string]string{"VEGA_API_KEYS": "alpha=team-a", "VEGA_ADMIN_API_KEY": "admin-secret"})
	ctx := ctxTimeout(t, 10*time.Second)
	list := func(ctx context.Context) error {
		stream, err := reflectionpb.NewServerReflectionClient(g.conn).ServerReflectionInfo(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	requireCode(t, list(ctx), codes.Unauthenticated)
	requireCode(t, list(withKey(ctx, "wrong")), codes.Unauthenticated)
	require.NoError(t, list(withKey(ctx, "alpha")))
	require.NoError(t, list(withKey(ctx, "admin-secret")))
}

func TestBadConfigNamesTheKey(t *testing.T) {
	cases := map[string]map[string]string{
		"VEGA_GRPC_ADDR":             {"VEGA_GRPC_ADDR": "nonsense"},
		"VEGA_OLLAMA_URL":            {"VEGA_OLLAMA_URL": "ftp://x"},
		"SLACK_WEBHOOK_URL":          {"SLACK_WEBHOOK_URL": "not a url"},
		"COALESCE_CACHE_TTL":         {"COALESCE_CACHE_TTL": "soon"},
		"MAX_CONNECTIONS_PER_HOST":   {"MAX_CONNECTIONS_PER_HOST": "0"},
		"MAX_TOTAL_CONNECTIONS":      {"MAX_TOTAL_CONNECTIONS": "5"},
		"INITIAL_RATE_LIMIT":         {"INITIAL_RATE_LIMIT": "500"},
		"MIN_RATE_LIMIT":             {"MIN_RATE_LIMIT": "x"},
		"REDIS_URL":                  {"REDIS_URL": "localhost:6379"},
		"VEGA_LOG_LEVEL":             {"VEGA_LOG_LEVEL": "loud"},
		"VEGA_TLS_CERT":              {"VEGA_TLS_CERT": "/nope.pem"},
		"VEGA_OUTBOX_BATCH_SIZE":     {"VEGA_OUTBOX_BATCH_SIZE": "0"},
		"VEGA_OUTBOX_FLUSH_INTERVAL": {"VEGA_OUTBOX_FLUSH_INTERVAL": "5s"},
		"VEGA_NOTIFY_RATE":           {"VEGA_NOTIFY_RATE": "-1"},
		"VEGA_NOTIFY_BACKOFF_BASE":   {"VEGA_NOTIFY_BACKOFF_BASE": "10m"},
		"VEGA_IDEMPOTENCY_RETENTION": {"VEGA_IDEMPOTENCY_RETENTION": "0s"},
	}
	for key, env := range cases {
		t.Run(key, func(t *testing.T) {
			_, err := LoadConfig("", func(k string) string { return env[k] })
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), key), "error %q should start with %s", err, key)
			assert.NotContains(t, err.Error(), "\n", "one line")
		})
	}
	_, err := LoadConfig("", func(k string) string {
		return map[string]string{"SLACK_WEBHOOK_URL": "hooks.slack.com/services/SECRET"}[k]
	})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "SECRET")
}

func TestConfigFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/vega.yaml"
	writeFile(t, path, `
grpc_addr: "127.0.0.1:6000"
llm:
  backends:
    - {name: local, type: ollama, url: "http://127.0.0.1:11434"}
  models: {llama3: local}
cache: {generate_ttl: 10s}
`)
	cfg, err := LoadConfig(path, func(k string) string { return map[string]string{"COALESCE_CACHE_TTL": "42"}[k] })
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:6000", cfg.GRPCAddr)
	assert.Equal(t, "local", cfg.LLM.DefaultBackend)
	assert.Equal(t, 42*time.Second, cfg.Cache.GenerateTTL, "env overrides the file")
	assert.Equal(t, 60*time.Second, cfg.Cache.FetchTTL, "default kept")

	// An env URL replaces the URL of the file's entry of that name, not
	// the rest of it (pacing, API key).
	writeFile(t, path, `
llm:
  backends:
    - {name: openai, type: openai, url: "http://127.0.0.1:1/v1", api_key: sk-file}
notify:
  channels:
    - {name: slack, type: slack, url: "https://hooks.example/old", rate: 2, burst: 5}
`)
	env := map[string]string{"VEGA_OPENAI_BASE_URL": "http://127.0.0.1:2/v1", "SLACK_WEBHOOK_URL": "https://hooks.example/new"}
	cfg, err = LoadConfig(path, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, []BackendConfig{{Name: "openai", Type: "openai", URL: "http://127.0.0.1:2/v1", APIKey: "sk-file"}}, cfg.LLM.Backends)
	assert.Equal(t, []ChannelConfig{{Name: "slack", Type: "slack", URL: "https://hooks.example/new", Rate: 2, Burst: 5}}, cfg.Notify.Channels)

	writeFile(t, path, "grpc_adr: ':1'\n")
	_, err = LoadConfig(path, func(string) string { return "" })
	require.ErrorContains(t, err, "grpc_adr")
}

func TestRunPrintsOneLineOnBadConfig(t *testing.T) {
	var stderr syncBuffer
	err := run(nil, func(k string) string { return map[string]string{"MAX_RATE_LIMIT": "0.5"}[k] }, &stderr)
	require.Error(t, err)
	assert.Equal(t, "MAX_RATE_LIMIT: must be at least MIN_RATE_LIMIT", err.Error())
}
