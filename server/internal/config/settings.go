package config

import (
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/palyra/palyra/server/internal/labels"
	"github.com/palyra/palyra/server/internal/secretref"
)

// setting is one configuration value, described once. Its file key is key (dotted for
// TOML tables), its flag is --<key with '.' and '_' as '-'> unless flag overrides it,
// and its environment variable is PALYRA_<KEY with '.' as '_'>.
type setting struct {
	key   string
	flag  string // overrides the derived flag name (lists use the singular)
	kind  string // the value's kind in the help text, e.g. "duration"
	usage string
	// Exactly one of set and setList: scalar settings parse a string, list settings a
	// list (a repeated flag, a comma-separated variable, a TOML array).
	set     func(c *Config, v string) error
	setList func(c *Config, v []string) error
	// show renders the current value for the help text.
	show func(c *Config) string
	// secret settings have no flag (command lines are visible to every user of the
	// machine) and their values are never shown.
	secret bool
	// runtime settings can also be changed live through ConfigService: a value stored
	// in the database overrides the flag, environment, file and default one, on every
	// replica (package liveconfig). The others are bootstrap settings, read at start.
	runtime bool
	// secretRef settings take a secret reference (package secretref) as their value,
	// never the secret itself: the value is stored and shown as written, and the vault
	// checks that the secret exists when it is set and resolves it when it is used.
	secretRef bool
	// Template settings stand for one setting per name: key holds nameSlot where the
	// name goes (compat.providers.<name>.base_url), instance returns the setting of one
	// name and names lists the names a Config has. They are set in the file and through
	// the API only: no flag, no environment variable.
	instance func(name string) setting
	names    func(c *Config) []string
	// templated marks the instance of a template (bind).
	templated bool
}

// nameSlot marks where the name goes in a template setting's key.
const nameSlot = "<name>"

func (s setting) flagName() string {
	if s.flag != "" {
		return s.flag
	}
	return strings.NewReplacer(".", "-", "_", "-").Replace(s.key)
}

func (s setting) template() bool { return s.instance != nil }

func (s setting) envName() string {
	return "PALYRA_" + strings.ToUpper(strings.ReplaceAll(s.key, ".", "_"))
}

