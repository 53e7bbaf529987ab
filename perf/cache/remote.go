package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/vega-gateway/vega/perf/policy"
)

// Remote is a second tier behind the local one, shared by a fleet of
// gateways (perf/fleet implements it on Redis). Its trouble stays inside
// it: Get reports a failure as a miss, Set and Purge drop what they could
// not do (Purge also returns the failure, for the log).
type Remote interface {
	// Get returns the bytes stored under key, in at most one round trip
	// bounded by the remote's own budget.
	Get(ctx context.Context, key string) ([]byte, bool)
	// Set stores val under key for ttl, in the background.
	Set(key string, val []byte, ttl time.Duration)
	// Purge removes the keys that start with prefix from the remote tier
	// and from every other gateway's local tier, and returns how many
	// remote keys it removed.
	Purge(ctx context.Context, prefix string) (int, error)
}

// Flights coalesces a key's backend calls across the fleet (perf/fleet
// implements it on Redis): one gateway leads, the others wait for its
// answer.
type Flights interface {
	// Lead takes key's flight or finds who leads it.
	//
	// Leading, it returns the context the backend call runs with — ctx's
	// values; it outlives ctx while other gateways still wait for the
	// answer, and ends once none does — and finish, to be called once with
	// the encoded answer: keep stores it in the remote tier for ttl, !keep
	// hands it to this flight's waiters only; nil shares nothing. The
	// waiters wake either way.
	//
	// Not leading, it returns wait, which returns ok and the flight's
	// answer once the flight ended with one shared: the one handed over,
	// or (kept) the remote tier's entry for key, read as the flight ended
	// (not to be served to a caller that may not read the cache, nor when
	// it is not fresh); not ok when the flight ended with nothing shared or
	// its leader is gone (the caller may lead), the fleet fails, or ctx
	// ends.
	//
	// None of them means the fleet cannot answer: the caller is alone.
	Lead(ctx context.Context, key string) (call context.Context, finish func(val []byte, ttl time.Duration, keep bool), wait func(context.Context) (answer []byte, kept, ok bool))
}

// maxFleetAttempts bounds how often a flight tries to lead or wait before
// it calls the backend on its own.
const maxFleetAttempts = 3

// DefaultRemoteMaxBytes bounds the encoded answers shared through Remote.
const DefaultRemoteMaxBytes = 1 << 20

// remotePurgeTimeout bounds the remote part of Purge.
const remotePurgeTimeout = 10 * time.Second

// The remote entry encoding, version 1 (big endian, uvarint lengths):
//
//	"vgc" 0x01                  magic and version
//	flags     1 byte            1: negative, 2: a stream (a list of messages)
//	fresh     8 bytes           fresh until, unix nanoseconds
//	key       uvarint + bytes   the cache key it was stored under
//	type      uvarint + bytes   the messages' full protobuf name
//	count     uvarint           how many messages (1 unless a stream)
//	messages  count × (uvarint + bytes), protobuf wire format
//
// A reader checks the size bound, magic, version, flags, key, type and
// that every byte is accounted for; any mismatch makes the entry "bad": it
// is ignored (a miss) and counted (Stats.RemoteBad). A new layout takes a
// new version byte; a reader ignores versions it does not know, so replicas
// of two versions share nothing rather than misread each other.
const (
	remoteMagic    = "vgc"
	remoteVersion  = 1
	flagNegative   = 1
	flagStream     = 2
	remoteHeader   = len(remoteMagic) + 1 + 1 + 8
	maxRemoteCount = 1 << 16
)

var errBadEntry = errors.New("cache: bad remote entry")

