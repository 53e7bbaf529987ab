package fleet

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Modes of a replica (Stats.Mode).
const (
	ModeRedis = "redis" // operations go to Redis
	ModeLocal = "local" // the breaker is open: local tier only
)

// Stats is a snapshot of a Fleet. Counters are cumulative since New or the
// last ResetStats. Metric names (service/promstats) are in the comments.
type Stats struct {
	ReplicaID string
	Prefix    string
	Mode      string // cluster_fallback (1 when ModeLocal)
	// Subscribed: the purge channel's subscription is confirmed.
	Subscribed bool
	// ReplicasSeen is how many replicas had a live heartbeat at this
	// replica's last heartbeat, itself included (cluster_replicas_seen);
	// 0 before the first one succeeds.
	ReplicasSeen int64

	RTTP50, RTTP99 time.Duration // cluster_redis_rtt_p50_seconds, _p99_seconds: of the last 1024 successful operations

	Ops       int64 // cluster_redis_ops_total: operations sent
	Errors    int64 // cluster_redis_errors_total: sent and failed (timeouts, resets, refused)
	Fallbacks int64 // cluster_redis_fallbacks_total: not sent (breaker open, 256 in flight)
	Dials     int64 // cluster_redis_dials_total: connections attempted
	// BreakerOpens counts the breaker's moves to open
	// (cluster_redis_breaker_opens_total).
	BreakerOpens   int64
	WritesDropped  int64 // cluster_writes_dropped_total: cache writes dropped (queue full or Redis failing)
	PurgesSent     int64 // cluster_purges_sent_total
	PurgesReceived int64 // cluster_purges_received_total: other replicas' purges applied here
	KeysPurged     int64 // cluster_keys_purged_total: Redis keys removed by this replica's purges

	// Cross-replica flights (Lead, Wait).
	LeasesWon   int64 // cluster_leases_won_total: flights this replica led for the fleet
	LeasesLost  int64 // cluster_leases_lost_total: flights led by another replica
	RemoteWaits int64 // cluster_remote_waits_total: waits for another replica's flight
	Takeovers   int64 // cluster_lease_takeovers_total: waits that found neither lease nor answer (owner gone)

	// Stream flights (LeadStream, stream.go).
	StreamsLed         int64 // cluster_streams_led_total: stream flights this replica led for the fleet
	StreamJoins        int64 // cluster_stream_joins_total: follows of another replica's stream flight
	StreamJoinsRefused int64 // cluster_stream_joins_refused_total: not followed (8 follows running): alone
	StreamTakeovers    int64 // cluster_stream_takeovers_total: follows that found the owner gone
	StreamsBroken      int64 // cluster_streams_broken_total: stream flights led here that ended broken
	// Shared breakers and concurrency slots (breaker.go, slots.go).
	BreakerNoticesSent     int64 // cluster_breaker_notices_sent_total: this replica's breaker trips and closes published
	BreakerNoticesReceived int64 // cluster_breaker_notices_received_total: other replicas' trips and closes applied here
	SlotLeases             int64 // cluster_slot_leases_total: concurrency slot leases granted to this replica (renewals included)
	SlotsLeased            int64 // cluster_slots_leased: slots this replica's current leases hold, all backends
	// Held counts the flights whose backend call went on for other
	// replicas' waiters after this replica's callers had all left
	// (cluster_flights_held_total).
	Held int64
}

// counters are the cumulative stats; every field is atomic.
type counters struct {
	ops, errors, fallbacks, dials, dialErrors atomic.Int64
	breakerOpens, writesDropped               atomic.Int64
	purgesSent, purgesReceived, keysPurged    atomic.Int64
	leasesWon, leasesLost, remoteWaits        atomic.Int64
	takeovers, held                           atomic.Int64

	replicas   atomic.Int64 // a gauge: not reset
	subscribed atomic.Bool  // a gauge: not reset
}

// Stats returns a snapshot.
func (f *Fleet) Stats() Stats {
	mode := ModeRedis
	if !f.usingRedis() {
		mode = ModeLocal
	}
	p50, p99 := f.rtt.quantiles()
	return Stats{
		ReplicaID: f.set.ReplicaID, Prefix: f.set.Prefix, Mode: mode,
		Subscribed: f.stats.subscribed.Load(), ReplicasSeen: f.stats.replicas.Load(),
		RTTP50: p50, RTTP99: p99,
		Ops: f.stats.ops.Load(), Errors: f.stats.errors.Load(), Fallbacks: f.stats.fallbacks.Load(),
		Dials: f.stats.dials.Load(), BreakerOpens: f.stats.breakerOpens.Load(),
		WritesDropped: f.stats.writesDropped.Load(),
		PurgesSent:    f.stats.purgesSent.Load(), PurgesReceived: f.stats.purgesReceived.Load(),
		KeysPurged: f.stats.keysPurged.Load(),
		LeasesWon:  f.stats.leasesWon.Load(), LeasesLost: f.stats.leasesLost.Load(),
		RemoteWaits: f.stats.remoteWaits.Load(), Takeovers: f.stats.takeovers.Load(),
		StreamsLed: f.streams.led.Load(), StreamJoins: f.streams.joined.Load(),
		StreamJoinsRefused: f.streams.refused.Load(), StreamTakeovers: f.streams.takeover.Load(),
		StreamsBroken:      f.streams.broken.Load(),
		Held:               f.stats.held.Load(),
		BreakerNoticesSent: f.bstats.breakerSent.Load(), BreakerNoticesReceived: f.bstats.breakerReceived.Load(),
		SlotLeases: f.bstats.slotLeases.Load(), SlotsLeased: f.bstats.heldSlots(),
	}
}

// ResetStats zeroes the counters and the round-trip window.
func (f *Fleet) ResetStats() {
	c := &f.stats
	for _, n := range []*atomic.Int64{
		&c.ops, &c.errors, &c.fallbacks, &c.dials, &c.dialErrors, &c.breakerOpens,
		&c.writesDropped, &c.purgesSent, &c.purgesReceived, &c.keysPurged,
		&c.leasesWon, &c.leasesLost, &c.remoteWaits, &c.takeovers, &c.held,
		&f.streams.led, &f.streams.joined, &f.streams.refused, &f.streams.takeover, &f.streams.broken,
		&f.bstats.breakerSent, &f.bstats.breakerReceived, &f.bstats.slotLeases,
	} {
		n.Store(0)
	}
	f.rtt.reset()
}

// rttWindow keeps the last len(samples) round trips.
type rttWindow struct {
	mu      sync.Mutex
	samples [1024]time.Duration // guarded by mu
	n       int                 // guarded by mu: samples written, saturating at len(samples)
	next    int                 // guarded by mu: where the next sample goes
}

func (w *rttWindow) add(d time.Duration) {
	w.mu.Lock()
	w.samples[w.next] = d
	w.next = (w.next + 1) % len(w.samples)
	w.n = min(w.n+1, len(w.samples))
	w.mu.Unlock()
}

func (w *rttWindow) quantiles() (p50, p99 time.Duration) {
	w.mu.Lock()
	s := slices.Clone(w.samples[:w.n])
	w.mu.Unlock()
	if len(s) == 0 {
		return 0, 0
	}
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99)
}

func (w *rttWindow) reset() {
	w.mu.Lock()
	w.n, w.next = 0, 0
	w.mu.Unlock()
}
