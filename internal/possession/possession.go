// Package possession is the proof with which a node that pairs again shows that it
// holds its device's key: an ECDSA P-256 signature, by the key of the device's newest
// certificate, over the new pairing request (its device id and CSR). The node agent
// signs it and palyrad checks it, both with this one definition of what is signed
// (palyra.node.v1.DevicePossession):
//
//	SHA-256("palyra device possession v1" 0x00 device_id 0x00 csr)
//
// The proof binds the new CSR, itself signed by the new key, so that it vouches for
// that key only; whether the certificate is the device's and still counts is palyrad's
// to check against what it recorded.
package possession

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
)

// context separates these signatures from any other use of a device's key.
const context = "palyra device possession v1"

// digest is what is signed.
func digest(deviceID string, csr []byte) []byte {
	h := sha256.New()
	h.Write([]byte(context))
	h.Write([]byte{0})
	h.Write([]byte(deviceID))
	h.Write([]byte{0})
	h.Write(csr)
	return h.Sum(nil)
}

// Sign signs the pairing request of device deviceID with csr (DER) by key, the key of
// the device's certificate.
func Sign(key *ecdsa.PrivateKey, deviceID string, csr []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, key, digest(deviceID, csr))
}

// Verify reports whether sig is pub's signature of the pairing request of device
// deviceID with csr.
func Verify(pub *ecdsa.PublicKey, deviceID string, csr, sig []byte) bool {
	return ecdsa.VerifyASN1(pub, digest(deviceID, csr), sig)
}
