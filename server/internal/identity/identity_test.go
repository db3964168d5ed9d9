package identity_test

import (
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// testEpoch is the start of every test clock: a whole second, so that what the code
// truncates to seconds stays comparable, and far from the real date, so that a
// forgotten injection shows.
var testEpoch = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

// newKEK returns a key-encryption key from a fresh random master key, as given in
// PALYRA_MASTER_KEY (nothing is written to disk).
func newKEK(t *testing.T) *identity.KeyEncryptionKey {
	t.Helper()
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatalf("key-encryption key: %v", err)
	}
	return ring.Primary()
}

// testBundle is what the authority, signing and server certificate tests start from:
// a migrated database of their own, a key-encryption key, a clock, and the authority
// created at the clock's start.
type testBundle struct {
	store     *store.Store
	kek       *identity.KeyEncryptionKey
	clock     *testclock.Clock
	authority *identity.Authority
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{store: storetest.New(t), kek: newKEK(t), clock: testclock.New(testEpoch)}
	b.authority = b.loadAuthority(t, b.clock.Now)
	return b
}

// loadAuthority loads (or creates) the active authority of the bundle's database with
// the bundle's key and the given clock.
func (b *testBundle) loadAuthority(t *testing.T, now func() time.Time) *identity.Authority {
	t.Helper()
	a, err := identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{
		Store: b.store, Keys: identity.NewKeyring(b.kek), Now: now,
	})
	if err != nil {
		t.Fatalf("load authority: %v", err)
	}
	return a
}

// fixed returns a clock that always says t.
func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }
