// Package daemon is palyrad's composition root: the only package that knows every
// concrete type. It starts the parts in order (data directory, master key, database,
// migrations, CA, server certificate, listener) and stops them in reverse.
package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/compat"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/devices"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/embeddedpg"
	"github.com/palyra/palyra/server/internal/flags"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/pairing"
	"github.com/palyra/palyra/server/internal/revocation"
	"github.com/palyra/palyra/server/internal/status"
	"github.com/palyra/palyra/server/internal/store"
)

// NewLogger returns the daemon's logger for the configured level and format.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Daemon is a running palyrad.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	db      *database
	server  *apiserver.Server
	health  *apiserver.Health
	runtime *dispatch.Service
	stopBg  context.CancelFunc
	bg      *sync.WaitGroup
	serveCh chan error
}

// Start brings palyrad up and returns once the listener accepts connections. When a
// step fails, what was started before it is stopped again.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *Daemon, err error) {
	began := time.Now()
	version := buildinfo.Version()
	log.Info("palyrad starting", "version", version, "config", *cfg)
	maxConns, fileLimit, err := maxConnections(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return nil, fmt.Errorf("daemon: data directory: %w", err)
	}
	kek, source, err := identity.LoadKeyEncryptionKey(cfg.DataDir, cfg.MasterKey)
	if err != nil {
		return nil, fmt.Errorf("daemon: master key: %w", err)
	}
	log.Info("master key loaded", "source", source, "kek_id", kek.ID())

	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			db.close(context.WithoutCancel(ctx))
		}
	}()
	if _, err := db.store.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}

	auditLog := audit.New(audit.Options{Store: db.store, ReplicaID: cfg.ReplicaID, Logger: log})
	bootstrap, err := access.Bootstrap(ctx, db.store, auditLog, cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if bootstrap != "" {
		log.Info("owner created; its API token is in the bootstrap file (log in with: palyra auth login --token-file ...)", "file", bootstrap)
	}
	// Background work (certificate renewal, notifications, revocations, the pairing
	// sweeper) runs until Stop; when Start fails it is stopped again.
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	defer func() {
		if err != nil {
			stopBg()
			bg.Wait()
		}
	}()

	flagRegistry, err := flags.New(db.store, flags.Builtin(), nil)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	listener := notify.New(db.store.Pool().Config().ConnConfig, log, revocation.Channel, pairing.Channel,
		dispatch.ChannelDispatch, dispatch.ChannelOutput, dispatch.ChannelSessions, access.TokensChannel)
	bg.Go(func() { listener.Run(bgCtx) })
	revocations, err := revocation.New(db.store, listener, log, nil)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	// Nothing is served before the revocation list is loaded, and it is loaded after
	// the listener listens, so that no revocation falls between the two.
	select {
	case <-listener.Ready():
	case <-ctx.Done():
		return nil, fmt.Errorf("daemon: %w", ctx.Err())
	case <-time.After(30 * time.Second):
		return nil, errors.New("daemon: the notification listener did not connect within 30 s")
	}
	if err := revocations.Load(ctx); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	bg.Go(func() { revocations.Run(bgCtx) })
	if !cfg.RequireMTLS {
		log.Warn("require_mtls is off: node RPCs accept a device that merely names itself in the X-Palyra-Device-Id header. " +
			"This is for development only; never run it so where a network can reach it.")
	}

	bg.Go(func() { auditLog.Run(bgCtx) })
	tokens, err := access.NewTokens(access.TokensOptions{Store: db.store, Notify: listener, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	bg.Go(func() { tokens.Run(bgCtx) })
	sessions := access.NewSessions(db.store, tokens, nil)
	accessInterceptor, err := access.NewInterceptor(access.InterceptorOptions{
		Tokens: tokens, Sessions: sessions, Audit: auditLog,
		Failures: access.NewFailureLimiter(nil), Devices: revocations, RequireMTLS: cfg.RequireMTLS,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}

	authority, err := identity.LoadOrCreateAuthority(ctx, identity.AuthorityOptions{Store: db.store, KEK: kek, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	caPath, err := authority.WriteCAFile(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	hostname, _ := os.Hostname()
	dnsNames, ips := serverNames(cfg, hostname)
	serverCert, err := identity.NewServerCertificate(ctx, identity.ServerCertificateOptions{
		Authority: authority,
		Store:     db.store,
		ReplicaID: cfg.ReplicaID,
		DNSNames:  dnsNames,
		IPs:       ips,
		Lifetime:  cfg.TLS.ServerCertLifetime,
		Logger:    log,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	bg.Go(func() { serverCert.Run(bgCtx) })

	health := apiserver.NewHealth(db.store)
	metrics := apiserver.NewMetrics(version, cfg.ReplicaID)
	server, err := apiserver.Listen(apiserver.ServerOptions{
		Address:          cfg.Listen,
		GetCertificate:   serverCert.GetCertificate,
		ClientCAs:        authority.CertPool(),
		VerifyConnection: revocations.VerifyConnection,
		HandshakeRefused: func(remote string, cert *x509.Certificate, err error) {
			accessInterceptor.HandshakeRefused(remote, cert, revocation.Reason(err))
		},
		ConnState:            revocations.ConnState,
		ReadHeaderTimeout:    cfg.Server.ReadHeaderTimeout,
		IdleTimeout:          cfg.Server.IdleTimeout,
		MaxConcurrentStreams: cfg.Server.MaxConcurrentStreams,
		Logger:               log,

		MaxConnections:           maxConns,
		MaxConnectionsPerAddress: cfg.Server.MaxConnectionsPerAddress,
		Metrics:                  metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	log.Info("listener limits", "max_connections", maxConns, "open_file_limit", fileLimit,
		"max_connections_per_address", cfg.Server.MaxConnectionsPerAddress, "max_calls_per_address", cfg.Server.MaxCallsPerAddress,
		"read_header_timeout", cfg.Server.ReadHeaderTimeout, "read_body_timeout", cfg.Server.ReadBodyTimeout)
	defer func() {
		if err != nil {
			_ = server.Close()
		}
	}()

	macKey, err := kek.DeriveKey("pairing-code-mac")
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	pairingService, err := pairing.New(pairing.Options{
		Store:              db.store,
		Authority:          authority,
		MACKey:             macKey,
		Notify:             listener,
		Audit:              auditLog,
		ReplicaID:          cfg.ReplicaID,
		PublicURL:          publicURL(cfg, hostname, server.Addr()),
		PINDigits:          cfg.Pairing.PINDigits,
		RequestTTL:         cfg.Pairing.RequestTTL,
		DeviceCertLifetime: cfg.TLS.DeviceCertLifetime,
		Logger:             log,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	bg.Go(func() { pairingService.Run(bgCtx) })
	deviceService := devices.New(devices.Options{
		Store:              db.store,
		Authority:          authority,
		ReplicaID:          cfg.ReplicaID,
		DeviceCertLifetime: cfg.TLS.DeviceCertLifetime,
		Logger:             log,
	})

	runtime, err := dispatch.New(ctx, dispatch.Options{
		Store:           db.store,
		Notify:          listener,
		Metrics:         metrics.Registry(),
		ReplicaID:       cfg.ReplicaID,
		Heartbeat:       cfg.Nodes.HeartbeatInterval,
		MaxMessageBytes: cfg.Server.MaxMessageBytes,
		Logger:          log,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	bg.Go(func() { runtime.Run(bgCtx) })
	if cfg.Debug.PprofListen != "" {
		stopPprof, err := listenPprof(cfg.Debug.PprofListen, log)
		if err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		bg.Go(func() {
			<-bgCtx.Done()
			stopPprof()
		})
	}

	handler := apiserver.NewHandler(apiserver.HandlerOptions{
		Services: apiserver.Services{
			Status: status.NewHandler(status.Options{
				Version:           version,
				ReplicaID:         cfg.ReplicaID,
				Hostname:          hostname,
				ListenAddress:     server.Addr().String(),
				StartedAt:         began,
				Database:          db.store,
				EmbeddedDatabase:  cfg.Database.Embedded(),
				Authority:         authority,
				ServerCertificate: serverCert.Leaf,
			}),
			Session:  access.NewSessionHandler(sessions),
			Pairing:  pairingService.PairingHandler(),
			Device:   deviceService.Handler(),
			Nodes:    runtime.NodesHandler(),
			Dispatch: runtime.Handler(),
			Node: nodeService{
				TrustHandler: identity.NewTrustHandler(authority, version),
				NodeHandler:  pairingService.NodeHandler(),
				renewal:      deviceService.NodeHandler(),
				runtime:      runtime.NodeHandler(),
			},
			Access:      access.NewHandler(access.HandlerOptions{Tokens: tokens}),
			FeatureFlag: flags.NewHandler(flags.HandlerOptions{Registry: flagRegistry}),
			Audit:       audit.NewHandler(audit.HandlerOptions{Log: auditLog}),
			Compat:      compat.NewHandler(cfg.Compat.Models, flagRegistry),
		},
		Health:          health,
		Metrics:         metrics,
		Access:          accessInterceptor,
		ClientCAs:       authority.CertPool(),
		MaxMessageBytes: cfg.Server.MaxMessageBytes,
		ReadBodyTimeout: cfg.Server.ReadBodyTimeout,
		Logger:          log,

		MaxCallsPerAddress: cfg.Server.MaxCallsPerAddress,
	})

	d := &Daemon{cfg: cfg, log: log, db: db, server: server, health: health, runtime: runtime, stopBg: stopBg, serveCh: make(chan error, 1)}
	d.bg = &bg
	go func() { d.serveCh <- server.Serve(handler) }()

	log.Info("palyrad ready",
		"listen", server.Addr().String(),
		"ca_fingerprint", authority.Fingerprint(),
		"ca_file", caPath,
		"replica_id", cfg.ReplicaID,
		"startup", time.Since(began).Round(time.Millisecond))
	return d, nil
}

// Addr is the address the listener is bound to.
func (d *Daemon) Addr() net.Addr { return d.server.Addr() }

// Failed delivers an error if the listener stops by itself.
func (d *Daemon) Failed() <-chan error { return d.serveCh }

// Stop shuts down gracefully: health checks turn NOT_SERVING, the nodes' Attach streams
// and dispatch watches end (nodes attach again elsewhere; dispatches live on in the
// database), the listener stops accepting connections and waits up to the configured
// shutdown timeout for calls in flight, the sessions' end is recorded with one
// statement, then background work stops, the database pool closes and, when embedded,
// PostgreSQL stops.
func (d *Daemon) Stop(ctx context.Context) error {
	began := time.Now()
	d.log.Info("palyrad stopping")
	d.health.SetShuttingDown()
	d.runtime.Shutdown()
	shutdownCtx, cancel := context.WithTimeout(ctx, d.cfg.Server.ShutdownTimeout)
	err := d.server.Shutdown(shutdownCtx)
	cancel()
	if derr := d.runtime.DetachAll(ctx); derr != nil {
		d.log.Error("node sessions not recorded as ended; their presence turns offline by their silence", "err", derr)
	}
	d.stopBg()
	d.bg.Wait()
	d.db.close(ctx)
	d.log.Info("palyrad stopped", "took", time.Since(began).Round(time.Millisecond))
	return err
}

// Migrate applies the pending migrations and returns; it starts and stops the embedded
// PostgreSQL when no database URL is configured.
func Migrate(ctx context.Context, cfg *config.Config, log *slog.Logger) (store.MigrationResult, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return store.MigrationResult{}, fmt.Errorf("daemon: data directory: %w", err)
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return store.MigrationResult{}, err
	}
	defer db.close(context.WithoutCancel(ctx))
	res, err := db.store.Migrate(ctx)
	if err != nil {
		return res, fmt.Errorf("daemon: %w", err)
	}
	return res, nil
}

// CreateLocalToken opens the database (migrating it if needed) and creates an API token
// for the owner: the recovery path when the bootstrap token is lost. Only someone who
// can open the database can do it.
func CreateLocalToken(ctx context.Context, cfg *config.Config, log *slog.Logger, p access.CreateParams) (*access.Token, string, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return nil, "", fmt.Errorf("daemon: data directory: %w", err)
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return nil, "", err
	}
	defer db.close(context.WithoutCancel(ctx))
	if _, err := db.store.Migrate(ctx); err != nil {
		return nil, "", fmt.Errorf("daemon: %w", err)
	}
	return access.CreateLocalToken(ctx, db.store, audit.New(audit.Options{Store: db.store, ReplicaID: cfg.ReplicaID, Logger: log}), p)
}

// database is the store and, when embedded, the PostgreSQL cluster behind it.
type database struct {
	store   *store.Store
	cluster *embeddedpg.Cluster // nil for an external database
	log     *slog.Logger
}

// openDatabase opens the configured database, starting the embedded cluster under
// <data-dir>/pg when no URL is configured.
func openDatabase(ctx context.Context, cfg *config.Config, log *slog.Logger) (*database, error) {
	db := &database{log: log}
	url := cfg.Database.URL
	if cfg.Database.Embedded() {
		cluster, err := embeddedpg.Start(ctx, embeddedpg.Options{
			Dir:     filepath.Join(cfg.DataDir, "pg"),
			Durable: true,
			Logger:  log,
		})
		if err != nil {
			return nil, fmt.Errorf("daemon: embedded PostgreSQL: %w", err)
		}
		db.cluster, url = cluster, cluster.URL()
	}
	s, err := store.Open(ctx, store.Options{URL: url, MaxConns: cfg.Database.MaxConns, Logger: log})
	if err != nil {
		db.close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("daemon: %w", err)
	}
	db.store = s
	return db, nil
}

func (db *database) close(ctx context.Context) {
	if db.store != nil {
		db.store.Close()
	}
	if db.cluster != nil {
		if err := db.cluster.Stop(ctx); err != nil {
			db.log.Error("embedded PostgreSQL did not stop cleanly", "err", err)
		}
	}
}

// nodeService serves NodeService from the packages that own its parts: the trust
// bootstrap (identity), pairing, renewal (devices) and the Attach stream (dispatch).
type nodeService struct {
	*identity.TrustHandler
	*pairing.NodeHandler
	renewal *devices.NodeHandler
	runtime *dispatch.NodeHandler
}

var _ nodev1connect.NodeServiceHandler = nodeService{}

// RenewCertificate implements NodeService.
func (n nodeService) RenewCertificate(ctx context.Context, req *connect.Request[nodev1.RenewCertificateRequest]) (*connect.Response[nodev1.RenewCertificateResponse], error) {
	return n.renewal.RenewCertificate(ctx, req)
}

// Attach implements NodeService.
func (n nodeService) Attach(ctx context.Context, stream *connect.BidiStream[nodev1.AttachRequest, nodev1.AttachResponse]) error {
	return n.runtime.Attach(ctx, stream)
}

// publicURL is the configured public URL, or https:// and the listen address (the host
// name when it listens on every address).
func publicURL(cfg *config.Config, hostname string, addr net.Addr) string {
	if cfg.PublicURL != "" {
		return cfg.PublicURL
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	_, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = hostname
	}
	return "https://" + net.JoinHostPort(host, port)
}

// serverNames returns the subject alternative names of the server certificate:
// localhost, 127.0.0.1, ::1, the host name, the listen host when it is specific, and
// the configured extras, without duplicates.
func serverNames(cfg *config.Config, hostname string) ([]string, []net.IP) {
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	add := func(name string) {
		if name == "" {
			return
		}
		if ip := net.ParseIP(name); ip != nil {
			if !ip.IsUnspecified() && !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			return
		}
		if !slices.Contains(dns, name) {
			dns = append(dns, name)
		}
	}
	add(hostname)
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil {
		add(host)
	}
	for _, san := range cfg.TLS.SANs {
		add(san)
	}
	return dns, ips
}
