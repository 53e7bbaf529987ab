package breaker_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/policy"
)

// hub is a fake fleet shared by replicas: notices go to every other
// replica's FleetNotice (as perf/fleet's pub/sub), the probe right is a SET
// NX with an expiry on the (fake) clock. down makes every call fail, as a
// Redis that cannot answer.
type hub struct {
	mu         sync.Mutex
	sets       []*breaker.Set
	down       bool
	probeOwner map[string]int
	probeUntil map[string]time.Time
	slow       time.Duration // every fleet call takes this long (a slow Redis)
	opened     []int         // replica of each open notice sent
	closed     []int         // replica of each closed notice sent
	claims     int
}

// member is one replica's view of the hub (breaker.Fleet).
type member struct {
	h  *hub
	id int
}

func (m member) peers() []*breaker.Set {
	var out []*breaker.Set
	for i, s := range m.h.sets {
		if i != m.id {
			out = append(out, s)
		}
	}
	return out
}

func (m member) BreakerOpened(_ context.Context, key string, d time.Duration) bool {
	time.Sleep(m.h.slow)
	m.h.mu.Lock()
	if m.h.down {
		m.h.mu.Unlock()
		return false
	}
	m.h.opened = append(m.h.opened, m.id)
	delete(m.h.probeOwner, key)
	peers := m.peers()
	m.h.mu.Unlock()
	for _, s := range peers {
		s.FleetNotice(key, d)
	}
	return true
}

func (m member) BreakerClosed(_ context.Context, key string) bool {
	m.h.mu.Lock()
	if m.h.down {
		m.h.mu.Unlock()
		return false
	}
	m.h.closed = append(m.h.closed, m.id)
	delete(m.h.probeOwner, key)
	peers := m.peers()
	m.h.mu.Unlock()
	for _, s := range peers {
		s.FleetNotice(key, 0)
	}
	return true
}

func (m member) ClaimProbe(_ context.Context, key string, ttl time.Duration) (bool, bool) {
	time.Sleep(m.h.slow)
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	if m.h.down {
		return false, false
	}
	m.h.claims++
	if _, held := m.h.probeOwner[key]; held && time.Now().Before(m.h.probeUntil[key]) {
		return false, true
	}
	m.h.probeOwner[key] = m.id
	m.h.probeUntil[key] = time.Now().Add(ttl)
	return true, true
}

func (h *hub) counts() (opened, closed, claims int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.opened), len(h.closed), h.claims
}

// newFleetSets returns n Sets sharing one hub, with OpenTimeout 10s.
func newFleetSets(t *testing.T, n int) ([]*breaker.Set, *hub) {
	t.Helper()
	h := &hub{probeOwner: map[string]int{}, probeUntil: map[string]time.Time{}}
	for i := range n {
		h.sets = append(h.sets, newSet(t, breaker.Settings{OpenTimeout: 10 * time.Second, Fleet: member{h: h, id: i}}))
	}
	return h.sets, h
}

// Ordinary use in fleet mode: calls that succeed, and a failure or two
// below the threshold, send nothing to the fleet and claim nothing.
func TestSharedOrdinaryUseSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 3)
		for range 50 {
			call(t, sets[0], "ollama", policy.Success)
		}
		call(t, sets[0], "ollama", policy.Failure)
		call(t, sets[1], "ollama", policy.Success)
		synctest.Wait()
		opened, closed, claims := h.counts()
		assert.Zero(t, opened+closed+claims)
		assert.Equal(t, "closed", stateOf(t, sets[0], "ollama").State)
		assert.Equal(t, "closed", stateOf(t, sets[1], "ollama").State)
	})
}

// A trip on replica 0 holds the key on the others at once (no call reaches
// the backend), for the open time; one replica then probes for the whole
// fleet, one call at a time, and its success closes the key everywhere.
func TestSharedTripHoldsTheFleetAndOneProbeClosesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 3)
		trip(t, sets[0], "ollama", 5)
		synctest.Wait()
		opened, _, _ := h.counts()
		require.Equal(t, 1, opened, "the trip is published once")
		for i, s := range sets[1:] {
			_, err := s.Allow("ollama")
			requireRefused(t, err, 10*time.Second, "is open on the fleet")
			st := stateOf(t, s, "ollama")
			assert.Equal(t, "open", st.State, "replica %d", i+1)
			assert.Zero(t, st.Requests, "replica %d admitted nothing", i+1)
		}

		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		_, _, claims := h.counts()
		assert.Equal(t, 3, claims, "each replica asks once for the probe right")
		h.mu.Lock()
		prober := h.probeOwner["ollama"]
		h.mu.Unlock()
		for i, s := range sets {
			if i == prober {
				continue
			}
			_, err := s.Allow("ollama")
			requireRefused(t, err, 5*time.Second, "is open on the fleet")
		}
		probe, err := sets[prober].Allow("ollama")
		require.NoError(t, err, "the winner probes")
		_, err = sets[prober].Allow("ollama")
		requireRefused(t, err, time.Second, "probe in flight")
		probe(policy.Success)
		synctest.Wait()
		_, closed, _ := h.counts()
		assert.Equal(t, 1, closed, "the probe's success is published")
		for i, s := range sets {
			assert.Equal(t, "closed", stateOf(t, s, "ollama").State, "replica %d", i)
			call(t, s, "ollama", policy.Success)
			call(t, s, "ollama", policy.Success)
		}
	})
}

