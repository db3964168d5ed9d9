package daemon_test

import (
	"encoding/base64"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestProviderSecretReferences runs issue 12's secret references through a real
// palyrad: a provider's api_key refers to a secret, is refused while the secret is
// missing, then shown as written in GetConfig and the revision; the provider's models
// are listed; a delete is refused naming the key, then forced naming it in the response
// and the audit log; and the secret's value is in none of GetConfig, the revision, the
// audit log or a pg_dump.
func TestProviderSecretReferences(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	dbURL := storetest.URL(t)
	td := startDaemonLogging(t, &logs, "--database-url", dbURL, "--data-dir", t.TempDir(), "--compat-model", "palyra-echo")
	ctx := t.Context()
	const (
		key   = "compat.providers.openai.api_key"
		value = "sk-test-4b1d9e7a2c"
	)
	cfg, secrets := td.configClient(td.owner), td.secretsClient(td.owner)

	_, err := td.setConfig(t, 0, key, "secret:openai")
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `secret "openai" does not exist`) || !slices.Equal(fieldsOf(err), []string{key}) {
		t.Fatalf("a reference to a missing secret: %v (fields %v)", err, fieldsOf(err))
	}
	_, err = td.setConfig(t, 0, key, value)
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "palyra secrets set") || strings.Contains(err.Error(), value) {
		t.Fatalf("a plain key: %v", err)
	}
	if _, err := secrets.PutSecret(ctx, connect.NewRequest(&controlplanev1.PutSecretRequest{Name: "openai", Value: []byte(value)})); err != nil {
		t.Fatal(err)
	}
	res, err := cfg.UpdateConfig(ctx, connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: key, Value: textValue("secret:openai")},
			{Key: "compat.providers.openai.base_url", Value: textValue("https://api.openai.example/v1")},
			{Key: "compat.providers.openai.models", Value: textValue("gpt-4o,mini=gpt-4o-mini")},
		}},
		ExpectedRevision: new(int64), Reason: "openai",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if ch := res.Msg.GetChanges()[0]; ch.GetKey() != key || ch.GetNewValue().GetText() != "secret:openai" || ch.GetNewEffective().GetText() != "secret:openai" {
		t.Errorf("the change: %v", ch)
	}
	s, _ := td.setting(t, key)
	if s.GetValue().GetText() != "secret:openai" || !s.GetSecretReference() || s.GetSource() != controlplanev1.ConfigSource_CONFIG_SOURCE_DATABASE {
		t.Errorf("GetConfig: %v", s)
	}
	all, err := cfg.GetConfig(ctx, connect.NewRequest(&controlplanev1.GetConfigRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	revision, err := cfg.GetConfigRevision(ctx, connect.NewRequest(&controlplanev1.GetConfigRevisionRequest{Revision: 1}))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := td.flagsClient(td.owner).SetFlag(ctx, connect.NewRequest(&accessv1.SetFlagRequest{Key: "compat_api", Enabled: true})); err != nil {
		t.Fatal(err)
	}
	list, err := compatv1connect.NewCompatServiceClient(td.client(td.owner), td.baseURL).ListModels(ctx, connect.NewRequest(&compatv1.ListModelsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var models []string
	for _, m := range list.Msg.GetModels() {
		models = append(models, m.GetId()+"/"+m.GetOwnedBy())
	}
	if !slices.Equal(models, []string{"palyra-echo/palyra", "gpt-4o/openai", "mini/openai"}) {
		t.Errorf("ListModels: %v", models)
	}

	_, err = secrets.DeleteSecret(ctx, connect.NewRequest(&controlplanev1.DeleteSecretRequest{Name: "openai"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "force") {
		t.Fatalf("delete of a referenced secret: %v", err)
	}
	_, err = secrets.DestroySecretVersion(ctx, connect.NewRequest(&controlplanev1.DestroySecretVersionRequest{Name: "openai", Version: 1}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), key) {
		t.Fatalf("destroy of the version a reference uses: %v", err)
	}
	del, err := secrets.DeleteSecret(ctx, connect.NewRequest(&controlplanev1.DeleteSecretRequest{Name: "openai", Force: true}))
	if err != nil || !slices.Equal(del.Msg.GetReferredBy(), []string{key}) || del.Msg.GetSecret().GetDeleteTime() == nil {
		t.Fatalf("forced delete: %v, %v", del, err)
	}

	auditRows := auditRowsText(t, dbURL)
	// A record's text doubles the quotes of the target.
	for _, want := range []string{`secret:openai referred_by:` + key, key + ` """" -> ""secret:openai""`} {
		if !strings.Contains(auditRows, want) {
			t.Errorf("the audit log does not say %q:\n%s", want, auditRows)
		}
	}
	dump, err := exec.CommandContext(ctx, pgDump(t), "--data-only", "--inserts", dbURL).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	for where, text := range map[string]string{
		"GetConfig": all.Msg.String(), "the revision": revision.Msg.String(), "the audit log": auditRows,
		"the pg_dump": string(dump), "the log": logs.String(),
	} {
		if strings.Contains(text, value) || strings.Contains(text, base64.StdEncoding.EncodeToString([]byte(value))) {
			t.Errorf("the secret's value is in %s", where)
		}
		if where != "the log" && !strings.Contains(text, "secret:openai") {
			t.Errorf("%s does not show the reference", where)
		}
	}
}