// encodeRemote encodes an answer, or returns false when it is not a
// protobuf message or a list of messages of one type.
func encodeRemote(key string, v any, freshUntil int64, negative bool) ([]byte, bool) {
	var msgs []proto.Message
	stream := false
	switch m := v.(type) {
	case proto.Message:
		msgs = []proto.Message{m}
	case []proto.Message:
		msgs, stream = m, true
	default:
		return nil, false
	}
	var name protoreflect.FullName
	for i, m := range msgs {
		n := m.ProtoReflect().Descriptor().FullName()
		if i > 0 && n != name {
			return nil, false
		}
		name = n
	}
	if len(msgs) == 0 {
		name = ""
	}
	b := make([]byte, 0, remoteHeader+len(key)+len(name)+16)
	b = append(b, remoteMagic...)
	b = append(b, remoteVersion)
	var flags byte
	if negative {
		flags |= flagNegative
	}
	if stream {
		flags |= flagStream
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(freshUntil))
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for _, m := range msgs {
		b = protowireAppend(b, m)
		if b == nil {
			return nil, false
		}
	}
	return b, true
}

func protowireAppend(b []byte, m proto.Message) []byte {
	b = binary.AppendUvarint(b, uint64(proto.Size(m)))
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
	if err != nil {
		return nil
	}
	return out
}

// remoteEntry is a decoded remote entry.
type remoteEntry struct {
	value      any // proto.Message, or []proto.Message for a stream
	freshUntil int64
	negative   bool
	size       int // the messages' bytes
}

// decodeRemote checks and decodes b, stored under key.
func decodeRemote(b []byte, key string, maxBytes int) (remoteEntry, error) {
	var e remoteEntry
	if len(b) > maxBytes {
		return e, fmt.Errorf("%w: %d bytes, above the %d bound", errBadEntry, len(b), maxBytes)
	}
	if len(b) < remoteHeader || string(b[:3]) != remoteMagic {
		return e, fmt.Errorf("%w: no header", errBadEntry)
	}
	if b[3] != remoteVersion {
		return e, fmt.Errorf("%w: version %d", errBadEntry, b[3])
	}
	flags := b[4]
	if flags&^(flagNegative|flagStream) != 0 {
		return e, fmt.Errorf("%w: flags %#x", errBadEntry, flags)
	}
	e.negative = flags&flagNegative != 0
	fresh := binary.BigEndian.Uint64(b[5:13])
	if fresh > math.MaxInt64 {
		return e, fmt.Errorf("%w: fresh-until out of range", errBadEntry)
	}
	e.freshUntil = int64(fresh)
	rest := b[remoteHeader:]
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
		return e, fmt.Errorf("%w: stored under another key", errBadEntry)
	}
	name, ok := next()
	if !ok {
		return e, fmt.Errorf("%w: truncated", errBadEntry)
	}
	count, w := binary.Uvarint(rest)
	if w <= 0 || count > maxRemoteCount || (flags&flagStream == 0 && count != 1) {
		return e, fmt.Errorf("%w: message count", errBadEntry)
	}
	rest = rest[w:]
	var mt protoreflect.MessageType
	if count > 0 {
		var err error
		if mt, err = protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name)); err != nil {
			return e, fmt.Errorf("%w: type %q: %v", errBadEntry, name, err)
		}
	}
	msgs := make([]proto.Message, 0, count)
	for range count {
		raw, ok := next()
		if !ok {
			return e, fmt.Errorf("%w: truncated", errBadEntry)
		}
		m := mt.New().Interface()
		if err := proto.Unmarshal(raw, m); err != nil {
			return e, fmt.Errorf("%w: %v", errBadEntry, err)
		}
		msgs = append(msgs, m)
		e.size += len(raw)
	}
	if len(rest) != 0 {
		return e, fmt.Errorf("%w: %d trailing bytes", errBadEntry, len(rest))
	}
	if flags&flagStream != 0 {
		e.value = msgs
	} else {
		e.value = msgs[0]
	}
	return e, nil
}

