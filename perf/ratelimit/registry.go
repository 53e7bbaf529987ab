package ratelimit

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// registry maps keys to values created on first use. Lookups of known keys
// read an immutable snapshot without a lock or an interface hash (sync.Map
// costs a fifth of an admission); a key missing from the snapshot is served
// under mu, and the snapshot is rebuilt once such misses outnumber its
// keys, so rebuilding costs O(1) amortised per lookup.
//
// The registry holds at most max keys while enough of them are idle: when
// a new key would exceed max, the least recently used idle keys are evicted
// (see makeRoom). Recency is counted in epochs: epoch goes up by one each
// time a key is added, and a value records the epoch of its last use
// (touch), which costs a hot-path caller two loads of rarely written words
// and no clock.
type registry[V any] struct {
	read  atomic.Pointer[map[string]V] // snapshot of all; never written once published
	epoch atomic.Uint64                // keys added so far

	mu     sync.Mutex
	all    map[string]V // every key; guarded by mu
	misses int          // lookups that missed read since it was published; guarded by mu

	// Set before first use, read-only afterwards.
	max int // the bound on len(all) while values are idle; > 0
	// idle reports whether v may be evicted, and the epoch it was last
	// used in. It is called under mu.
	idle func(v V) (used uint64, ok bool)

	// Guarded by mu.
	nextSweep int   // while len(all) is below it, a full set does not look for idle keys again
	evicted   int64 // keys evicted
	overflows int64 // keys added beyond max because too few keys were idle
}

// load returns key's value, creating it with create (under mu) on first use.
func (r *registry[V]) load(key string, create func() V) V {
	read := r.read.Load()
	if read != nil {
		if v, ok := (*read)[key]; ok {
			return v
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.all[key]
	evicted := false
	if !ok {
		if r.all == nil {
			r.all = make(map[string]V)
		}
		evicted = r.makeRoom()
		v = create()
		r.all[key] = v
		r.epoch.Add(1)
	}
	r.misses++
	// Evicted values leave the snapshot at once, so that their memory is
	// freed and their keys' next calls get fresh values.
	if evicted || read == nil || r.misses > len(*read) {
		snapshot := make(map[string]V, len(r.all))
		for k, v := range r.all {
			snapshot[k] = v
		}
		r.read.Store(&snapshot)
		r.misses = 0
	}
	return v
}

// makeRoom is called under mu before a key is added. When all is full, it
// evicts the least recently used idle keys, down to max − max/8 (at least
// one below max), so that sweeping and rebuilding the snapshot cost
// O(log max) amortised per added key. When too few keys are idle the new
// key is let in beyond max and counted, and the set is not swept again
// until it has grown by another max/8. It reports whether it evicted any.
func (r *registry[V]) makeRoom() bool {
	n := len(r.all)
	if n < r.max {
		return false
	}
	step := max(1, r.max/8)
	if n < r.nextSweep {
		r.overflows++
		return false
	}
	type candidate struct {
		key  string
		used uint64
	}
	var cs []candidate
	for k, v := range r.all {
		if used, ok := r.idle(v); ok {
			cs = append(cs, candidate{k, used})
		}
	}
	slices.SortFunc(cs, func(a, b candidate) int { return cmp.Compare(a.used, b.used) })
	cs = cs[:min(len(cs), n-(r.max-step))]
	for _, c := range cs {
		delete(r.all, c.key)
	}
	r.evicted += int64(len(cs))
	r.nextSweep = 0
	if len(r.all) >= r.max {
		r.overflows++
		r.nextSweep = len(r.all) + step
	}
	return len(cs) > 0
}

// values returns every value, in no particular order.
func (r *registry[V]) values() []V {
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := make([]V, 0, len(r.all))
	for _, v := range r.all {
		vs = append(vs, v)
	}
	return vs
}

// counts returns the number of keys and the eviction counters.
func (r *registry[V]) counts() (keys int, evicted, overflows int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all), r.evicted, r.overflows
}
