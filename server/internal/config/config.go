// Package config is palyrad's configuration: the Config type, its defaults, and Load,
// which layers command-line flags over PALYRA_* environment variables over a TOML file
// over the defaults, then validates the result with errors that name the setting and
// where its value came from. One table (settings.go) describes every setting once; the
// flags, the environment names, the file keys and the help text all come from it.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/palyra/palyra/server/internal/labels"
)

// Config is the validated configuration of palyrad.
type Config struct {
	// Listen is the TCP address of the one listener, e.g. "127.0.0.1:7443".
	Listen string
	// DataDir holds master.key, ca.pem and the embedded PostgreSQL cluster; absolute.
	DataDir string
	// ReplicaID identifies this process among the replicas sharing the database.
	ReplicaID string
	// Database says where the data lives.
	Database Database
	// TLS configures the server certificate.
	TLS TLS
	// Server holds the listener's limits.
	Server Server
	// Log configures logging.
	Log Log
	// Compat configures the OpenAI-compatible API.
	Compat Compat
	// Pairing configures node pairing.
	Pairing Pairing
	// Nodes configures the node runtime.
	Nodes Nodes
	// Tokens configures API tokens.
	Tokens Tokens
	// Debug configures diagnostics that are off by default.
	Debug Debug
	// Agents configures agents and the approvals of their tool calls.
	Agents Agents
	// PublicURL is the URL nodes reach the daemon at, put in QR pairing URIs; empty means
	// https:// and the listen address (the host name when it listens on all addresses).
	PublicURL string
	// RequireMTLS makes node RPCs require a client certificate. Turning it off is for
	// development only.
	RequireMTLS bool
	// MasterKey is the base64 master keys from PALYRA_MASTER_KEY (separated by commas,
	// the primary first); empty means <DataDir>/master.key. Never logged.
	MasterKey string
	// File is the configuration file that was read, if any.
	File string
	// sources says where each setting's value came from; a setting missing from it
	// has its default.
	sources map[string]Source
}

// Database configures PostgreSQL.
type Database struct {
	// URL of an external PostgreSQL database; empty runs the embedded cluster under
	// <DataDir>/pg. Never logged (it may hold a password).
	URL string
	// MaxConns bounds the connection pool.
	MaxConns int32
}

// Embedded reports whether palyrad runs its own PostgreSQL cluster.
func (d Database) Embedded() bool { return d.URL == "" }

// TLS configures the daemon's server certificate.
type TLS struct {
	// SANs are extra DNS names and IP addresses for the server certificate, besides
	// localhost, 127.0.0.1, ::1 and the host name.
	SANs []string
	// ServerCertLifetime is the validity of each server certificate; it is renewed at
	// one third remaining.
	ServerCertLifetime time.Duration
	// DeviceCertLifetime is the validity of each device certificate; nodes renew at one
	// third remaining.
	DeviceCertLifetime time.Duration
}

// Pairing configures node pairing.
type Pairing struct {
	// PINDigits is the length of PIN codes unless a code asks for another (6 to 12).
	PINDigits int
	// RequestTTL is how long a pairing request waits for a decision.
	RequestTTL time.Duration
}

// Nodes configures the node runtime.
type Nodes struct {
	// HeartbeatInterval is how often attached nodes send a heartbeat; three missed make
	// a node stale, ten offline.
	HeartbeatInterval time.Duration
}

// Tokens configures API tokens.
type Tokens struct {
	// DefaultRateLimit is the calls a minute of a token created without a limit.
	DefaultRateLimit int
}

// Agents configures agents and the approvals of their tool calls.
type Agents struct {
	// ApprovalTimeout is how long a tool call of an ask tool waits for a human's
	// decision before it is denied as expired.
	ApprovalTimeout time.Duration
}

// Debug configures diagnostics that are off by default.
type Debug struct {
	// PprofListen is a loopback host:port serving net/http/pprof on a listener of its
	// own (plain HTTP, no authentication, hence loopback only); empty turns it off.
	PprofListen string
}

