package breaker

import (
	"context"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/vega-gateway/vega/perf/policy"
)

// Fleet shares breaker trips among the replicas of a fleet (perf/fleet
// implements it on Redis). Each method is one bounded round trip; a Set
// calls them off its callers' path, from goroutines of its own.
type Fleet interface {
	// BreakerOpened tells the fleet that key's breaker opened here for
	// openFor. It reports whether the fleet took it.
	BreakerOpened(ctx context.Context, key string, openFor time.Duration) bool
	// BreakerClosed tells the fleet that key's breaker closed here (its
	// probe succeeded).
	BreakerClosed(ctx context.Context, key string) bool
	// ClaimProbe asks for the fleet's half-open probe right of key for
	// ttl: won when this replica may probe; ok = false when the fleet
	// cannot answer.
	ClaimProbe(ctx context.Context, key string, ttl time.Duration) (won, ok bool)
}

// Shared breakers (Settings.Fleet). The local breaker still decides;
// the fleet only carries hints, so a Redis that fails leaves each replica
// with its own breakers exactly as without a fleet (gobreaker v2's
// DistributedCircuitBreaker does the opposite: it keeps the state in the
// store and serialises every call on a store mutex, so the breaker fails
// with the store). The protocol, per key:
//
//   - a trip here (the local breaker opens) holds this key here for
//     OpenTimeout and is published (BreakerOpened) with that time;
//   - an open notice from another replica holds the key here for the time
//     it gives: calls are refused at once, UNAVAILABLE with RetryInfo,
//     without reaching the local breaker or the backend;
//   - when a hold's time ends, the replica asks for the fleet's probe
//     right (ClaimProbe, probeLease). The winner lets one call at a time
//     through as the fleet's probe; the others keep holding for
//     probeLease and ask again then, unless a notice comes first. A
//     replica that won but has no call to probe with gives the right up
//     with its lease, and one of the others takes it;
//   - the probe's success closes the key fleet-wide (BreakerClosed; every
//     replica drops its hold and restarts a breaker that is not closed); its
//     failure opens it fleet-wide again for OpenTimeout;
//   - a claim that the fleet cannot answer ends the hold: the local
//     breaker decides alone.
//
// While a hold waits for its claim's answer (one round trip) it goes on
// refusing for at most claimGrace past its time. Operators' forced modes
// stay local: a forced breaker ignores the fleet and publishes nothing.
// Publishing runs on one goroutine per key at a time, in order, off the
// callers' path; claims run on the hold's timer.
const (
	probeLease = 5 * time.Second
	claimGrace = time.Second
	outboxMax  = 8 // notices waiting to be sent per key; older ones are dropped
)

// FleetNotice applies another replica's notice about key's breaker: open
// for openFor, or closed when openFor is 0. perf/fleet's OnBreaker delivers
// it. A forced breaker ignores it; without Settings.Fleet it does nothing.
func (s *Set) FleetNotice(key string, openFor time.Duration) {
	if s.s.Fleet == nil || key == "" {
		return
	}
	b := s.get(key)
	if Mode(b.mode.Load()) != Auto {
		return
	}
	if openFor > 0 {
		b.fleetMove(func(now time.Time) { b.holdLocked(now, openFor) })
		return
	}
	b.fleetMove(func(time.Time) { b.releaseLocked() })
	b.resetLocal()
}

// fleetAdmit is Allow's fleet step, before the local breaker: a held key
// refuses; a key this replica probes for the fleet admits one call at a
// time and returns the probe's generation (0: not a probe).
func (b *breaker) fleetAdmit() (uint64, error) {
	if until := b.fleetUntil.Load(); until != 0 {
		now := time.Now()
		if now.UnixNano() < until+int64(claimGrace) {
			b.rejected.Add(1)
			wait := time.Unix(0, until).Sub(now)
			if wait <= 0 {
				wait = min(probeRetry, b.set.s.OpenTimeout) // the claim is being asked
			}
			return 0, b.refuse("is open on the fleet", wait)
		}
	}
	if gen := b.probeGen.Load(); gen != 0 {
		if !b.probeBusy.CompareAndSwap(false, true) {
			b.rejected.Add(1)
			return 0, b.refuse("is half-open with the fleet's probe in flight", min(probeRetry, b.set.s.OpenTimeout))
		}
		return gen, nil
	}
	return 0, nil
}

// fleetMove applies change under fmu and records the effective state's
// move as an event. The states are read outside fmu: reading the local
// breaker takes gobreaker's mutex, which is taken before fmu.
func (b *breaker) fleetMove(change func(now time.Time)) {
	from := b.state()
	now := time.Now()
	b.fmu.Lock()
	change(now)
	b.fmu.Unlock()
	if to := b.state(); to != from {
		b.record(from, to, now)
	}
	if b.pending.Load() {
		b.deliver()
	}
}

