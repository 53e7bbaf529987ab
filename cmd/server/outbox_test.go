package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// asServerEnv makes the test binary run the gateway's main (see TestMain):
// the kill -9 test needs the gateway in a process of its own.
const asServerEnv = "VEGA_TEST_RUN_AS_SERVER"

// receiver is a webhook receiver that can be down (503) and counts the
// texts it accepted.
type receiver struct {
	*httptest.Server
	up       atomic.Bool
	mu       sync.Mutex
	accepted map[string]int // guarded by mu
	refuse   map[string]int // text → status to answer while set; guarded by mu
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{accepted: map[string]int{}, refuse: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body struct{ Text string }
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		if !r.up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if code := r.refuse[body.Text]; code != 0 {
			http.Error(w, "no such hook", code)
			return
		}
		r.accepted[body.Text]++
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.accepted))
	for k, v := range r.accepted {
		out[k] = v
	}
	return out
}

// serverProcess is the gateway running as a child process.
type serverProcess struct {
	cmd  *exec.Cmd
	addr string
	conn *grpc.ClientConn
}

func startServerProcess(t *testing.T, env map[string]string) *serverProcess {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), asServerEnv+"=1", "VEGA_GRPC_ADDR="+addr, "VEGA_HTTP_ADDR=127.0.0.1:0", "VEGA_LOG_LEVEL=warn")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	p := &serverProcess{cmd: cmd, addr: addr}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	p.conn = conn
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return p
		}
		require.True(t, time.Now().Before(deadline), "the gateway process did not become ready: %v", err)
		time.Sleep(50 * time.Millisecond)
	}
}

// kill9 ends the process with SIGKILL: no shutdown code runs.
func (p *serverProcess) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	_ = p.cmd.Wait()
	_ = p.conn.Close()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestNotifySurvivesKill9 submits notifications while the receiver is down,
// kills the gateway with SIGKILL, starts it again on the same data
// directory and brings the receiver back: every notification arrives
// exactly once.
func TestNotifySurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	recv := newReceiver(t)
	env := map[string]string{
		"VEGA_DATA_DIR": t.TempDir(), "VEGA_WEBHOOK_URL": recv.URL,
		"VEGA_NOTIFY_RATE": "1000", "VEGA_NOTIFY_BURST": "100",
		"VEGA_NOTIFY_BACKOFF_BASE": "100ms", "VEGA_NOTIFY_BACKOFF_MAX": "300ms",
		"VEGA_NOTIFY_MAX_WAIT": "0s", // answer QUEUED at once
	}
	first := startServerProcess(t, env)
	const n = 40
	ids := make([]string, n)
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := vegav1.NewNotifyServiceClient(first.conn).Notify(ctx, &vegav1.NotifyRequest{
			Channel: "webhook", Text: fmt.Sprintf("crash-%02d", i), IdempotencyKey: fmt.Sprintf("key-%02d", i),
		}, grpc.WaitForReady(true))
		cancel()
		require.NoError(t, err, "notification %d", i)
		require.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, resp.GetStatus(), "the receiver is down")
		ids[i] = resp.GetId()
	}
	first.kill9(t)

	second := startServerProcess(t, env)
	recv.up.Store(true)
	notify := vegav1.NewNotifyServiceClient(second.conn)
	deadline := time.Now().Add(60 * time.Second)
	for i, id := range ids {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			got, err := notify.GetNotification(ctx, &vegav1.GetNotificationRequest{Id: id})
			cancel()
			require.NoError(t, err, "notification %d after the restart", i)
			if got.GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
				break
			}
			require.True(t, time.Now().Before(deadline), "notification %d still %v (%s)", i, got.GetStatus(), got.GetLastError())
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A client retrying after the crash with the same key gets the first
	// notification, not a second message.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	again, err := notify.Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "crash-07", IdempotencyKey: "key-07"})
	require.NoError(t, err)
	assert.Equal(t, ids[7], again.GetId())
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, again.GetStatus())

	counts := recv.counts()
	assert.Len(t, counts, n, "every notification arrived")
	for i := range n {
		assert.Equal(t, 1, counts[fmt.Sprintf("crash-%02d", i)], "crash-%02d delivered exactly once", i)
	}
	require.NoError(t, second.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, second.cmd.Wait(), "clean shutdown on SIGTERM")
}

