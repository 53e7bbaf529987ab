package faults

// Rows I12–I14: keys, idempotency and tenants. The fetch, codec and size
// rows (I1–I11) are in i_fetch_test.go and i_codec_test.go, their helpers
// in i_helpers_test.go.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// withMD is ctx carrying exactly the given metadata pairs (key, value, …).
func withMD(ctx context.Context, kv ...string) context.Context {
	return metadata.NewOutgoingContext(ctx, metadata.Pairs(kv...))
}

func TestI12AdminKey(t *testing.T) {
	record(t, Row{ID: "I12",
		Did: "PerfAdmin GetStats with the admin key missing, empty, wrong (same length, other lengths, 1 byte, 4 KiB), a client key, the admin key " +
			"with a trailing space or in upper case, under other names (authorization, x_api_key) and twice (wrong first); the admin key under " +
			"X-Api-Key; the stream RPCs WatchStats and reflection without and with keys, Health.Watch without one; the same on the HTTP port; " +
			"a gateway without VEGA_ADMIN_API_KEY; then 4 × 300 interleaved GetStats with wrong keys of the right length (differing in the " +
			"first or the last byte), of 1 byte and of 64 bytes, timing each",
		MustHold: "every wrong or absent key UNAUTHENTICATED (HTTP 401), the right one accepted under any case of the name (HTTP/2 names are " +
			"lower case on the wire, HTTP/1.1 names case-insensitive); streams refused on their first message; reflection needs a client or the " +
			"admin key; health stays open (documented: load balancers); without an admin key PERMISSION_DENIED; no length-dependent timing: " +
			"the medians of the four wrong-key classes within 1 ms + 50% of each other"})
	g := startGateway(t, nil)
	admin := vegav1.NewPerfAdminServiceClient(g.Conn())
	getStats := func(ctx context.Context) error {
		_, err := admin.GetStats(ctx, &vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_RUNTIME}})
		return err
	}
	ctx := func() context.Context { return ctxFor(t, 20*time.Second) }
	wrongSame := "X" + adminKey[1:]
	refused := []struct {
		name string
		ctx  context.Context
	}{
		{"no key", ctx()},
		{"empty key", withMD(ctx(), "x-api-key", "")},
		{"wrong key, same length (first byte)", withMD(ctx(), "x-api-key", wrongSame)},
		{"wrong key, same length (last byte)", withMD(ctx(), "x-api-key", adminKey[:len(adminKey)-1]+"X")},
		{"prefix of the key", withMD(ctx(), "x-api-key", adminKey[:len(adminKey)-1])},
		{"key plus one byte", withMD(ctx(), "x-api-key", adminKey+"0")},
		{"1-byte key", withMD(ctx(), "x-api-key", "k")},
		{"4 KiB key", withMD(ctx(), "x-api-key", strings.Repeat("k", 4096))},
		{"a client key", withMD(ctx(), "x-api-key", keyA)},
		{"trailing space", withMD(ctx(), "x-api-key", adminKey+" ")},
		{"upper-case value", withMD(ctx(), "x-api-key", strings.ToUpper(adminKey))},
		{"authorization: Bearer", withMD(ctx(), "authorization", "Bearer "+adminKey)},
		{"x_api_key", withMD(ctx(), "x_api_key", adminKey)},
		{"two values, wrong first", withMD(ctx(), "x-api-key", wrongSame, "x-api-key", adminKey)},
	}
	var unary codeTally
	for _, r := range refused {
		if err := getStats(r.ctx); unary.add(err) != codes.Unauthenticated {
			t.Errorf("GetStats with %s: %v, want Unauthenticated", r.name, err)
		}
		if err := getStats(r.ctx); err != nil && strings.Contains(err.Error(), adminKey) {
			t.Errorf("the refusal echoes the key: %v", err)
		}
	}
	var accepted codeTally
	for _, name := range []string{"x-api-key", "X-Api-Key", "X-API-KEY"} {
		if err := getStats(withMD(ctx(), name, adminKey)); accepted.add(err) != codes.OK {
			t.Errorf("GetStats with the admin key under %q: %v", name, err)
		}
	}

	// Streams: the key is checked before the first message.
	var streams codeTally
	watch := func(c context.Context) error {
		s, err := admin.WatchStats(c, &vegav1.WatchStatsRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	for _, c := range []context.Context{ctx(), withMD(ctx(), "x-api-key", wrongSame), withMD(ctx(), "x-api-key", keyA)} {
		if err := watch(c); streams.add(err) != codes.Unauthenticated {
			t.Errorf("WatchStats: %v, want Unauthenticated", err)
		}
	}
	watchCtx, stopWatch := context.WithCancel(ctxWithAdmin(ctx()))
	if err := watch(watchCtx); streams.add(err) != codes.OK {
		t.Errorf("WatchStats with the admin key: %v", err)
	}
	stopWatch()
	reflect := func(c context.Context) error {
		s, err := reflectionpb.NewServerReflectionClient(g.Conn()).ServerReflectionInfo(c)
		if err != nil {
			return err
		}
		// A refused stream may end before the Send: Send then says io.EOF and
		// Recv has the status.
		_ = s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = s.Recv()
		_ = s.CloseSend()
		return err
	}
	var refl codeTally
	for _, c := range []context.Context{ctx(), withMD(ctx(), "x-api-key", wrongSame)} {
		if err := reflect(c); refl.add(err) != codes.Unauthenticated {
			t.Errorf("reflection without a valid key: %v, want Unauthenticated", err)
		}
	}
	for _, c := range []context.Context{ctxWithKey(ctx(), keyA), ctxWithAdmin(ctx())} {
		if err := reflect(c); refl.add(err) != codes.OK {
			t.Errorf("reflection with a client or the admin key: %v", err)
		}
	}
	hctx, stopHealth := context.WithCancel(ctx())
	hw, err := healthpb.NewHealthClient(g.Conn()).Watch(hctx, &healthpb.HealthCheckRequest{})
	var health string
	if err == nil {
		var m *healthpb.HealthCheckResponse
		m, err = hw.Recv()
		health = m.GetStatus().String()
	}
	stopHealth()
	if err != nil || health != "SERVING" {
		t.Errorf("Health.Watch without a key: %v %s (documented as open)", err, health)
	}

	// The HTTP port.
	httpCodes := map[string]int{}
	for _, h := range []struct {
		name, header, value string
		want                int
	}{
		{"none", "", "", 401},
		{"wrong", "x-api-key", wrongSame, 401},
		{"client key", "x-api-key", keyA, 401},
		{"authorization", "Authorization", "Bearer " + adminKey, 401},
		{"lower-case name", "x-api-key", adminKey, 200},
		{"upper-case name", "X-API-KEY", adminKey, 200},
	} {
		header := http.Header{"Content-Type": {"application/json"}}
		if h.header != "" {
			header[h.header] = []string{h.value} // the name exactly as written, on the wire
		}
		code := iPostHTTP(t, g, "/vega.v1.PerfAdminService/GetStats", header, strings.NewReader(`{"sections":["STATS_SECTION_RUNTIME"]}`), nil)
		httpCodes[fmt.Sprint(code)]++
		if code != h.want {
			t.Errorf("HTTP GetStats, key %s: %d, want %d", h.name, code, h.want)
		}
	}

	// Native gRPC on the HTTP port goes through the same keys.
	hc, err := grpc.NewClient(g.HTTPAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var native codeTally
	for _, c := range []context.Context{ctx(), withMD(ctx(), "x-api-key", wrongSame), ctxWithAdmin(ctx())} {
		_, err := vegav1.NewPerfAdminServiceClient(hc).GetStats(c, &vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_RUNTIME}})
		native.add(err)
	}
	_ = hc.Close()
	if native.get(codes.Unauthenticated) != 2 || native.get(codes.OK) != 1 {
		t.Errorf("native gRPC on the HTTP port (none, wrong, admin): %s", &native)
	}

	// A gateway without an admin key refuses every admin call.
	off := startGateway(t, map[string]string{"VEGA_ADMIN_API_KEY": ""})
	_, err = vegav1.NewPerfAdminServiceClient(off.Conn()).GetStats(ctxWithAdmin(ctx()), &vegav1.GetStatsRequest{})
	disabled := status.Code(err)
	if disabled != codes.PermissionDenied {
		t.Errorf("admin disabled: %v, want PermissionDenied", err)
	}

	// Timing: interleaved, so load on the machine hits every class alike.
	classes := []struct {
		name string
		key  string
	}{
		{"same length, first byte differs", wrongSame},
		{"same length, last byte differs", adminKey[:len(adminKey)-1] + "X"},
		{"1 byte", "k"},
		{"64 bytes", strings.Repeat("k", 64)},
	}
	const rounds = 300
	samples := make([][]time.Duration, len(classes))
	for i := range rounds {
		for j := range classes {
			k := (i + j) % len(classes)
			c := withMD(ctx(), "x-api-key", classes[k].key)
			start := time.Now()
			err := getStats(c)
			samples[k] = append(samples[k], time.Since(start))
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("timing call with a wrong key: %v", err)
			}
		}
	}
	medians := make([]time.Duration, len(classes))
	var parts []string
	for k := range classes {
		slices.Sort(samples[k])
		medians[k] = samples[k][rounds/2]
		parts = append(parts, fmt.Sprintf("%s %s", classes[k].name, medians[k].Round(time.Microsecond)))
	}
	lo, hi := slices.Min(medians), slices.Max(medians)
	if hi-lo > time.Millisecond+lo/2 {
		t.Errorf("wrong-key latency depends on the key: medians %s", strings.Join(parts, ", "))
	}
	record(t, Row{ID: "I12", Measured: fmt.Sprintf("GetStats: %d wrong or absent keys → %s; the admin key under 3 name spellings → %s; WatchStats (none, wrong, client, admin) → %s; "+
		"reflection (none, wrong, client, admin) → %s; Health.Watch without a key → %s; HTTP port → %v, native gRPC there (none, wrong, admin) → %s; no admin key configured → %s; "+
		"timing, medians of %d interleaved calls each: %s (spread %s)",
		len(refused), &unary, &accepted, &streams, &refl, health, httpCodes, &native, disabled, rounds, strings.Join(parts, ", "), (hi - lo).Round(time.Microsecond))})
}

