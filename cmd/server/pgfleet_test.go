package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/notify/outbox/pgtest"
)

// fleetReceiver is a webhook (and Slack) receiver that can be down (503),
// records when it accepted each text, and answers Slack's "ok".
type fleetReceiver struct {
	*httptest.Server
	up    atomic.Bool
	mu    sync.Mutex
	times map[string][]time.Time // accepted texts; guarded by mu
	all   []time.Time            // every acceptance, in order; guarded by mu
}

func newFleetReceiver(t *testing.T) *fleetReceiver {
	t.Helper()
	r := &fleetReceiver{times: map[string][]time.Time{}}
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
		now := time.Now()
		r.mu.Lock()
		r.times[body.Text] = append(r.times[body.Text], now)
		r.all = append(r.all, now)
		r.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *fleetReceiver) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.times))
	for k, v := range r.times {
		out[k] = len(v)
	}
	return out
}

func (r *fleetReceiver) acceptances() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

const fleetAdminKey = "fleet-admin-key"

// batchOf reads a replica's batch section.
func batchOf(t *testing.T, conn *grpc.ClientConn) *vegav1.BatchStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(withKey(context.Background(), fleetAdminKey), 5*time.Second)
	defer cancel()
	st, err := vegav1.NewPerfAdminServiceClient(conn).GetStats(ctx, &vegav1.GetStatsRequest{Sections: []vegav1.StatsSection{vegav1.StatsSection_STATS_SECTION_BATCH}})
	require.NoError(t, err)
	return st.GetStats().GetBatch()
}

func notifyOn(conn *grpc.ClientConn, text, key string) (*vegav1.NotifyResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return vegav1.NewNotifyServiceClient(conn).Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: text, IdempotencyKey: key}, grpc.WaitForReady(true))
}

