package service

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations"
)

// Backends records the health of every configured backend (the
// "integrations" section of PerfAdmin): calls, failures, last success and
// last error. Services call Observe after each backend call.
type Backends struct {
	now func() time.Time

	mu sync.Mutex
	m  map[string]*backendHealth // guarded by mu
}

type backendHealth struct {
	kind, typ, host string
	calls, failures int64
	lastOK, lastErr time.Time
	lastErrMsg      string
}

// NewBackends returns an empty registry.
func NewBackends() *Backends {
	return &Backends{now: time.Now, m: make(map[string]*backendHealth)}
}

// Register declares a backend. kind is "llm", "fetch" or "notify"; typ is the
// backend type ("ollama", "slack", ...); host carries no path or credentials.
func (b *Backends) Register(name, kind, typ, host string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[name] = &backendHealth{kind: kind, typ: typ, host: host}
}

// Observe records the outcome of one backend call. The caller's own
// cancellation or deadline, and a request refused before it was sent (the
// SSRF guard, an invalid request), are not the backend's doing and count as
// neither success nor failure.
func (b *Backends) Observe(name string, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, integrations.ErrBlocked) || errors.Is(err, integrations.ErrInvalidRequest) {
		return
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	h, ok := b.m[name]
	if !ok {
		return
	}
	h.calls++
	if err == nil {
		h.lastOK = now
		return
	}
	h.failures++
	h.lastErr = now
	h.lastErrMsg = err.Error()
}

// Report fills the integrations section.
func (b *Backends) Report(s *vegav1.Stats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := &vegav1.IntegrationsStats{}
	for name, h := range b.m {
		bh := &vegav1.BackendHealth{
			Name: name, Kind: h.kind, Type: h.typ, Host: h.host,
			Calls: h.calls, Failures: h.failures, LastErrorMessage: h.lastErrMsg,
		}
		if !h.lastOK.IsZero() {
			bh.LastSuccess = timestamppb.New(h.lastOK)
		}
		if !h.lastErr.IsZero() {
			bh.LastError = timestamppb.New(h.lastErr)
		}
		out.Backends = append(out.Backends, bh)
	}
	sort.Slice(out.Backends, func(i, j int) bool {
		a, c := out.Backends[i], out.Backends[j]
		if a.Kind != c.Kind {
			return a.Kind < c.Kind
		}
		return a.Name < c.Name
	})
	s.Integrations = out
}

// Reset zeroes the counters and forgets last outcomes.
func (b *Backends) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, h := range b.m {
		*h = backendHealth{kind: h.kind, typ: h.typ, host: h.host}
	}
}
