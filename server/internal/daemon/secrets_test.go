package daemon_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

func (td *testDaemon) secretsClient(token string) controlplanev1connect.SecretServiceClient {
	return controlplanev1connect.NewSecretServiceClient(td.client(token), td.baseURL)
}

// fieldsOf returns the fields a BadRequest detail of err names.
func fieldsOf(err error) []string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	var fields []string
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			continue
		}
		switch v := v.(type) {
		case *errdetails.BadRequest: // the domain's
			for _, f := range v.GetFieldViolations() {
				fields = append(fields, f.GetField())
			}
		case *validate.Violations: // protovalidate's
			for _, f := range v.GetViolations() {
				fields = append(fields, protovalidate.FieldPathString(f.GetField()))
			}
		}
	}
	return fields
}

// TestSecretsOverTheAPI checks SecretService's rules through a real palyrad: who may do
// what, the refusals of bad input, check-and-set, and that refused reveals are audited.
func TestSecretsOverTheAPI(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	ctx := t.Context()
	owner := b.secretsClient(b.owner)
	_, adminSecret := b.createToken(t, &accessv1.CreateTokenRequest{Label: "admin", Role: accessv1.Role_ROLE_ADMIN})
	opTok, opSecret := b.createToken(t, &accessv1.CreateTokenRequest{Label: "operator", Role: accessv1.Role_ROLE_OPERATOR})
	admin, operator := b.secretsClient(adminSecret), b.secretsClient(opSecret)

	put, err := owner.PutSecret(ctx, connect.NewRequest(&controlplanev1.PutSecretRequest{Name: "openai", Value: []byte("sk-test-owner"),
		Labels: map[string]string{"provider": "openai"}, ExpectedVersion: new(int64)}))
	if err != nil {
		t.Fatal(err)
	}
	if s := put.Msg.GetSecret(); s.GetLatestVersion() != 1 || len(s.GetVersions()) != 1 || s.GetVersions()[0].GetKekId() == "" {
		t.Errorf("put: %v", s)
	}
	// Admins write and read metadata; operators do neither.
	v1 := int64(1)
	if _, err := admin.PutSecret(ctx, connect.NewRequest(&controlplanev1.PutSecretRequest{Name: "openai", Value: []byte("sk-test-admin"), ExpectedVersion: &v1})); err != nil {
		t.Fatalf("admin put: %v", err)
	}
	if res, err := admin.GetSecret(ctx, connect.NewRequest(&controlplanev1.GetSecretRequest{Name: "openai"})); err != nil || len(res.Msg.GetSecret().GetVersions()) != 2 {
		t.Errorf("admin get: %v, %v", res, err)
	}
	if res, err := admin.ListSecrets(ctx, connect.NewRequest(&controlplanev1.ListSecretsRequest{})); err != nil || len(res.Msg.GetSecrets()) != 1 {
		t.Errorf("admin list: %v, %v", res, err)
	}
	_, err = operator.ListSecrets(ctx, connect.NewRequest(&controlplanev1.ListSecretsRequest{}))
	wantCode(t, "operator list", err, connect.CodePermissionDenied)
	_, err = operator.PutSecret(ctx, connect.NewRequest(&controlplanev1.PutSecretRequest{Name: "x", Value: []byte("y")}))
	wantCode(t, "operator put", err, connect.CodePermissionDenied)

	// Stale check-and-set: Aborted, naming the current version, nothing written.
	_, err = owner.PutSecret(ctx, connect.NewRequest(&controlplanev1.PutSecretRequest{Name: "openai", Value: []byte("sk-test-stale"), ExpectedVersion: &v1}))
	wantCode(t, "stale put", err, connect.CodeAborted)
	if !strings.Contains(err.Error(), "at version 2, not 1") {
		t.Errorf("stale put: %v does not name the current version", err)
	}

	// Reveals: owner with a reason only.
	reveal := func(c controlplanev1connect.SecretServiceClient, reason, rid string) (*controlplanev1.RevealSecretResponse, error) {
		req := connect.NewRequest(&controlplanev1.RevealSecretRequest{Name: "openai", Reason: reason})
		req.Header().Set("X-Request-Id", rid)
		res, err := c.RevealSecret(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	_, err = reveal(admin, "curious", "reveal-admin")
	wantCode(t, "admin reveal", err, connect.CodePermissionDenied)
	_, err = reveal(operator, "curious", "reveal-operator")
	wantCode(t, "operator reveal", err, connect.CodePermissionDenied)
	_, err = reveal(owner, "", "reveal-no-reason")
	wantCode(t, "reveal without a reason", err, connect.CodeInvalidArgument)
	if f := fieldsOf(err); !slices.Equal(f, []string{"reason"}) {
		t.Errorf("reveal without a reason: the error names %v", f)
	}
	got, err := reveal(owner, "rotate the provider's key", "reveal-owner")
	if err != nil || string(got.GetValue()) != "sk-test-admin" || got.GetVersion() != 2 {
		t.Fatalf("owner reveal: %v, %v", got, err)
	}
	events := map[string][3]string{} // request id → principal, code, target
	for _, r := range auditLog(t, b.dbURL) {
		events[r.RequestID] = [3]string{r.Principal, r.Code, r.Target}
	}
	for rid, want := range map[string][3]string{
		"reveal-admin":     {"", "permission_denied", ""},
		"reveal-operator":  {"token:" + opTok.GetId(), "permission_denied", ""},
		"reveal-no-reason": {"", "invalid_argument", ""},
		"reveal-owner":     {"", "ok", `secret:openai version:2 reason:"rotate the provider's key"`},
	} {
		e, ok := events[rid]
		if !ok || e[1] != want[1] || (want[0] != "" && e[0] != want[0]) || e[2] != want[2] {
			t.Errorf("audit event of %s: %q (recorded %v), want %q", rid, e, ok, want)
		}
	}

	// Bad input: names and sizes, each naming its field.
	for _, tc := range []struct {
		what  string
		req   *controlplanev1.PutSecretRequest
		field string
	}{
		{"a slash", &controlplanev1.PutSecretRequest{Name: "a/b", Value: []byte("v")}, "name"},
		{"a space", &controlplanev1.PutSecretRequest{Name: "a b", Value: []byte("v")}, "name"},
		{"a control character", &controlplanev1.PutSecretRequest{Name: "a\x1bb", Value: []byte("v")}, "name"},
		{"65 KiB", &controlplanev1.PutSecretRequest{Name: "big", Value: bytes.Repeat([]byte{'x'}, 65<<10)}, "value"},
		{"no value", &controlplanev1.PutSecretRequest{Name: "empty"}, "value"},
	} {
		_, err := owner.PutSecret(ctx, connect.NewRequest(tc.req))
		wantCode(t, tc.what, err, connect.CodeInvalidArgument)
		if f := fieldsOf(err); !slices.Equal(f, []string{tc.field}) {
			t.Errorf("%s: the error names %v, want %s", tc.what, f, tc.field)
		}
	}
	list, err := owner.ListSecrets(ctx, connect.NewRequest(&controlplanev1.ListSecretsRequest{IncludeDeleted: true}))
	if err != nil || len(list.Msg.GetSecrets()) != 1 {
		t.Errorf("after the refused puts: %v, %v", list, err)
	}
}

// TestSecretValuesStayOutOfEverything puts and reveals a secret, then looks for its
// value, in clear, hex and base64, in a pg_dump of the database, the daemon's log at
// debug level, the audit log and /metrics.
func TestSecretValuesStayOutOfEverything(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	dbURL := storetest.URL(t)
	td := startDaemonLogging(t, &logs, "--database-url", dbURL, "--data-dir", t.TempDir(), "--log-level", "debug")
	ctx := t.Context()
	owner := td.secretsClient(td.owner)
	const value = "sk-test-7f3a9c1e5b2d"
	for _, name := range []string{"openai", "copy"} {
		if _, err := owner.PutSecret(ctx, connect.NewRequest(&controlplanev1.PutSecretRequest{Name: name, Value: []byte(value), Description: new(string)})); err != nil {
			t.Fatal(err)
		}
	}
	res, err := owner.RevealSecret(ctx, connect.NewRequest(&controlplanev1.RevealSecretRequest{Name: "openai", Reason: "test"}))
	if err != nil || string(res.Msg.GetValue()) != value {
		t.Fatalf("reveal: %v, %v", res, err)
	}
	// A reveal that fails after decrypting nothing, and a destroy, log and audit too.
	_, _ = owner.RevealSecret(ctx, connect.NewRequest(&controlplanev1.RevealSecretRequest{Name: "openai", Version: 9, Reason: "test"}))
	if _, err := owner.DestroySecretVersion(ctx, connect.NewRequest(&controlplanev1.DestroySecretVersionRequest{Name: "copy", Version: 1})); err != nil {
		t.Fatal(err)
	}
	forms := map[string]string{
		"clear":      value,
		"hex":        hex.EncodeToString([]byte(value)),
		"base64":     base64.StdEncoding.EncodeToString([]byte(value)),
		"base64 raw": base64.RawStdEncoding.EncodeToString([]byte(value))[:16],
	}
	absent := func(where, text string) {
		t.Helper()
		for form, s := range forms {
			if strings.Contains(strings.ToLower(text), strings.ToLower(s)) {
				t.Errorf("the value (%s) is in %s", form, where)
			}
		}
	}

	dump, err := exec.CommandContext(ctx, pgDump(t), "--data-only", "--inserts", dbURL).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if !strings.Contains(string(dump), "INSERT INTO public.secret_versions") {
		t.Fatalf("the dump holds no secret_versions rows:\n%s", dump)
	}
	absent("the pg_dump", string(dump))

	auditRows := auditRowsText(t, dbURL)
	if !strings.Contains(auditRows, "RevealSecret") {
		t.Fatalf("the audit log holds no reveal:\n%s", auditRows)
	}
	absent("the audit log", auditRows)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, td.baseURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	mres, err := td.h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(mres.Body)
	mres.Body.Close()
	if err != nil || !strings.Contains(string(metrics), "SecretService") {
		t.Fatalf("/metrics: %v, no SecretService line:\n%s", err, metrics)
	}
	absent("/metrics", string(metrics))

	td.stop(t)
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatal("the daemon logged nothing at debug level")
	}
	absent("the daemon's log", logs.String())
}

// auditRowsText returns every row of audit_events of the database at dbURL, as text.
func auditRowsText(t *testing.T, dbURL string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows string
	if err := conn.QueryRow(t.Context(), `select coalesce(string_agg(e::text, E'\n'), '') from audit_events e`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// pgDump returns the pg_dump next to the PostgreSQL server: on PATH, or the newest under
// /usr/lib/postgresql.
func pgDump(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("pg_dump"); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
	if len(found) == 0 {
		t.Fatal("pg_dump is neither on PATH nor under /usr/lib/postgresql/*/bin: install the PostgreSQL client")
	}
	slices.Sort(found)
	return found[len(found)-1]
}