// holdLocked holds the key for d and arms the claim of the probe right at
// its end. Any probe of this replica ends.
func (b *breaker) holdLocked(now time.Time, d time.Duration) {
	b.fgen++
	gen := b.fgen
	b.probeGen.Store(0)
	b.fleetUntil.Store(now.Add(d).UnixNano())
	b.armLocked(d, func() { b.claim(gen) })
}

// releaseLocked drops the hold and any probe: the local breaker decides.
func (b *breaker) releaseLocked() {
	b.fgen++
	b.probeGen.Store(0)
	b.fleetUntil.Store(0)
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
}

func (b *breaker) armLocked(d time.Duration, fn func()) {
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timer = time.AfterFunc(d, fn)
}

// claim asks for the fleet's probe right when hold gen ends (on its
// timer's goroutine).
func (b *breaker) claim(gen uint64) {
	b.fmu.Lock()
	current := b.fgen == gen
	b.fmu.Unlock()
	if !current {
		return
	}
	won, ok := b.set.s.Fleet.ClaimProbe(context.Background(), b.key, probeLease)
	b.fleetMove(func(now time.Time) {
		if b.fgen != gen {
			return // a notice came meanwhile
		}
		switch {
		case !ok:
			b.releaseLocked()
		case won:
			b.fgen++
			next := b.fgen
			b.fleetUntil.Store(0)
			b.probeBusy.Store(false)
			b.probeGen.Store(next)
			// No outcome within the lease (no call came, or it hangs):
			// hold again and ask again, as the others do.
			b.armLocked(probeLease, func() { b.probeExpired(next) })
		default:
			b.holdLocked(now, probeLease)
		}
	})
}

// probeExpired: probe gen had no outcome within its lease.
func (b *breaker) probeExpired(gen uint64) {
	b.fmu.Lock()
	current := b.fgen == gen
	if current {
		b.holdLocked(time.Now(), 0)
	}
	b.fmu.Unlock()
}

// probeDone takes the outcome of the fleet's probe gen, after the local
// breaker counted it.
func (b *breaker) probeDone(gen uint64, o policy.Outcome) {
	closed := false
	b.fleetMove(func(now time.Time) {
		b.probeBusy.Store(false)
		if b.fgen != gen {
			return // a notice or a local trip came meanwhile
		}
		switch o {
		case policy.Success:
			b.releaseLocked()
			b.sendLocked(0)
			closed = true
		case policy.Failure:
			b.holdLocked(now, b.set.s.OpenTimeout)
			b.sendLocked(b.set.s.OpenTimeout)
		}
	})
	if closed {
		b.resetLocal()
	}
}

// localChange follows the local breaker's own moves (called with
// gobreaker's mutex held, so it neither reads the breaker nor records).
// A trip holds the key here and is published; a close from half-open is
// published.
func (b *breaker) localChange(from, to gobreaker.State, at time.Time) {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	switch {
	case to == gobreaker.StateOpen:
		b.holdLocked(at, b.set.s.OpenTimeout)
		b.sendLocked(b.set.s.OpenTimeout)
	case to == gobreaker.StateClosed && from == gobreaker.StateHalfOpen:
		b.releaseLocked()
		b.sendLocked(0)
	}
}

// resetLocal restarts the local breaker closed when it is not (the fleet's
// probe succeeded elsewhere, or here through the fleet's probe).
func (b *breaker) resetLocal() {
	b.modeMu.Lock()
	from := b.cb.Load().State()
	if b.evicted || Mode(b.mode.Load()) != Auto || from == gobreaker.StateClosed {
		b.modeMu.Unlock()
		return
	}
	b.install()
	b.modeMu.Unlock()
}

// sendLocked queues a notice (open for d; closed when d is 0) and starts
// the key's sender when none runs.
func (b *breaker) sendLocked(d time.Duration) {
	if len(b.outbox) == outboxMax {
		b.outbox = b.outbox[1:]
	}
	b.outbox = append(b.outbox, d)
	if !b.sending {
		b.sending = true
		go b.send()
	}
}

// send delivers the key's queued notices in order, then ends.
func (b *breaker) send() {
	f := b.set.s.Fleet
	for {
		b.fmu.Lock()
		if len(b.outbox) == 0 {
			b.sending = false
			b.fmu.Unlock()
			return
		}
		d := b.outbox[0]
		b.outbox = b.outbox[1:]
		b.fmu.Unlock()
		if d > 0 {
			f.BreakerOpened(context.Background(), b.key, d)
		} else {
			f.BreakerClosed(context.Background(), b.key)
		}
	}
}
