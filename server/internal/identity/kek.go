package identity

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MasterKeyFile is the name of the master key file inside the data directory.
const MasterKeyFile = "master.key"

// masterKeySize is the length of the master key in bytes.
const masterKeySize = 32

// KeySource says where the master key came from.
type KeySource string

// The sources of the master key.
const (
	// KeySourceEnv: the PALYRA_MASTER_KEY environment variable.
	KeySourceEnv KeySource = "environment"
	// KeySourceFile: an existing <data-dir>/master.key.
	KeySourceFile KeySource = "file"
	// KeySourceCreated: a new <data-dir>/master.key written by this start.
	KeySourceCreated KeySource = "created"
)

// KeyEncryptionKey seals the CA's private key at rest (AES-256-GCM). It is derived from
// the master key, which every replica sharing a database must have in common; the
// master key itself is never stored in the database and never logged.
type KeyEncryptionKey struct {
	aead   cipher.AEAD
	id     string
	master []byte // only ever fed to HKDF
}

// LoadKeyEncryptionKey derives the key-encryption key from the master key: the base64
// value fromEnv when it is not empty (PALYRA_MASTER_KEY), else the file
// <dataDir>/master.key, which is created (mode 0600, 32 random bytes) when absent. A
// file readable by group or others is refused, as ssh refuses such private keys.
func LoadKeyEncryptionKey(dataDir, fromEnv string) (*KeyEncryptionKey, KeySource, error) {
	if fromEnv != "" {
		master, err := decodeMasterKey(fromEnv)
		if err != nil {
			return nil, "", fmt.Errorf("identity: PALYRA_MASTER_KEY: %w", err)
		}
		k, err := newKeyEncryptionKey(master)
		return k, KeySourceEnv, err
	}
	path := filepath.Join(dataDir, MasterKeyFile)
	master, source, err := readOrCreateMasterKey(path)
	if err != nil {
		return nil, "", err
	}
	k, err := newKeyEncryptionKey(master)
	return k, source, err
}

// GenerateMasterKey returns a new random master key in the base64 form that
// PALYRA_MASTER_KEY and master.key hold.
func GenerateMasterKey() string {
	return base64.StdEncoding.EncodeToString(randomBytes(masterKeySize))
}

// decodeMasterKey parses the base64 form of a master key.
func decodeMasterKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != masterKeySize {
		return nil, fmt.Errorf("must be %d random bytes in base64 (for example the output of `openssl rand -base64 32`)", masterKeySize)
	}
	return b, nil
}

// readOrCreateMasterKey reads path, or creates it when it does not exist.
func readOrCreateMasterKey(path string) ([]byte, KeySource, error) {
	b, err := readMasterKeyFile(path)
	if err == nil {
		return b, KeySourceFile, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	encoded := GenerateMasterKey()
	// Write the key to a temporary file (mode 0600) and link it into place: the file
	// appears complete or not at all, so a concurrent loader never reads it half-written,
	// and Link, unlike Rename, never replaces a key another process put there first.
	f, err := os.CreateTemp(filepath.Dir(path), ".master-*.key")
	if err != nil {
		return nil, "", fmt.Errorf("identity: create %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(encoded + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return nil, "", fmt.Errorf("identity: write %s: %w", path, err)
	}
	err = os.Link(f.Name(), path)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it between our read and our link: use theirs.
		b, err := readMasterKeyFile(path)
		return b, KeySourceFile, err
	}
	if err != nil {
		return nil, "", fmt.Errorf("identity: create %s: %w", path, err)
	}
	master, err := decodeMasterKey(encoded)
	return master, KeySourceCreated, err
}

// readMasterKeyFile reads and checks an existing master key file.
func readMasterKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity: %s is accessible by other users (mode %04o): run `chmod 600 %s`", path, fi.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: read %s: %w", path, err)
	}
	b, err := decodeMasterKey(string(raw))
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	return b, nil
}

// newKeyEncryptionKey derives the AES key and the public id from the master key.
func newKeyEncryptionKey(master []byte) (*KeyEncryptionKey, error) {
	key, err := hkdf.Key(sha256.New, master, nil, "palyra/v1/kek/ca-private-key", 32)
	if err != nil {
		return nil, fmt.Errorf("identity: derive key-encryption key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("identity: key-encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("identity: key-encryption key: %w", err)
	}
	idSum := sha256.Sum256(append([]byte("palyra/v1/kek-id\x00"), master...))
	return &KeyEncryptionKey{aead: aead, id: "kek-" + hex.EncodeToString(idSum[:8]), master: master}, nil
}

// DeriveKey returns a 32-byte key for one purpose (HKDF-SHA256 of the master key with
// "palyra/v1/" + purpose as the info), e.g. the key of the MACs that stand in for
// pairing codes. Every replica with the same master key derives the same key.
func (k *KeyEncryptionKey) DeriveKey(purpose string) ([]byte, error) {
	key, err := hkdf.Key(sha256.New, k.master, nil, "palyra/v1/"+purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("identity: derive the %s key: %w", purpose, err)
	}
	return key, nil
}

// ID names the key without revealing it, so that a replica can tell that the database
// was sealed under another master key.
func (k *KeyEncryptionKey) ID() string { return k.id }

// Seal encrypts plaintext, binding it to aad (the identity of the row that stores it).
func (k *KeyEncryptionKey) Seal(plaintext, aad []byte) (nonce, ciphertext []byte) {
	nonce = randomBytes(k.aead.NonceSize())
	return nonce, k.aead.Seal(nil, nonce, plaintext, aad)
}

// Open decrypts what Seal produced with the same aad.
func (k *KeyEncryptionKey) Open(nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != k.aead.NonceSize() {
		return nil, errors.New("identity: sealed key has a malformed nonce")
	}
	b, err := k.aead.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, errors.New("identity: sealed key does not decrypt under this master key")
	}
	return b, nil
}
