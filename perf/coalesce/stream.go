package coalesce

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errEnded is what emit returns once fn has returned.
var errEnded = errors.New("coalesce: emit after the shared stream ended")

// streamCall is a streaming flight. It keeps every message it emitted, so
// that a late joiner can replay them, until the flight ends and its last
// caller has read them.
type streamCall struct {
	flight

	mu     sync.Mutex    // guards the fields below
	msgs   []any         // the messages emitted so far, in order; an element never changes once appended
	notify chan struct{} // closed and replaced on each append and when fn returns
	ended  bool          // fn has returned; err is final
	err    error         // fn's error, or a *PanicError
}

// DoStream runs fn once for all concurrent callers of key. fn sends the
// messages of the flight with emit, which fails once the flight was
// abandoned. Each caller's recv is called, on the caller's goroutine, with
// every message of the flight in order from the first one: a late joiner
// first receives the messages already emitted, then the live ones. A slow
// recv delays only its own caller. recv returning an error makes its caller
// leave with that error.
//
// DoStream returns the flight's final error, or the caller's ctx error or
// recv error. joined reports that this caller joined a flight another
// caller started. The context, refcount and panic rules are those of Do.
// The messages are shared by all the callers and must be treated as
// immutable; the flight keeps them all until it ends.
func (g *Group) DoStream(ctx context.Context, key string, fn func(ctx context.Context, emit func(msg any) error) error, recv func(msg any) error) (err error, joined bool) {
	return g.doStream(ctx, key, fn, nil, recv)
}

// doStream is DoStream that calls start, if not nil, on the caller's
// goroutine before the first recv, with whether the caller joined.
func (g *Group) doStream(ctx context.Context, key string, fn func(ctx context.Context, emit func(msg any) error) error, start func(joined bool), recv func(msg any) error) (err error, joined bool) {
	if err := ctx.Err(); err != nil {
		g.stats.refused.Add(1)
		return err, false
	}
	g.mu.Lock()
	sc, joined := g.streams[key]
	if joined {
		sc.waiters++
		g.mu.Unlock()
		g.stats.coalesced.Add(1)
	} else {
		if g.streams == nil {
			g.streams = make(map[string]*streamCall)
		}
		sc = &streamCall{flight: newFlight(ctx, key), notify: make(chan struct{})}
		g.streams[key] = sc
		g.mu.Unlock()
		g.stats.flights.Add(1)
		g.stats.inFlight.Add(1)
		go g.runStream(sc, fn)
	}
	if start != nil {
		start(joined)
	}
	return g.follow(ctx, sc, joined, recv), joined
}

// follow hands the messages of sc to recv until the flight ends or the
// caller leaves. It holds no lock while it waits or calls recv.
func (g *Group) follow(ctx context.Context, sc *streamCall, joined bool, recv func(msg any) error) error {
	g.stats.waiting.Add(1)
	defer g.stats.waiting.Add(-1)
	var began time.Time
	if joined {
		began = time.Now()
	}
	for next := 0; ; {
		msgs, notify, ended, err := sc.since(next)
		if joined && (len(msgs) > 0 || ended) {
			g.stats.totalWait.Add(int64(time.Since(began)))
			joined = false // counted
		}
		for _, m := range msgs {
			if err := ctx.Err(); err != nil {
				g.leaveStream(sc)
				return err
			}
			if err := recv(m); err != nil {
				g.leaveStream(sc)
				return err
			}
		}
		next += len(msgs)
		switch {
		case len(msgs) > 0:
			// Look again before waiting.
		case ended:
			return err
		default:
			select {
			case <-notify:
			case <-ctx.Done():
				g.leaveStream(sc)
				return ctx.Err()
			}
		}
	}
}

// since returns the messages from index next on, the channel closed at the
// next change, and whether fn has returned with err.
func (sc *streamCall) since(next int) (msgs []any, notify <-chan struct{}, ended bool, err error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.msgs[next:], sc.notify, sc.ended, sc.err
}

// emit appends msg for every caller, present and future.
func (sc *streamCall) emit(msg any) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.ended {
		return errEnded
	}
	if err := sc.ctx.Err(); err != nil {
		return err
	}
	sc.msgs = append(sc.msgs, msg)
	sc.wakeLocked()
	return nil
}

// end records fn's final error and wakes the callers.
func (sc *streamCall) end(err error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.ended, sc.err = true, err
	sc.wakeLocked()
}

func (sc *streamCall) wakeLocked() {
	close(sc.notify)
	sc.notify = make(chan struct{})
}

// leaveStream is leaveCall for a streaming flight.
func (g *Group) leaveStream(sc *streamCall) {
	g.mu.Lock()
	sc.waiters--
	abandoned := sc.waiters == 0 && g.streams[sc.key] == sc
	if abandoned {
		delete(g.streams, sc.key)
	}
	g.mu.Unlock()
	if abandoned {
		g.abandon(&sc.flight)
	}
}

// runStream is the flight goroutine of sc.
func (g *Group) runStream(sc *streamCall, fn func(ctx context.Context, emit func(msg any) error) error) {
	normal := false
	var err error
	defer func() {
		var perr *PanicError
		if !normal {
			perr = abnormal(recover())
			err = perr
		}
		g.mu.Lock()
		if g.streams[sc.key] == sc { // neither abandoned nor replaced by a newer flight
			delete(g.streams, sc.key)
		}
		g.mu.Unlock()
		g.finish(&sc.flight, perr)
		sc.end(err)
		g.report(sc.key, perr)
	}()
	err = fn(sc.ctx, sc.emit)
	normal = true
}
