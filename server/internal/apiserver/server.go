package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/palyra/palyra/server/internal/requestctx"
)

// maxHeaderBytes bounds the request headers of HTTP/1.1 and the header list of HTTP/2.
const maxHeaderBytes = 64 << 10

// ServerOptions configures Listen.
type ServerOptions struct {
	// Address is the TCP address to bind, e.g. "127.0.0.1:7443"; port 0 picks one.
	Address string
	// GetCertificate returns the current server certificate.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// ClientCAs verifies client certificates, which are optional at the handshake: a
	// certificate that is presented must verify, exactly as under
	// tls.VerifyClientCertIfGiven (requestctx.VerifyClientChain). The listener verifies
	// it itself (clientauth.go), so that it can report the refusals.
	ClientCAs *x509.CertPool
	// ClientChains remembers the client chains verified against ClientCAs (its roots
	// must be ClientCAs), for the handler to share (HandlerOptions.ClientChains); nil
	// means a cache of the listener's own.
	ClientChains *requestctx.ChainCache
	// VerifyConnection, when set, can refuse a verified client certificate during the
	// handshake (revocation.List.VerifyConnection).
	VerifyConnection func(tls.ConnectionState) error
	// HandshakeRefused, when set, learns of every handshake refused for its client
	// certificate: the remote address, the certificate when its chain verified (nil
	// otherwise), and the refusal.
	HandshakeRefused func(remote string, cert *x509.Certificate, err error)
	// ConnState, when set, follows the connections (revocation.List.ConnState closes
	// those of what gets revoked).
	ConnState func(net.Conn, http.ConnState)
	// SessionTicketKeys, when set, gives the TLS session-ticket keys in force at a
	// time, the one that encrypts first, and the period they belong to, which changes
	// when they do (masterkey.TicketKeys.At): replicas and restarts that share them
	// resume each other's sessions. Nil leaves crypto/tls's own keys, random per
	// process. A resumed session's client certificate is checked as at a full
	// handshake (clientauth.go).
	SessionTicketKeys func(now time.Time) (keys [][32]byte, period int64, err error)
	// MaxHandshakes bounds the TLS handshakes computing at once, from their read
	// ClientHello to the server's flight (handshake.go); 0 means 2 per CPU
	// (GOMAXPROCS).
	MaxHandshakes int
	// HandshakeQueueTimeout bounds how long a handshake waits for a slot when
	// MaxHandshakes are computing; its connection is then closed. 0 means half
	// ReadHeaderTimeout (at least a second; 5 s without ReadHeaderTimeout).
	HandshakeQueueTimeout time.Duration
	// ReadHeaderTimeout bounds the TLS handshake (until its ClientHello, then again
	// from its slot on) and the request headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections.
	IdleTimeout time.Duration
	// MaxConcurrentStreams bounds the HTTP/2 streams of one connection.
	MaxConcurrentStreams int
	// MaxConnections bounds the connections open at once (at least 1); keep it below
	// the open-file limit.
	MaxConnections int
	// MaxConnectionsPerAddress bounds the connections open at once from one IPv4
	// address or IPv6 /64; 0 means no such bound.
	MaxConnectionsPerAddress int
	// Metrics counts the connections, those refused and the accept errors.
	Metrics *Metrics
	// Now is the clock that client certificates are valid by, and crypto/tls's
	// (tls.Config.Time); nil means time.Now.
	Now func() time.Time
	// Logger receives the server's own errors (failed handshakes at debug level; failed
	// accepts and refused connections as rate-limited warnings).
	Logger *slog.Logger
}

// Server is the listener of palyrad: TLS, with HTTP/1.1 and HTTP/2 on one port.
type Server struct {
	http *http.Server
	ln   net.Listener
}

// Listen binds the address. Nothing is served until Serve, so the handler can be built
// knowing the bound address (port 0 picks one).
func Listen(opts ServerOptions) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxConnections < 1 {
		return nil, fmt.Errorf("apiserver: a cap of %d connections admits none", opts.MaxConnections)
	}
	ln, err := net.Listen("tcp", opts.Address)
	if err != nil {
		return nil, fmt.Errorf("apiserver: listen on %s: %w", opts.Address, err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnState:         opts.ConnState,
		TLSConfig: clientAuth(&tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: opts.GetCertificate,
			ClientCAs:      opts.ClientCAs,
			Time:           opts.Now,
			// What ServeTLS would add; the handshakes are the listener's (handshake.go).
			NextProtos: []string{"h2", "http/1.1"},
		}, opts, log),
		Protocols: new(http.Protocols),
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          opts.MaxConcurrentStreams,
			MaxDecoderHeaderTableSize:     maxHeaderBytes,
			MaxEncoderHeaderTableSize:     maxHeaderBytes,
			MaxReceiveBufferPerConnection: 4 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
			// Detect peers that vanished without closing their connection (a node that
			// lost power keeps its stream "open" otherwise).
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	srv.Protocols.SetHTTP1(true) // OpenAI SDKs, browsers and curl --http1.1 speak HTTP/1.1
	srv.Protocols.SetHTTP2(true)
	limited := newLimitListener(ln, opts.MaxConnections, opts.MaxConnectionsPerAddress, opts.Metrics, log)
	return &Server{http: srv, ln: newHandshakeListener(limited, srv.TLSConfig, opts.MaxHandshakes, opts.HandshakeQueueTimeout,
		opts.ReadHeaderTimeout, opts.Metrics, log)}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves h on the listener until Shutdown; it then returns nil.
func (s *Server) Serve(h http.Handler) error {
	s.http.Handler = h
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("apiserver: serve: %w", err)
}

// Close closes the listener of a server that never served (a start-up that failed
// after Listen).
func (s *Server) Close() error { return s.ln.Close() }

// Shutdown stops accepting connections and waits, until ctx is done, for the calls in
// flight; it then closes what is still open.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return s.http.Close()
	}
	return err
}
