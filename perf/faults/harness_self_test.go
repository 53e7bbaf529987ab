package faults

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// TestHarnessOrdinaryUse checks the harness itself on ordinary use: one
// Generate through a proxy to the fake LLM, one Notify to the fake Slack,
// one Fetch from the fake web, the tenant keys and the admin key, and a
// restart on the same ports with the same data.
func TestHarnessOrdinaryUse(t *testing.T) {
	llm := newFakeLLM(t, llmOpts{Concurrency: 2})
	p := newProxy(t, hostPort(t, llm.URL))
	hook := newFakeHook(t)
	web := newFakeWeb(t)
	env := map[string]string{"VEGA_OLLAMA_URL": "http://" + p.Listen, "VEGA_FETCH_ALLOW": "127.0.0.1/32"}
	for k, v := range hook.slackEnv() {
		env[k] = v
	}
	g := startGateway(t, env)
	ctx := ctxFor(t, 30*time.Second)

	gen := vegav1.NewGenerateServiceClient(g.Conn())
	r, err := gen.Generate(ctxWithKey(ctx, keyA), &vegav1.GenerateRequest{Model: "llama3", Prompt: "hello"})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if r.GetText() == "" || llm.calls.Load() != 1 || llm.callsFor("hello") != 1 {
		t.Fatalf("Generate answered %q with %d backend calls", r.GetText(), llm.calls.Load())
	}
	var tally codeTally
	_, err = gen.Generate(ctx, &vegav1.GenerateRequest{Model: "llama3", Prompt: "no key"})
	if tally.add(err) != codes.Unauthenticated {
		t.Fatalf("Generate without a key: %v", err)
	}

	n, err := vegav1.NewNotifyServiceClient(g.Conn()).Notify(ctxWithKey(ctx, keyB), &vegav1.NotifyRequest{Channel: "slack", Text: "harness-1"})
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if n.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED || hook.count("harness-1") != 1 {
		t.Fatalf("Notify: %v, delivered %d times", n.GetStatus(), hook.count("harness-1"))
	}

	f, err := vegav1.NewFetchServiceClient(g.Conn()).Fetch(ctxWithKey(ctx, keyA), &vegav1.FetchRequest{Url: web.URL + "/page"})
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if web.hits.Load() != 1 || f.GetStatusCode() != 200 {
		t.Fatalf("Fetch: status %d, %d hits", f.GetStatusCode(), web.hits.Load())
	}

	before := g.Runtime(t)
	if before.Goroutines == 0 || before.HeapBytes == 0 {
		t.Fatalf("runtime stats empty: %v", before)
	}
	pid := g.Pid()
	g.Restart(t)
	if g.Pid() == pid || g.Pid() == 0 {
		t.Fatal("Restart did not start a new process")
	}
	got, err := vegav1.NewNotifyServiceClient(g.Conn()).GetNotification(ctxWithKey(ctx, keyB), &vegav1.GetNotificationRequest{Id: n.GetId()})
	if err != nil || got.GetStatus() != vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
		t.Fatalf("after restart the outbox lost the notification: %v %v", got.GetStatus(), err)
	}
	g.Kill()
	if g.Pid() != 0 {
		t.Fatal("Kill left the process")
	}
}