// settings is the table of every setting of palyrad, in help order.
var settings = []setting{
	{
		key:   "listen",
		kind:  "host:port",
		usage: "TCP address of the listener (TLS, HTTP/1.1 and HTTP/2) that serves every API",
		set:   func(c *Config, v string) error { c.Listen = v; return validateListen(v) },
		show:  func(c *Config) string { return c.Listen },
	},
	{
		key:   "data_dir",
		kind:  "path",
		usage: "directory for master.key, ca.pem and the embedded PostgreSQL cluster",
		set: func(c *Config, v string) error {
			if v == "" {
				return fmt.Errorf("must not be empty")
			}
			abs, err := filepath.Abs(v)
			if err != nil {
				return err
			}
			c.DataDir = abs
			return nil
		},
		show: func(c *Config) string { return c.DataDir },
	},
	{
		key:   "replica_id",
		kind:  "name",
		usage: "name of this replica among those sharing the database (default: a new ULID at every start)",
		set: func(c *Config, v string) error {
			if !replicaIDPattern.MatchString(v) {
				return fmt.Errorf("must be 1 to 64 letters, digits, '.', '_' or '-', got %q", v)
			}
			c.ReplicaID = v
			return nil
		},
		show: func(c *Config) string { return c.ReplicaID },
	},
	{
		key:   "database.url",
		kind:  "url",
		usage: "PostgreSQL URL of an external database; empty runs a private cluster under <data_dir>/pg",
		set: func(c *Config, v string) error {
			if v != "" {
				if _, err := pgconn.ParseConfig(v); err != nil {
					return fmt.Errorf("is not a valid PostgreSQL URL (postgres://user:password@host:5432/dbname)")
				}
			}
			c.Database.URL = v
			return nil
		},
		show: func(c *Config) string {
			if c.Database.Embedded() {
				return ""
			}
			return describeDatabase(c.Database.URL)
		},
	},
	{
		key:   "database.max_conns",
		kind:  "count",
		usage: "maximum number of connections in the database pool (1-1000)",
		set: func(c *Config, v string) error {
			n, err := parseInt(v, 1, 1000)
			c.Database.MaxConns = int32(n)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(int(c.Database.MaxConns)) },
	},
	{
		key:   "tls.sans",
		kind:  "name|ip",
		flag:  "tls-san",
		usage: "extra DNS name or IP address for the server certificate (repeatable; localhost, 127.0.0.1, ::1 and the host name are always included)",
		setList: func(c *Config, v []string) error {
			for _, san := range v {
				if net.ParseIP(san) == nil && !dnsNamePattern.MatchString(san) {
					return fmt.Errorf("%q is neither an IP address nor a DNS name", san)
				}
			}
			c.TLS.SANs = v
			return nil
		},
		show: func(c *Config) string { return strings.Join(c.TLS.SANs, ",") },
	},
	{
		key:   "tls.server_cert_lifetime",
		kind:  "duration",
		usage: "validity of each server certificate, renewed at one third remaining (1h-2160h)",
		set: func(c *Config, v string) (err error) {
			c.TLS.ServerCertLifetime, err = parseDuration(v, time.Hour, 90*24*time.Hour)
			return err
		},
		show: func(c *Config) string { return c.TLS.ServerCertLifetime.String() },
	},
	{
		key:   "tls.device_cert_lifetime",
		kind:  "duration",
		usage: "validity of each device certificate, renewed by the node at one third remaining (1h-2160h)",
		set: func(c *Config, v string) (err error) {
			c.TLS.DeviceCertLifetime, err = parseDuration(v, time.Hour, 90*24*time.Hour)
			return err
		},
		show: func(c *Config) string { return c.TLS.DeviceCertLifetime.String() },
	},
	{
		key:   "public_url",
		kind:  "url",
		usage: "https URL nodes reach palyrad at, for QR pairing URIs (default: from the listen address)",
		set: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if v != "" && (err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil) {
				return fmt.Errorf("must be an https URL without path, e.g. https://palyra.example.com:7443, got %q", v)
			}
			c.PublicURL = strings.TrimSuffix(v, "/")
			return nil
		},
		show: func(c *Config) string { return c.PublicURL },
	},
	{
		key:   "require_mtls",
		kind:  "bool",
		usage: "node RPCs need a device certificate; false is for development only and trusts the X-Palyra-Device-Id header",
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("must be true or false, got %q", v)
			}
			c.RequireMTLS = b
			return nil
		},
		show: func(c *Config) string { return strconv.FormatBool(c.RequireMTLS) },
	},
	{
		key:     "pairing.pin_digits",
		runtime: true,
		kind:    "count",
		usage:   "length of PIN pairing codes unless a code asks for another (6-12)",
		set: func(c *Config, v string) (err error) {
			c.Pairing.PINDigits, err = parseInt(v, 6, 12)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(c.Pairing.PINDigits) },
	},
	{
		key:     "pairing.request_ttl",
		runtime: true,
		kind:    "duration",
		usage:   "how long a pairing request waits for an approval before it expires (1m-24h)",
		set: func(c *Config, v string) (err error) {
			c.Pairing.RequestTTL, err = parseDuration(v, time.Minute, 24*time.Hour)
			return err
		},
		show: func(c *Config) string { return c.Pairing.RequestTTL.String() },
	},
	{
		key:     "nodes.heartbeat_interval",
		runtime: true,
		kind:    "duration",
		usage:   "how often attached nodes send a heartbeat; 3 missed make a node stale, 10 offline (1s-5m)",
		set: func(c *Config, v string) (err error) {
			c.Nodes.HeartbeatInterval, err = parseDuration(v, time.Second, 5*time.Minute)
			return err
		},
		show: func(c *Config) string { return c.Nodes.HeartbeatInterval.String() },
	},
	{
		key:     "tokens.default_rate_limit",
		kind:    "count",
		runtime: true,
		usage:   "calls a minute of an API token created without a rate limit, or its creator's own when lower (1-100000)",
		set: func(c *Config, v string) (err error) {
			c.Tokens.DefaultRateLimit, err = parseInt(v, 1, 100000)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(c.Tokens.DefaultRateLimit) },
	},
	{
		key:   "debug.pprof_listen",
		kind:  "host:port",
		usage: "loopback address for a separate, unauthenticated net/http/pprof listener (profiling only; off when empty)",
		set: func(c *Config, v string) error {
			c.Debug.PprofListen = v
			if v == "" {
				return nil
			}
			if err := validateListen(v); err != nil {
				return err
			}
			if host, _, _ := net.SplitHostPort(v); host != "localhost" && !net.ParseIP(host).IsLoopback() {
				return fmt.Errorf("must be a loopback address such as 127.0.0.1:6060, got %q: pprof has no authentication", v)
			}
			return nil
		},
		show: func(c *Config) string { return c.Debug.PprofListen },
	},
	{
		key:   "server.read_header_timeout",
		kind:  "duration",
		usage: "time allowed for the TLS handshake and the request headers (1s-5m)",
		set: func(c *Config, v string) (err error) {
			c.Server.ReadHeaderTimeout, err = parseDuration(v, time.Second, 5*time.Minute)
			return err
		},
		show: func(c *Config) string { return c.Server.ReadHeaderTimeout.String() },
	},
	{
		key:   "server.read_body_timeout",
		kind:  "duration",
		usage: "time allowed for a request body after its headers, and for each message of a node's Attach stream after its first byte (1s-10m)",
		set: func(c *Config, v string) (err error) {
			c.Server.ReadBodyTimeout, err = parseDuration(v, time.Second, 10*time.Minute)
			return err
		},
		show: func(c *Config) string { return c.Server.ReadBodyTimeout.String() },
	},
	{
		key:   "server.idle_timeout",
		kind:  "duration",
		usage: "idle keep-alive connections are closed after this long (1s-24h)",
		set: func(c *Config, v string) (err error) {
			c.Server.IdleTimeout, err = parseDuration(v, time.Second, 24*time.Hour)
			return err
		},
		show: func(c *Config) string { return c.Server.IdleTimeout.String() },
	},
	{
		key:   "server.shutdown_timeout",
		kind:  "duration",
		usage: "how long a graceful shutdown waits for calls in flight (0s-10m)",
		set: func(c *Config, v string) (err error) {
			c.Server.ShutdownTimeout, err = parseDuration(v, 0, 10*time.Minute)
			return err
		},
		show: func(c *Config) string { return c.Server.ShutdownTimeout.String() },
	},
	{
		key:   "server.max_message_bytes",
		kind:  "bytes",
		usage: "largest RPC message accepted or sent, in bytes; KiB and MiB suffixes allowed (1KiB-64MiB)",
		set: func(c *Config, v string) (err error) {
			c.Server.MaxMessageBytes, err = parseSize(v, 1<<10, 64<<20)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(c.Server.MaxMessageBytes) },
	},
	{
		key:   "server.max_concurrent_streams",
		kind:  "count",
		usage: "most concurrent HTTP/2 streams per connection (1-10000)",
		set: func(c *Config, v string) (err error) {
			c.Server.MaxConcurrentStreams, err = parseInt(v, 1, 10000)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(c.Server.MaxConcurrentStreams) },
	},
	{
		key:   "server.max_connections",
		kind:  "count",
		usage: fmt.Sprintf("most connections open at once; 0 takes what the open-file limit leaves after the database pool and %d descriptors for files (0-10000000)", FileReserve),
		set: func(c *Config, v string) (err error) {
			c.Server.MaxConnections, err = parseInt(v, 0, 10_000_000)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(c.Server.MaxConnections) },
	},
	{
		key:   "server.max_connections_per_address",
		kind:  "count",
		usage: "most connections open at once from one IPv4 address or IPv6 /64; 0 turns the cap off, e.g. behind a TCP load balancer (0-10000000)",
		set: func(c *Config, v string) (err error) {
			c.Server.MaxConnectionsPerAddress, err = parseInt(v, 0, 10_000_000)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(c.Server.MaxConnectionsPerAddress) },
	},
	{
		key:   "server.max_calls_per_address",
		kind:  "count",
		usage: "most calls (streams included) in flight at once from one IPv4 address or IPv6 /64; more are refused with ResourceExhausted; 0 turns the cap off (0-10000000)",
		set: func(c *Config, v string) (err error) {
			c.Server.MaxCallsPerAddress, err = parseInt(v, 0, 10_000_000)
			return err
		},
		show: func(c *Config) string { return strconv.Itoa(c.Server.MaxCallsPerAddress) },
	},
	{
		key:     "log.level",
		runtime: true,
		kind:    "level",
		usage:   "minimum log level: debug, info, warn or error",
		set: func(c *Config, v string) error {
			if err := c.Log.Level.UnmarshalText([]byte(v)); err != nil {
				return fmt.Errorf("must be debug, info, warn or error, got %q", v)
			}
			return nil
		},
		show: func(c *Config) string { return strings.ToLower(c.Log.Level.String()) },
	},
	{
		key:   "log.format",
		kind:  "text|json",
		usage: "log format: text or json",
		set: func(c *Config, v string) error {
			if v != "text" && v != "json" {
				return fmt.Errorf("must be text or json, got %q", v)
			}
			c.Log.Format = v
			return nil
		},
		show: func(c *Config) string { return c.Log.Format },
	},
	{
		key:     "compat.models",
		runtime: true,
		kind:    "model",
		flag:    "compat-model",
		usage:   "model id listed by the OpenAI-compatible GET /v1/models (repeatable)",
		setList: func(c *Config, v []string) error {
			seen := map[string]bool{}
			for _, m := range v {
				if !modelIDPattern.MatchString(m) {
					return fmt.Errorf("%q is not a valid model id (1 to 128 letters, digits and ._:/-)", m)
				}
				if seen[m] {
					return fmt.Errorf("model %q is listed twice", m)
				}
				seen[m] = true
			}
			c.Compat.Models = v
			return nil
		},
		show: func(c *Config) string { return strings.Join(c.Compat.Models, ",") },
	},
	providerSetting("base_url", "url", "base URL of the OpenAI-compatible provider <name>'s API, e.g. https://api.openai.com/v1 (http or https)",
		func(p *Provider, v string) error {
			if v != "" {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
					return fmt.Errorf("must be an http or https URL without credentials, query or fragment, e.g. https://api.openai.com/v1")
				}
			}
			p.BaseURL = strings.TrimSuffix(v, "/")
			return nil
		},
		func(p Provider) string { return p.BaseURL }),
	func() setting {
		s := providerSetting("api_key", "secret-ref", "API key of the provider <name>, as a reference to a secret of the vault: secret:NAME or secret:NAME@VERSION",
			func(p *Provider, v string) error {
				if v != "" && !secretref.IsRef(v) {
					return fmt.Errorf("takes a secret reference, not a key: store the key with palyra secrets set NAME and set secret:NAME")
				}
				if v != "" {
					if _, err := secretref.Parse(v); err != nil {
						return err
					}
				}
				p.APIKey = v
				return nil
			},
			func(p Provider) string { return p.APIKey })
		s.secretRef = true
		return s
	}(),
	{
		key:     "compat.providers." + nameSlot + ".models",
		runtime: true,
		kind:    "model",
		usage:   "models the provider <name> serves, as model ids clients ask for; alias=upstream-id names the provider's own id",
		instance: func(name string) setting {
			return setting{
				setList: func(c *Config, v []string) error {
					models, err := parseProviderModels(v)
					if err != nil {
						return err
					}
					return c.withProvider(name, func(p *Provider) error { p.Models = models; return nil })
				},
				show: func(c *Config) string {
					items := make([]string, len(c.Compat.Providers[name].Models))
					for i, m := range c.Compat.Providers[name].Models {
						items[i] = m.String()
					}
					return strings.Join(items, ",")
				},
			}
		},
		names: providerNames,
	},
	providerSetting("timeout", "duration", "how long a call to the provider <name> may take (1s-1h)",
		func(p *Provider, v string) (err error) {
			p.Timeout, err = parseDuration(v, time.Second, time.Hour)
			return err
		},
		func(p Provider) string { return p.Timeout.String() }),
	{
		key:     "compat.node_selector",
		runtime: true,
		kind:    "selector",
		usage:   "label selector (gpu=a100,zone in (eu-1,eu-2),!spot) that the nodes serving compat models must match; empty: any node",
		set: func(c *Config, v string) (err error) {
			c.Compat.NodeSelector, err = labels.Parse(v)
			return err
		},
		show: func(c *Config) string { return c.Compat.NodeSelector.String() },
	},
	{
		key:     "agents.approval_timeout",
		runtime: true,
		kind:    "duration",
		usage:   "how long a tool call of an agent's ask tool waits for a human's approval before it is denied as expired (10s-24h)",
		set: func(c *Config, v string) (err error) {
			c.Agents.ApprovalTimeout, err = parseDuration(v, 10*time.Second, 24*time.Hour)
			return err
		},
		show: func(c *Config) string { return c.Agents.ApprovalTimeout.String() },
	},
	{
		key:    "master_key",
		kind:   "base64",
		usage:  "master keys (32 bytes each, base64, separated by commas, the primary first) that seal the CA key; default: <data_dir>/master.key, created on first start. Environment only",
		secret: true,
		set: func(c *Config, v string) error {
			c.MasterKey = v
			return nil
		},
		show: func(c *Config) string { return "" },
	},
}

