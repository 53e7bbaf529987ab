package cache

import (
	"sync/atomic"

	"github.com/maypok86/otter/v2"
)

// Stats is a snapshot of a Cache. The counters are cumulative since New or
// the last ResetStats; Entries, Bytes and Capacity are current. Metric
// names are in the comments.
type Stats struct {
	Entries  int64 // cache_entries
	Bytes    int64 // cache_bytes: total weight (key + value + per-entry overhead)
	Capacity int64 // cache_capacity_bytes: MaxBytes

	// Lookups, counted once per request by Get (the Lookup interceptor); the
	// second look inside a flight is not counted again.
	Hits      int64 // cache_hits_total: served fresh
	StaleHits int64 // cache_stale_hits_total: served stale while refreshing
	Misses    int64 // cache_misses_total

	Stores   int64 // cache_stores_total
	Rejected int64 // cache_rejected_total: successful answers the rule refused to store

	Evictions   int64 // cache_evictions_total: removed to stay under MaxBytes
	Expirations int64 // cache_expirations_total: removed after their stale window

	Refreshes int64 // cache_refreshes_total: background refreshes started
	Purged    int64 // cache_purged_total: removed by Purge

	// The remote tier (Settings.Remote), asked after a local miss.
	RemoteHits    int64 // cluster_remote_hits_total: served from it, fresh or stale
	RemoteMisses  int64 // cluster_remote_misses_total: absent, expired, or the remote failed
	RemoteBad     int64 // cluster_remote_bad_total: entries that failed the checks, ignored
	RemoteWrites  int64 // cluster_remote_writes_total: answers handed to it
	RemoteSkipped int64 // cluster_remote_skipped_total: answers kept local (above RemoteMaxBytes, not protobuf)
	// FleetCoalesced counts flights answered by another gateway's call
	// (Settings.Flights) (cluster_fleet_coalesced_total).
	FleetCoalesced int64
}

// HitRate is the percentage of lookups served from the cache, fresh or
// stale (cache_hit_rate); 0 before the first lookup.
func (s Stats) HitRate() float64 {
	served := s.Hits + s.StaleHits
	if total := served + s.Misses; total > 0 {
		return 100 * float64(served) / float64(total)
	}
	return 0
}

// counters are the cumulative stats. Every field is atomic; the three
// lookup counters, written on every request, sit on cache lines of their own
// so parallel readers of the cache do not false-share them.
type counters struct {
	hits      atomic.Int64
	_         [56]byte
	staleHits atomic.Int64
	_         [56]byte
	misses    atomic.Int64
	_         [56]byte

	stores, rejected       atomic.Int64
	evictions, expirations atomic.Int64
	refreshes, purged      atomic.Int64

	remoteHits, remoteMisses, remoteBad, remoteWrites, remoteSkipped atomic.Int64
	fleetCoalesced                                                   atomic.Int64
}

// onDeletion is otter's OnAtomicDeletion: it runs under a bucket lock, so it
// only counts.
func (c *counters) onDeletion(e otter.DeletionEvent[string, entry]) {
	switch e.Cause {
	case otter.CauseOverflow:
		c.evictions.Add(1)
	case otter.CauseExpiration:
		c.expirations.Add(1)
	}
}

func (c *counters) reset() {
	for _, n := range []*atomic.Int64{
		&c.hits, &c.staleHits, &c.misses, &c.stores, &c.rejected,
		&c.evictions, &c.expirations, &c.refreshes, &c.purged,
		&c.remoteHits, &c.remoteMisses, &c.remoteBad, &c.remoteWrites, &c.remoteSkipped, &c.fleetCoalesced,
	} {
		n.Store(0)
	}
}

// Stats returns a snapshot. It first runs otter's pending maintenance, so
// that Entries and Bytes do not count entries already evicted or expired.
func (c *Cache) Stats() Stats {
	c.store.CleanUp()
	return Stats{
		Entries:     int64(c.store.EstimatedSize()),
		Bytes:       int64(c.store.WeightedSize()),
		Capacity:    c.set.MaxBytes,
		Hits:        c.stats.hits.Load(),
		StaleHits:   c.stats.staleHits.Load(),
		Misses:      c.stats.misses.Load(),
		Stores:      c.stats.stores.Load(),
		Rejected:    c.stats.rejected.Load(),
		Evictions:   c.stats.evictions.Load(),
		Expirations: c.stats.expirations.Load(),
		Refreshes:   c.stats.refreshes.Load(),
		Purged:      c.stats.purged.Load(),

		RemoteHits:    c.stats.remoteHits.Load(),
		RemoteMisses:  c.stats.remoteMisses.Load(),
		RemoteBad:     c.stats.remoteBad.Load(),
		RemoteWrites:  c.stats.remoteWrites.Load(),
		RemoteSkipped: c.stats.remoteSkipped.Load(),

		FleetCoalesced: c.stats.fleetCoalesced.Load(),
	}
}

// ResetStats zeroes the cumulative counters; Entries and Bytes stay.
func (c *Cache) ResetStats() { c.stats.reset() }

// noteRejected counts a successful answer that its rule refused to store.
func (c *Cache) noteRejected() { c.stats.rejected.Add(1) }
