package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stream flights: one backend stream per key for the whole fleet, joinable
// from any replica, late joiners replaying from the first chunk.
//
// The replica that takes the key's lease (lease.go: the same lease as a
// unary flight's) leads: every chunk its backend stream sends is appended,
// in order, to a Redis stream of its own flight,
// "<prefix>:v1:f:<key>:s:<token>" (XADD, MAXLEN bounded), then one terminal
// entry: the end (OK, or the gRPC code and message the leader's callers
// got) or "broken". Each entry carries its index, so a reader sees a gap
// as a broken stream. The writes are off the leader's path: a writer
// goroutine per flight with a queue of streamQueue entries, appending with
// a script that skips the entries the stream already holds, so a write
// that failed is simply tried again (every joinRetryPause) while the queue
// holds what comes meanwhile. A full queue, a flight above
// maxStreamEntries or maxStreamBytes, Redis failing for writePatience, or a
// flight that ends with nothing to share (its own callers all left) makes
// the flight broken: the writer appends "broken" and drops the lease at
// once, and the leader's own callers are served as before. The stream
// lives streamEndTTL past its last append or lease renewal.
//
// A replica that finds the lease held follows the holder's stream from
// its first entry (XREAD BLOCK joinBlock, COUNT joinBatch, from id 0),
// handing each chunk over as it arrives. After leaseTTL with no new entry
// it checks the lease at the end of each empty slice: gone or another
// flight's, with no terminal entry read (one more read makes sure), the
// owner died. (Not sooner: a leader that lost its lease to a Redis outage
// but still writes is followed to its end.) Reads that fail are tried
// again every joinRetryPause for up to followPatience, longer than the
// writer's writePatience, so a Redis blip both sides outlive costs
// nothing. At most maxStreamJoins follows run at once per replica (each
// holds a pool connection while it blocks); beyond that the caller is told
// to call the backend alone.
const (
	maxStreamJoins   = 8
	streamQueue      = 256
	maxStreamEntries = 4096
	maxStreamBytes   = 4 << 20
	joinBlock        = 500 * time.Millisecond
	joinBatch        = 128
	streamEndTTL     = 10 * time.Second
	// joinRetryPause spaces the retries of a failed append or read.
	joinRetryPause = 100 * time.Millisecond
	// writePatience is how long the writer keeps trying a failed append
	// (the chunks meanwhile wait in its queue, up to its bound),
	// followPatience how long a follower keeps trying failed reads: a
	// Redis outage pauses a followed stream rather than failing it (a
	// breaker that opens and probes again turns a few 1.5s faults in a row
	// into 5s or more without a successful operation).
	writePatience  = 20 * time.Second
	followPatience = writePatience + 5*time.Second
)

// The errors of a follow that did not reach the end of the flight.
var (
	// ErrStreamBroken: the leader marked its flight broken, or an entry is
	// missing or malformed.
	ErrStreamBroken = errors.New("fleet: the stream flight broke")
	// ErrOwnerGone: the leader's lease is gone with no terminal entry.
	ErrOwnerGone = errors.New("fleet: the stream flight's owner is gone")
	// ErrFollowFailed: Redis did not answer for followPatience.
	ErrFollowFailed = errors.New("fleet: the stream flight could not be read")
)

// Entry kinds: a chunk, the end, or broken.
const (
	entryChunk  = "c"
	entryEnd    = "e"
	entryBroken = "b"
)

func (k keys) stream(key, token string) string { return k.base + "f:" + key + ":s:" + token }

// streamState is a Fleet's stream flights: the follows running now and
// the counters.
type streamState struct {
	joins                          atomic.Int64 // follows running now (at most maxStreamJoins)
	led, joined, refused, takeover atomic.Int64
	broken                         atomic.Int64
}