// FileReserve is what a derived server.max_connections leaves of the open-file limit,
// besides the database pool: the notification connection, files, the runtime's own
// descriptors, the pprof listener, with room to spare.
const FileReserve = 256

var (
	replicaIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	modelIDPattern   = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)
	providerPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	dnsNamePattern   = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
)

// defaults returns the configuration before any source is applied. getenv supplies
// XDG_DATA_HOME and HOME for the default data directory.
func defaults(getenv func(string) string) Config {
	// The XDG base directory specification says to ignore relative values.
	dataHome := getenv("XDG_DATA_HOME")
	if !filepath.IsAbs(dataHome) {
		dataHome = filepath.Join(getenv("HOME"), ".local", "share")
	}
	return Config{
		Listen:      "127.0.0.1:7443",
		DataDir:     filepath.Join(dataHome, "palyra"),
		Database:    Database{MaxConns: 20},
		TLS:         TLS{ServerCertLifetime: 24 * time.Hour, DeviceCertLifetime: 24 * time.Hour},
		Pairing:     Pairing{PINDigits: 8, RequestTTL: 15 * time.Minute},
		Nodes:       Nodes{HeartbeatInterval: 15 * time.Second},
		Tokens:      Tokens{DefaultRateLimit: 120},
		Agents:      Agents{ApprovalTimeout: 10 * time.Minute},
		RequireMTLS: true,
		Server: Server{
			ReadHeaderTimeout:    10 * time.Second,
			ReadBodyTimeout:      30 * time.Second,
			IdleTimeout:          2 * time.Minute,
			ShutdownTimeout:      15 * time.Second,
			MaxMessageBytes:      4 << 20,
			MaxConcurrentStreams: 250,

			// MaxConnections 0: what the open-file limit leaves.
			MaxConnectionsPerAddress: 64,
			MaxCallsPerAddress:       256,
		},
		Log: Log{Level: slog.LevelInfo, Format: "text"},
	}
}