func TestI13IdempotencyKeyReuse(t *testing.T) {
	record(t, Row{ID: "I13",
		Did: "Notify to the webhook channel with idempotency key k (tenant A), then k with another text, with another payload, and to another " +
			"channel; then k with the first request again; tenant B with the same k and its own text; GetNotification of the first. " +
			"Once with the bbolt outbox, once with the PostgreSQL one (a fleet's)",
		MustHold: "the changed requests FAILED_PRECONDITION; the repeat answers the first notification (same id); tenant B's k is its own " +
			"notification; the receiver got exactly one delivery of the first text, none of the changed ones, one of B's"})
	var measured []string
	for _, store := range []string{"bbolt", "postgres"} {
		t.Run(store, func(t *testing.T) {
			env := map[string]string{}
			if store == "postgres" {
				env["VEGA_POSTGRES_URL"] = pgDatabase(t)
			}
			measured = append(measured, store+": "+i13Reuse(t, env))
		})
	}
	record(t, Row{ID: "I13", Measured: strings.Join(measured, "; ")})
}

// i13Reuse is row I13 on one outbox store; it returns the figures.
func i13Reuse(t *testing.T, env map[string]string) string {
	hook := newFakeHook(t)
	g := startGateway(t, iMerge(hook.webhookEnv(), hook.slackEnv(), env))
	nc := vegav1.NewNotifyServiceClient(g.Conn())
	ctxA := func() context.Context { return ctxWithKey(ctxFor(t, 20*time.Second), keyA) }
	payload, _ := structpb.NewStruct(map[string]any{"build": 42})
	otherPayload, _ := structpb.NewStruct(map[string]any{"build": 43})
	first := &vegav1.NotifyRequest{Channel: "webhook", Text: "I13 first", Payload: payload, IdempotencyKey: "k-13"}
	r1, err := nc.Notify(ctxA(), first)
	if err != nil {
		t.Fatalf("first Notify: %v", err)
	}
	var changed codeTally
	for _, req := range []*vegav1.NotifyRequest{
		{Channel: "webhook", Text: "I13 changed text", Payload: payload, IdempotencyKey: "k-13"},
		{Channel: "webhook", Text: "I13 first", Payload: otherPayload, IdempotencyKey: "k-13"},
		{Channel: "slack", Text: "I13 first", Payload: payload, IdempotencyKey: "k-13"},
	} {
		_, err := nc.Notify(ctxA(), req)
		if changed.add(err) != codes.FailedPrecondition {
			t.Errorf("same key, changed request %v: %v, want FailedPrecondition", req, err)
		}
	}
	again, err := nc.Notify(ctxA(), first)
	if err != nil || again.GetId() != r1.GetId() {
		t.Errorf("the same request again: %v, id %q, want the first id %q", err, again.GetId(), r1.GetId())
	}
	rB, err := nc.Notify(ctxWithKey(ctxFor(t, 20*time.Second), keyB), &vegav1.NotifyRequest{Channel: "webhook", Text: "I13 tenant B", IdempotencyKey: "k-13"})
	if err != nil || rB.GetId() == r1.GetId() {
		t.Errorf("tenant B with the same key: %v, id %q (A's %q)", err, rB.GetId(), r1.GetId())
	}
	var got *vegav1.GetNotificationResponse
	delivered := iWaitFor(t, 15*time.Second, func() bool {
		var err error
		got, err = nc.GetNotification(ctxA(), &vegav1.GetNotificationRequest{Id: r1.GetId()})
		return err == nil && got.GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED && hook.count("I13 tenant B") == 1
	})
	if !delivered {
		t.Errorf("the first notification: %v", got)
	}
	if hook.count("I13 first") != 1 || hook.count("I13 changed text") != 0 {
		t.Errorf("deliveries: first %d, changed %d; want 1, 0", hook.count("I13 first"), hook.count("I13 changed text"))
	}
	if got.GetChannel() != "webhook" || got.GetAttempts() != 1 {
		t.Errorf("the first notification: channel %q, %d attempts; want webhook, 1", got.GetChannel(), got.GetAttempts())
	}
	c := hook.counts()
	return fmt.Sprintf("first: %s %s; changed text, payload, channel: %s; the first again: same id %v; tenant B: its own id %v; "+
		"receiver: %d deliveries (first text %d, changed 0, B %d), %d duplicates; the first notification: %s on %s after %d attempt",
		r1.GetStatus(), r1.GetId(), &changed, again.GetId() == r1.GetId(), rB.GetId() != r1.GetId(),
		c.Deliveries, hook.count("I13 first"), hook.count("I13 tenant B"), c.Duplicates, got.GetStatus(), got.GetChannel(), got.GetAttempts())
}