// remoteLookup asks the remote tier after a local miss (one round trip).
// A fresh entry, or a stale one when withStale, is stored in the local
// tier with its remaining lifetime and returned. stream says which kind of
// answer the caller serves; an entry of the other kind is bad.
func (c *Cache) remoteLookup(ctx context.Context, key string, withStale, stream bool) (any, State) {
	if c.remote == nil {
		return nil, Miss
	}
	// Identical local misses at once share one round trip (each caller's
	// path still has at most one): a herd must not queue on the pool.
	shared, _, _ := c.remoteGets.Do(key, func() (any, error) {
		b, ok := c.remote.Get(context.WithoutCancel(ctx), key)
		if !ok {
			return remoteGot{}, nil
		}
		e, err := decodeRemote(b, key, c.set.RemoteMaxBytes)
		return remoteGot{found: true, e: e, err: err}, nil
	})
	return c.admitRemote(key, shared.(remoteGot), withStale, stream)
}

// admitRemote serves what the remote tier had under key: a fresh entry, or
// a stale one when withStale, is stored in the local tier with its
// remaining lifetime and returned; anything else is a miss (counted bad
// when it failed the checks or is of the other kind than stream).
func (c *Cache) admitRemote(key string, got remoteGot, withStale, stream bool) (any, State) {
	if !got.found {
		c.stats.remoteMisses.Add(1)
		return nil, Miss
	}
	e, err := got.e, got.err
	if err == nil {
		if _, isStream := e.value.([]proto.Message); isStream != stream {
			err = fmt.Errorf("%w: stream flag does not match the method", errBadEntry)
		}
	}
	if err != nil {
		c.stats.remoteBad.Add(1)
		return nil, Miss
	}
	now := c.clock.NowNano()
	st := Miss
	switch local := (entry{value: e.value, freshUntil: e.freshUntil, size: uint32(min(e.size, math.MaxUint32)), negative: e.negative}); {
	case now < e.freshUntil:
		st = Fresh
		c.store.Set(key, local)
	case withStale && now < c.deadline(local):
		st = Stale
		c.store.Set(key, local)
	}
	if st == Miss {
		c.stats.remoteMisses.Add(1)
		return nil, Miss
	}
	c.stats.remoteHits.Add(1)
	return e.value, st
}

// remoteGot is one shared remote read.
type remoteGot struct {
	found bool
	e     remoteEntry
	err   error // the entry failed the checks
}

// remoteSet shares an answer just stored locally, fresh until freshUntil:
// the remote keeps it for the same time plus the stale window (negative
// entries have none). Answers above RemoteMaxBytes, or not protobuf, stay
// local.
func (c *Cache) remoteSet(key string, v any, size int, freshUntil int64, negative bool) {
	if c.remote == nil {
		return
	}
	if b, hard, ok := c.remoteEntry(key, v, size, freshUntil, negative); ok {
		c.remote.Set(key, b, hard)
	}
}

// remoteEntry encodes an answer for the remote tier with its hard TTL, and
// counts it as written or skipped.
func (c *Cache) remoteEntry(key string, v any, size int, freshUntil int64, negative bool) ([]byte, time.Duration, bool) {
	if size > c.set.RemoteMaxBytes {
		c.stats.remoteSkipped.Add(1)
		return nil, 0, false
	}
	b, ok := encodeRemote(key, v, freshUntil, negative)
	if !ok || len(b) > c.set.RemoteMaxBytes {
		c.stats.remoteSkipped.Add(1)
		return nil, 0, false
	}
	hard := time.Duration(freshUntil - c.clock.NowNano())
	if !negative {
		hard += c.set.StaleFor
	}
	if hard <= 0 {
		return nil, 0, false
	}
	c.stats.remoteWrites.Add(1)
	return b, hard, true
}

