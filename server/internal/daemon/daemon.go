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
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/agents"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/approvals"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/browser"
	"github.com/palyra/palyra/server/internal/compat"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/console"
	"github.com/palyra/palyra/server/internal/devices"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/embeddedpg"
	"github.com/palyra/palyra/server/internal/flags"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/liveconfig"
	"github.com/palyra/palyra/server/internal/masterkey"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/pairing"
	"github.com/palyra/palyra/server/internal/requestctx"
	"github.com/palyra/palyra/server/internal/revocation"
	"github.com/palyra/palyra/server/internal/status"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/vault"
)

// NewLogger returns the daemon's logger for the configured level and format. It follows
// c.LevelVar when there is one, which the live configuration sets (log.level).
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Leveler = c.Level
	if c.LevelVar != nil {
		level = c.LevelVar
	}
	opts := &slog.HandlerOptions{Level: level}
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
	pairing *pairing.Service
	stopBg  context.CancelFunc
	bg      *sync.WaitGroup
	serveCh chan error
	// compatREST records its answered calls after they are answered (Stop waits).
	compatREST *compat.REST
	// runs are the agents' runs, which this replica ends as it stops.
	runs *agents.Runs
	// approvals ends its watches at Stop.
	approvals *approvals.Service
}

// FinishTimeout is the time a graceful stop has, beyond server.shutdown_timeout (the
// listener's drain), for what follows the drain: recording the sessions' end, stopping
// the background work, closing the database. When the sum passes, Stop stops hard: it
// logs the steps it abandons and returns.
const FinishTimeout = 15 * time.Second

// startup holds what Start has built so far; each of its steps adds to it, and undo
// stops what the steps started, in reverse order.
type startup struct {
	ctx      context.Context
	cfg      *config.Config
	log      *slog.Logger
	began    time.Time
	version  string
	hostname string
	undos    []func()

	maxConns  int
	fileLimit uint64
	keys      *identity.Keyring
	db        *database
	bgCtx     context.Context
	stopBg    context.CancelFunc
	bg        sync.WaitGroup

	auditLog    *audit.Log
	flags       *flags.Registry
	listener    *notify.Listener
	live        *liveconfig.Service
	revocations *revocation.List
	tokens      *access.Tokens
	sessions    *access.Sessions
	interceptor *access.Interceptor
	authority   *identity.Authority
	caPath      string
	serverCert  *identity.ServerCertificate
	health      *apiserver.Health
	metrics     *apiserver.Metrics
	server      *apiserver.Server
	chains      *requestctx.ChainCache // the client chains verified, shared by the listener and the handler
	pairing     *pairing.Service
	devices     *devices.Service
	runtime     *dispatch.Service
	vault       *vault.Vault
	browser     *browser.Profiles
	masterKeys  *masterkey.Service
	compat      *compat.Handler
	compatREST  *compat.REST
	agents      *agents.Agents
	runs        *agents.Runs
	approvals   *approvals.Service
}

// Start brings palyrad up and returns once the listener accepts connections. When a
// step fails, what the steps before it started is stopped again, in reverse order:
// the listener, the background work, the database.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	s := &startup{ctx: ctx, cfg: cfg, log: log, began: time.Now(), version: buildinfo.Version()}
	log.Info("palyrad starting", "version", s.version, "config", *cfg)
	for _, step := range []func() error{
		s.prepare,            // open-file limit, data directory, master key
		s.openDatabase,       // database (embedded or not), migrations
		s.bootstrapAccess,    // audit log, the first owner
		s.startBackground,    // the context and group of the background work
		s.startNotifications, // feature flags, notification listener, revocation list, live configuration
		s.startAccess,        // tokens, sessions, the authorization interceptor
		s.reportReplica,      // this replica and its master keys in the replicas table
		s.loadCA,             // the CA, ca.pem, the server certificate
		s.listen,             // the TLS listener
		s.buildServices,      // pairing, devices, vault, browser profiles, dispatch, approvals, pprof
		s.buildAgents,        // the compat API, agents and their runs
	} {
		if err := step(); err != nil {
			s.undo()
			return nil, err
		}
	}
	return s.serve(), nil
}

