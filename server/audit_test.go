package main

import (
	"context"
	"strconv"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestAChangeKeepsItsAuditRecordWhenTheReplicaDies is issue 10's item 15 with the
// replica killed (SIGKILL) after a call's change committed and before its audit record
// was appended: the record is in the change's transaction (the audit outbox), and the
// replica, restarted, moves it into the chain, which verifies.
func TestAChangeKeepsItsAuditRecordWhenTheReplicaDies(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	dataDir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	args := []string{"--listen", listen, "--data-dir", dataDir, "--database-url", dbURL, "--replica-id", "replica-1"}
	d := startDaemonProcess(t, args...)
	hc, owner := ownerClient(t, dataDir)
	access := accessv1connect.NewAccessServiceClient(hc, "https://"+listen, owner)

	// Appends wait while the test holds the audit log's append lock.
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "select pg_advisory_xact_lock(hashtextextended('palyra.audit_events', 0))"); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = access.CreateToken(context.WithoutCancel(t.Context()),
			connect.NewRequest(&accessv1.CreateTokenRequest{Label: "doomed", Role: accessv1.Role_ROLE_OPERATOR}))
	}()
	other, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	var id string
	eventually.NoError(t, "the token is created", func() error {
		return other.QueryRow(t.Context(), "select id from api_tokens where label = 'doomed'").Scan(&id)
	})
	// The token is committed; its record waits for the lock. The replica dies, and so
	// do its sessions (PostgreSQL would otherwise run the append it was sent once the
	// lock is free: a backend waiting on a lock does not notice its client is gone).
	d.kill(t)
	if _, err := other.Exec(t.Context(), "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'palyrad' and datname = current_database()"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}

	d = startDaemonProcess(t, args...)
	var code string
	eventually.NoError(t, "the token's audit record after the restart", func() error {
		return other.QueryRow(t.Context(), "select code from audit_events where procedure = $1 and target = $2",
			accessv1connect.AccessServiceCreateTokenProcedure, "token:"+id).Scan(&code)
	})
	if code != "committed" {
		t.Errorf("the record's code is %q, want committed: how the call ended is not known", code)
	}
	v, err := accessv1connect.NewAuditServiceClient(hc, "https://"+listen, owner).VerifyAuditLog(t.Context(), connect.NewRequest(&accessv1.VerifyAuditLogRequest{}))
	if err != nil || !v.Msg.GetIntact() {
		t.Errorf("audit verify: %v, %v", v, err)
	}
	d.stop(t)
}
