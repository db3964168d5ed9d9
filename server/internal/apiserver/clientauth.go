package apiserver

import (
	"crypto/tls"
	"errors"
	"time"

	"github.com/palyra/palyra/server/internal/requestctx"
)

// clientAuth completes base, the listener's TLS configuration, with the verification of
// client certificates. They are optional; one that is presented must verify against
// ClientCAs exactly as under tls.VerifyClientCertIfGiven, then pass VerifyConnection.
// crypto/tls would refuse an unverified certificate before any callback of ours could
// see it, and its callbacks do not know the connection; so the handshake only asks for
// a certificate (tls.RequestClientCert), and a configuration of its own for each
// handshake (GetConfigForClient) verifies it, knowing the remote address to report a
// refusal with. Every refusal gets the same alert, bad_certificate.
func clientAuth(base *tls.Config, opts ServerOptions) *tls.Config {
	base.ClientAuth = tls.RequestClientCert
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	verify := func(remote string, cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // anonymous
		}
		chains, err := requestctx.VerifyClientChain(base.ClientCAs, cs.PeerCertificates, now())
		if err != nil {
			err = &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
			if opts.HandshakeRefused != nil {
				opts.HandshakeRefused(remote, nil, err)
			}
			return err
		}
		if opts.VerifyConnection == nil {
			return nil
		}
		cs.VerifiedChains = chains
		if err := opts.VerifyConnection(cs); err != nil {
			if opts.HandshakeRefused != nil {
				opts.HandshakeRefused(remote, cs.PeerCertificates[0], err)
			}
			return err
		}
		return nil
	}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hello.Conn == nil {
			return nil, errors.New("apiserver: a handshake without a connection")
		}
		remote := hello.Conn.RemoteAddr().String()
		c := base.Clone()
		c.GetConfigForClient = nil
		c.VerifyConnection = func(cs tls.ConnectionState) error { return verify(remote, cs) }
		return c, nil
	}
	base.VerifyConnection = func(cs tls.ConnectionState) error { return verify("", cs) }
	return base
}