// onFailure registers what undoes a step that succeeded, should a later one fail.
func (s *startup) onFailure(undo func()) { s.undos = append(s.undos, undo) }

// undo stops what the steps started, last first.
func (s *startup) undo() {
	for _, u := range slices.Backward(s.undos) {
		u()
	}
}

// prepare checks the open-file limit, creates the data directory and loads the master
// key.
func (s *startup) prepare() (err error) {
	if s.maxConns, s.fileLimit, err = maxConnections(s.cfg); err != nil {
		return err
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("daemon: data directory: %w", err)
	}
	keys, source, err := identity.LoadKeyring(s.cfg.DataDir, s.cfg.MasterKey)
	if err != nil {
		return fmt.Errorf("daemon: master key: %w", err)
	}
	s.keys = keys
	s.log.Info("master keys loaded", "source", source, "kek_id", keys.Primary().ID(), "kek_ids", keys.IDs())
	return nil
}

// openDatabase opens the database, starting the embedded one if configured, and
// migrates it.
func (s *startup) openDatabase() error {
	db, err := openDatabase(s.ctx, s.cfg, s.log)
	if err != nil {
		return err
	}
	s.db = db
	s.onFailure(func() { db.close(context.WithoutCancel(s.ctx)) })
	if _, err := db.store.Migrate(s.ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// bootstrapAccess creates the audit log and, on the first start, the owner and its
// bootstrap token.
func (s *startup) bootstrapAccess() error {
	s.auditLog = audit.New(audit.Options{Store: s.db.store, ReplicaID: s.cfg.ReplicaID, Logger: s.log})
	bootstrap, err := access.Bootstrap(s.ctx, s.db.store, s.auditLog, s.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if bootstrap != "" {
		s.log.Info("owner created; its API token is in the bootstrap file (log in with: palyra auth login --token-file ...)", "file", bootstrap)
	}
	return nil
}

// startBackground creates the context and group of the background work (certificate
// renewal, notifications, revocations, the pairing sweeper, ...), which runs until
// Stop.
func (s *startup) startBackground() error {
	s.bgCtx, s.stopBg = context.WithCancel(context.WithoutCancel(s.ctx))
	s.onFailure(func() {
		s.stopBg()
		s.bg.Wait()
	})
	return nil
}

// startNotifications loads the feature flags, starts the notification listener and
// loads the revocation list and the runtime settings stored in the database. Nothing is
// served before they are loaded, and they are loaded after the listener listens, so
// that no change falls between the two.
func (s *startup) startNotifications() (err error) {
	if s.flags, err = flags.New(flags.Options{Store: s.db.store, Definitions: flags.Builtin()}); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.listener = notify.New(notify.Options{
		Config: s.db.store.Pool().Config().ConnConfig,
		Channels: []string{revocation.Channel, pairing.Channel,
			dispatch.ChannelDispatch, dispatch.ChannelOutput, dispatch.ChannelSessions, access.TokensChannel,
			masterkey.Channel, liveconfig.Channel, vault.Channel, agents.ChannelRuns, approvals.Channel},
		Logger: s.log,
	})
	s.bg.Go(func() { s.listener.Run(s.bgCtx) })
	s.revocations, err = revocation.New(revocation.Options{Store: s.db.store, Notify: s.listener, Logger: s.log})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	select {
	case <-s.listener.Ready():
	case <-s.ctx.Done():
		return fmt.Errorf("daemon: %w", s.ctx.Err())
	case <-time.After(30 * time.Second):
		return errors.New("daemon: the notification listener did not connect within 30 s")
	}
	if err := s.revocations.Load(s.ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.revocations.Run(s.bgCtx) })
	s.live, err = liveconfig.New(s.ctx, liveconfig.Options{Store: s.db.store, Notify: s.listener, Base: s.cfg, Logger: s.log})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.live.Run(s.bgCtx) })
	if rev := s.live.Current().Revision; rev > 0 {
		s.log.Info("runtime settings loaded from the database", "revision", rev)
	}
	if !s.cfg.RequireMTLS {
		s.log.Warn("require_mtls is off: node RPCs accept a device that merely names itself in the X-Palyra-Device-Id header. " +
			"This is for development only; never run it so where a network can reach it.")
	}
	return nil
}

