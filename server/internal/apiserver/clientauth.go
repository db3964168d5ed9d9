package apiserver

import (
	"crypto/tls"
	"errors"
	"log/slog"
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
//
// A resumed session (a session ticket) carries the client certificate of the handshake
// that issued it, and crypto/tls calls VerifyConnection on resumptions too: the chain
// is verified again at the current time and against the current ClientCAs, and
// revocation is checked again, so a ticket never outlives its certificate's validity
// or its revocation. The chain's signatures are verified once per certificate
// (requestctx.ChainCache: a re-attaching node's resumption then costs no signature
// check); its dates and its revocation are checked at every handshake. With opts.SessionTicketKeys, each handshake's configuration has
// the ticket keys in force at the time.
func clientAuth(base *tls.Config, opts ServerOptions, log *slog.Logger) *tls.Config {
	base.ClientAuth = tls.RequestClientCert
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	verified := opts.ClientChains
	if verified == nil {
		verified = requestctx.NewChainCache(base.ClientCAs, 0)
	}
	verify := func(remote string, cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // anonymous
		}
		chains, err := verified.Verify(cs.PeerCertificates, now())
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
	var tickets *sessionTickets
	if opts.SessionTicketKeys != nil {
		tickets = &sessionTickets{config: base, keysAt: opts.SessionTicketKeys, log: &throttle{log: log, every: warnEvery}}
	}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hello.Conn == nil {
			return nil, errors.New("apiserver: a handshake without a connection")
		}
		if tickets != nil {
			tickets.refresh(now())
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
