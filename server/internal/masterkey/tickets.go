package masterkey

import (
	"fmt"
	"sync"
	"time"

	"github.com/palyra/palyra/server/internal/identity"
)

const (
	// TicketKeyPeriod is how long one TLS session-ticket key encrypts before the next
	// takes over.
	TicketKeyPeriod = 6 * time.Hour
	// ticketKeysKept is how many periods before the current one still decrypt: a
	// ticket is good for at most ticketKeysKept+1 periods (a day), and never past its
	// client certificate's expiry, which the listener checks at each resumption.
	ticketKeysKept = 3
)

// TicketKeys derives the listener's TLS session-ticket keys from the master keys, by
// period of TicketKeyPeriod (HKDF with the label "tls-session-ticket/<period>",
// identity.KeyEncryptionKey.DeriveKey). Every replica with the same master keys derives
// the same keys, and so does a restart: a node that re-attaches to another replica, or
// after a restart, resumes its TLS session instead of a full handshake. The primary's
// key of the current period encrypts; the primary's keys of the next period (a clock
// running ahead) and of the ticketKeysKept periods before, and the same periods' keys
// of the older master keys (during a master key rotation), decrypt. It is safe for
// concurrent use.
type TicketKeys struct {
	keys *identity.Keyring

	mu     sync.Mutex // guards the following
	period int64
	cached [][32]byte // of period; nil before the first call
}

// NewTicketKeys returns the session-ticket keys of keys.
func NewTicketKeys(keys *identity.Keyring) *TicketKeys { return &TicketKeys{keys: keys} }

// At returns the keys in force at now, the one that encrypts first, and the period they
// belong to, which changes when they do. The slice is shared: it must not be modified.
func (t *TicketKeys) At(now time.Time) (keys [][32]byte, period int64, err error) {
	period = now.Unix() / int64(TicketKeyPeriod/time.Second)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cached != nil && t.period == period {
		return t.cached, period, nil
	}
	periods := []int64{period, period + 1}
	for i := int64(1); i <= ticketKeysKept; i++ {
		periods = append(periods, period-i)
	}
	kek := append([]*identity.KeyEncryptionKey{t.keys.Primary()}, t.keys.Older()...)
	keys = make([][32]byte, 0, len(kek)*len(periods))
	for _, k := range kek {
		for _, p := range periods {
			b, err := k.DeriveKey(fmt.Sprintf("tls-session-ticket/%d", p))
			if err != nil {
				return nil, 0, fmt.Errorf("masterkey: %w", err)
			}
			keys = append(keys, [32]byte(b))
		}
	}
	t.period, t.cached = period, keys
	return keys, period, nil
}
