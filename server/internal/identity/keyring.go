package identity

// Keyring is the key-encryption keys a replica holds. The primary seals what is written
// now; every key in the ring opens what was sealed under it, so rows sealed before a
// master key rotation stay readable while the rotation re-wraps them.
type Keyring struct {
	keys []*KeyEncryptionKey // keys[0] is the primary
}

// NewKeyring returns a ring whose primary is primary, also holding older.
func NewKeyring(primary *KeyEncryptionKey, older ...*KeyEncryptionKey) *Keyring {
	return &Keyring{keys: append([]*KeyEncryptionKey{primary}, older...)}
}

// Primary is the key that seals new rows.
func (r *Keyring) Primary() *KeyEncryptionKey { return r.keys[0] }

// Key returns the key with the given ID, if the ring holds it.
func (r *Keyring) Key(id string) (*KeyEncryptionKey, bool) {
	for _, k := range r.keys {
		if k.ID() == id {
			return k, true
		}
	}
	return nil, false
}

// IDs returns the IDs of the ring's keys, the primary first.
func (r *Keyring) IDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.ID()
	}
	return ids
}

// Older returns the keys other than the primary.
func (r *Keyring) Older() []*KeyEncryptionKey { return r.keys[1:] }