// Server holds the limits of the HTTP server.
type Server struct {
	// ReadHeaderTimeout bounds the TLS handshake and the reading of request headers.
	ReadHeaderTimeout time.Duration
	// ReadBodyTimeout bounds the arrival of a request body after its headers, and of
	// each message of an Attach stream after its first byte.
	ReadBodyTimeout time.Duration
	// IdleTimeout closes keep-alive connections that carry no request.
	IdleTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown; what is still open is then closed.
	ShutdownTimeout time.Duration
	// MaxMessageBytes bounds one RPC message, in either direction.
	MaxMessageBytes int
	// MaxConcurrentStreams bounds the HTTP/2 streams of one connection.
	MaxConcurrentStreams int
	// MaxConnections bounds the connections open at once; 0 derives it from the
	// open-file limit.
	MaxConnections int
	// MaxConnectionsPerAddress bounds the connections open at once from one IPv4
	// address or IPv6 /64; 0 means no such bound.
	MaxConnectionsPerAddress int
	// MaxCallsPerAddress bounds the calls in flight at once, streams included, from one
	// IPv4 address or IPv6 /64; 0 means no such bound.
	MaxCallsPerAddress int
}

// Log configures logging.
type Log struct {
	// Level is the minimum level logged.
	Level slog.Level
	// LevelVar, when not nil, is the level the daemon's logger follows (Load makes one
	// holding Level); the live configuration sets it when log.level changes. Copies of
	// the Config share it.
	LevelVar *slog.LevelVar
	// Format is "text" or "json".
	Format string
}

// Compat configures the OpenAI-compatible API.
type Compat struct {
	// Models are the model ids that GET /v1/models lists, in order.
	Models []string
	// Providers are the OpenAI-compatible upstream providers, by name.
	Providers map[string]Provider
	// NodeSelector is what the labels of a node must match for it to serve models
	// (compat.node_selector); the empty selector matches every node.
	NodeSelector labels.Selector
}

// Provider is an OpenAI-compatible upstream provider (compat.providers.<name>).
type Provider struct {
	// BaseURL is its API's base URL, e.g. https://api.openai.com/v1; empty until set.
	BaseURL string
	// APIKey is a secret reference (secretref) to its API key, as written; empty when
	// it needs none.
	APIKey string
	// Models are the models it serves, in order.
	Models []ProviderModel
	// Timeout bounds one call to it.
	Timeout time.Duration
}

// ProviderModel is a model a provider serves.
type ProviderModel struct {
	// ID is the model id clients ask for.
	ID string
	// Upstream is the provider's own id of the model; ID unless aliased.
	Upstream string
}

// String writes the model as its setting does: "id", or "alias=upstream-id".
func (m ProviderModel) String() string {
	if m.Upstream == m.ID {
		return m.ID
	}
	return m.ID + "=" + m.Upstream
}

// LogValue implements slog.LogValuer: the configuration without secrets.
func (c Config) LogValue() slog.Value {
	db := "embedded"
	if !c.Database.Embedded() {
		db = describeDatabase(c.Database.URL)
	}
	masterKey := "file"
	if c.MasterKey != "" {
		masterKey = "environment"
	}
	return slog.GroupValue(
		slog.String("file", c.File),
		slog.String("listen", c.Listen),
		slog.String("data_dir", c.DataDir),
		slog.String("replica_id", c.ReplicaID),
		slog.String("database", db),
		slog.String("master_key", masterKey),
		slog.Any("tls_sans", c.TLS.SANs),
		slog.Duration("server_cert_lifetime", c.TLS.ServerCertLifetime),
		slog.String("log_level", c.Log.Level.String()),
		slog.String("log_format", c.Log.Format),
	)
}

// describeDatabase names an external database without its credentials.
func describeDatabase(raw string) string {
	c, err := pgconn.ParseConfig(raw)
	if err != nil {
		return "external (unparsable URL)"
	}
	if strings.HasPrefix(c.Host, "/") {
		return fmt.Sprintf("external (database %q through the socket in %s)", c.Database, c.Host)
	}
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), Path: "/" + c.Database}
	return fmt.Sprintf("external (%s)", u.String())
}