// startAccess starts the audit log's writer and the token cache, and builds the
// sessions and the authorization interceptor.
func (s *startup) startAccess() (err error) {
	s.bg.Go(func() { s.auditLog.Run(s.bgCtx) })
	live := s.live
	s.tokens, err = access.NewTokens(access.TokensOptions{
		Store: s.db.store, Notify: s.listener, Logger: s.log,
		DefaultRateLimit: func() int { return live.Config().Tokens.DefaultRateLimit },
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.tokens.Run(s.bgCtx) })
	s.sessions = access.NewSessions(access.SessionsOptions{Store: s.db.store, Tokens: s.tokens})
	s.interceptor, err = access.NewInterceptor(access.InterceptorOptions{
		Tokens: s.tokens, Sessions: s.sessions, Audit: s.auditLog,
		Failures: access.NewFailureLimiter(), Devices: s.revocations, RequireMTLS: s.cfg.RequireMTLS,
		Translate: apiserver.ErrorTranslator(s.log), Logger: s.log,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// reportReplica records this replica and the IDs of its master keys before it opens
// the CA, so that a master key re-wrap running meanwhile sees it (package masterkey).
func (s *startup) reportReplica() (err error) {
	s.hostname, _ = os.Hostname()
	s.masterKeys, err = masterkey.New(masterkey.Options{
		Store: s.db.store, Keys: s.keys, Rewrappers: []masterkey.Rewrapper{identity.AuthorityKeys{}, &vault.DataKeys{}, &browser.StateKeys{}},
		ReplicaID: s.cfg.ReplicaID, Hostname: s.hostname, Version: s.version,
		Notify: s.listener, Refresh: func(ctx context.Context) error { return s.authority.Refresh(ctx) }, Logger: s.log,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if err := s.masterKeys.Report(s.ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.onFailure(func() { s.masterKeys.RecordStop(s.ctx) })
	return nil
}

// loadCA loads (or on the first start creates) the CA, writes ca.pem and starts the
// server certificate and its renewal, and the replica's reports.
func (s *startup) loadCA() (err error) {
	s.authority, err = identity.LoadOrCreateAuthority(s.ctx, identity.AuthorityOptions{Store: s.db.store, Keys: s.keys, Logger: s.log})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.masterKeys.Run(s.bgCtx) })
	if s.caPath, err = s.authority.WriteCAFile(s.cfg.DataDir); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	dnsNames, ips := serverNames(s.cfg, s.hostname)
	s.serverCert, err = identity.NewServerCertificate(s.ctx, identity.ServerCertificateOptions{
		Authority: s.authority,
		Store:     s.db.store,
		ReplicaID: s.cfg.ReplicaID,
		DNSNames:  dnsNames,
		IPs:       ips,
		Lifetime:  s.cfg.TLS.ServerCertLifetime,
		Logger:    s.log,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.serverCert.Run(s.bgCtx) })
	return nil
}

// listen binds the TLS listener; it serves nothing until serve.
func (s *startup) listen() (err error) {
	cfg := s.cfg
	s.health = apiserver.NewHealth(s.db.store)
	s.metrics = apiserver.NewMetrics(s.version, cfg.ReplicaID)
	roots := s.authority.CertPool()
	s.chains = requestctx.NewChainCache(roots, 0)
	s.server, err = apiserver.Listen(apiserver.ServerOptions{
		Address:          cfg.Listen,
		GetCertificate:   s.serverCert.GetCertificate,
		ClientCAs:        roots,
		ClientChains:     s.chains,
		VerifyConnection: s.revocations.VerifyConnection,
		HandshakeRefused: func(remote string, cert *x509.Certificate, err error) {
			s.interceptor.HandshakeRefused(remote, cert, revocation.Reason(err))
		},
		ConnState:            s.revocations.ConnState,
		SessionTicketKeys:    masterkey.NewTicketKeys(s.keys).At, // shared by the replicas and restarts
		ReadHeaderTimeout:    cfg.Server.ReadHeaderTimeout,
		IdleTimeout:          cfg.Server.IdleTimeout,
		MaxConcurrentStreams: cfg.Server.MaxConcurrentStreams,
		Logger:               s.log,

		MaxConnections:           s.maxConns,
		MaxConnectionsPerAddress: cfg.Server.MaxConnectionsPerAddress,
		Metrics:                  s.metrics,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.onFailure(func() { _ = s.server.Close() })
	s.log.Info("listener limits", "max_connections", s.maxConns, "open_file_limit", s.fileLimit,
		"max_connections_per_address", cfg.Server.MaxConnectionsPerAddress, "max_calls_per_address", cfg.Server.MaxCallsPerAddress,
		"read_header_timeout", cfg.Server.ReadHeaderTimeout, "read_body_timeout", cfg.Server.ReadBodyTimeout)
	return nil
}

// buildServices builds pairing, devices, the vault, browser profiles, dispatch and
// approvals, starts their background work, and the pprof listener when configured.
func (s *startup) buildServices() (err error) {
	cfg := s.cfg
	// Codes are stored under the primary's MAC key; during a master key rotation those
	// stored under an older key's still verify.
	macKey, err := s.keys.Primary().DeriveKey("pairing-code-mac")
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	var olderMACKeys [][]byte
	for _, kek := range s.keys.Older() {
		k, err := kek.DeriveKey("pairing-code-mac")
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		olderMACKeys = append(olderMACKeys, k)
	}
	s.pairing, err = pairing.New(pairing.Options{
		Store:              s.db.store,
		Authority:          s.authority,
		MACKey:             macKey,
		OlderMACKeys:       olderMACKeys,
		Notify:             s.listener,
		Audit:              s.auditLog,
		ReplicaID:          cfg.ReplicaID,
		PublicURL:          publicURL(cfg, s.hostname, s.server.Addr()),
		PINDigits:          func() int { return s.live.Config().Pairing.PINDigits },
		RequestTTL:         func() time.Duration { return s.live.Config().Pairing.RequestTTL },
		DeviceCertLifetime: cfg.TLS.DeviceCertLifetime,
		Logger:             s.log,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.pairing.Run(s.bgCtx) })
	s.devices = devices.New(devices.Options{
		Store:              s.db.store,
		Authority:          s.authority,
		ReplicaID:          cfg.ReplicaID,
		DeviceCertLifetime: cfg.TLS.DeviceCertLifetime,
		Logger:             s.log,
	})
	if s.vault, err = vault.New(vault.Options{Store: s.db.store, Keys: s.keys, Referrers: secretReferrers{s}, Notify: s.listener, Logger: s.log}); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.vault.Run(s.bgCtx) })
	s.browser, err = browser.New(browser.Options{
		Store: s.db.store, Keys: s.keys, Secrets: s.vault, Audit: s.auditLog, Logger: s.log,
		NodesOffering: func(ctx context.Context, capability string) ([]dispatch.Node, error) {
			return s.runtime.NodesOffering(ctx, capability)
		},
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.runtime, err = dispatch.New(s.ctx, dispatch.Options{
		Store:           s.db.store,
		Notify:          s.listener,
		Metrics:         s.metrics.Registry(),
		ReplicaID:       cfg.ReplicaID,
		Heartbeat:       func() time.Duration { return s.live.Config().Nodes.HeartbeatInterval },
		MaxMessageBytes: cfg.Server.MaxMessageBytes,
		Browser:         s.browser,
		Logger:          s.log,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.runtime.Run(s.bgCtx) })
	s.approvals, err = approvals.New(approvals.Options{
		Store: s.db.store, Audit: s.auditLog, Notify: s.listener, Logger: s.log,
		Timeout: func() time.Duration { return s.live.Config().Agents.ApprovalTimeout },
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.bg.Go(func() { s.approvals.Run(s.bgCtx) })
	if cfg.Debug.PprofListen != "" {
		stopPprof, err := listenPprof(cfg.Debug.PprofListen, s.log)
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		s.bg.Go(func() {
			<-s.bgCtx.Done()
			stopPprof()
		})
	}
	return nil
}

// buildAgents builds the compat API's handler, the agents and their runs, which call
// the compat API, and starts the runs' background work.
func (s *startup) buildAgents() (err error) {
	s.compat = compat.NewHandler(compat.Options{Config: s.live.Config, Flags: s.flags, Secrets: s.vault, Logger: s.log, Nodes: s.runtime,
		Store: s.db.store})
	s.compatREST = compat.NewREST(s.compat, s.interceptor, s.cfg.Server.MaxMessageBytes)
	s.agents = agents.New(agents.Options{Store: s.db.store, Models: s.compat, Nodes: s.runtime, Profiles: s.browser, Logger: s.log})
	s.runs, err = agents.NewRuns(agents.RunsOptions{Store: s.db.store, Agents: s.agents, Models: s.compat, Nodes: s.runtime,
		Approvals: s.approvals, Audit: s.auditLog, Notify: s.listener, Replicas: s.masterKeys, ReplicaID: s.cfg.ReplicaID, Logger: s.log})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	s.compat.SetAgents(s.runs)
	s.bg.Go(func() { s.runs.Run(s.bgCtx) })
	return nil
}

// secretReferrers are what refers to secrets: the settings, and the proxies of browser
// profiles (built after the vault, before any call).
type secretReferrers struct{ s *startup }

// Referrers implements vault.Referrers: the settings' first, as the configuration's
// lock comes first.
func (r secretReferrers) Referrers(ctx context.Context, tx *store.Tx, name string) ([]config.SecretRef, error) {
	refs, err := r.s.live.Referrers(ctx, tx, name)
	if err != nil {
		return nil, err
	}
	more, err := r.s.browser.Referrers(ctx, tx, name)
	return append(refs, more...), err
}

// serve mounts every service on the listener and starts serving; it cannot fail.
func (s *startup) serve() *Daemon {
	cfg := s.cfg
	compatHandler, compatREST, runs := s.compat, s.compatREST, s.runs
	agentDefs := s.agents
	handler := apiserver.NewHandler(apiserver.HandlerOptions{
		Services: apiserver.Services{
			Status: status.NewHandler(status.Options{
				Version:           s.version,
				ReplicaID:         cfg.ReplicaID,
				Hostname:          s.hostname,
				ListenAddress:     s.server.Addr().String(),
				StartedAt:         s.began,
				Database:          s.db.store,
				EmbeddedDatabase:  cfg.Database.Embedded(),
				Authority:         s.authority,
				ServerCertificate: s.serverCert.Leaf,
			}),
			Session:  access.NewSessionHandler(s.sessions),
			Pairing:  s.pairing.PairingHandler(),
			Device:   s.devices.Handler(),
			Nodes:    s.runtime.NodesHandler(),
			Dispatch: s.runtime.Handler(),
			Node: nodeService{
				TrustHandler: identity.NewTrustHandler(s.authority, s.version),
				NodeHandler:  s.pairing.NodeHandler(),
				renewal:      s.devices.NodeHandler(),
				runtime:      s.runtime.NodeHandler(),
			},
			Access:      access.NewHandler(access.HandlerOptions{Tokens: s.tokens}),
			FeatureFlag: flags.NewHandler(flags.HandlerOptions{Registry: s.flags}),
			Audit:       audit.NewHandler(audit.HandlerOptions{Log: s.auditLog}),
			Compat:      compatHandler,
			CompatREST:  compatREST,
			Config:      s.live.Handler(),
			Secret:      vault.NewHandler(s.vault),
			MasterKey:   s.masterKeys.Handler(),
			Agent:       agents.NewHandler(agentDefs, runs),
			Approval:    s.approvals.Handler(),
			Browser:     browser.NewHandler(s.browser),
		},
		Health:          s.health,
		Metrics:         s.metrics,
		Access:          s.interceptor,
		ClientChains:    s.chains,
		MaxMessageBytes: cfg.Server.MaxMessageBytes,
		ReadBodyTimeout: cfg.Server.ReadBodyTimeout,
		Console:         console.New(),
		Logger:          s.log,

		MaxCallsPerAddress: cfg.Server.MaxCallsPerAddress,
	})

	d := &Daemon{
		cfg: cfg, log: s.log, db: s.db, server: s.server, health: s.health, runtime: s.runtime, pairing: s.pairing, approvals: s.approvals,
		stopBg: s.stopBg, bg: &s.bg, serveCh: make(chan error, 1), compatREST: compatREST, runs: runs,
	}
	go func() { d.serveCh <- s.server.Serve(handler) }()

	s.log.Info("palyrad ready",
		"listen", s.server.Addr().String(),
		"ca_fingerprint", s.authority.Fingerprint(),
		"ca_file", s.caPath,
		"replica_id", cfg.ReplicaID,
		"startup", time.Since(s.began).Round(time.Millisecond))
	return d
}

// Addr is the address the listener is bound to.
func (d *Daemon) Addr() net.Addr { return d.server.Addr() }

// Failed delivers an error if the listener stops by itself.
func (d *Daemon) Failed() <-chan error { return d.serveCh }

// Stop shuts down gracefully: health checks turn NOT_SERVING, the nodes' Attach streams
// and dispatch watches end (nodes attach again elsewhere; dispatches live on in the
// database), the listener stops accepting connections and waits up to the configured
// shutdown timeout for calls in flight, the OpenAI REST calls answered finish recording
// their usage and audit events, the sessions' end is recorded with one
// statement, then background work stops, the database pool closes and, when embedded,
// PostgreSQL stops. The whole stop may take the shutdown timeout plus FinishTimeout;
// when that passes, or ctx ends first, Stop stops hard: it logs the steps it abandons
// and returns an error without waiting for them.
func (d *Daemon) Stop(ctx context.Context) error {
	began := time.Now()
	d.log.Info("palyrad stopping")
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Server.ShutdownTimeout+FinishTimeout)
	defer cancel()
	steps := []struct {
		name string
		run  func() error
	}{
		{"drain the listener", func() error {
			d.health.SetShuttingDown()
			d.runtime.Shutdown()
			d.pairing.Shutdown()
			d.runs.Shutdown()
			d.approvals.Shutdown()
			shutdownCtx, cancel := context.WithTimeout(ctx, d.cfg.Server.ShutdownTimeout)
			defer cancel()
			return d.server.Shutdown(shutdownCtx)
		}},
		{"record the OpenAI REST calls answered", func() error {
			d.compatREST.Wait()
			return nil
		}},
		{"record the end of the node sessions", func() error {
			if err := d.runtime.DetachAll(ctx); err != nil {
				d.log.Error("node sessions not recorded as ended; their presence turns offline by their silence", "err", err)
			}
			return nil
		}},
		{"stop the background work", func() error {
			d.stopBg()
			d.bg.Wait()
			return nil
		}},
		{d.db.closeStep(), func() error {
			d.db.close(ctx)
			return nil
		}},
	}
	var (
		mu   sync.Mutex // guards next
		next int        // the first step not done
	)
	done := make(chan error, 1)
	go func() {
		var err error
		for _, step := range steps {
			if ctx.Err() != nil {
				break
			}
			err = errors.Join(err, step.run())
			if ctx.Err() != nil {
				break // the step was cut short
			}
			mu.Lock()
			next++
			mu.Unlock()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if ctx.Err() == nil {
			d.log.Info("palyrad stopped", "took", time.Since(began).Round(time.Millisecond))
			return err
		}
	case <-ctx.Done():
	}
	mu.Lock()
	var abandoned []string
	for _, step := range steps[next:] {
		abandoned = append(abandoned, step.name)
	}
	mu.Unlock()
	d.log.Error("palyrad stopped hard: the graceful stop did not end in time", "abandoned", abandoned,
		"took", time.Since(began).Round(time.Millisecond))
	return fmt.Errorf("daemon: stopped hard after %s: abandoned %s: %w",
		time.Since(began).Round(time.Second), strings.Join(abandoned, ", "), context.Cause(ctx))
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

// closeStep names the step of Stop that closes db.
func (db *database) closeStep() string {
	if db.cluster != nil {
		return "close the database pool and stop the embedded PostgreSQL"
	}
	return "close the database pool"
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
