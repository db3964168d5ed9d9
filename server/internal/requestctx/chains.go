package requestctx

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"
)

// MaxCachedChains bounds a ChainCache: about one entry per node that attached since
// the replica started, a few tens of bytes each.
const MaxCachedChains = 1 << 16

// ChainCache verifies client certificate chains as VerifyClientChain does, against
// fixed roots, and remembers those it verified, by the SHA-256 of the certificates
// presented (the leaf and any intermediates): a client that connects again (a node
// re-attaching, its TLS session resumed) or calls again costs no signature check. A
// remembered chain is served only at a time within the validity of every certificate
// in it; at any other time the chain is verified again, and refused. It remembers
// verification only: the callers check revocation at every handshake and call, from
// the cache or not, so a revocation bites at once. New roots (a rotated CA's pool)
// take a new cache. At most max chains are remembered; a full cache forgets an
// arbitrary one. It is safe for concurrent use.
type ChainCache struct {
	roots *x509.CertPool
	max   int

	mu     sync.Mutex // guards chains
	chains map[[sha256.Size]byte]verified
}

// verified is a remembered verification: the chains after their leaf, and when all of
// their certificates are valid.
type verified struct {
	tails               [][]*x509.Certificate
	notBefore, notAfter time.Time
}

// NewChainCache returns a cache of the chains verified against roots, remembering at
// most max of them (≤ 0: MaxCachedChains).
func NewChainCache(roots *x509.CertPool, max int) *ChainCache {
	if max <= 0 {
		max = MaxCachedChains
	}
	return &ChainCache{roots: roots, max: max, chains: map[[sha256.Size]byte]verified{}}
}

// Verify returns the chains of certs (the leaf first) verified at now, as
// VerifyClientChain(roots, certs, now) does.
func (c *ChainCache) Verify(certs []*x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return VerifyClientChain(c.roots, certs, now)
	}
	key := chainKey(certs)
	c.mu.Lock()
	v, ok := c.chains[key]
	c.mu.Unlock()
	if ok && !now.Before(v.notBefore) && !now.After(v.notAfter) {
		chains := make([][]*x509.Certificate, len(v.tails))
		for i, tail := range v.tails {
			chains[i] = append([]*x509.Certificate{certs[0]}, tail...)
		}
		return chains, nil
	}
	chains, err := VerifyClientChain(c.roots, certs, now)
	if err != nil {
		return nil, err
	}
	v = verified{tails: make([][]*x509.Certificate, len(chains)), notBefore: certs[0].NotBefore, notAfter: certs[0].NotAfter}
	for i, chain := range chains {
		v.tails[i] = chain[1:]
		for _, cert := range chain {
			if cert.NotBefore.After(v.notBefore) {
				v.notBefore = cert.NotBefore
			}
			if cert.NotAfter.Before(v.notAfter) {
				v.notAfter = cert.NotAfter
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.chains[key]; !ok && len(c.chains) >= c.max {
		for k := range c.chains {
			delete(c.chains, k)
			break
		}
	}
	c.chains[key] = v
	return chains, nil
}

// chainKey is the SHA-256 of certs' encodings, each prefixed with its length.
func chainKey(certs []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range certs {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}
