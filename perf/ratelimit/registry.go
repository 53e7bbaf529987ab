package ratelimit

import (
	"sync"
	"sync/atomic"
)

// registry maps keys to values created on first use. Lookups of known keys
// read an immutable snapshot without a lock or an interface hash (sync.Map
// costs a fifth of an admission); a key missing from the snapshot is served
// under mu, and the snapshot is rebuilt once such misses outnumber its
// keys, so rebuilding costs O(1) amortised per lookup.
type registry[V any] struct {
	read atomic.Pointer[map[string]V] // snapshot of all; never written once published

	mu     sync.Mutex
	all    map[string]V // every key; guarded by mu
	misses int          // lookups that missed read since it was published; guarded by mu
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
	if !ok {
		if r.all == nil {
			r.all = make(map[string]V)
		}
		v = create()
		r.all[key] = v
	}
	r.misses++
	if read == nil || r.misses > len(*read) {
		snapshot := make(map[string]V, len(r.all))
		for k, v := range r.all {
			snapshot[k] = v
		}
		r.read.Store(&snapshot)
		r.misses = 0
	}
	return v
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
