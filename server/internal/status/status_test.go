package status_test

import (
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/status"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// serve mounts a status handler on a TLS server on loopback and returns a client of it.
func serve(t *testing.T, opts status.Options) controlplanev1connect.StatusServiceClient {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(controlplanev1connect.NewStatusServiceHandler(status.NewHandler(opts)))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return controlplanev1connect.NewStatusServiceClient(srv.Client(), srv.URL)
}

// TestGetStatus asks a replica's status over TLS: what it was configured with, the
// uptime by its clock (a long one too), its database, its CA and its server certificate;
// then with its database gone, which the answer reports instead of failing.
func TestGetStatus(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	keys, _, err := identity.LoadKeyring(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := testclock.New(started)
	authority, err := identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{Store: s, Keys: keys, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	key := testpki.Key(t)
	serverCert, err := authority.Sign(&key.PublicKey, identity.ServerIdentity([]string{"localhost"}, nil), identity.Lifetime(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wantVersion, err := s.SchemaVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	opts := status.Options{
		Version: "v1.2.3", ReplicaID: "replica-7", Hostname: "host-7", ListenAddress: "127.0.0.1:7443",
		StartedAt: started, Now: clock.Now, Database: s, EmbeddedDatabase: true, Authority: authority,
		ServerCertificate: func() *x509.Certificate { return serverCert.Certificate },
	}
	client := serve(t, opts)

	const uptime = 50*time.Hour + 3*time.Minute + 7*time.Second + 250*time.Millisecond // more than two days
	clock.Advance(uptime + 999*time.Microsecond)
	res, err := client.GetStatus(t.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	got := res.Msg
	if got.GetVersion() != "v1.2.3" || got.GetReplicaId() != "replica-7" || got.GetHostname() != "host-7" || got.GetListenAddress() != "127.0.0.1:7443" {
		t.Errorf("identity of the replica: %v", got)
	}
	if !got.GetStartTime().AsTime().Equal(started) || got.GetUptime().AsDuration() != uptime {
		t.Errorf("started %v, uptime %v; want %v, %v (to the millisecond)", got.GetStartTime().AsTime(), got.GetUptime().AsDuration(), started, uptime)
	}
	db := got.GetDatabase()
	if db.GetState() != controlplanev1.DatabaseState_DATABASE_STATE_AVAILABLE || !db.GetEmbedded() || db.GetSchemaVersion() != wantVersion ||
		db.GetServerVersion() == "" || db.GetPingLatency().AsDuration() <= 0 || db.GetError() != "" {
		t.Errorf("database %v, want available, embedded, schema version %d", db, wantVersion)
	}
	ca := got.GetCertificateAuthority()
	if ca.GetFingerprint() != authority.Fingerprint() || ca.GetSubject() != authority.Certificate().Subject.String() ||
		!ca.GetNotAfter().AsTime().Equal(authority.Certificate().NotAfter) {
		t.Errorf("certificate authority %v, want %s", ca, authority.Fingerprint())
	}
	sc := got.GetServerCertificate()
	if sc.GetFingerprint() != serverCert.Fingerprint || !sc.GetNotBefore().AsTime().Equal(serverCert.Certificate.NotBefore) ||
		!sc.GetNotAfter().AsTime().Equal(serverCert.Certificate.NotAfter) {
		t.Errorf("server certificate %v, want %s", sc, serverCert.Fingerprint)
	}

	// A database that cannot answer is part of the answer, said without its details.
	gone, err := store.Open(t.Context(), store.Options{URL: storetest.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	opts.Database = gone
	res, err = serve(t, opts).GetStatus(t.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{}))
	if err != nil {
		t.Fatalf("GetStatus with the database gone: %v", err)
	}
	if db := res.Msg.GetDatabase(); db.GetState() != controlplanev1.DatabaseState_DATABASE_STATE_UNAVAILABLE ||
		(db.GetError() != "the database cannot be reached" && db.GetError() != "the database query failed") || db.GetServerVersion() != "" {
		t.Errorf("database gone: %v", db)
	}
	if res.Msg.GetReplicaId() != "replica-7" || res.Msg.GetCertificateAuthority().GetFingerprint() != authority.Fingerprint() {
		t.Errorf("with the database gone the rest of the status is lost: %v", res.Msg)
	}
}
