package possession

import (
	"testing"

	"github.com/palyra/palyra/internal/testpki"
)

// TestSignVerify: a signature verifies for the device id and CSR it signed, by its key,
// and for nothing else.
func TestSignVerify(t *testing.T) {
	t.Parallel()
	key, other := testpki.Key(t), testpki.Key(t)
	const device = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	csr := []byte("a CSR")
	sig, err := Sign(key, device, csr)
	if err != nil {
		t.Fatal(err)
	}
	if !Verify(&key.PublicKey, device, csr, sig) {
		t.Fatal("the signature does not verify")
	}
	for name, ok := range map[string]bool{
		"another key":       Verify(&other.PublicKey, device, csr, sig),
		"another device":    Verify(&key.PublicKey, "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V2", csr, sig),
		"another CSR":       Verify(&key.PublicKey, device, []byte("another CSR"), sig),
		"id and CSR joined": Verify(&key.PublicKey, device+"a", []byte(" CSR"), sig),
		"no signature":      Verify(&key.PublicKey, device, csr, nil),
	} {
		if ok {
			t.Errorf("%s: verified", name)
		}
	}
}