// TestFleetLosesNoNotificationWhenAReplicaDies is the scenario:
// three gateways on one PostgreSQL database, the receiver down, 60
// notifications accepted across them, the replica delivering the channel
// killed with SIGKILL and never brought back, the receiver up: all 60
// arrive exactly once, within the takeover bound. The same idempotency key
// sent to every replica is one notification.
func TestFleetLosesNoNotificationWhenAReplicaDies(t *testing.T) {
	db := pgtest.NewDatabase(t)
	recv := newFleetReceiver(t)
	const leaseTTL = 3 * time.Second
	env := map[string]string{
		"VEGA_POSTGRES_URL": db, "VEGA_WEBHOOK_URL": recv.URL, "VEGA_ADMIN_API_KEY": fleetAdminKey,
		"VEGA_NOTIFY_RATE": "1000", "VEGA_NOTIFY_BURST": "100",
		"VEGA_NOTIFY_BACKOFF_BASE": "100ms", "VEGA_NOTIFY_BACKOFF_MAX": "300ms",
		"VEGA_NOTIFY_SEND_TIMEOUT": "1s", "VEGA_OUTBOX_LEASE_TTL": leaseTTL.String(),
		"VEGA_NOTIFY_MAX_WAIT": "0s", // answer QUEUED at once
	}
	replicas := make([]*serverProcess, 3)
	var wg sync.WaitGroup
	for i := range replicas { // at once: the schema is migrated once, under the advisory lock
		wg.Go(func() { replicas[i] = startServerProcess(t, env) })
	}
	wg.Wait()

	const n = 60
	ids := make([]string, n)
	for i := range n {
		resp, err := notifyOn(replicas[i%3].conn, fmt.Sprintf("fleet-%02d", i), fmt.Sprintf("key-%02d", i))
		require.NoError(t, err, "notification %d", i)
		require.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_QUEUED, resp.GetStatus(), "the receiver is down")
		ids[i] = resp.GetId()
	}
	// The same key sent to all three replicas at once: one notification.
	dupIDs := make([]string, 3)
	for i, r := range replicas {
		wg.Go(func() {
			resp, err := notifyOn(r.conn, "dup", "dup-key")
			if assert.NoError(t, err) {
				dupIDs[i] = resp.GetId()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, dupIDs[0], dupIDs[1])
	assert.Equal(t, dupIDs[0], dupIDs[2])
	// Other content under a used key is refused on any replica.
	_, err := notifyOn(replicas[2].conn, "not fleet-00", "key-00")
	requireCode(t, err, codes.FailedPrecondition)

	// Find the replica delivering the channel (it is retrying the 503s).
	names := map[string]int{}
	for i, r := range replicas {
		b := batchOf(t, r.conn)
		require.Equal(t, "postgres", b.GetStore())
		names[b.GetReplica()] = i
	}
	var owner int
	require.Eventually(t, func() bool {
		o := batchOf(t, replicas[0].conn).GetChannels()["webhook"].GetOwner()
		i, ok := names[o]
		owner = i
		return ok
	}, 10*time.Second, 50*time.Millisecond, "a replica holds the channel")
	b := batchOf(t, replicas[(owner+1)%3].conn).GetChannels()["webhook"]
	assert.Equal(t, int64(n+1), b.GetQueueDepth(), "every replica sees the fleet's queue")

	replicas[owner].kill9(t)
	killed := time.Now()
	recv.up.Store(true)
	survivor := replicas[(owner+1)%3]
	notify := vegav1.NewNotifyServiceClient(survivor.conn)
	deadline := time.Now().Add(60 * time.Second)
	for i, id := range append(slices.Clone(ids), dupIDs[0]) {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			got, err := notify.GetNotification(ctx, &vegav1.GetNotificationRequest{Id: id})
			cancel()
			require.NoError(t, err, "notification %d, from another replica than the one that accepted it", i)
			if got.GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED {
				break
			}
			require.True(t, time.Now().Before(deadline), "notification %d still %v (%s)", i, got.GetStatus(), got.GetLastError())
			time.Sleep(50 * time.Millisecond)
		}
	}
	takeover := recv.acceptances()[0].Sub(killed)
	t.Logf("first delivery %v after the owner's kill -9 (lease %v; bound: lease + 1.2 s acquire + 0.3 s backoff)", takeover.Round(time.Millisecond), leaseTTL)
	assert.Less(t, takeover, leaseTTL+1200*time.Millisecond+300*time.Millisecond+2*time.Second, "takeover within the stated bound (+2 s of slack for a loaded machine under -race)")

	// A client retrying on a surviving replica gets the first notification.
	again, err := notifyOn(replicas[(owner+2)%3].conn, "fleet-07", "key-07")
	require.NoError(t, err)
	assert.Equal(t, ids[7], again.GetId())
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, again.GetStatus())

	time.Sleep(500 * time.Millisecond) // a duplicate would show up now
	counts := recv.counts()
	assert.Len(t, counts, n+1, "every notification arrived")
	for i := range n {
		assert.Equal(t, 1, counts[fmt.Sprintf("fleet-%02d", i)], "fleet-%02d delivered exactly once", i)
	}
	assert.Equal(t, 1, counts["dup"], "one key on three replicas: one message")
	newOwner := batchOf(t, survivor.conn).GetChannels()["webhook"].GetOwner()
	assert.Contains(t, names, newOwner)
	assert.NotEqual(t, owner, names[newOwner], "a surviving replica delivers the channel")
}

// TestFleetPacingHoldsForTheFleet sends to a Slack channel (1 message/s,
// burst 3) through three replicas: the receiver never gets more than 8 in
// any 5 seconds, because one replica at a time paces the channel.
func TestFleetPacingHoldsForTheFleet(t *testing.T) {
	db := pgtest.NewDatabase(t)
	recv := newFleetReceiver(t)
	recv.up.Store(true)
	env := map[string]string{"VEGA_POSTGRES_URL": db, "SLACK_WEBHOOK_URL": recv.URL, "VEGA_NOTIFY_MAX_WAIT": "0s"}
	replicas := make([]*serverProcess, 3)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { replicas[i] = startServerProcess(t, env) })
	}
	wg.Wait()
	const n = 14
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := vegav1.NewNotifyServiceClient(replicas[i%3].conn).Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: fmt.Sprintf("paced-%02d", i)})
		cancel()
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return len(recv.acceptances()) >= n }, 40*time.Second, 100*time.Millisecond, "all delivered")
	times := recv.acceptances()
	most := 0
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < 5*time.Second {
			j++
		}
		most = max(most, j-i)
	}
	t.Logf("%d messages over %v; at most %d in any 5 s (1/s with a burst of 3 allows 8)", len(times), times[len(times)-1].Sub(times[0]).Round(time.Millisecond), most)
	assert.LessOrEqual(t, most, 8)
	assert.Len(t, times, n, "each delivered once")
}

