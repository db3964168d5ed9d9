package daemon_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/descriptorpb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	browserv1 "github.com/palyra/palyra/gen/go/palyra/browser/v1"
	"github.com/palyra/palyra/gen/go/palyra/browser/v1/browserv1connect"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	accesspkg "github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/embeddedpg"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// auditLog reads the whole audit log of the database at dbURL, oldest first, and
// checks that it verifies.
func auditLog(t *testing.T, dbURL string) []audit.Record {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := audit.New(audit.Options{Store: s})
	if v, err := l.Verify(t.Context()); err != nil || !v.Intact {
		t.Fatalf("audit verify: %+v, %v", v, err)
	}
	var out []audit.Record
	for before := int64(0); ; {
		page, err := l.List(t.Context(), audit.Filter{BeforeSequence: before, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if len(page) < 1000 {
			break
		}
		before = page[len(page)-1].Sequence
	}
	slices.Reverse(out)
	return out
}

// holdAuditLock takes the audit log's append lock (LockAudit) in a transaction of its
// own: every append waits until it is released (the returned function) or the
// connection dies.
func holdAuditLock(t *testing.T, dbURL string) (release func()) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "select pg_advisory_xact_lock(hashtextextended('palyra.audit_events', 0))"); err != nil {
		t.Fatal(err)
	}
	release = func() {
		_ = tx.Rollback(context.Background())
		_ = conn.Close(context.Background())
	}
	t.Cleanup(release)
	return release
}

// TestAChangeKeepsItsAuditRecordWhenTheDatabaseRestarts is issue 10's item 15: a
// CreateDispatch commits, and PostgreSQL restarts before the call's audit record is
// appended. The call still answers (the dispatch exists); its record must reach the
// chain once the database is back, and the chain must verify.
func TestAChangeKeepsItsAuditRecordWhenTheDatabaseRestarts(t *testing.T) {
	t.Parallel()
	// The daemon's own embedded cluster, which the test restarts; its directory must be
	// reachable by the postgres user (see TestEmbeddedDatabaseByDefault).
	dataDir := storetest.EmbeddedDataDir(t)
	td := startDaemon(t, "--data-dir", dataDir)
	pgOpts := embeddedpg.Options{Dir: filepath.Join(dataDir, "pg"), Durable: true}
	cluster, err := embeddedpg.Start(t.Context(), pgOpts) // adopts the daemon's
	if err != nil {
		t.Fatal(err)
	}
	b := &accessBundle{testDaemon: td, dbURL: cluster.URL()}
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, td, dev)
	defer node.close()

	// The append waits on the lock: the dispatch is committed, its record not yet.
	holdAuditLock(t, b.dbURL)
	type answer struct {
		res *connect.Response[controlplanev1.CreateDispatchResponse]
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		req := connect.NewRequest(&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
		req.Header().Set("X-Request-Id", "item-15")
		res, err := td.dispatchClient().CreateDispatch(context.WithoutCancel(t.Context()), req)
		answered <- answer{res, err}
	}()
	conn, err := pgx.Connect(t.Context(), b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	eventually.True(t, "the dispatch is committed", func() bool {
		return conn.QueryRow(t.Context(), "select id from dispatches where device_id = $1", dev.deviceID).Scan(&id) == nil
	})
	_ = conn.Close(t.Context())

	// PostgreSQL restarts: the waiting append loses its connection.
	if err := cluster.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := embeddedpg.Start(t.Context(), pgOpts); err != nil {
		t.Fatal(err)
	}
	a := <-answered
	if a.err != nil || !a.res.Msg.GetCreated() || a.res.Msg.GetDispatch().GetId() != id {
		t.Fatalf("CreateDispatch across the restart: %v, %v; want dispatch %s created", a.res, a.err, id)
	}

	type record struct{ code, request, replica string }
	var got record
	eventually.True(t, "the dispatch's audit record is in the log", func() bool {
		conn, err := pgx.Connect(t.Context(), b.dbURL)
		if err != nil {
			return false // still starting
		}
		defer conn.Close(context.Background())
		return conn.QueryRow(t.Context(), "select code, request_id, replica_id from audit_events where procedure = $1 and target = $2",
			controlplanev1connect.DispatchServiceCreateDispatchProcedure, "dispatch:"+id).Scan(&got.code, &got.request, &got.replica) == nil
	})
	if want := (record{"ok", "item-15", td.cfg.ReplicaID}); got != want {
		t.Errorf("the record: %+v, want %+v", got, want)
	}
	// Pooled connections that the restart ended may still answer a first call with
	// Unavailable, which a client retries.
	var v *connect.Response[accessv1.VerifyAuditLogResponse]
	eventually.True(t, "audit verify answers", func() bool {
		v, err = td.auditClient(td.owner).VerifyAuditLog(t.Context(), connect.NewRequest(&accessv1.VerifyAuditLogRequest{}))
		return connect.CodeOf(err) != connect.CodeUnavailable
	})
	if err != nil || !v.Msg.GetIntact() {
		t.Errorf("audit verify: %v, %v", v, err)
	}
}

// TestRateLimitRefusalsAreSummarized is issue 10's item 3: an address without
// credentials calls again and again. Its failed authentications are audited one by one
// while the failure limiter lets them through; what the limiter turns away is counted
// in one summary per minute, not written a row each. A token over its own rate limit,
// on a call that changes state, likewise.
func TestRateLimitRefusalsAreSummarized(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	const calls = 300
	anonymous := accessv1connect.NewAccessServiceClient(b.clientFrom(net.IPv4(127, 0, 0, 2)), b.baseURL)
	var limited int64
	for range calls {
		_, err := anonymous.ListTokens(t.Context(), connect.NewRequest(&accessv1.ListTokensRequest{}))
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			limited++
		case connect.CodeUnauthenticated:
		default:
			t.Fatalf("a call without credentials: %v", err)
		}
	}
	_, secret := b.createToken(t, &accessv1.CreateTokenRequest{Label: "busy", Role: accessv1.Role_ROLE_OPERATOR, RateLimitPerMinute: new(uint32(3))})
	busy := accessv1connect.NewFeatureFlagServiceClient(b.client(secret), b.baseURL)
	var overLimit int64
	for range 20 {
		_, err := busy.SetFlag(t.Context(), connect.NewRequest(&accessv1.SetFlagRequest{Key: "compat_api", Enabled: true}))
		if connect.CodeOf(err) == connect.CodeResourceExhausted {
			overLimit++
		}
	}
	b.stop(t) // writes the summaries of the minute still open

	var rows, failures, summarized int64
	var summaryProcedures []string
	var tokenSummarized int64
	for _, r := range auditLog(t, b.dbURL) {
		switch {
		case r.RemoteAddress == "127.0.0.2":
			rows++
			if r.Summary == nil {
				failures++
				if r.Code != "unauthenticated" || r.Procedure != accessv1connect.AccessServiceListTokensProcedure {
					t.Errorf("a refusal of 127.0.0.2 written one by one: %+v", r)
				}
				continue
			}
			summarized += r.Summary.Count
			summaryProcedures = r.Summary.Procedures
			if r.Code != "resource_exhausted" || r.Principal != "anonymous" || r.Outcome != audit.Failure {
				t.Errorf("summary %+v", r)
			}
		case r.Summary != nil && strings.HasPrefix(r.Principal, "token:"):
			tokenSummarized += r.Summary.Count
		}
	}
	t.Logf("%d calls from one address without credentials: %d audit rows (%d failed authentications, %d refusals of the limiter in summaries)",
		calls, rows, failures, summarized)
	if limited < calls/2 || rows > 30 {
		t.Errorf("%d calls, %d turned away by the limiter: %d audit rows for the address, want a handful", calls, limited, rows)
	}
	if failures+summarized != calls || summarized != limited {
		t.Errorf("%d failures written and %d refusals summarized, for %d calls of which %d were turned away", failures, summarized, calls, limited)
	}
	if !slices.Equal(summaryProcedures, []string{accessv1connect.AccessServiceListTokensProcedure}) {
		t.Errorf("summary procedures %v", summaryProcedures)
	}
	if overLimit == 0 || tokenSummarized != overLimit {
		t.Errorf("%d calls over the token's rate limit, %d in its summaries", overLimit, tokenSummarized)
	}
}