// DefaultProviderTimeout is a provider's timeout until one is set.
const DefaultProviderTimeout = 60 * time.Second

// providerSetting is the template of a scalar setting of each provider,
// compat.providers.<name>.<field>.
func providerSetting(field, kind, usage string, set func(p *Provider, v string) error, show func(p Provider) string) setting {
	return setting{
		key:     "compat.providers." + nameSlot + "." + field,
		runtime: true,
		kind:    kind,
		usage:   usage,
		instance: func(name string) setting {
			return setting{
				set: func(c *Config, v string) error {
					return c.withProvider(name, func(p *Provider) error { return set(p, v) })
				},
				show: func(c *Config) string {
					p, ok := c.Compat.Providers[name]
					if !ok {
						p = Provider{Timeout: DefaultProviderTimeout}
					}
					return show(p)
				},
			}
		},
		names: providerNames,
	}
}

// withProvider applies set to the provider name, made with its defaults when there is
// none yet; the provider is unchanged on error.
func (c *Config) withProvider(name string, set func(p *Provider) error) error {
	if !providerPattern.MatchString(name) {
		return fmt.Errorf("%q is not a provider name: 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit", name)
	}
	p, ok := c.Compat.Providers[name]
	if !ok {
		p = Provider{Timeout: DefaultProviderTimeout}
	}
	p.Models = slices.Clone(p.Models)
	if err := set(&p); err != nil {
		return err
	}
	if c.Compat.Providers == nil {
		c.Compat.Providers = map[string]Provider{}
	}
	c.Compat.Providers[name] = p
	return nil
}