// fleetFill is the Fill step of a coalesced unary call when the fleet
// coalesces: lead the fleet's flight for the key and share the answer —
// through the remote tier when it may be kept, handed to the flight's
// waiters only when not, and an error (sharedError) handed over, never
// kept — or wait for the leader's and serve it (marked coalesced). The
// leader's backend call runs with the fleet's context, which goes on after
// this gateway's callers left while other gateways wait. A flight that
// ended with nothing shared, or whose leader is gone, is led again; the
// fleet failing, or maxFleetAttempts without an answer, means calling the
// backend alone.
func (c *Cache) fleetFill(ctx context.Context, d *policy.Decision, call func(context.Context) (any, error)) (any, error) {
	for range maxFleetAttempts {
		callCtx, finish, wait := c.flights.Lead(ctx, d.Key)
		if finish != nil {
			resp, err := call(callCtx)
			if err != nil {
				finish(c.sharedError(d.Key, callCtx, err), 0, false)
				return resp, err
			}
			if v, size, freshUntil, negative, ok := c.store1(d, resp, err); ok {
				b, hard, ok := c.remoteEntry(d.Key, v, size, freshUntil, negative)
				if ok {
					finish(b, hard, true)
					return resp, err
				}
			}
			handed, _ := encodeRemote(d.Key, resp, 0, false) // freshness unused: never kept
			if len(handed) > c.set.RemoteMaxBytes {
				handed = nil
			}
			finish(handed, 0, false)
			return resp, err
		}
		if wait == nil {
			break
		}
		answer, kept, ok := wait(ctx)
		if !ok {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			continue
		}
		if !kept {
			v, err, ok := c.decodeHanded(answer, d.Key)
			if !ok {
				c.stats.remoteBad.Add(1)
				continue
			}
			c.stats.fleetCoalesced.Add(1)
			d.ServedFrom = policy.FromCoalesced
			return v, err
		}
		if !d.ReadCache {
			continue // only a handed-over answer serves a caller that may not read the cache
		}
		e, err := decodeRemote(answer, d.Key, c.set.RemoteMaxBytes)
		if v, st := c.admitRemote(d.Key, remoteGot{found: true, e: e, err: err}, false, false); st == Fresh {
			c.stats.fleetCoalesced.Add(1)
			d.ServedFrom = policy.FromCoalesced
			return v, nil
		}
	}
	resp, err := call(ctx)
	if v, size, freshUntil, negative, ok := c.store1(d, resp, err); ok {
		c.remoteSet(d.Key, v, size, freshUntil, negative)
	}
	return resp, err
}

// decodeHanded decodes what a flight's leader handed over: a unary answer
// (the remote entry encoding) or an error (the error encoding). ok is false
// when it is neither, or fails the checks.
func (c *Cache) decodeHanded(b []byte, key string) (v any, err error, ok bool) {
	if isSharedError(b) {
		err, decErr := decodeError(b, key, c.set.RemoteMaxBytes)
		return nil, err, decErr == nil
	}
	e, decErr := decodeRemote(b, key, c.set.RemoteMaxBytes)
	if _, isStream := e.value.([]proto.Message); decErr != nil || isStream {
		return nil, nil, false
	}
	return e.value, nil, true
}

// store1 stores a unary answer locally when the Decision allows it, and
// returns what the remote tier needs to share it.
func (c *Cache) store1(d *policy.Decision, resp any, err error) (v any, size int, freshUntil int64, negative, ok bool) {
	if err != nil || !d.WriteCache {
		return nil, 0, 0, false, false
	}
	m, isMsg := resp.(proto.Message)
	ttl, negative, storable := d.Storable(resp)
	if !storable || !isMsg {
		c.noteRejected()
		return nil, 0, 0, false, false
	}
	size = proto.Size(m)
	freshUntil, ok = c.setLocal(d.Key, resp, size, ttl, negative)
	return resp, size, freshUntil, negative, ok
}

// PurgeLocal removes the entries whose key starts with prefix from this
// gateway's tier only: what a purge notice from another gateway of the
// fleet asks for.
func (c *Cache) PurgeLocal(prefix string) int { return c.purgeLocal(prefix) }