// TestAValidTokenPassesWhereOthersFailed is issue 10's item 7: an address locked out by
// failed authentications still serves a valid token; the failures go on being refused.
func TestAValidTokenPassesWhereOthersFailed(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	wrong := b.accessClient("plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_wrongwrongwrong")
	none := b.accessClient("")
	var codes []connect.Code
	for range 25 {
		_, err := wrong.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
		codes = append(codes, connect.CodeOf(err))
	}
	if codes[len(codes)-1] != connect.CodeResourceExhausted {
		t.Fatalf("codes %v: want the address locked out", codes)
	}
	if _, err := b.accessClient(b.owner).WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{})); err != nil {
		t.Errorf("a valid token from the locked-out address: %v", err)
	}
	_, err := none.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
	wantCode(t, "no credentials from the locked-out address", err, connect.CodeResourceExhausted)
	_, err = wrong.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
	wantCode(t, "a wrong token from the locked-out address", err, connect.CodeResourceExhausted)
}

// TestRefusedHandshakesAreAudited is issue 10's item 12: TLS handshakes refused for a
// client certificate of a foreign CA, or a revoked one, are audited, as one summary per
// address per minute naming the reason.
func TestRefusedHandshakesAreAudited(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	fp := identity.Fingerprint(dev.leaf.Raw)
	devices := controlplanev1connect.NewDeviceServiceClient(b.h2, b.baseURL)
	if _, err := devices.RevokeCertificate(t.Context(), connect.NewRequest(&controlplanev1.RevokeCertificateRequest{Fingerprint: fp, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, b.testDaemon, dev.cert)
	foreign := foreignClientCertificate(t)
	for range 3 {
		if err := b.handshakeFrom(net.IPv4(127, 0, 0, 3), foreign); err == nil {
			t.Fatal("a foreign client certificate passed the handshake")
		}
	}
	for range 2 {
		if err := b.handshakeFrom(net.IPv4(127, 0, 0, 4), dev.cert); err == nil {
			t.Fatal("a revoked certificate passed the handshake")
		}
	}
	if err := b.handshakeFrom(net.IPv4(127, 0, 0, 5), tls.Certificate{}); err != nil {
		t.Fatalf("a handshake without a client certificate: %v", err)
	}
	b.stop(t)

	type row struct {
		principal, code string
		count           int64
		procedures      []string
	}
	got := map[string]row{}
	for _, r := range auditLog(t, b.dbURL) {
		if r.Summary != nil {
			got[r.RemoteAddress] = row{r.Principal, r.Code, r.Summary.Count, r.Summary.Procedures}
		}
	}
	want := map[string]row{
		"127.0.0.3": {"anonymous", "unauthenticated", 3, []string{"tls:unknown-authority"}},
		"127.0.0.4": {"device:" + dev.deviceID, "unauthenticated", 2, []string{"tls:certificate-revoked"}},
	}
	for remote, w := range want {
		g := got[remote]
		if g.principal != w.principal || g.code != w.code || g.count != w.count || !slices.Equal(g.procedures, w.procedures) {
			t.Errorf("summary of %s: %+v, want %+v", remote, g, w)
		}
	}
	if _, ok := got["127.0.0.5"]; ok {
		t.Error("a handshake without a client certificate was audited")
	}
}

// TestRequestIDs is issue 10's item 13: a well-formed X-Request-Id is kept, anything
// else is replaced by an id the replica makes up; the audit records who chose it and
// which replica recorded the event.
func TestRequestIDs(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	owner := b.flagsClient(b.owner)
	tests := []struct {
		sent   string
		kept   bool
		source accessv1.AuditRequestIdSource
	}{
		{"trace:4bf92f3577b34da6-00f0", true, accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_CLIENT},
		{"A.b_c-1", true, accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_CLIENT},
		{"", false, accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_REPLICA},
		{"spaces are not allowed", false, accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_REPLICA},
		{strings.Repeat("x", 65), false, accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_REPLICA},
		{"ünïcode", false, accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_REPLICA},
	}
	for _, tt := range tests {
		req := connect.NewRequest(&accessv1.SetFlagRequest{Key: "compat_api", Enabled: true})
		if tt.sent != "" {
			req.Header().Set("X-Request-Id", tt.sent)
		}
		res, err := owner.SetFlag(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		got := res.Header().Get("X-Request-Id")
		if kept := got == tt.sent; kept != tt.kept || (!tt.kept && len(got) != 26) {
			t.Errorf("sent %q, the response says %q", tt.sent, got)
		}
		list, err := b.auditClient(b.owner).ListAuditEvents(t.Context(), connect.NewRequest(&accessv1.ListAuditEventsRequest{PageSize: 1}))
		if err != nil {
			t.Fatal(err)
		}
		e := list.Msg.GetEvents()[0]
		if e.GetRequestId() != got || e.GetRequestIdSource() != tt.source || e.GetReplicaId() != b.cfg.ReplicaID || e.GetFormat() != 2 {
			t.Errorf("sent %q: event %v", tt.sent, e)
		}
	}
}

// TestEveryStateChangingRPCCommitsItsAuditOutboxRow calls every RPC that may change
// state (every one not declared NO_SIDE_EFFECTS) with the audit log unable to take
// events: each call that changed state must leave its outbox row, committed with its
// change, naming the call and its target. When the log takes events again, the drainer
// moves every row into the chain, which verifies.
func TestEveryStateChangingRPCCommitsItsAuditOutboxRow(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--compat-model", "palyra-echo"), dbURL: dbURL}
	ctx := t.Context()
	dev := b.enroll(t, time.Hour)
	// From now on every insert into audit_events fails: the call's End and the drainer
	// cannot move the outbox rows.
	b.sql(t, `create function refuse_audit() returns trigger language plpgsql as $$
		begin raise exception 'the audit log refuses events (test)'; end $$`,
		`create trigger refuse_audit before insert on audit_events for each statement execute function refuse_audit()`)

	conn, err := pgx.Connect(ctx, b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// row is the outbox row of the call whose request id is rid.
	row := func(rid string) (procedure, target string, ok bool) {
		err := conn.QueryRow(ctx, "select procedure, target from audit_outbox where request_id = $1", rid).Scan(&procedure, &target)
		return procedure, target, err == nil
	}
	called := map[string]bool{}
	// check runs one call with request id rid and expects its outbox row: procedure and
	// the target want returns after the call.
	check := func(procedure string, call func(rid string) error, want func() string) {
		t.Helper()
		rid := "outbox-" + procedure[strings.LastIndexByte(procedure, '/')+1:]
		if err := call(rid); err != nil {
			t.Fatalf("%s: %v", procedure, err)
		}
		called[procedure] = true
		gotProc, gotTarget, ok := row(rid)
		if !ok || gotProc != procedure || gotTarget != want() {
			t.Errorf("%s: outbox row %v (%q, %q), want (%q, %q)", procedure, ok, gotProc, gotTarget, procedure, want())
		}
	}
	withID := func(h http.Header, rid string) { h.Set("X-Request-Id", rid) }

	access := b.accessClient(b.owner)
	flags := b.flagsClient(b.owner)
	check(accessv1connect.FeatureFlagServiceSetFlagProcedure, func(rid string) error {
		req := connect.NewRequest(&accessv1.SetFlagRequest{Key: "compat_api", Enabled: true})
		withID(req.Header(), rid)
		_, err := flags.SetFlag(ctx, req)
		return err
	}, func() string { return "flag:compat_api=true" })
	var tok, rotated string
	check(accessv1connect.AccessServiceCreateTokenProcedure, func(rid string) error {
		req := connect.NewRequest(&accessv1.CreateTokenRequest{Label: "outbox", Role: accessv1.Role_ROLE_OPERATOR})
		withID(req.Header(), rid)
		res, err := access.CreateToken(ctx, req)
		if err == nil {
			tok = res.Msg.GetToken().GetId()
		}
		return err
	}, func() string { return "token:" + tok })
	check(accessv1connect.AccessServiceRotateTokenProcedure, func(rid string) error {
		req := connect.NewRequest(&accessv1.RotateTokenRequest{Id: tok})
		withID(req.Header(), rid)
		res, err := access.RotateToken(ctx, req)
		if err == nil {
			rotated = res.Msg.GetToken().GetId()
		}
		return err
	}, func() string { return "token:" + tok + " -> token:" + rotated })
	check(accessv1connect.AccessServiceSetTokenBudgetProcedure, func(rid string) error {
		req := connect.NewRequest(&accessv1.SetTokenBudgetRequest{Id: rotated, DailyTokenBudget: new(int64(1000))})
		withID(req.Header(), rid)
		_, err := access.SetTokenBudget(ctx, req)
		return err
	}, func() string { return "token:" + rotated + " daily_token_budget:1000" })
	check(accessv1connect.AccessServiceRevokeTokenProcedure, func(rid string) error {
		req := connect.NewRequest(&accessv1.RevokeTokenRequest{Id: rotated})
		withID(req.Header(), rid)
		_, err := access.RevokeToken(ctx, req)
		return err
	}, func() string { return "token:" + rotated })

	sessions := controlplanev1connect.NewSessionServiceClient(b.client(b.owner), b.baseURL)
	var session, cookie, csrf string
	check(controlplanev1connect.SessionServiceCreateSessionProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.CreateSessionRequest{})
		withID(req.Header(), rid)
		res, err := sessions.CreateSession(ctx, req)
		if err == nil {
			session, csrf = res.Msg.GetSession().GetId(), res.Msg.GetCsrfToken()
			cookie = strings.SplitN(res.Header().Get("Set-Cookie"), ";", 2)[0]
		}
		return err
	}, func() string { return "session:" + session })
	check(controlplanev1connect.SessionServiceDeleteSessionProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.DeleteSessionRequest{})
		withID(req.Header(), rid)
		req.Header().Set("Cookie", cookie)
		req.Header().Set(accesspkg.CSRFHeader, csrf)
		_, err := controlplanev1connect.NewSessionServiceClient(b.client(""), b.baseURL).DeleteSession(ctx, req)
		return err
	}, func() string { return "session:" + session })

	var handoff, handoffSession string
	check(controlplanev1connect.SessionServiceCreateHandoffProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.CreateHandoffRequest{})
		withID(req.Header(), rid)
		res, err := sessions.CreateHandoff(ctx, req)
		if err == nil {
			handoff = res.Msg.GetCode()
			handoffSession, _, _ = strings.Cut(handoff, ".")
		}
		return err
	}, func() string { return "session:" + handoffSession })
	check(controlplanev1connect.SessionServiceClaimHandoffProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.ClaimHandoffRequest{Code: handoff})
		withID(req.Header(), rid)
		_, err := controlplanev1connect.NewSessionServiceClient(b.client(""), b.baseURL).ClaimHandoff(ctx, req)
		return err
	}, func() string { return "session:" + handoffSession })

	pairing := controlplanev1connect.NewPairingServiceClient(b.h2, b.baseURL)
	newCode := func(rid string) (*controlplanev1.CreatePairingCodeResponse, error) {
		req := connect.NewRequest(&controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN})
		withID(req.Header(), rid)
		res, err := pairing.CreatePairingCode(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	var code *controlplanev1.CreatePairingCodeResponse
	check(controlplanev1connect.PairingServiceCreatePairingCodeProcedure, func(rid string) (err error) {
		code, err = newCode(rid)
		return err
	}, func() string { return "pairing_code:" + code.GetPairingCode().GetId() })
	check(controlplanev1connect.PairingServiceDeletePairingCodeProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.DeletePairingCodeRequest{Id: code.GetPairingCode().GetId()})
		withID(req.Header(), rid)
		_, err := pairing.DeletePairingCode(ctx, req)
		return err
	}, func() string { return "pairing_code:" + code.GetPairingCode().GetId() })
	node := nodev1connect.NewNodeServiceClient(b.client(""), b.baseURL)
	start := func(rid string) (*nodev1.StartPairingResponse, error) {
		c, err := newCode("")
		if err != nil {
			return nil, err
		}
		key := testpki.Key(t)
		req := connect.NewRequest(&nodev1.StartPairingRequest{Code: &nodev1.StartPairingRequest_Pin{Pin: c.GetCode()},
			Csr: csrFor(t, key, nil), DeviceName: "outbox-node", Platform: "linux/amd64"})
		withID(req.Header(), rid)
		res, err := node.StartPairing(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	approve := func(rid, id string) error {
		req := connect.NewRequest(&controlplanev1.ApprovePairingRequestRequest{Id: id})
		withID(req.Header(), rid)
		_, err := pairing.ApprovePairingRequest(ctx, req)
		return err
	}
	var first *nodev1.StartPairingResponse
	check(nodev1connect.NodeServiceStartPairingProcedure, func(rid string) (err error) {
		first, err = start(rid)
		return err
	}, func() string { return "pairing_request:" + first.GetRequestId() })
	check(controlplanev1connect.PairingServiceApprovePairingRequestProcedure, func(rid string) error {
		return approve(rid, first.GetRequestId())
	}, func() string { return "pairing_request:" + first.GetRequestId() })
	check(nodev1connect.NodeServiceGetPairingStatusProcedure, func(rid string) error {
		req := connect.NewRequest(&nodev1.GetPairingStatusRequest{RequestId: first.GetRequestId(), PairingSecret: first.GetPairingSecret()})
		withID(req.Header(), rid)
		res, err := node.GetPairingStatus(ctx, req)
		if err == nil && res.Msg.GetStatus().GetState() != nodev1.PairingState_PAIRING_STATE_COMPLETED {
			err = errors.New("not completed: " + res.Msg.GetStatus().GetState().String())
		}
		return err
	}, func() string { return "pairing_request:" + first.GetRequestId() })
	second, err := start("")
	if err != nil {
		t.Fatal(err)
	}
	if err := approve("", second.GetRequestId()); err != nil {
		t.Fatal(err)
	}
	check(nodev1connect.NodeServiceWatchPairingProcedure, func(rid string) error {
		req := connect.NewRequest(&nodev1.WatchPairingRequest{RequestId: second.GetRequestId(), PairingSecret: second.GetPairingSecret()})
		withID(req.Header(), rid)
		stream, err := node.WatchPairing(ctx, req)
		if err != nil {
			return err
		}
		for stream.Receive() {
		}
		return stream.Err()
	}, func() string { return "pairing_request:" + second.GetRequestId() })
	third, err := start("")
	if err != nil {
		t.Fatal(err)
	}
	check(controlplanev1connect.PairingServiceRejectPairingRequestProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.RejectPairingRequestRequest{Id: third.GetRequestId(), Reason: "test"})
		withID(req.Header(), rid)
		_, err := pairing.RejectPairingRequest(ctx, req)
		return err
	}, func() string { return "pairing_request:" + third.GetRequestId() })

	mtls := nodev1connect.NewNodeServiceClient(b.mtls(dev.cert), b.baseURL)
	check(nodev1connect.NodeServiceRenewCertificateProcedure, func(rid string) error {
		key := testpki.Key(t)
		req := connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, key, nil)})
		withID(req.Header(), rid)
		_, err := mtls.RenewCertificate(ctx, req)
		return err
	}, func() string { return "device:" + dev.deviceID })
	var attached *testNode
	check(nodev1connect.NodeServiceAttachProcedure, func(rid string) error {
		attached = openAttach(t, b.testDaemon, dev, helloFor(dev), connect.WithInterceptors(requestID(rid)))
		if attached.next().GetWelcome() == nil {
			return errors.New("no welcome")
		}
		return nil
	}, func() string { return "device:" + dev.deviceID })
	dispatch := b.dispatchClient()
	var created string
	check(controlplanev1connect.DispatchServiceCreateDispatchProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
		withID(req.Header(), rid)
		res, err := dispatch.CreateDispatch(ctx, req)
		if err == nil {
			created = res.Msg.GetDispatch().GetId()
		}
		return err
	}, func() string { return "dispatch:" + created })
	if d := attached.nextDispatch(); d.GetDispatchId() != created {
		t.Fatalf("the node got dispatch %s, want %s", d.GetDispatchId(), created)
	}
	check(controlplanev1connect.DispatchServiceCancelDispatchProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: created, Reason: "test"})
		withID(req.Header(), rid)
		_, err := dispatch.CancelDispatch(ctx, req)
		return err
	}, func() string { return "dispatch:" + created })
	var executed string
	go func() { // the node runs what it gets
		for {
			d := attached.nextDispatch()
			if d.GetCapability() == "system.info" && d.GetDispatchId() != created {
				attached.send(accepted(d.GetDispatchId()))
				attached.send(result(d.GetDispatchId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 0))
				return
			}
		}
	}()
	check(controlplanev1connect.DispatchServiceExecuteCapabilityProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{NodeId: dev.deviceID, Capability: "system.info"})
		withID(req.Header(), rid)
		res, err := dispatch.ExecuteCapability(ctx, req)
		if err == nil {
			executed = res.Msg.GetDispatch().GetId()
		}
		return err
	}, func() string { return "dispatch:" + executed })

	devices := controlplanev1connect.NewDeviceServiceClient(b.h2, b.baseURL)
	check(controlplanev1connect.DeviceServiceRotateDeviceCertificateProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.RotateDeviceCertificateRequest{Id: dev.deviceID})
		withID(req.Header(), rid)
		_, err := devices.RotateDeviceCertificate(ctx, req)
		return err
	}, func() string { return "device:" + dev.deviceID })
	fp := identity.Fingerprint(dev.leaf.Raw)
	check(controlplanev1connect.DeviceServiceRevokeCertificateProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.RevokeCertificateRequest{Fingerprint: fp, Reason: "test"})
		withID(req.Header(), rid)
		_, err := devices.RevokeCertificate(ctx, req)
		return err
	}, func() string { return "certificate:" + fp })
	check(controlplanev1connect.DeviceServiceRevokeDeviceProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: dev.deviceID, Reason: "test"})
		withID(req.Header(), rid)
		_, err := devices.RevokeDevice(ctx, req)
		return err
	}, func() string { return "device:" + dev.deviceID })

	secrets := b.secretsClient(b.owner)
	check(controlplanev1connect.SecretServicePutSecretProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.PutSecretRequest{Name: "outbox", Value: []byte("v")})
		withID(req.Header(), rid)
		_, err := secrets.PutSecret(ctx, req)
		return err
	}, func() string { return "secret:outbox version:1" })
	check(controlplanev1connect.SecretServiceRevealSecretProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.RevealSecretRequest{Name: "outbox", Reason: "test"})
		withID(req.Header(), rid)
		_, err := secrets.RevealSecret(ctx, req)
		return err
	}, func() string { return `secret:outbox version:1 reason:"test"` })
	check(controlplanev1connect.SecretServiceDeleteSecretProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.DeleteSecretRequest{Name: "outbox"})
		withID(req.Header(), rid)
		_, err := secrets.DeleteSecret(ctx, req)
		return err
	}, func() string { return "secret:outbox" })
	check(controlplanev1connect.SecretServiceRestoreSecretProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.RestoreSecretRequest{Name: "outbox"})
		withID(req.Header(), rid)
		_, err := secrets.RestoreSecret(ctx, req)
		return err
	}, func() string { return "secret:outbox" })
	check(controlplanev1connect.SecretServiceDestroySecretVersionProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.DestroySecretVersionRequest{Name: "outbox", Version: 1})
		withID(req.Header(), rid)
		_, err := secrets.DestroySecretVersion(ctx, req)
		return err
	}, func() string { return "secret:outbox version:1" })
	var primary string
	check(controlplanev1connect.MasterKeyServiceRewrapKeysProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.RewrapKeysRequest{})
		withID(req.Header(), rid)
		res, err := b.masterKeyClient(b.owner).RewrapKeys(ctx, req)
		if err == nil {
			primary = res.Msg.GetRewrap().GetKekId()
		}
		return err
	}, func() string { return "master_key:" + primary })
	configs := controlplanev1connect.NewConfigServiceClient(b.h2, b.baseURL)
	check(controlplanev1connect.ConfigServiceUpdateConfigProcedure, func(rid string) error {
		req := connect.NewRequest(&controlplanev1.UpdateConfigRequest{
			Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{{
				Key: "nodes.heartbeat_interval", Value: &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_Text{Text: "20s"}},
			}}},
			ExpectedRevision: new(int64),
		})
		withID(req.Header(), rid)
		_, err := configs.UpdateConfig(ctx, req)
		return err
	}, func() string { return `config:revision 1: nodes.heartbeat_interval "15s" -> "20s"` })
	check(controlplanev1connect.ConfigServiceRollbackConfigProcedure, func(rid string) error {
		one := int64(1)
		req := connect.NewRequest(&controlplanev1.RollbackConfigRequest{Revision: 1, ExpectedRevision: &one})
		withID(req.Header(), rid)
		// Revision 1's state is the current one: a rollback to it changes nothing, so
		// change something first, outside the check.
		if _, err := configs.UpdateConfig(ctx, connect.NewRequest(&controlplanev1.UpdateConfigRequest{
			Change: &controlplanev1.ConfigChangeSpec{Unset: []string{"nodes.heartbeat_interval"}}, ExpectedRevision: &one,
		})); err != nil {
			return err
		}
		two := int64(2)
		req.Msg.ExpectedRevision = &two
		_, err := configs.RollbackConfig(ctx, req)
		return err
	}, func() string { return `config:revision 3 (rollback to 1): nodes.heartbeat_interval "15s" -> "20s"` })

	// A real run's call asks; its approval is decided.
	runs := &runBed{accessBundle: b, model: newScriptedModel(t, toolThenAnswer("shell_execute", `{"argv": ["uptime"]}`))}
	runs.useModel(t)
	asking := runs.startAskingRun(t, "asker")
	approval := asking.approval.GetId()
	approvals := b.approvalsClient(b.owner)
	check(agentsv1connect.ApprovalServiceDecideApprovalProcedure, func(rid string) error {
		req := connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: approval, Approve: true, Scope: agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN})
		withID(req.Header(), rid)
		_, err := approvals.DecideApproval(ctx, req)
		return err
	}, func() string { return "approval:" + approval + " approved scope:run" })
	answerDispatch(t, asking.node, `{"exit_code":0}`)
	if run, _ := finished(t, asking.events); run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED {
		t.Errorf("the approved run: %v", run)
	}
	asking.node.close()

	// The OpenAI-compatible API's calls write their usage, which commits their outbox
	// row, its target naming the model, the provider and the token counts.
	if _, err := flags.SetFlag(ctx, connect.NewRequest(&accessv1.SetFlagRequest{Key: "compat_streaming", Enabled: true})); err != nil {
		t.Fatal(err)
	}
	compat := compatv1connect.NewCompatServiceClient(b.h2, b.baseURL)
	user := func(text string) []*compatv1.ChatMessage {
		return []*compatv1.ChatMessage{{Role: "user", Content: text}}
	}
	echoTarget := func(prompt, completion int) func() string {
		return func() string {
			return fmt.Sprintf("model:palyra-echo provider:palyra prompt_tokens:%d completion_tokens:%d", prompt, completion)
		}
	}
	check(compatv1connect.CompatServiceCreateChatCompletionProcedure, func(rid string) error {
		req := connect.NewRequest(&compatv1.CreateChatCompletionRequest{Model: "palyra-echo", Messages: user("outbox chat")})
		withID(req.Header(), rid)
		_, err := compat.CreateChatCompletion(ctx, req)
		return err
	}, echoTarget(2, 2))
	check(compatv1connect.CompatServiceStreamChatCompletionProcedure, func(rid string) error {
		req := connect.NewRequest(&compatv1.StreamChatCompletionRequest{Model: "palyra-echo", Messages: user("outbox chat stream")})
		withID(req.Header(), rid)
		return drain(compat.StreamChatCompletion(ctx, req))
	}, echoTarget(3, 3))
	check(compatv1connect.CompatServiceCreateEmbeddingProcedure, func(rid string) error {
		req := connect.NewRequest(&compatv1.CreateEmbeddingRequest{Model: "palyra-echo", Input: []string{"outbox embedding"}})
		withID(req.Header(), rid)
		_, err := compat.CreateEmbedding(ctx, req)
		return err
	}, echoTarget(2, 0))
	check(compatv1connect.CompatServiceCreateResponseProcedure, func(rid string) error {
		req := connect.NewRequest(&compatv1.CreateResponseRequest{Model: "palyra-echo", Input: user("outbox response")})
		withID(req.Header(), rid)
		_, err := compat.CreateResponse(ctx, req)
		return err
	}, echoTarget(2, 2))
	check(compatv1connect.CompatServiceStreamResponseProcedure, func(rid string) error {
		req := connect.NewRequest(&compatv1.StreamResponseRequest{Model: "palyra-echo", Input: user("outbox response stream")})
		withID(req.Header(), rid)
		return drain(compat.StreamResponse(ctx, req))
	}, echoTarget(3, 3))

	agentsClient := agentsv1connect.NewAgentServiceClient(b.h2, b.baseURL)
	agentSpec := &agentsv1.AgentSpec{Name: "outbox", Model: "palyra-echo"}
	check(agentsv1connect.AgentServiceCreateAgentProcedure, func(rid string) error {
		req := connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: agentSpec})
		withID(req.Header(), rid)
		_, err := agentsClient.CreateAgent(ctx, req)
		return err
	}, func() string { return "agent:outbox revision:1" })
	check(agentsv1connect.AgentServiceUpdateAgentProcedure, func(rid string) error {
		req := connect.NewRequest(&agentsv1.UpdateAgentRequest{Agent: &agentsv1.UpdateAgentRequest_Name{Name: "outbox"},
			Spec: agentSpec, ExpectedRevision: new(int64(1))})
		withID(req.Header(), rid)
		_, err := agentsClient.UpdateAgent(ctx, req)
		return err
	}, func() string { return "agent:outbox revision:2" })
	check(agentsv1connect.AgentServiceSetDefaultAgentProcedure, func(rid string) error {
		req := connect.NewRequest(&agentsv1.SetDefaultAgentRequest{Agent: &agentsv1.SetDefaultAgentRequest_Name{Name: "outbox"}})
		withID(req.Header(), rid)
		_, err := agentsClient.SetDefaultAgent(ctx, req)
		return err
	}, func() string { return "agent:outbox default" })
	var runID string
	check(agentsv1connect.AgentServiceRunProcedure, func(rid string) error {
		req := connect.NewRequest(&agentsv1.RunRequest{Agent: &agentsv1.RunRequest_Name{Name: "outbox"}, Prompt: "outbox run"})
		withID(req.Header(), rid)
		stream, err := agentsClient.Run(ctx, req)
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
			if s := stream.Msg().GetStarted(); s != nil {
				runID = s.GetId()
			}
		}
		return stream.Err()
	}, func() string { return "run:" + runID + " agent:outbox" })
	// A run of this replica whose loop is not running (none is, so the reaper leaves it).
	const waitingRun = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7DB"
	b.sql(t, `insert into agent_runs (id, agent_id, agent_name, agent_revision, agent, input, started_by, replica_id, created_at, deadline)
		values ('`+waitingRun+`', '01JD5ZJ8Q0W1X2Y3Z4A5B6C7DA', 'outbox', 1, '{"name":"outbox","model":"palyra-echo"}', '[]', 'token:x', '`+b.cfg.ReplicaID+`', now(), now() + interval '1 hour')`)
	check(agentsv1connect.AgentServiceCancelRunProcedure, func(rid string) error {
		req := connect.NewRequest(&agentsv1.CancelRunRequest{Id: waitingRun, Reason: "outbox"})
		withID(req.Header(), rid)
		_, err := agentsClient.CancelRun(ctx, req)
		return err
	}, func() string { return "run:" + waitingRun })
	check(agentsv1connect.AgentServiceDeleteAgentProcedure, func(rid string) error {
		req := connect.NewRequest(&agentsv1.DeleteAgentRequest{Agent: &agentsv1.DeleteAgentRequest_Name{Name: "outbox"}})
		withID(req.Header(), rid)
		_, err := agentsClient.DeleteAgent(ctx, req)
		return err
	}, func() string { return "agent:outbox revision:2" })
	browsers := b.browserClient(b.owner)
	check(browserv1connect.BrowserProfileServiceCreateBrowserProfileProcedure, func(rid string) error {
		req := connect.NewRequest(&browserv1.CreateBrowserProfileRequest{Spec: &browserv1.BrowserProfileSpec{
			Name: "outbox", AllowedDomains: []string{"127.0.0.1"}}})
		withID(req.Header(), rid)
		_, err := browsers.CreateBrowserProfile(ctx, req)
		return err
	}, func() string { return "browser_profile:outbox revision:1" })
	check(browserv1connect.BrowserProfileServiceUpdateBrowserProfileProcedure, func(rid string) error {
		req := connect.NewRequest(&browserv1.UpdateBrowserProfileRequest{Profile: &browserv1.UpdateBrowserProfileRequest_Name{Name: "outbox"},
			Spec: &browserv1.BrowserProfileSpec{Name: "outbox", AllowedDomains: []string{"localhost"}}, ExpectedRevision: new(int64(1))})
		withID(req.Header(), rid)
		_, err := browsers.UpdateBrowserProfile(ctx, req)
		return err
	}, func() string { return "browser_profile:outbox revision:2" })
	check(browserv1connect.BrowserProfileServiceResetBrowserProfileStateProcedure, func(rid string) error {
		req := connect.NewRequest(&browserv1.ResetBrowserProfileStateRequest{Profile: &browserv1.ResetBrowserProfileStateRequest_Name{Name: "outbox"}})
		withID(req.Header(), rid)
		_, err := browsers.ResetBrowserProfileState(ctx, req)
		return err
	}, func() string { return "browser_profile:outbox state_reset (was state_version:0)" })
	check(browserv1connect.BrowserProfileServiceDeleteBrowserProfileProcedure, func(rid string) error {
		req := connect.NewRequest(&browserv1.DeleteBrowserProfileRequest{Profile: &browserv1.DeleteBrowserProfileRequest_Name{Name: "outbox"}})
		withID(req.Header(), rid)
		_, err := browsers.DeleteBrowserProfile(ctx, req)
		return err
	}, func() string { return "browser_profile:outbox revision:2" })
	// Every RPC that may change state was called.
	for procedure, md := range palyraMethods {
		opts, _ := md.Options().(*descriptorpb.MethodOptions)
		if opts.GetIdempotencyLevel() != descriptorpb.MethodOptions_NO_SIDE_EFFECTS && !called[procedure] {
			t.Errorf("%s may change state and is not called by this test: add it", procedure)
		}
	}

	// The log takes events again: the drainer moves every row into the chain.
	attached.close()
	b.sql(t, "drop trigger refuse_audit on audit_events")
	eventually.True(t, "the outbox is drained", func() bool {
		var n int
		return conn.QueryRow(ctx, "select count(*) from audit_outbox").Scan(&n) == nil && n == 0
	})
	recorded := map[string]bool{}
	for _, r := range auditLog(t, b.dbURL) {
		if strings.HasPrefix(r.RequestID, "outbox-") {
			recorded[r.Procedure] = true
		}
	}
	for procedure := range called {
		if !recorded[procedure] {
			t.Errorf("%s has no event in the log", procedure)
		}
	}
}

// requestID is a client interceptor that sends the request id rid on every stream.
type requestID string

func (r requestID) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (r requestID) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("X-Request-Id", string(r))
		return conn
	}
}

func (r requestID) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// drain reads a server stream to its end and returns how the call ended.
func drain[T any](stream *connect.ServerStreamForClient[T], err error) error {
	if err != nil {
		return err
	}
	for stream.Receive() {
	}
	return stream.Err()
}
