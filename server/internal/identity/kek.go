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
	"time"
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

// LoadKeyring loads the master keys and derives their key-encryption keys, primary
// first: from fromEnv when it is not empty (PALYRA_MASTER_KEY: base64 keys separated by
// commas), else from the file <dataDir>/master.key (one base64 key a line; blank lines
// and lines starting with # are ignored), which is created holding one new key (mode
// 0600, 32 random bytes) when absent. A file readable by group or others is refused, as
// ssh refuses such private keys. Errors name the key or line at fault, never a key.
func LoadKeyring(dataDir, fromEnv string) (*Keyring, KeySource, error) {
	if fromEnv != "" {
		var masters [][]byte
		for i, part := range strings.Split(fromEnv, ",") {
			master, err := decodeMasterKey(part)
			if err != nil {
				return nil, "", fmt.Errorf("identity: PALYRA_MASTER_KEY, key %d: %w", i+1, err)
			}
			masters = append(masters, master)
		}
		ring, err := newKeyringOf(masters, func(i int) string { return fmt.Sprintf("PALYRA_MASTER_KEY, key %d", i+1) })
		return ring, KeySourceEnv, err
	}
	path := filepath.Join(dataDir, MasterKeyFile)
	keys, source, err := readOrCreateMasterKeys(path)
	if err != nil {
		return nil, "", err
	}
	masters := make([][]byte, len(keys))
	for i, k := range keys {
		masters[i] = k.master
	}
	ring, err := newKeyringOf(masters, func(i int) string { return fmt.Sprintf("%s, line %d", path, keys[i].line) })
	return ring, source, err
}

// newKeyringOf derives the ring of masters (primary first), refusing a key listed
// twice; where names the i-th key in errors.
func newKeyringOf(masters [][]byte, where func(i int) string) (*Keyring, error) {
	kek := make([]*KeyEncryptionKey, len(masters))
	for i, m := range masters {
		k, err := newKeyEncryptionKey(m)
		if err != nil {
			return nil, err
		}
		for j := range i {
			if kek[j].ID() == k.ID() {
				return nil, fmt.Errorf("identity: %s: the same key as %s (%s)", where(i), where(j), k.ID())
			}
		}
		kek[i] = k
	}
	return NewKeyring(kek[0], kek[1:]...), nil
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

// fileKey is a master key read from a line of master.key.
type fileKey struct {
	master []byte
	line   int // 1-based
}

// readOrCreateMasterKeys reads path, or creates it holding one new key when it does not
// exist.
func readOrCreateMasterKeys(path string) ([]fileKey, KeySource, error) {
	keys, err := readMasterKeyFile(path)
	if err == nil {
		return keys, KeySourceFile, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	encoded := GenerateMasterKey()
	// Write the key to a temporary file (mode 0600) and link it into place: the file
	// appears complete or not at all, so a concurrent loader never reads it half-written,
	// and Link, unlike Rename, never replaces a key another process put there first.
	tmp, err := writeTempKeyFile(path, encoded+"\n")
	if err != nil {
		return nil, "", err
	}
	defer os.Remove(tmp)
	err = os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it between our read and our link: use theirs.
		keys, err := readMasterKeyFile(path)
		return keys, KeySourceFile, err
	}
	if err != nil {
		return nil, "", fmt.Errorf("identity: create %s: %w", path, err)
	}
	master, err := decodeMasterKey(encoded)
	return []fileKey{{master: master, line: 1}}, KeySourceCreated, err
}

// writeTempKeyFile writes content to a new temporary file (mode 0600) beside path,
// synced, and returns its name.
func writeTempKeyFile(path, content string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".master-*.key")
	if err != nil {
		return "", fmt.Errorf("identity: create %s: %w", path, err)
	}
	_, werr := f.WriteString(content)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("identity: write %s: %w", path, err)
	}
	return f.Name(), nil
}

// RotateMasterKeyFile adds a new master key to <dataDir>/master.key as its primary,
// keeping the keys it held after it, and returns the new ring. The file must exist and
// is checked as LoadKeyring checks it; it is replaced atomically (a new file, mode 0600,
// renamed into place), the new key preceded by a comment naming its ID and the time.
func RotateMasterKeyFile(dataDir string, now time.Time) (*Keyring, error) {
	path := filepath.Join(dataDir, MasterKeyFile)
	if _, err := readMasterKeyFile(path); err != nil {
		return nil, fmt.Errorf("identity: rotate: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: read %s: %w", path, err)
	}
	encoded := GenerateMasterKey()
	master, err := decodeMasterKey(encoded)
	if err != nil {
		return nil, err
	}
	k, err := newKeyEncryptionKey(master)
	if err != nil {
		return nil, err
	}
	content := fmt.Sprintf("# %s, added %s by palyrad master-key rotate\n%s\n%s",
		k.ID(), now.UTC().Format(time.RFC3339), encoded, old)
	tmp, err := writeTempKeyFile(path, content)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("identity: replace %s: %w", path, err)
	}
	ring, _, err := LoadKeyring(dataDir, "")
	return ring, err
}

// readMasterKeyFile reads and checks an existing master key file: at least one key, one
// a line.
func readMasterKeyFile(path string) ([]fileKey, error) {
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
	var keys []fileKey
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := decodeMasterKey(line)
		if err != nil {
			return nil, fmt.Errorf("identity: %s, line %d: %w", path, i+1, err)
		}
		keys = append(keys, fileKey{master: b, line: i + 1})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("identity: %s holds no key: it must hold one base64 master key a line, the primary first", path)
	}
	return keys, nil
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