func TestNotifyDeadLetterAndRedrive(t *testing.T) {
	recv := newReceiver(t)
	recv.up.Store(true)
	recv.refuse["gone"] = http.StatusNotFound
	g := startGateway(t, map[string]string{"VEGA_WEBHOOK_URL": recv.URL, "VEGA_ADMIN_API_KEY": "admin-key-123"})
	ctx := ctxTimeout(t, 20*time.Second)
	admin := metadata.AppendToOutgoingContext(ctx, "x-api-key", "admin-key-123")

	resp, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "gone"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_FAILED, resp.GetStatus())
	assert.Contains(t, resp.GetLastError(), "404")

	batch := func() *vegav1.BatchStats {
		st, err := g.admin().GetStats(admin, &vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_BATCH}})
		require.NoError(t, err)
		return st.GetStats().GetBatch()
	}
	hook := batch().GetChannels()["webhook"]
	require.NotNil(t, hook)
	assert.Equal(t, int64(1), hook.GetDeadLettered())
	assert.Equal(t, int64(1), hook.GetDeadLetterDepth())
	assert.Equal(t, int64(1), hook.GetAccepted())
	assert.GreaterOrEqual(t, batch().GetCommits(), int64(2), "the accept and the dead letter were committed")

	_, err = g.admin().RedriveNotifications(ctx, &vegav1.RedriveNotificationsRequest{})
	requireCode(t, err, codes.Unauthenticated)

	recv.mu.Lock()
	delete(recv.refuse, "gone") // the webhook is back
	recv.mu.Unlock()
	red, err := g.admin().RedriveNotifications(admin, &vegav1.RedriveNotificationsRequest{Channel: "webhook"})
	require.NoError(t, err)
	assert.Equal(t, int64(1), red.GetRedriven())
	require.Eventually(t, func() bool {
		got, err := g.notify().GetNotification(ctx, &vegav1.GetNotificationRequest{Id: resp.GetId()})
		return err == nil && got.GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED && got.GetFinishTime() != nil
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, 1, recv.counts()["gone"])
	hook = batch().GetChannels()["webhook"]
	assert.Equal(t, int64(0), hook.GetDeadLetterDepth())
	assert.Equal(t, int64(1), hook.GetDelivered())
}

func TestNotificationsBelongToTheirTenant(t *testing.T) {
	recv := newReceiver(t)
	recv.up.Store(true)
	g := startGateway(t, map[string]string{"VEGA_WEBHOOK_URL": recv.URL, "VEGA_API_KEYS": "key-a=tenant-a,key-b=tenant-b"})
	ctx := ctxTimeout(t, 10*time.Second)

	sent, err := g.notify().Notify(withKey(ctx, "key-a"), &vegav1.NotifyRequest{Channel: "webhook", Text: "for a", IdempotencyKey: "k"})
	require.NoError(t, err)
	_, err = g.notify().GetNotification(withKey(ctx, "key-b"), &vegav1.GetNotificationRequest{Id: sent.GetId()})
	requireCode(t, err, codes.NotFound)
	got, err := g.notify().GetNotification(withKey(ctx, "key-a"), &vegav1.GetNotificationRequest{Id: sent.GetId()})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, got.GetStatus())

	// The same key in another tenant is another notification.
	other, err := g.notify().Notify(withKey(ctx, "key-b"), &vegav1.NotifyRequest{Channel: "webhook", Text: "for b", IdempotencyKey: "k"})
	require.NoError(t, err)
	assert.NotEqual(t, sent.GetId(), other.GetId())
	assert.Equal(t, map[string]int{"for a": 1, "for b": 1}, recv.counts())
}

func TestShutdownReleasesNotifyCallsWaitingForDelivery(t *testing.T) {
	recv := newReceiver(t) // down: every attempt gets 503
	g, stop := startGatewayWith(t, map[string]string{"VEGA_WEBHOOK_URL": recv.URL, "VEGA_NOTIFY_MAX_WAIT": "30s"}, nil)
	ctx := ctxTimeout(t, 40*time.Second)
	answered := make(chan *vegav1.NotifyResponse, 1)
	go func() {
		resp, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "in flight at shutdown"})
		assert.NoError(t, err)
		answered <- resp
	}()
	require.Eventually(t, func() bool {
		st, ok := g.srv.outbox.Stats().Channels["webhook"]
		return ok && st.Retried > 0
	}, 10*time.Second, 10*time.Millisecond, "the notification is being retried")

	start := time.Now()
	require.NoError(t, stop())
	resp := <-answered
	assert.Less(t, time.Since(start), 5*time.Second, "the waiting call did not hold the graceful stop")
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, resp.GetStatus())
}
