package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/console"
	"github.com/palyra/palyra/server/internal/daemon"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// testDaemon is a real palyrad on a loopback port, with what a client needs to call it.
type testDaemon struct {
	*daemon.Daemon
	cfg     *config.Config
	baseURL string
	caPEM   []byte
	roots   *x509.CertPool
	// owner is the owner's token from the bootstrap file.
	owner string
	// h2 is an HTTP/2 client trusting the daemon's CA and sending the owner's token.
	h2      *http.Client
	stopped bool
}

// client returns an HTTP/2 client trusting the daemon's CA that sends token as a bearer
// token ("" sends none).
func (td *testDaemon) client(token string) *http.Client {
	return &http.Client{Transport: &bearer{token: token, next: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: td.roots},
		ForceAttemptHTTP2: true,
	}}}
}

// clientFrom returns an anonymous HTTP/2 client whose connections come from the local
// address ip (any of 127.0.0.0/8 works on Linux).
func (td *testDaemon) clientFrom(ip net.IP) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: td.roots},
		ForceAttemptHTTP2: true,
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext,
	}}
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	if b.token != "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(req)
}

// grpcBearer is the per-call credentials of grpc-go clients.
type grpcBearer string

func (b grpcBearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (grpcBearer) RequireTransportSecurity() bool { return true }

// startDaemon loads the configuration from args the way palyrad does and starts the
// daemon, logging to the test's output; it is stopped when the test ends.
func startDaemon(t *testing.T, args ...string) *testDaemon {
	t.Helper()
	return startDaemonLogging(t, t.Output(), args...)
}

// startDaemonLogging is startDaemon with the daemon's log (debug level) going to w.
func startDaemonLogging(t *testing.T, w io.Writer, args ...string) *testDaemon {
	t.Helper()
	return startDaemonWithLogger(t, func(*config.Config) *slog.Logger {
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}, args...)
}

// startDaemonWithLogger is startDaemon with the logger newLog makes for the loaded
// configuration.
func startDaemonWithLogger(t *testing.T, newLog func(*config.Config) *slog.Logger, args ...string) *testDaemon {
	t.Helper()
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	getenv := func(string) string { return "" }
	config.RegisterFlags(fs, getenv)
	if err := fs.Parse(append([]string{"--listen", "127.0.0.1:0"}, args...)); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(fs, getenv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.Start(t.Context(), cfg, newLog(cfg))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, identity.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	// Only the replica that created the owner has the bootstrap file.
	owner, err := os.ReadFile(filepath.Join(cfg.DataDir, access.BootstrapFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("bootstrap token: %v", err)
	}
	td := &testDaemon{
		Daemon:  d,
		cfg:     cfg,
		baseURL: "https://" + d.Addr().String(),
		caPEM:   caPEM,
		roots:   roots,
		owner:   strings.TrimSpace(string(owner)),
	}
	td.h2 = td.client(td.owner)
	t.Cleanup(func() { td.stop(t) })
	return td
}

// stop stops the daemon, once.
func (td *testDaemon) stop(t *testing.T) {
	t.Helper()
	if td.stopped {
		return
	}
	td.stopped = true
	if err := td.Stop(context.Background()); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// protoRecorder records the HTTP major version of the responses it carries.
type protoRecorder struct {
	next  http.RoundTripper
	major int
}

func (p *protoRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := p.next.RoundTrip(req)
	if err == nil {
		p.major = res.ProtoMajor
	}
	return res, err
}

func (td *testDaemon) caFingerprint(t *testing.T) string {
	t.Helper()
	block, _ := pem.Decode(td.caPEM)
	return identity.Fingerprint(block.Bytes)
}

func TestGetStatusOverEveryProtocol(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, "--database-url", storetest.URL(t), "--data-dir", t.TempDir(), "--replica-id", "replica-a")

	check := func(t *testing.T, s *controlplanev1.GetStatusResponse) {
		t.Helper()
		if s.GetReplicaId() != "replica-a" || s.GetListenAddress() != td.Addr().String() || s.GetVersion() == "" {
			t.Errorf("identity fields: replica %q, listen %q (want %q), version %q", s.GetReplicaId(), s.GetListenAddress(), td.Addr(), s.GetVersion())
		}
		db := s.GetDatabase()
		if db.GetState() != controlplanev1.DatabaseState_DATABASE_STATE_AVAILABLE || db.GetEmbedded() || db.GetSchemaVersion() < 1 || !strings.HasPrefix(db.GetServerVersion(), "1") {
			t.Errorf("database: %v", db)
		}
		if got, want := s.GetCertificateAuthority().GetFingerprint(), td.caFingerprint(t); got != want {
			t.Errorf("CA fingerprint %s, ca.pem has %s", got, want)
		}
		if !s.GetServerCertificate().GetNotAfter().AsTime().After(time.Now()) || s.GetUptime().AsDuration() < 0 {
			t.Errorf("server certificate %v, uptime %v", s.GetServerCertificate(), s.GetUptime())
		}
	}

	for name, opts := range map[string][]connect.ClientOption{
		"connect":      nil,
		"connect-get":  {connect.WithHTTPGet()},
		"grpc":         {connect.WithGRPC()},
		"grpc-web":     {connect.WithGRPCWeb()},
		"connect-json": {connect.WithProtoJSON()},
	} {
		t.Run("connect-go/"+name, func(t *testing.T) {
			c := controlplanev1connect.NewStatusServiceClient(td.h2, td.baseURL, opts...)
			res, err := c.GetStatus(t.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			check(t, res.Msg)
		})
	}

	t.Run("connect-go/http1.1", func(t *testing.T) {
		rec := &protoRecorder{next: &bearer{token: td.owner, next: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: td.roots}}}}
		c := controlplanev1connect.NewStatusServiceClient(&http.Client{Transport: rec}, td.baseURL)
		res, err := c.GetStatus(t.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if rec.major != 1 {
			t.Errorf("answered over HTTP/%d, want 1.1", rec.major)
		}
		check(t, res.Msg)
	})

	t.Run("grpc-go", func(t *testing.T) {
		cc := grpcClient(t, td)
		var res controlplanev1.GetStatusResponse
		err := cc.Invoke(t.Context(), controlplanev1connect.StatusServiceGetStatusProcedure, &controlplanev1.GetStatusRequest{}, &res)
		if err != nil {
			t.Fatal(err)
		}
		check(t, &res)
	})

	t.Run("curl-style JSON", func(t *testing.T) {
		for _, req := range []*http.Request{
			mustRequest(t, http.MethodPost, td.baseURL+controlplanev1connect.StatusServiceGetStatusProcedure, "application/json", "{}"),
			mustRequest(t, http.MethodGet, td.baseURL+controlplanev1connect.StatusServiceGetStatusProcedure+"?encoding=json&message=%7B%7D", "", ""),
		} {
			res, err := td.h2.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("%s: %d %s: %s", req.Method, res.StatusCode, res.Header.Get("Content-Type"), body)
			}
			var got struct {
				ReplicaID string `json:"replicaId"`
				Database  struct {
					State string `json:"state"`
				} `json:"database"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%s: %v: %s", req.Method, err, body)
			}
			if got.ReplicaID != "replica-a" || got.Database.State != "DATABASE_STATE_AVAILABLE" {
				t.Errorf("%s: %s", req.Method, body)
			}
		}
	})
}

func grpcClient(t *testing.T, td *testDaemon) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(td.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: td.roots, ServerName: "localhost"})),
		grpc.WithPerRPCCredentials(grpcBearer(td.owner)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func mustRequest(t *testing.T, method, url, contentType, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

func TestHealthReflectionAndMetrics(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, "--database-url", storetest.URL(t), "--data-dir", t.TempDir(), "--replica-id", "replica-m")
	cc := grpcClient(t, td)

	t.Run("health over gRPC", func(t *testing.T) {
		h := healthpb.NewHealthClient(cc)
		for _, svc := range []string{"", controlplanev1connect.StatusServiceName, nodev1connect.NodeServiceName} {
			res, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("service %q: %v, %v", svc, res.GetStatus(), err)
			}
		}
		_, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
		if status.Code(err).String() != "NotFound" {
			t.Errorf("unknown service: %v, want NotFound", err)
		}
	})

	t.Run("health over curl-style JSON", func(t *testing.T) {
		res, err := td.h2.Do(mustRequest(t, http.MethodPost, td.baseURL+"/grpc.health.v1.Health/Check", "application/json", "{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"SERVING_STATUS_SERVING"`) {
			t.Errorf("%d %s", res.StatusCode, body)
		}
	})

	t.Run("reflection v1 lists every service", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range res.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{
			controlplanev1connect.StatusServiceName, nodev1connect.NodeServiceName,
			accessv1connect.AccessServiceName, compatv1connect.CompatServiceName, "grpc.health.v1.Health",
			"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
		} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %v, missing %s", names, want)
			}
		}
		_ = stream.CloseSend()
	})

	t.Run("the console at / beside the API", func(t *testing.T) {
		// Built or not (go test does not build it), / is the console's, with its policy;
		// the API's paths stay the API's.
		res, err := td.h2.Do(mustRequest(t, http.MethodGet, td.baseURL+"/", "", ""))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if console.New().Built() != (res.StatusCode == http.StatusOK) || !strings.Contains(string(body), "<html") ||
			res.Header.Get("Content-Security-Policy") != console.ContentSecurityPolicy {
			t.Errorf("GET /: %d %q, CSP %q", res.StatusCode, body, res.Header.Get("Content-Security-Policy"))
		}
		res, err = td.h2.Do(mustRequest(t, http.MethodGet, td.baseURL+"/palyra.controlplane.v1.NoSuchService/Get", "", ""))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("an unknown service's path: %d, want 404", res.StatusCode)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		// One call that must show up in the counters.
		c := controlplanev1connect.NewStatusServiceClient(td.h2, td.baseURL)
		if _, err := c.GetStatus(t.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{})); err != nil {
			t.Fatal(err)
		}
		td.wantMetrics(t,
			`palyra_build_info{replica_id="replica-m",version=`,
			`palyra_rpc_handled_total{code="ok",procedure="/palyra.controlplane.v1.StatusService/GetStatus"}`,
			`palyra_rpc_handling_seconds_bucket{procedure="/palyra.controlplane.v1.StatusService/GetStatus"`,
			`go_goroutines`,
			`process_resident_memory_bytes`,
		)
	})
}