func TestI14TenantsDoNotShareAnswers(t *testing.T) {
	record(t, Row{ID: "I14",
		Did: "tenants A and B send the identical deterministic Generate (temperature 0) and the identical Fetch of a page that numbers its answers " +
			"(Cache-Control: max-age=60), each twice, alternating; the same again at once (8 of each tenant in parallel); tenant A over the HTTP port. " +
			"Then a fleet of two replicas sharing Redis: A asks replica 1, B (once A's entry is in Redis) replica 2, then each the other replica",
		MustHold: "backend calls = 2 for each (one per tenant): each tenant's repeat is served from its own entry (x-vega-served-from: cache), " +
			"B's first is a backend call, and B's Fetch body is never A's; in the fleet too: B's first is a backend call though A's entry is shared, " +
			"then each tenant finds its own entry on the other replica (2 backend calls, 2 keys in Redis)"})
	llm := newFakeLLM(t, llmOpts{})
	web := newHostileWeb(t, "127.0.0.2:0")
	g := startGateway(t, iMerge(llm.env(), iAllowWeb))
	gc := vegav1.NewGenerateServiceClient(g.Conn())
	fc := vegav1.NewFetchServiceClient(g.Conn())
	zero := 0.0
	req := &vegav1.GenerateRequest{Model: "llama", Prompt: "I14 identical", Options: &vegav1.SamplingOptions{Temperature: &zero}}
	served := func(md metadata.MD) string { return strings.Join(md.Get("x-vega-served-from"), ",") }
	var genFrom, fetchFrom, fetchBodies []string
	for _, key := range []string{keyA, keyB, keyA, keyB} {
		var md metadata.MD
		if _, err := gc.Generate(ctxWithKey(ctxFor(t, 20*time.Second), key), req, grpc.Header(&md)); err != nil {
			t.Fatalf("Generate: %v", err)
		}
		genFrom = append(genFrom, served(md))
		md = nil
		resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), key), &vegav1.FetchRequest{Url: web.URL + "/numbered"}, grpc.Header(&md))
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		fetchFrom = append(fetchFrom, served(md))
		fetchBodies = append(fetchBodies, string(resp.GetBody()))
	}
	wantFrom := []string{"backend", "backend", "cache", "cache"}
	if !slices.Equal(genFrom, wantFrom) || !slices.Equal(fetchFrom, wantFrom) {
		t.Errorf("served from: Generate %v, Fetch %v; want %v", genFrom, fetchFrom, wantFrom)
	}
	if want := []string{"answer #1", "answer #2", "answer #1", "answer #2"}; !slices.Equal(fetchBodies, want) {
		t.Errorf("Fetch bodies (A, B, A, B) %q, want %q", fetchBodies, want)
	}
	// A herd of both tenants at once changes nothing: both entries exist.
	errs := make(chan error, 32)
	for i := range 16 {
		key := []string{keyA, keyB}[i%2]
		go func() {
			_, err := gc.Generate(ctxWithKey(ctxFor(t, 20*time.Second), key), req)
			errs <- err
		}()
		go func() {
			resp, err := fc.Fetch(ctxWithKey(ctxFor(t, 20*time.Second), key), &vegav1.FetchRequest{Url: web.URL + "/numbered"})
			if want := map[string]string{keyA: "answer #1", keyB: "answer #2"}[key]; err == nil && string(resp.GetBody()) != want {
				err = fmt.Errorf("tenant %s got %q, want %q", key[len(key)-1:], resp.GetBody(), want)
			}
			errs <- err
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Errorf("herd: %v", err)
		}
	}
	var viaHTTP struct{ Body []byte }
	if code := iPostJSON(t, g, "/vega.v1.FetchService/Fetch", keyA, fmt.Sprintf(`{"url":%q}`, web.URL+"/numbered"), &viaHTTP); code != 200 || string(viaHTTP.Body) != "answer #1" {
		t.Errorf("tenant A over HTTP: %d %q, want A's entry", code, viaHTTP.Body)
	}
	gen, pages := llm.callsFor("I14 identical"), web.count("/numbered")
	if gen != 2 || pages != 2 {
		t.Errorf("backend calls: LLM %d, web %d; want 2 each", gen, pages)
	}
	single := fmt.Sprintf("A, B, A, B: Generate served from %v, Fetch from %v with bodies %q; then 16 Generate + 16 Fetch at once "+
		"(both tenants) and A's Fetch over HTTP (%q): backend calls LLM %d, web %d",
		genFrom, fetchFrom, fetchBodies, viaHTTP.Body, gen, pages)
	fleet := i14Fleet(t)
	record(t, Row{ID: "I14", Measured: "one gateway: " + single + "; a fleet of two sharing Redis: " + fleet})
}