// TestFleetOutboxWhenPostgresGoesDown: while the database cannot be
// reached, Notify answers UNAVAILABLE with RetryInfo and claims nothing;
// when it is back, accepts and deliveries resume by themselves, and the
// refused notification was never sent.
func TestFleetOutboxWhenPostgresGoesDown(t *testing.T) {
	proxy, db := pgtest.NewProxy(t, pgtest.NewDatabase(t))
	recv := newFleetReceiver(t)
	recv.up.Store(true)
	g := startGateway(t, map[string]string{
		"VEGA_POSTGRES_URL": db, "VEGA_WEBHOOK_URL": recv.URL,
		"VEGA_NOTIFY_SEND_TIMEOUT": "1s", "VEGA_OUTBOX_LEASE_TTL": "3s",
	})
	ctx := ctxTimeout(t, 60*time.Second)
	first, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "before", IdempotencyKey: "k-before"})
	require.NoError(t, err)
	assert.Equal(t, vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED, first.GetStatus())

	proxy.Down()
	for _, text := range []string{"during", "during-with-key"} {
		key := ""
		if strings.HasSuffix(text, "key") {
			key = "k-during"
		}
		_, err := g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: text, IdempotencyKey: key})
		st := requireCode(t, err, codes.Unavailable)
		assert.Contains(t, st.Message(), "retry with the same idempotency_key")
		var retry *errdetails.RetryInfo
		for _, d := range st.Details() {
			if r, ok := d.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
		require.NotNil(t, retry, "UNAVAILABLE carries RetryInfo")
		assert.Positive(t, retry.GetRetryDelay().AsDuration())
	}
	_, err = g.notify().GetNotification(ctx, &vegav1.GetNotificationRequest{Id: first.GetId()})
	requireCode(t, err, codes.Unavailable)

	proxy.Up()
	var again *vegav1.NotifyResponse
	require.Eventually(t, func() bool {
		again, err = g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "webhook", Text: "during-with-key", IdempotencyKey: "k-during"})
		return err == nil
	}, 20*time.Second, 100*time.Millisecond, "accepts resume: %v", err)
	require.Eventually(t, func() bool {
		got, err := g.notify().GetNotification(ctx, &vegav1.GetNotificationRequest{Id: again.GetId()})
		return err == nil && got.GetStatus() == vegav1.NotificationStatus_NOTIFICATION_STATUS_DELIVERED
	}, 20*time.Second, 50*time.Millisecond, "delivery resumes")
	assert.Equal(t, map[string]int{"before": 1, "during-with-key": 1}, recv.counts(), "nothing refused was sent; nothing twice")
}

// TestPostgresDownAtStartStopsWithOneLine: a gateway whose outbox database
// cannot be reached does not start; it says why in one line that names the
// setting and never shows the password.
func TestPostgresDownAtStartStopsWithOneLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	env := map[string]string{
		"VEGA_GRPC_ADDR": "127.0.0.1:0", "VEGA_HTTP_ADDR": "off", "VEGA_DATA_DIR": t.TempDir(),
		"VEGA_POSTGRES_URL": "postgres://vega:s3cret-Passw0rd@" + closed + "/vega",
	}
	var stderr bytes.Buffer
	start := time.Now()
	err = run(nil, func(k string) string { return env[k] }, &stderr)
	require.Error(t, err)
	msg := err.Error()
	t.Logf("after %v: vega-server: %s", time.Since(start).Round(time.Millisecond), msg)
	assert.True(t, strings.HasPrefix(msg, "VEGA_POSTGRES_URL: "), msg)
	assert.Contains(t, msg, "cannot reach PostgreSQL at 127.0.0.1")
	assert.NotContains(t, msg, "s3cret-Passw0rd")
	assert.NotContains(t, stderr.String(), "s3cret-Passw0rd")
	assert.NotContains(t, msg, "\n", "one line")

	_, err = LoadConfig("", func(k string) string {
		return map[string]string{"VEGA_POSTGRES_URL": "mysql://root:pw@db/x"}[k]
	})
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "VEGA_POSTGRES_URL: "))
	assert.NotContains(t, err.Error(), "pw@")
	var se interface{ GRPCStatus() *status.Status }
	assert.False(t, errors.As(err, &se))
}