// providerNames lists the providers of c, sorted.
func providerNames(c *Config) []string {
	return slices.Sorted(maps.Keys(c.Compat.Providers))
}

// parseProviderModels reads a provider's models: "id" or "alias=upstream-id".
func parseProviderModels(v []string) ([]ProviderModel, error) {
	out := make([]ProviderModel, 0, len(v))
	seen := map[string]bool{}
	for _, item := range v {
		id, upstream, aliased := strings.Cut(item, "=")
		if !aliased {
			upstream = id
		}
		if !modelIDPattern.MatchString(id) || !modelIDPattern.MatchString(upstream) {
			return nil, fmt.Errorf("%q is not a model: a model id, or alias=upstream-id, each 1 to 128 letters, digits and ._:/-", item)
		}
		if seen[id] {
			return nil, fmt.Errorf("model %q is listed twice", id)
		}
		seen[id] = true
		out = append(out, ProviderModel{ID: id, Upstream: upstream})
	}
	return out, nil
}

func validateListen(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !dnsNamePattern.MatchString(host) {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	return nil
}

func parseDuration(v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("must be a duration such as 30s, 10m or 24h, got %q", v)
	}
	if d < lo || d > hi {
		return 0, fmt.Errorf("must be between %v and %v, got %v", lo, hi, d)
	}
	return d, nil
}

func parseInt(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("must be a whole number, got %q", v)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("must be between %d and %d, got %d", lo, hi, n)
	}
	return n, nil
}

func parseSize(v string, lo, hi int) (int, error) {
	s, mult := strings.TrimSpace(v), 1
	for suffix, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, suffix)), m
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("must be a number of bytes such as 4194304 or 4MiB, got %q", v)
	}
	if n > hi/mult {
		// Checked before multiplying: a huge count of KiB or MiB would wrap around.
		return 0, fmt.Errorf("must be between %d and %d bytes, got %s", lo, hi, v)
	}
	n *= mult
	if n < lo || n > hi {
		return 0, fmt.Errorf("must be between %d and %d bytes, got %d", lo, hi, n)
	}
	return n, nil
}
