package masterkey_test

import (
	"slices"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/masterkey"
)

func ring(t *testing.T, masters string) *identity.Keyring {
	t.Helper()
	keys, _, err := identity.LoadKeyring(t.TempDir(), masters)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func ticketKeysAt(t *testing.T, k *masterkey.TicketKeys, now time.Time) ([][32]byte, int64) {
	t.Helper()
	keys, period, err := k.At(now)
	if err != nil {
		t.Fatal(err)
	}
	return keys, period
}

// TestTicketKeysAgreeAcrossReplicasAndRotate checks that the session-ticket keys are
// the same for every replica with the same master key (a restart is one more), differ
// under another master key, and rotate by period, the previous periods' keys still
// decrypting for a bounded time.
func TestTicketKeysAgreeAcrossReplicasAndRotate(t *testing.T) {
	master := identity.GenerateMasterKey()
	now := time.Date(2040, 3, 1, 1, 0, 0, 0, time.UTC)
	a, p := ticketKeysAt(t, masterkey.NewTicketKeys(ring(t, master)), now)
	b, q := ticketKeysAt(t, masterkey.NewTicketKeys(ring(t, master)), now.Add(time.Hour)) // the same period
	if !slices.Equal(a, b) || p != q {
		t.Fatal("two replicas with one master key derived different ticket keys")
	}
	other, _ := ticketKeysAt(t, masterkey.NewTicketKeys(ring(t, identity.GenerateMasterKey())), now)
	for _, k := range other {
		if slices.Contains(a, k) {
			t.Fatal("another master key derived one of the same ticket keys")
		}
	}

	keys := masterkey.NewTicketKeys(ring(t, master))
	next, np := ticketKeysAt(t, keys, now.Add(masterkey.TicketKeyPeriod))
	if np != p+1 || next[0] == a[0] || !slices.Contains(a, next[0]) {
		t.Error("the next period's key does not encrypt, or the previous period did not know it (clocks ahead)")
	}
	if !slices.Contains(next, a[0]) {
		t.Error("the previous period's key no longer decrypts")
	}
	later, _ := ticketKeysAt(t, keys, now.Add(5*masterkey.TicketKeyPeriod))
	if slices.Contains(later, a[0]) {
		t.Error("a key five periods old still decrypts")
	}

	// A master key rotation: the new primary encrypts, the old key's still decrypt.
	rotated, _ := ticketKeysAt(t, masterkey.NewTicketKeys(ring(t, identity.GenerateMasterKey()+","+master)), now)
	if slices.Contains(a, rotated[0]) || !slices.Contains(rotated, a[0]) {
		t.Error("after a master key rotation the new primary does not encrypt, or the old key's tickets no longer decrypt")
	}
}
