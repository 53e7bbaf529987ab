package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// A fleet flight's leader whose backend call failed hands the error to the
// flight's waiters on other replicas, so that a herd against a failing
// backend costs one call for the fleet, as it does for one gateway: the
// waiters get what the leader's local waiters get — the status code, its
// message and its safe details — once (the hand-off lives with the flight,
// 30s, and is never kept in the cache tier).
//
// Shared: every error that is a gRPC status (status.FromError) with a code
// other than the three below — the backend's own answers (INVALID_ARGUMENT,
// NOT_FOUND, PERMISSION_DENIED, INTERNAL, UNAVAILABLE …) and the gateway's
// refusals on the backend's behalf (the breaker's UNAVAILABLE, the
// limiter's RESOURCE_EXHAUSTED). Not shared, so the waiters lead again:
//
//   - any error once the leader's call context ended: its callers left (and
//     no waiter was left in the fleet to keep the call going), or the
//     gateway closed; that is no answer for the others;
//   - CANCELED and DEADLINE_EXCEEDED: a cancellation, or a deadline that
//     may be the caller's (a flight runs with no deadline of its own, but
//     the limiter plans with its starter's), says nothing about the next
//     call;
//   - OK (an error with code OK is malformed) and errors that are not a
//     status: grpc-go sends those as UNKNOWN with the error's text, which
//     is the gateway's own wording, not an answer.
//
// Details: only the google.rpc types meant for clients (ErrorInfo,
// RetryInfo, QuotaFailure, PreconditionFailure, BadRequest, ResourceInfo,
// Help, LocalizedMessage) are handed over; DebugInfo (stack traces),
// RequestInfo (the leader's caller's request id) and unknown types are
// dropped.
//
// The encoding, version 1 (uvarint lengths):
//
//	"vge" 0x01                  magic and version
//	key       uvarint + bytes   the flight's cache key
//	status    uvarint + bytes   google.rpc.Status, protobuf wire format
//
// A reader checks the size bound, magic, version, key, the status (its code
// one that is shared, its details of the types above) and that every byte
// is accounted for; a mismatch is a bad hand-off (counted in
// Stats.RemoteBad; the waiter leads again).
const (
	errorMagic   = "vge"
	errorVersion = 1
)

// sharedDetails are the detail types handed to other replicas' waiters.
var sharedDetails = func() map[string]bool {
	m := map[string]bool{}
	for _, d := range []proto.Message{
		&errdetails.ErrorInfo{}, &errdetails.RetryInfo{}, &errdetails.QuotaFailure{},
		&errdetails.PreconditionFailure{}, &errdetails.BadRequest{}, &errdetails.ResourceInfo{},
		&errdetails.Help{}, &errdetails.LocalizedMessage{},
	} {
		a, _ := anypb.New(d)
		m[a.GetTypeUrl()] = true
	}
	return m
}()

// sharedCode reports whether an error of code c is handed to the waiters.
func sharedCode(c codes.Code) bool {
	return c != codes.OK && c != codes.Canceled && c != codes.DeadlineExceeded && c <= codes.Unauthenticated
}

// sharedError encodes err, the leader's backend call's error under
// callCtx, for the flight's waiters, or returns nil when it is not shared
// (see above) or its encoding is above RemoteMaxBytes.
func (c *Cache) sharedError(key string, callCtx context.Context, err error) []byte {
	if callCtx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	st, isStatus := status.FromError(err)
	if !isStatus || !sharedCode(st.Code()) {
		return nil
	}
	p := st.Proto()
	kept := p.Details[:0:0]
	for _, d := range p.Details {
		if sharedDetails[d.GetTypeUrl()] {
			kept = append(kept, d)
		}
	}
	p.Details = kept
	b := encodeError(key, p)
	if b == nil || len(b) > c.set.RemoteMaxBytes {
		return nil
	}
	return b
}

func encodeError(key string, p *spb.Status) []byte {
	raw, err := proto.Marshal(p)
	if err != nil {
		return nil
	}
	b := make([]byte, 0, len(errorMagic)+1+2*binary.MaxVarintLen64+len(key)+len(raw))
	b = append(b, errorMagic...)
	b = append(b, errorVersion)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(raw)))
	return append(b, raw...)
}

// isSharedError reports whether b is in the error encoding (any version).
func isSharedError(b []byte) bool {
	return len(b) >= len(errorMagic) && string(b[:len(errorMagic)]) == errorMagic
}

// decodeError checks and decodes an error handed over under key: the
// status error, or the reason it is bad.
func decodeError(b []byte, key string, maxBytes int) (error, error) {
	switch {
	case len(b) > maxBytes:
		return nil, fmt.Errorf("%w: %d bytes, above the %d bound", errBadEntry, len(b), maxBytes)
	case len(b) < len(errorMagic)+1 || !isSharedError(b):
		return nil, fmt.Errorf("%w: no error header", errBadEntry)
	case b[len(errorMagic)] != errorVersion:
		return nil, fmt.Errorf("%w: error version %d", errBadEntry, b[len(errorMagic)])
	}
	rest := b[len(errorMagic)+1:]
	next := func() ([]byte, bool) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return nil, false
		}
		out := rest[w : w+int(n)]
		rest = rest[w+int(n):]
		return out, true
	}
	k, ok := next()
	if !ok || string(k) != key {
		return nil, fmt.Errorf("%w: error handed over under another key", errBadEntry)
	}
	raw, ok := next()
	if !ok || len(rest) != 0 {
		return nil, fmt.Errorf("%w: error truncated or trailing bytes", errBadEntry)
	}
	var p spb.Status
	if err := proto.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadEntry, err)
	}
	if p.GetCode() < 0 || !sharedCode(codes.Code(p.GetCode())) {
		return nil, fmt.Errorf("%w: code %d is never handed over", errBadEntry, p.GetCode())
	}
	for _, d := range p.GetDetails() {
		if !sharedDetails[d.GetTypeUrl()] {
			return nil, fmt.Errorf("%w: detail %q is never handed over", errBadEntry, d.GetTypeUrl())
		}
	}
	return status.FromProto(&p).Err(), nil
}