// A failed probe opens the key fleet-wide again for the open time.
func TestSharedFailedProbeReopensTheFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 2)
		trip(t, sets[0], "ollama", 5)
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		h.mu.Lock()
		prober := h.probeOwner["ollama"]
		h.mu.Unlock()
		probe, err := sets[prober].Allow("ollama")
		require.NoError(t, err)
		probe(policy.Failure)
		synctest.Wait()
		opened, closed, _ := h.counts()
		assert.Equal(t, 2, opened, "the trip, then the failed probe")
		assert.Zero(t, closed)
		for _, s := range sets {
			_, err := s.Allow("ollama")
			requireRefused(t, err, 10*time.Second, "open")
		}
	})
}

// A replica that won the probe right but has no call to probe with gives
// it up with its lease: another replica's call probes then.
func TestSharedIdleProberHandsTheProbeOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 2)
		trip(t, sets[0], "ollama", 5)
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		h.mu.Lock()
		prober := h.probeOwner["ollama"]
		h.mu.Unlock()
		other := sets[1-prober]
		_, err := other.Allow("ollama")
		require.Error(t, err, "held while the other replica may probe")
		time.Sleep(5*time.Second + time.Millisecond) // the lease ends unused
		synctest.Wait()
		h.mu.Lock()
		next := h.probeOwner["ollama"]
		h.mu.Unlock()
		probe, err := sets[next].Allow("ollama")
		require.NoError(t, err, "a replica probes after the idle one's lease")
		probe(policy.Success)
		synctest.Wait()
		for _, s := range sets {
			call(t, s, "ollama", policy.Success)
		}
	})
}

// With the fleet down, a trip stays local: the others keep admitting, and
// the tripped replica's own breaker decides (half-open after its time).
func TestSharedFleetDownIsLocal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 2)
		h.mu.Lock()
		h.down = true
		h.mu.Unlock()
		trip(t, sets[0], "ollama", 5)
		synctest.Wait()
		call(t, sets[1], "ollama", policy.Success)
		_, err := sets[0].Allow("ollama")
		requireRefused(t, err, 10*time.Second, "is open")
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		for range 3 { // the local half-open's probes
			call(t, sets[0], "ollama", policy.Success)
		}
		assert.Equal(t, "closed", stateOf(t, sets[0], "ollama").State)
	})
}

// A hold received while Redis works, whose claim the fleet cannot answer,
// ends at its time: the local breaker (closed) decides.
func TestSharedHoldEndsLocallyWhenTheClaimFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 2)
		trip(t, sets[0], "ollama", 5)
		synctest.Wait()
		_, err := sets[1].Allow("ollama")
		require.Error(t, err)
		h.mu.Lock()
		h.down = true
		h.mu.Unlock()
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		call(t, sets[1], "ollama", policy.Success)
	})
}

// An operator's forced mode stays local: it ignores the fleet's notices
// and publishes nothing.
func TestSharedForcedModesStayLocal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 2)
		sets[1].SetMode("ollama", breaker.ForceClosed)
		sets[0].SetMode("ollama", breaker.ForceOpen)
		synctest.Wait()
		opened, closed, _ := h.counts()
		assert.Zero(t, opened+closed, "a forced mode is not published")
		sets[0].SetMode("ollama", breaker.Auto)
		trip(t, sets[0], "ollama", 5)
		synctest.Wait()
		call(t, sets[1], "ollama", policy.Success) // forced closed: admitted
		sets[1].SetMode("ollama", breaker.Auto)
		call(t, sets[1], "ollama", policy.Success) // the notice came while forced: not kept
	})
}

// A slow fleet is never on a call's path: while the trip's notice and the
// probe's claim take 2 s each, calls are admitted or refused at once.
func TestSharedSlowFleetIsOffTheCallPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sets, h := newFleetSets(t, 2)
		h.slow = 2 * time.Second
		start := time.Now()
		trip(t, sets[0], "ollama", 5)
		call(t, sets[1], "ollama", policy.Success) // the notice is still on its way
		_, err := sets[0].Allow("ollama")
		requireRefused(t, err, 10*time.Second, "is open")
		assert.Zero(t, time.Since(start), "no call waited for the fleet")
		time.Sleep(2*time.Second + time.Millisecond)
		_, err = sets[1].Allow("ollama")
		requireRefused(t, err, 10*time.Second, "is open on the fleet") // the open time counts from the notice's arrival
		time.Sleep(10 * time.Second)                                   // its hold ends; its claim takes 2 s
		_, err = sets[1].Allow("ollama")
		require.Error(t, err, "held while the claim is asked (at most its grace)")
		time.Sleep(3 * time.Second)
		synctest.Wait()
		h.mu.Lock()
		prober := h.probeOwner["ollama"]
		h.mu.Unlock()
		probe, err := sets[prober].Allow("ollama")
		require.NoError(t, err)
		probe(policy.Success)
		time.Sleep(2 * time.Second) // the close notice, slow as well
		synctest.Wait()
		for _, s := range sets {
			call(t, s, "ollama", policy.Success)
		}
	})
}
