package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ServedFromHeader is the response header metadata key that says how a
// response was served.
const ServedFromHeader = "x-vega-served-from"

// How a response was served.
const (
	FromBackend   = "backend"   // this call reached the backend
	FromCache     = "cache"     // a fresh cached answer
	FromCoalesced = "coalesced" // another identical call's answer
	FromStale     = "stale"     // an expired answer while a refresh runs
)

// Outcome is what one backend call says about the backend's health.
type Outcome int

const (
	// Success: the backend answered. The limiter may rise.
	Success Outcome = iota
	// Neutral: nothing learned about the backend (the caller cancelled or
	// gave up, the request was bad, the limiter itself refused).
	Neutral
	// Overload: the backend asked us to slow down (429). The limiter falls;
	// the breaker does not count it.
	Overload
	// Failure: the backend failed (5xx, unreachable, its own timeout). The
	// limiter falls and the breaker counts it.
	Failure
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Neutral:
		return "neutral"
	case Overload:
		return "overload"
	case Failure:
		return "failure"
	}
	return "unknown"
}

// Result is the classified outcome of one call.
type Result struct {
	Outcome    Outcome
	RetryAfter time.Duration // the backend's Retry-After, 0 when none
}

// Rule is one row of the policy table.
type Rule struct {
	// NewRequest returns an empty request message of the method. Stream
	// interceptors use it to read the request before the handler does.
	NewRequest func() proto.Message
	// Plan derives the decision for one request. It validates the request
	// (so bad input is refused before it can spend a token or join a
	// flight) and returns a gRPC status error when it is bad.
	Plan func(ctx context.Context, req proto.Message) (*Decision, error)
	// Classify maps a finished call to its outcome; nil means ClassifyError.
	Classify func(resp any, err error) Result
	// Store says whether a successful response may be cached and for how
	// long: ttl 0 means the decision's TTL. negative marks a short-lived
	// "not found" answer. nil means every successful response is stored.
	Store func(d *Decision, resp any) (ttl time.Duration, negative, ok bool)
}

// Table maps full method names ("/vega.v1.GenerateService/Generate") to
// rules.
type Table map[string]*Rule

// Decision is what the chain does with one request. Plan fills the exported
// fields; the mechanisms read them. A Decision belongs to one caller and is
// only written on that caller's goroutine.
type Decision struct {
	Method  string        // full method name
	Request proto.Message // the request (read-only)

	// Key identifies identical requests for coalescing and caching; it
	// includes the caller's tenant. "" disables both.
	Key string
	// Backend is the limiter and breaker key ("ollama",
	// "fetch:example.com"); "" disables both.
	Backend string
	// Tenant is the caller's tenant: the limiter queues and shares a
	// backend's capacity per tenant.
	Tenant string

	Coalesce   bool          // identical in-flight requests share one call
	ReadCache  bool          // may be answered from the cache
	WriteCache bool          // the answer may be stored
	TTL        time.Duration // how long a stored answer is fresh (0: cache default)
	Limit      bool          // passes the adaptive limiter
	Break      bool          // passes the circuit breaker

	// Deadline is the caller's deadline when it was planned (zero: none).
	// A coalesced flight carries no deadline of its own; the limiter bounds
	// the flight's wait for a token by this one.
	Deadline time.Time

	// ServedFrom is how the response was served (one of the From…
	// constants); the policy interceptor sends it as a header.
	ServedFrom string

	rule *Rule
}

// Classify maps a finished call to its outcome using the rule's classifier.
func (d *Decision) Classify(resp any, err error) Result {
	if d.rule != nil && d.rule.Classify != nil {
		return d.rule.Classify(resp, err)
	}
	return ClassifyError(err)
}

// Storable reports whether resp may be cached and for how long.
func (d *Decision) Storable(resp any) (ttl time.Duration, negative, ok bool) {
	if !d.WriteCache || d.Key == "" {
		return 0, false, false
	}
	if d.rule != nil && d.rule.Store != nil {
		ttl, negative, ok = d.rule.Store(d, resp)
	} else {
		ok = true
	}
	if ttl == 0 {
		ttl = d.TTL
	}
	return ttl, negative, ok
}

// Clone returns a copy for a shared flight, so that what the flight reports
// never races with what the caller reads.
func (d *Decision) Clone() *Decision {
	c := *d
	c.ServedFrom = FromBackend
	return &c
}

type decisionKey struct{}

// NewContext returns ctx carrying d.
func NewContext(ctx context.Context, d *Decision) context.Context {
	return context.WithValue(ctx, decisionKey{}, d)
}

// FromContext returns the request's decision, or nil outside the data path.
func FromContext(ctx context.Context) *Decision {
	d, _ := ctx.Value(decisionKey{}).(*Decision)
	return d
}

// ClassifyError maps an error by its gRPC code: OK is Success; UNAVAILABLE,
// INTERNAL, UNKNOWN, DATA_LOSS and DEADLINE_EXCEEDED are Failure;
// RESOURCE_EXHAUSTED is Overload (with the RetryInfo delay); the caller's own
// cancellation and every caller mistake are Neutral.
func ClassifyError(err error) Result {
	if err == nil {
		return Result{Outcome: Success}
	}
	if errors.Is(err, context.Canceled) {
		return Result{Outcome: Neutral}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Result{Outcome: Failure}
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss, codes.DeadlineExceeded:
		return Result{Outcome: Failure}
	case codes.ResourceExhausted:
		return Result{Outcome: Overload, RetryAfter: RetryDelay(st)}
	}
	return Result{Outcome: Neutral}
}

// ClassifyCall is ClassifyError that also treats a deadline or cancellation
// of ctx (the caller, or every waiter of a flight, gave up) as Neutral: a
// caller's short deadline says nothing about the backend.
func ClassifyCall(ctx context.Context, d *Decision, resp any, err error) Result {
	if err != nil && ctx.Err() != nil {
		return Result{Outcome: Neutral}
	}
	if d == nil {
		return ClassifyError(err)
	}
	return d.Classify(resp, err)
}

// Key returns the prefix parts followed by the hex SHA-256 of the request as seen by
// tenant on method: a fixed-size, collision-resistant identity for equal
// requests. The encoding is deterministic protobuf, so equal requests give
// equal keys whatever the field order on the wire. The result is the only
// allocation.
func Key(prefix []string, tenant, method string, m proto.Message) (string, error) {
	bp := keyBufs.Get().(*[]byte)
	defer keyBufs.Put(bp)
	buf := append((*bp)[:0], tenant...)
	buf = append(buf, 0)
	buf = append(buf, method...)
	buf = append(buf, 0)
	buf, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf, m)
	if err != nil {
		return "", err
	}
	if cap(buf) <= maxPooledKeyBuf {
		*bp = buf
	}
	sum := sha256.Sum256(buf)
	var hexSum [2 * sha256.Size]byte
	hex.Encode(hexSum[:], sum[:])
	n := len(hexSum)
	for _, p := range prefix {
		n += len(p)
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range prefix {
		b.WriteString(p)
	}
	b.Write(hexSum[:])
	return b.String(), nil
}

// HashKey is Key without a prefix.
func HashKey(tenant, method string, m proto.Message) (string, error) {
	return Key(nil, tenant, method, m)
}

const maxPooledKeyBuf = 64 << 10

var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
