// Package client connects the palyra CLI to palyrad: the base URL, TLS trust (a CA file
// or a pinned CA fingerprint), HTTP/2, the API token sent with every call, the
// generated Connect clients, and the translation of connection and Connect errors into
// messages that say what to do.
package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	"github.com/palyra/palyra/gen/go/palyra/browser/v1/browserv1connect"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
)

// Options say where palyrad is and how to trust it.
type Options struct {
	// URL is the daemon's base URL, e.g. "https://127.0.0.1:7443".
	URL string
	// CAFile is a PEM file holding the CA that issued the daemon's certificate
	// (<data-dir>/ca.pem on the daemon's machine).
	CAFile string
	// CAFingerprint pins the CA by the SHA-256 of its certificate ("sha256:<hex>"); the
	// daemon sends its CA certificate in the TLS handshake.
	CAFingerprint string
	// CA is the CA certificate to trust, held in memory: what a node trusts once it has
	// checked the daemon's CA against its pinned fingerprint. At most one of CAFile,
	// CAFingerprint and CA may be set.
	CA *x509.Certificate
	// Token is the API token ("plr_<id>_<secret>") sent as `Authorization: Bearer` with
	// every call; empty sends none, for public calls.
	Token string
	// TokenSource says where Token came from, for error messages, e.g. "PALYRA_TOKEN"
	// or `profile "default"`. It never holds the token.
	TokenSource string
	// TokenAdvice says what to do when the server refuses Token, e.g. "log in again
	// with `palyra auth login`"; empty gives a generic advice.
	TokenAdvice string
}

// Client holds the Connect clients of palyrad's services.
type Client struct {
	// URL is the base URL the clients talk to.
	URL string
	// Status is the StatusService client: the replica itself.
	Status controlplanev1connect.StatusServiceClient
	// Node is the NodeService client.
	Node nodev1connect.NodeServiceClient
	// Access is the AccessService client: the caller, permissions, roles and API tokens.
	Access accessv1connect.AccessServiceClient
	// Flags is the FeatureFlagService client.
	Flags accessv1connect.FeatureFlagServiceClient
	// Audit is the AuditService client: the audit log and its verification.
	Audit accessv1connect.AuditServiceClient
	// Pairing is the PairingService client: pairing codes and requests.
	Pairing controlplanev1connect.PairingServiceClient
	// Devices is the DeviceService client: paired devices, their certificates,
	// rotation and revocation.
	Devices controlplanev1connect.DeviceServiceClient
	// Nodes is the NodeInventoryService client: the inventory of nodes, their presence
	// and capabilities.
	Nodes controlplanev1connect.NodeInventoryServiceClient
	// Dispatch is the DispatchService client: running capabilities on nodes,
	// following and cancelling the dispatches.
	Dispatch controlplanev1connect.DispatchServiceClient
	// Secrets is the SecretService client: the vault's secrets, their versions and values.
	Secrets controlplanev1connect.SecretServiceClient
	// MasterKey is the MasterKeyService client: master key rotation.
	MasterKey controlplanev1connect.MasterKeyServiceClient
	// Compat is the CompatService client: the OpenAI-compatible API's models and chat.
	Compat compatv1connect.CompatServiceClient
	// Config is the ConfigService client: the configuration, its runtime settings and
	// their revisions.
	Config controlplanev1connect.ConfigServiceClient
	// Sessions is the SessionService client: console sessions and their hand-off codes.
	Sessions controlplanev1connect.SessionServiceClient
	// Agents is the AgentService client: agents and their runs.
	Agents agentsv1connect.AgentServiceClient
	// Approvals is the ApprovalService client: the tool calls of agents that wait for a
	// human.
	Approvals agentsv1connect.ApprovalServiceClient
	// Browser is the BrowserProfileService client: the browser profiles.
	Browser browserv1connect.BrowserProfileServiceClient
}

var fingerprintPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// New checks the options and builds the clients. It does not connect yet.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("the server URL must look like https://host:7443, got %q", opts.URL)
	}
	tlsConfig, err := tlsConfig(opts, u.Hostname())
	if err != nil {
		return nil, err
	}
	if err := checkToken(opts.Token); err != nil {
		return nil, fmt.Errorf("%s %w", tokenHint{source: opts.TokenSource}.name(), err)
	}
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tlsConfig,
		ForceAttemptHTTP2:   true, // a custom TLS config turns HTTP/2 off otherwise, and streams need it
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
	}}
	base := u.String()
	// The explainer is outermost: it sees the final error of every call.
	copts := []connect.ClientOption{connect.WithInterceptors(
		explainInterceptor{url: base, token: tokenHint{present: opts.Token != "", source: opts.TokenSource, advice: opts.TokenAdvice}},
		bearerInterceptor{token: opts.Token},
	)}
	return &Client{
		URL:       base,
		Status:    controlplanev1connect.NewStatusServiceClient(hc, base, copts...),
		Node:      nodev1connect.NewNodeServiceClient(hc, base, copts...),
		Access:    accessv1connect.NewAccessServiceClient(hc, base, copts...),
		Flags:     accessv1connect.NewFeatureFlagServiceClient(hc, base, copts...),
		Audit:     accessv1connect.NewAuditServiceClient(hc, base, copts...),
		Pairing:   controlplanev1connect.NewPairingServiceClient(hc, base, copts...),
		Devices:   controlplanev1connect.NewDeviceServiceClient(hc, base, copts...),
		Nodes:     controlplanev1connect.NewNodeInventoryServiceClient(hc, base, copts...),
		Dispatch:  controlplanev1connect.NewDispatchServiceClient(hc, base, copts...),
		Secrets:   controlplanev1connect.NewSecretServiceClient(hc, base, copts...),
		MasterKey: controlplanev1connect.NewMasterKeyServiceClient(hc, base, copts...),
		Compat:    compatv1connect.NewCompatServiceClient(hc, base, copts...),
		Config:    controlplanev1connect.NewConfigServiceClient(hc, base, copts...),
		Sessions:  controlplanev1connect.NewSessionServiceClient(hc, base, copts...),
		Agents:    agentsv1connect.NewAgentServiceClient(hc, base, copts...),
		Approvals: agentsv1connect.NewApprovalServiceClient(hc, base, copts...),
		Browser:   browserv1connect.NewBrowserProfileServiceClient(hc, base, copts...),
	}, nil
}

// checkToken refuses a token that cannot travel in an HTTP header: one with spaces or
// control characters is a copy-and-paste accident, not a token.
func checkToken(token string) error {
	for _, r := range token {
		if r <= ' ' || r == 0x7f {
			return errors.New("contains spaces or control characters; is it a Palyra API token (plr_...)?")
		}
	}
	return nil
}

// tlsConfig trusts the CA file, or the CA pinned by fingerprint, or the CA certificate
// given, or else the system's roots (for a daemon behind a proxy with a public
// certificate).
func tlsConfig(opts Options, serverName string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	switch {
	case opts.CAFile != "" && opts.CAFingerprint != "":
		return nil, errors.New("give either --ca-file or --ca-fingerprint, not both")
	case opts.CA != nil && (opts.CAFile != "" || opts.CAFingerprint != ""):
		return nil, errors.New("a CA certificate was given with a CA file or fingerprint; give one of them")
	case opts.CA != nil:
		pool := x509.NewCertPool()
		pool.AddCert(opts.CA)
		c.RootCAs = pool
	case opts.CAFile != "":
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", opts.CAFile)
		}
		c.RootCAs = pool
	case opts.CAFingerprint != "":
		if !fingerprintPattern.MatchString(opts.CAFingerprint) {
			return nil, fmt.Errorf("the CA fingerprint must look like sha256:<64 lower-case hex digits>, got %q", opts.CAFingerprint)
		}
		// Go's own verification cannot pin a root by fingerprint; VerifyConnection does
		// the whole verification instead, so skipping the default one is safe here.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyPinned(cs, opts.CAFingerprint, serverName)
		}
	}
	return c, nil
}