// streamFinishScript ends a stream flight: drops the lease if it is still
// the flight's and keeps the stream for ARGV[2] ms more.
var streamFinishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
`)

// LeadStream takes key's lease for a stream flight, or finds who holds it.
//
// Leading, it returns send, end and followed. send appends a chunk
// (encoded by the caller) for the flight's followers, without waiting for
// Redis; end, called after the last send (its first call counts), appends
// the terminal entry: with shared, the end the leader's callers got (code
// 0 for OK, else the gRPC code and its message, which must hold no
// secret); without, "broken" (nothing to share: the followers call the
// backend themselves). followed reports whether followers read the flight
// now (each registers in "<stream>:w", a ZSET scored by Redis TIME +
// followerTTL, every followerRenew while it reads; false when Redis
// fails): a leader whose own callers left goes on while it is true.
//
// Not leading, it returns follow, which hands every chunk of the holder's
// flight, from the first, to chunk, and returns the flight's end, or an
// error: ErrStreamBroken, ErrOwnerGone, ErrFollowFailed, ctx's error, or
// chunk's. It must be called once (it holds one of maxStreamJoins places
// until it returns).
//
// None of the three means the fleet cannot help (Redis failing, or
// maxStreamJoins follows already running): call the backend alone.
func (f *Fleet) LeadStream(ctx context.Context, key string) (send func(chunk []byte), end func(shared bool, code uint32, msg string), followed func(context.Context) bool, follow func(ctx context.Context, chunk func([]byte) error) (code uint32, msg string, err error)) {
	token, holder, err := f.takeLease(ctx, key)
	switch {
	case err != nil:
		return nil, nil, nil, nil
	case token == "":
		if f.streams.joins.Add(1) > maxStreamJoins {
			f.streams.joins.Add(-1)
			f.streams.refused.Add(1)
			return nil, nil, nil, nil
		}
		var once sync.Once
		return nil, nil, nil, func(ctx context.Context, chunk func([]byte) error) (uint32, string, error) {
			err := errors.New("fleet: follow called twice")
			var code uint32
			var msg string
			once.Do(func() {
				defer f.streams.joins.Add(-1)
				code, msg, err = f.follow(ctx, key, holder, chunk)
			})
			return code, msg, err
		}
	}
	stream := f.keys.stream(key, token)
	stopRenew := f.holdLease(key, token, streamEndTTL, stream)
	if stopRenew == nil {
		return nil, nil, nil, nil
	}
	if !f.goAdd() {
		stopRenew()
		return nil, nil, nil, nil
	}
	f.streams.led.Add(1)
	l := &streamLead{f: f, key: key, token: token, stream: stream, stopRenew: stopRenew,
		q: make(chan []byte, streamQueue), ended: make(chan struct{}), brokenCh: make(chan struct{})}
	go l.write()
	return l.send, l.end, l.followed, nil
}

// followed reports whether live followers read the flight (false when
// Redis cannot say).
func (l *streamLead) followed(ctx context.Context) bool {
	var n int64
	err := l.f.do(ctx, func(ctx context.Context) error {
		var err error
		n, err = followersScript.Run(ctx, l.f.rdb, []string{l.f.keys.followers(l.key, l.token)}).Int64()
		return err
	})
	return err == nil && n > 0
}

// The followers of a stream flight: a ZSET per flight, each follower's id
// scored by Redis TIME + followerTTL in ms, registered when it starts and
// again every followerRenew while it reads, removed when it returns.
const (
	followerTTL   = 3 * time.Second
	followerRenew = time.Second
)

func (k keys) followers(key, token string) string { return k.stream(key, token) + ":w" }

// followerScript registers ARGV[1] as a follower of KEYS[1] until Redis
// TIME + ARGV[2] ms.
var followerScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// followersScript drops the expired followers of KEYS[1] and counts the
// rest.
var followersScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
`)

// streamLead is a stream flight this replica leads.
type streamLead struct {
	f                  *Fleet
	key, token, stream string
	stopRenew          func()
	q                  chan []byte   // chunks for the writer
	ended              chan struct{} // closed by end, after shared, code and msg are set
	brokenCh           chan struct{} // closed by markBroken
	breakOnce, endOnce sync.Once
	shared             bool
	code               uint32
	msg                string
	sent, bytes        int  // only the sender touches them
	brokenBySend       bool // likewise
}

func (l *streamLead) markBroken() { l.breakOnce.Do(func() { close(l.brokenCh) }) }

