package masterkey_test

import (
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/masterkey"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

var testEpoch = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

func newKEK(t *testing.T) *identity.KeyEncryptionKey {
	t.Helper()
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatal(err)
	}
	return ring.Primary()
}

// replica returns the Service of a replica with keys on s, reported at the clock's now.
func replica(t *testing.T, s *store.Store, clock *testclock.Clock, id string, keys *identity.Keyring) *masterkey.Service {
	t.Helper()
	svc, err := masterkey.New(masterkey.Options{
		Store: s, Keys: keys, Rewrappers: []masterkey.Rewrapper{identity.AuthorityKeys{}},
		ReplicaID: id, Hostname: "host-" + id, Version: "test", Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	return svc
}

// live returns the ids of the live replicas as svc sees them.
func live(t *testing.T, svc *masterkey.Service) map[string]bool {
	t.Helper()
	st, err := svc.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range st.Replicas {
		if r.Live {
			out[r.ID] = true
		}
	}
	return out
}

// TestRewrapWaitsForEveryLiveReplica: a re-wrap is refused, recording nothing, while a
// live replica's primary is another key; a replica that stopped, or fell silent without
// holding its audit lock, no longer counts; one holding its audit lock does.
func TestRewrapWaitsForEveryLiveReplica(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	clock := testclock.New(testEpoch)
	oldKey, newKey := newKEK(t), newKEK(t)
	if _, err := identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{Store: s, Keys: identity.NewKeyring(oldKey), Now: clock.Now}); err != nil {
		t.Fatal(err)
	}
	a := replica(t, s, clock, "a", identity.NewKeyring(newKey, oldKey))
	b := replica(t, s, clock, "b", identity.NewKeyring(oldKey))
	replica(t, s, clock, "c", identity.NewKeyring(oldKey, newKey)) // has the key, not as its primary

	_, _, err := a.Rewrap(t.Context(), "token:test")
	if errdefs.KindOf(err) != errdefs.FailedPrecondition || !strings.Contains(err.Error(), "b on host-b") ||
		!strings.Contains(err.Error(), "c on host-c") || strings.Contains(err.Error(), "a on") || !strings.Contains(err.Error(), newKey.ID()) {
		t.Fatalf("re-wrap with b and c behind: %v", err)
	}
	if st, err := a.Status(t.Context()); err != nil || st.LastRewrap != nil || len(st.Usage) != 1 || st.Usage[0].KEKID != oldKey.ID() {
		t.Fatalf("the refusal changed something: %+v, %v", st, err)
	}

	b.RecordStop(t.Context())
	clock.Advance(time.Minute) // c falls silent; a reports again
	if err := a.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := live(t, a); !got["a"] || got["b"] || got["c"] {
		t.Fatalf("live replicas %v, want a alone", got)
	}
	// c's session holds its audit lock: it is alive, however long it has not reported.
	conn, err := s.Pool().Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(t.Context(), "select pg_advisory_lock(hashtextextended('palyra.audit.replica:c', 0))"); err != nil {
		t.Fatal(err)
	}
	if got := live(t, a); !got["c"] {
		t.Fatalf("live replicas %v: c holds its lock", got)
	}
	if _, _, err := a.Rewrap(t.Context(), "token:test"); errdefs.KindOf(err) != errdefs.FailedPrecondition || !strings.Contains(err.Error(), "c on host-c") {
		t.Fatalf("re-wrap with c holding its lock: %v", err)
	}
	if _, err := conn.Exec(t.Context(), "select pg_advisory_unlock(hashtextextended('palyra.audit.replica:c', 0))"); err != nil {
		t.Fatal(err)
	}

	rw, counts, err := a.Rewrap(t.Context(), "token:test")
	if err != nil {
		t.Fatal(err)
	}
	if rw.KEKID != newKey.ID() || rw.Rewrapped != 1 || rw.FinishedAt == nil || rw.StartedBy != "token:test" ||
		len(counts) != 1 || counts[0] != (masterkey.Usage{Kind: "ca", KEKID: newKey.ID(), Count: 1}) {
		t.Errorf("re-wrap %+v, counts %+v", rw, counts)
	}
	st, err := a.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Usage) != 1 || st.Usage[0].KEKID != newKey.ID() || st.LastRewrap == nil || st.LastRewrap.ID != rw.ID || st.LastRewrap.Rewrapped != 1 {
		t.Errorf("status after the re-wrap: %+v", st)
	}
	// Back to the old key from b, whose primary it is: refused while a (primary: the new
	// key) is live.
	if _, _, err := b.Rewrap(t.Context(), "token:test"); errdefs.KindOf(err) != errdefs.FailedPrecondition || !strings.Contains(err.Error(), "a on host-a") {
		t.Errorf("re-wrap from b: %v", err)
	}
}