// i14Fleet is row I14 across two replicas sharing Redis: tenant A's answer
// is in the shared tier before tenant B asks the other replica, and B must
// still go to the backend; each tenant then finds its own entry on the
// replica that never served it.
func i14Fleet(t *testing.T) string {
	llm := newFakeLLM(t, llmOpts{})
	prefix := redisPrefix(t)
	env := iMerge(llm.env(), map[string]string{"REDIS_URL": "redis://" + redisAddr + "/0", "VEGA_REDIS_PREFIX": prefix})
	g1, g2 := startGateway(t, env), startGateway(t, env)
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	cacheKeys := func() int {
		keys, err := rdb.Keys(ctxFor(t, 5*time.Second), prefix+":v1:c:*").Result()
		if err != nil {
			t.Fatalf("Redis KEYS: %v", err)
		}
		return len(keys)
	}
	zero := 0.0
	req := &vegav1.GenerateRequest{Model: "llama", Prompt: "I14 fleet", Options: &vegav1.SamplingOptions{Temperature: &zero}}
	ask := func(g *gateway, key string) string {
		var md metadata.MD
		if _, err := vegav1.NewGenerateServiceClient(g.Conn()).Generate(ctxWithKey(ctxFor(t, 20*time.Second), key), req, grpc.Header(&md)); err != nil {
			t.Fatalf("Generate: %v", err)
		}
		return strings.Join(md.Get("x-vega-served-from"), ",")
	}
	var from []string
	from = append(from, ask(g1, keyA))
	if !iWaitFor(t, 10*time.Second, func() bool { return cacheKeys() == 1 }) {
		t.Fatalf("tenant A's answer never reached Redis (%d keys)", cacheKeys())
	}
	from = append(from, ask(g2, keyB))
	if !iWaitFor(t, 10*time.Second, func() bool { return cacheKeys() == 2 }) {
		t.Fatalf("tenant B's answer never reached Redis (%d keys)", cacheKeys())
	}
	from = append(from, ask(g2, keyA), ask(g1, keyB))
	if want := []string{"backend", "backend", "cache", "cache"}; !slices.Equal(from, want) {
		t.Errorf("fleet: served from %v (A on 1, B on 2, A on 2, B on 1), want %v", from, want)
	}
	calls := llm.callsFor("I14 fleet")
	if calls != 2 {
		t.Errorf("fleet: %d backend calls, want 2", calls)
	}
	return fmt.Sprintf("A on replica 1, B on 2 (A's entry already in Redis), A on 2, B on 1: served from %v, Redis cache keys %d, backend calls %d", from, cacheKeys(), calls)
}