func (l *streamLead) send(chunk []byte) {
	if l.brokenBySend {
		return
	}
	l.sent++
	l.bytes += len(chunk)
	if l.sent > maxStreamEntries || l.bytes > maxStreamBytes {
		l.brokenBySend = true
		l.markBroken()
		return
	}
	select {
	case l.q <- chunk:
	default: // the writer is behind: never wait for Redis
		l.brokenBySend = true
		l.markBroken()
	}
}

func (l *streamLead) end(shared bool, code uint32, msg string) {
	l.endOnce.Do(func() {
		l.shared, l.code, l.msg = shared, code, msg
		close(l.ended)
	})
}

// entry is one stream entry still to append: its kind and data.
type entry struct {
	kind string
	data []byte
}

// write is the flight's writer goroutine: it appends what send queued, in
// order, then the terminal entry, then drops the lease. A failed append is
// tried again every joinRetryPause, the chunks sent meanwhile waiting in
// the queue (so a Redis blip costs the followers nothing); after
// writePatience without a successful one the flight is broken.
func (l *streamLead) write() {
	f := l.f
	defer f.wg.Done()
	var (
		pending   []entry // to append, from index next
		next      int
		failedAt  time.Time
		retry     *time.Timer
		ended     = l.ended
		endQueued bool
	)
	take := func() { // what is queued now
		for {
			select {
			case c := <-l.q:
				pending = append(pending, entry{entryChunk, c})
			default:
				return
			}
		}
	}
	for {
		var q <-chan []byte
		var retryC <-chan time.Time
		if retry == nil {
			q = l.q // while waiting to retry, the queue holds what comes, up to its bound
		} else {
			retryC = retry.C
		}
		select {
		case c := <-q:
			pending = append(pending, entry{entryChunk, c})
			take()
		case <-l.brokenCh:
			l.close(next+len(pending), false)
			return
		case <-ended:
			ended = nil
			take()
			if l.shared {
				pending = append(pending, entry{entryEnd, []byte(strconv.FormatUint(uint64(l.code), 10) + " " + l.msg)})
				endQueued = true
			} else {
				l.close(next+len(pending), false)
				return
			}
		case <-retryC:
			retry = nil
		case <-f.ctx.Done(): // Close: the lease expires by itself
			if retry != nil {
				retry.Stop()
			}
			l.stopRenew()
			return
		}
		if retry != nil || len(pending) == 0 {
			continue
		}
		select {
		case <-l.brokenCh: // a chunk was dropped: never append past it
			l.close(next+len(pending), false)
			return
		default:
		}
		if err := l.append(next, pending); err != nil {
			if failedAt.IsZero() {
				failedAt = time.Now()
			} else if time.Since(failedAt) > writePatience {
				l.close(next+len(pending), false)
				return
			}
			retry = time.NewTimer(joinRetryPause)
			continue
		}
		failedAt = time.Time{}
		next += len(pending)
		pending = pending[:0]
		if endQueued {
			l.close(next, true)
			return
		}
	}
}

// close ends the flight: unless its end was appended (ok), it appends
// "broken" as entry n (best effort; a follower sees a gap as broken too);
// then it drops the lease and keeps the stream streamEndTTL more.
func (l *streamLead) close(n int, ok bool) {
	f := l.f
	if !ok {
		f.streams.broken.Add(1)
		_ = l.append(n, []entry{{entryBroken, nil}})
	}
	l.stopRenew()
	_ = f.do(f.ctx, func(ctx context.Context) error {
		return streamFinishScript.Run(ctx, f.rdb, []string{f.keys.lease(l.key), l.stream}, l.token, streamEndTTL.Milliseconds()).Err()
	})
}

// appendScript appends entries numbered from ARGV[3] (kind, data pairs
// from ARGV[4]) to the stream KEYS[1], skipping those it already holds (a
// retry after a reply was lost appends nothing twice), bounded by MAXLEN
// ARGV[1], and keeps it ARGV[2] ms.
var appendScript = redis.NewScript(`
local have = -1
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then have = tonumber(fields[i + 1]) end
  end
end
local n = tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  if n > have then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'n', n, 'k', ARGV[i], 'd', ARGV[i + 1])
  end
  n = n + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
`)