// wantMetrics fails t unless /metrics comes to hold each of the lines (or line
// prefixes) want: a call is counted once its handler returns, which may be after its
// client has the whole answer.
func (td *testDaemon) wantMetrics(t *testing.T, want ...string) {
	t.Helper()
	eventually.NoError(t, "/metrics holds "+strings.Join(want, ", "), func() error {
		res, err := td.h2.Do(mustRequest(t, http.MethodGet, td.baseURL+"/metrics", "", ""))
		if err != nil {
			return err
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				return fmt.Errorf("/metrics lacks %s", w)
			}
		}
		return nil
	})
}

func TestFirstRPCsOfEachService(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, "--database-url", storetest.URL(t), "--data-dir", t.TempDir(),
		"--compat-model", "palyra-echo", "--compat-model", "palyra-shell")

	t.Run("node: server info pins the CA", func(t *testing.T) {
		c := nodev1connect.NewNodeServiceClient(td.h2, td.baseURL)
		res, err := c.GetServerInfo(t.Context(), connect.NewRequest(&nodev1.GetServerInfoRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.GetCaCertificatePem() != string(td.caPEM) || res.Msg.GetCaFingerprint() != td.caFingerprint(t) || res.Msg.GetServerVersion() == "" {
			t.Errorf("server info %v does not match ca.pem", res.Msg)
		}
	})

	t.Run("access: permission catalog and its filter", func(t *testing.T) {
		c := accessv1connect.NewAccessServiceClient(td.h2, td.baseURL)
		all, err := c.ListPermissions(t.Context(), connect.NewRequest(&accessv1.ListPermissionsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		names := func(ps []*accessv1.Permission) (out []string) {
			for _, p := range ps {
				out = append(out, p.GetName())
			}
			return out
		}
		if got := names(all.Msg.GetPermissions()); len(got) < 15 || !slices.IsSorted(got) || !slices.Contains(got, "compat.chat.create") {
			t.Errorf("catalog %v", got)
		}
		nodes, err := c.ListPermissions(t.Context(), connect.NewRequest(&accessv1.ListPermissionsRequest{Prefix: "nodes."}))
		if err != nil {
			t.Fatal(err)
		}
		if got := names(nodes.Msg.GetPermissions()); !slices.Equal(got, []string{"nodes.approve", "nodes.dispatch", "nodes.pair", "nodes.read", "nodes.revoke"}) {
			t.Errorf("prefix nodes.: %v", got)
		}
	})

	t.Run("access: protovalidate refuses a bad prefix", func(t *testing.T) {
		c := accessv1connect.NewAccessServiceClient(td.h2, td.baseURL)
		_, err := c.ListPermissions(t.Context(), connect.NewRequest(&accessv1.ListPermissionsRequest{Prefix: "NODES!"}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", err)
		}
		var ce *connect.Error
		if !errors.As(err, &ce) || len(ce.Details()) == 0 {
			t.Fatalf("no error details in %v", err)
		}
		v, err := ce.Details()[0].Value()
		if err != nil {
			t.Fatal(err)
		}
		violations, ok := v.(*validate.Violations)
		if !ok || len(violations.GetViolations()) != 1 || violations.GetViolations()[0].GetRuleId() != "string.pattern" {
			t.Errorf("violations %v", v)
		}
	})

	t.Run("compat: off until its flag is on, then the configured models in order", func(t *testing.T) {
		c := compatv1connect.NewCompatServiceClient(td.h2, td.baseURL)
		_, err := c.ListModels(t.Context(), connect.NewRequest(&compatv1.ListModelsRequest{}))
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "compat_api") {
			t.Fatalf("with compat_api off: %v, want FailedPrecondition naming the flag", err)
		}
		a := accessv1connect.NewFeatureFlagServiceClient(td.h2, td.baseURL)
		if _, err := a.SetFlag(t.Context(), connect.NewRequest(&accessv1.SetFlagRequest{Key: "compat_api", Enabled: true})); err != nil {
			t.Fatal(err)
		}
		res, err := c.ListModels(t.Context(), connect.NewRequest(&compatv1.ListModelsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range res.Msg.GetModels() {
			ids = append(ids, m.GetId())
		}
		if !slices.Equal(ids, []string{"palyra-echo", "palyra-shell"}) {
			t.Errorf("models %v", ids)
		}
	})
}

func TestTLS(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, "--database-url", storetest.URL(t), "--data-dir", t.TempDir(), "--tls-san", "palyra.test", "--tls-san", "192.0.2.7")

	t.Run("server certificate names", func(t *testing.T) {
		conn, err := tls.Dial("tcp", td.Addr().String(), &tls.Config{RootCAs: td.roots, ServerName: "palyra.test", NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cs := conn.ConnectionState()
		leaf := cs.PeerCertificates[0]
		for _, name := range []string{"localhost", "palyra.test", "127.0.0.1", "::1", "192.0.2.7"} {
			if err := leaf.VerifyHostname(name); err != nil {
				t.Errorf("server certificate not valid for %s: %v", name, err)
			}
		}
		if len(cs.PeerCertificates) != 2 || identity.Fingerprint(cs.PeerCertificates[1].Raw) != td.caFingerprint(t) {
			t.Errorf("chain does not end with the CA (needed for fingerprint pinning)")
		}
		if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || cs.NegotiatedProtocol != "h2" {
			t.Errorf("EKU %v, ALPN %q", leaf.ExtKeyUsage, cs.NegotiatedProtocol)
		}
	})

	t.Run("a client certificate from a foreign CA fails the handshake", func(t *testing.T) {
		cert := foreignClientCertificate(t)
		conn, err := tls.Dial("tcp", td.Addr().String(), &tls.Config{RootCAs: td.roots, ServerName: "localhost",
			// Go's client only offers certificates whose issuer the server accepts; an
			// attacker's client offers whatever it likes.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
		if err == nil {
			// TLS 1.3: the server's verdict on the client certificate arrives with the first read.
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		// The listener verifies client certificates itself, to audit the refusals: every
		// refusal is a bad_certificate alert (TestRefusedHandshakesAreAudited).
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Errorf("handshake with a foreign client certificate: %v, want a bad certificate alert", err)
		}
	})
}

// foreignClientCertificate is a client certificate from a CA palyrad does not know.
func foreignClientCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	ca := testpki.NewCA(t, "foreign CA", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	return ca.Issue(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "intruder"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
}

func TestStatusAndHealthWhenTheDatabaseIsDown(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	td := startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir())

	// Take the database away: refuse new connections and end the daemon's sessions.
	u, _ := url.Parse(dbURL)
	dbName := strings.TrimPrefix(u.Path, "/")
	admin, err := pgx.Connect(t.Context(), os.Getenv("DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(t.Context(), "alter database "+pgx.Identifier{dbName}.Sanitize()+" allow_connections false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "alter database "+pgx.Identifier{dbName}.Sanitize()+" allow_connections true")
	})
	if _, err := admin.Exec(t.Context(), "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", dbName); err != nil {
		t.Fatal(err)
	}

	// Without the database no caller can be authenticated: the call fails closed.
	c := controlplanev1connect.NewStatusServiceClient(td.h2, td.baseURL)
	_, err = c.GetStatus(t.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{}))
	if connect.CodeOf(err) != connect.CodeUnavailable || strings.Contains(err.Error(), dbName) {
		t.Errorf("GetStatus with the database down: %v, want Unavailable", err)
	}
	// The health cache holds a result for a second at most: health turns NOT_SERVING.
	health := healthpb.NewHealthClient(grpcClient(t, td))
	eventually.NoError(t, "health NOT_SERVING with the database down", func() error {
		res, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && res.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			return fmt.Errorf("health is %v", res.GetStatus())
		}
		return err
	})
}

func TestRestartKeepsTheCA(t *testing.T) {
	t.Parallel()
	dbURL, dataDir := storetest.URL(t), t.TempDir()
	first := startDaemon(t, "--database-url", dbURL, "--data-dir", dataDir)
	fp := first.caFingerprint(t)
	first.stop(t)
	if _, err := http.Get(first.baseURL); err == nil {
		t.Error("the listener still accepts connections after Stop")
	}
	second := startDaemon(t, "--database-url", dbURL, "--data-dir", dataDir)
	if got := second.caFingerprint(t); got != fp {
		t.Errorf("CA changed across a restart: %s, then %s", fp, got)
	}
	// The second start on another data directory (a new replica with a new master key)
	// is refused rather than silently minting a second CA.
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	config.RegisterFlags(fs, func(string) string { return "" })
	_ = fs.Parse([]string{"--listen", "127.0.0.1:0", "--database-url", dbURL, "--data-dir", t.TempDir()})
	cfg, err := config.Load(fs, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	_, err = daemon.Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if !errors.Is(err, identity.ErrMasterKeyMismatch) || !strings.Contains(err.Error(), "PALYRA_MASTER_KEY") {
		t.Errorf("a replica with another master key: %v", err)
	}
}

func TestEmbeddedDatabaseByDefault(t *testing.T) {
	t.Parallel()
	dataDir := storetest.EmbeddedDataDir(t)
	first := startDaemon(t, "--data-dir", dataDir)
	c := controlplanev1connect.NewStatusServiceClient(first.h2, first.baseURL)
	res, err := c.GetStatus(t.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if db := res.Msg.GetDatabase(); !db.GetEmbedded() || db.GetState() != controlplanev1.DatabaseState_DATABASE_STATE_AVAILABLE {
		t.Fatalf("database %v, want the embedded one, available", db)
	}
	fp := first.caFingerprint(t)
	first.stop(t)
	if _, err := os.Stat(filepath.Join(dataDir, "pg", "data", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PostgreSQL still running after Stop (postmaster.pid: %v)", err)
	}

	second := startDaemon(t, "--data-dir", dataDir)
	if got := second.caFingerprint(t); got != fp {
		t.Errorf("CA changed across a restart on the embedded database: %s, then %s", fp, got)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
