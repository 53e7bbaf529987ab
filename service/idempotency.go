package service

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// Idempotency remembers the result of each Notify idempotency key for a
// retention period: the same key and payload return the first result, the
// same key with another payload is FAILED_PRECONDITION. A call that fails is
// forgotten, so the caller's retry sends again. Concurrent calls with one key
// wait for the first. The record lives in memory: it does not survive a
// restart.

type Idempotency struct {
	retention time.Duration
	now       func() time.Time

	mu      sync.Mutex
	entries map[string]*idemEntry // guarded by mu
	order   []idemRef             // insertion order, for expiry; guarded by mu
}

type idemEntry struct {
	fingerprint [sha256.Size]byte
	done        chan struct{} // closed when resp/err are set
	resp        *vegav1.NotifyResponse
	err         error
	created     time.Time
}

type idemRef struct {
	key   string
	entry *idemEntry
}

// NewIdempotency keeps keys for retention (24h when zero).
func NewIdempotency(retention time.Duration) *Idempotency {
	if retention <= 0 {
		retention = 24 * time.Hour
	}
	return &Idempotency{retention: retention, now: time.Now, entries: map[string]*idemEntry{}}
}

func (m *Idempotency) do(ctx context.Context, key string, fp [sha256.Size]byte,
	send func(context.Context) (*vegav1.NotifyResponse, error)) (*vegav1.NotifyResponse, error) {
	m.mu.Lock()
	m.expireLocked()
	if e, ok := m.entries[key]; ok {
		m.mu.Unlock()
		if e.fingerprint != fp {
			return nil, status.Error(codes.FailedPrecondition, "idempotency_key was already used with a different notification")
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err() // translated by the caller's toStatus
		}
		if e.err != nil { // the first call failed and was forgotten: try again
			return m.do(ctx, key, fp, send)
		}
		return e.resp, nil
	}
	e := &idemEntry{fingerprint: fp, done: make(chan struct{}), created: m.now()}
	m.entries[key] = e
	m.order = append(m.order, idemRef{key: key, entry: e})
	m.mu.Unlock()

	resp, err := send(ctx)
	m.mu.Lock()
	e.resp, e.err = resp, err
	if err != nil && m.entries[key] == e {
		delete(m.entries, key)
	}
	m.mu.Unlock()
	close(e.done)
	return resp, err
}

func (m *Idempotency) expireLocked() {
	cutoff := m.now().Add(-m.retention)
	i := 0
	for ; i < len(m.order) && m.order[i].entry.created.Before(cutoff); i++ {
		if ref := m.order[i]; m.entries[ref.key] == ref.entry {
			delete(m.entries, ref.key)
		}
	}
	m.order = m.order[i:]
}

// fingerprint identifies the content of a notification.
func fingerprint(in *vegav1.NotifyRequest) [sha256.Size]byte {
	c := &vegav1.NotifyRequest{Channel: in.GetChannel(), Text: in.GetText(), Payload: in.GetPayload()}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return sha256.Sum256(b)
}