// append appends entries numbered from n in one round trip.
func (l *streamLead) append(n int, entries []entry) error {
	f := l.f
	args := make([]any, 0, 3+2*len(entries))
	args = append(args, maxStreamEntries+1, streamEndTTL.Milliseconds(), n)
	for _, e := range entries {
		args = append(args, e.kind, e.data)
	}
	err := f.do(f.ctx, func(ctx context.Context) error {
		return appendScript.Run(ctx, f.rdb, []string{l.stream}, args...).Err()
	})
	if err != nil {
		f.stats.writesDropped.Add(1)
	}
	return err
}

// follow reads the stream of the flight led under holder from its first
// entry to its terminal one.
func (f *Fleet) follow(ctx context.Context, key, holder string, chunk func([]byte) error) (uint32, string, error) {
	stream := f.keys.stream(key, holder)
	var b [8]byte
	_, _ = rand.Read(b[:])
	me, registered := hex.EncodeToString(b[:]), time.Time{}
	register := func() {
		if time.Since(registered) < followerRenew {
			return
		}
		if f.do(ctx, func(ctx context.Context) error {
			return followerScript.Run(ctx, f.rdb, []string{f.keys.followers(key, holder)}, me, followerTTL.Milliseconds()).Err()
		}) == nil {
			registered = time.Now()
		}
	}
	defer func() {
		_ = f.do(context.WithoutCancel(ctx), func(ctx context.Context) error {
			return f.rdb.ZRem(ctx, f.keys.followers(key, holder), me).Err()
		})
	}()
	register() // before it counts as a join: the leader sees it from then on
	f.streams.joined.Add(1)
	last, seq := "0", 0
	lastOK, lastEntry := time.Now(), time.Now()
	read := func(block time.Duration) ([]redis.XMessage, error) {
		var res []redis.XStream
		err := f.doFor(ctx, max(block, 0)+f.set.Timeout, func(ctx context.Context) error {
			var err error
			res, err = f.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, last}, Count: joinBatch, Block: block}).Result()
			return err
		})
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		if err != nil || len(res) == 0 {
			return nil, err
		}
		return res[0].Messages, nil
	}
	for {
		register()
		msgs, err := read(joinBlock)
		if err == nil && len(msgs) == 0 && time.Since(lastEntry) > leaseTTL {
			// Nothing new for a while: is the owner still there?
			var lease string
			err = f.do(ctx, func(ctx context.Context) error {
				var err error
				lease, err = f.rdb.Get(ctx, f.keys.lease(key)).Result()
				return err
			})
			if errors.Is(err, redis.Nil) {
				err = nil
			}
			if err == nil && lease != holder {
				// The terminal entry is written before the lease is
				// dropped: one more read finds it if there is one.
				if msgs, err = read(-1); err == nil && len(msgs) == 0 {
					f.streams.takeover.Add(1)
					return 0, "", ErrOwnerGone
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, "", ctx.Err()
			}
			if time.Since(lastOK) > followPatience {
				return 0, "", ErrFollowFailed
			}
			select {
			case <-ctx.Done():
				return 0, "", ctx.Err()
			case <-time.After(joinRetryPause):
			}
			continue
		}
		lastOK = time.Now()
		if len(msgs) > 0 {
			lastEntry = lastOK
		}
		for _, m := range msgs {
			last = m.ID
			if n, _ := m.Values["n"].(string); n != strconv.Itoa(seq) {
				return 0, "", ErrStreamBroken // a gap: trimmed, or expired and begun again
			}
			seq++
			switch m.Values["k"] {
			case entryChunk:
				d, _ := m.Values["d"].(string)
				if err := chunk([]byte(d)); err != nil {
					return 0, "", err
				}
			case entryEnd: // "<code> <message>"
				d, _ := m.Values["d"].(string)
				c, msg, _ := strings.Cut(d, " ")
				code, err := strconv.ParseUint(c, 10, 32)
				if err != nil {
					return 0, "", ErrStreamBroken
				}
				return uint32(code), msg, nil
			default: // broken, or unknown
				return 0, "", ErrStreamBroken
			}
		}
	}
}
