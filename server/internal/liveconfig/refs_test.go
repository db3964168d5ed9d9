package liveconfig_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/liveconfig"
	"github.com/palyra/palyra/server/internal/vault"
)

const apiKey = "compat.providers.openai.api_key"

// withVault starts a live configuration over the bootstrap configuration that args
// give, on a database of its own, and a vault whose delete and destroy ask it for the
// settings that refer to a secret, as palyrad wires them; the vault holds the secrets
// of puts (name, value), a version per pair.
func withVault(t *testing.T, args []string, puts ...string) (*bundle, *liveconfig.Service, *vault.Vault) {
	t.Helper()
	b := setup(t)
	live := b.replica(t, args...)
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.New(vault.Options{Store: b.store, Keys: ring, Referrers: live})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(puts); i += 2 {
		if _, err := v.Put(t.Context(), vault.PutRequest{Name: puts[i], Value: []byte(puts[i+1]), By: "token:w"}); err != nil {
			t.Fatal(err)
		}
	}
	return b, live, v
}

// TestSecretReferencesCheckedWhenSet: a reference is refused, naming the key (and the
// secret when there is one), when it is malformed, a plain key, or names a secret or a
// version that cannot be used; nothing changes. A valid one is stored and shown as
// written, in the effective value and the revision.
func TestSecretReferencesCheckedWhenSet(t *testing.T) {
	t.Parallel()
	_, live, v := withVault(t, nil, "openai", "sk-one", "openai", "sk-two", "deleted", "x")
	ctx := t.Context()
	if _, _, err := v.Delete(ctx, "deleted", "token:d", false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Destroy(ctx, "openai", 1, "token:d", false); err != nil {
		t.Fatal(err)
	}
	for value, words := range map[string][]string{
		"secret:missing":    {apiKey, `secret "missing" does not exist`},
		"secret:deleted":    {apiKey, `secret "deleted" is deleted`},
		"secret:openai@1":   {apiKey, `version 1 of secret "openai" was destroyed`},
		"secret:openai@7":   {apiKey, `secret "openai" has no version 7`},
		"secret:open ai":    {apiKey, "malformed secret reference"},
		"secret:openai@one": {apiKey, "malformed secret reference"},
		"sk-two":            {apiKey, "palyra secrets set", "secret:NAME"},
	} {
		change := liveconfig.Change{Set: []liveconfig.KeyValue{text(apiKey, value)}}
		_, _, err := live.Validate(ctx, change, nil)
		e := wantKind(t, err, errdefs.Invalid, words...)
		if fields := e.FieldViolations(); len(fields) != 1 || fields[0].Field != apiKey {
			t.Errorf("%s: violations %+v", value, fields)
		}
		_, _, err = live.Update(ctx, "token:o", "test", change, rev(0))
		wantKind(t, err, errdefs.Invalid, words...)
		if strings.Contains(err.Error(), "sk-two") {
			t.Errorf("the error holds the plain key: %v", err)
		}
	}
	// With other problems, every one is reported.
	_, _, err := live.Validate(ctx, liveconfig.Change{Set: []liveconfig.KeyValue{text(apiKey, "secret:missing"), text("log.level", "loud")}}, nil)
	wantKind(t, err, errdefs.Invalid, apiKey, "missing", "log.level")
	if snap := live.Current(); snap.Revision != 0 || len(snap.Config.Compat.Providers) != 0 {
		t.Fatalf("the refusals changed the configuration: revision %d, %+v", snap.Revision, snap.Config.Compat.Providers)
	}

	r, diffs, err := live.Update(ctx, "token:o", "openai", liveconfig.Change{Set: []liveconfig.KeyValue{
		text(apiKey, "secret:openai"), text("compat.providers.openai.base_url", "https://api.openai.com/v1"),
	}}, rev(0))
	if err != nil || r.Revision != 1 || len(diffs) != 2 {
		t.Fatalf("a valid reference: %+v %+v %v", r, diffs, err)
	}
	if got := live.Config().Value(apiKey).Text; got != "secret:openai" {
		t.Errorf("effective value %q", got)
	}
	_, changes, err := live.GetRevision(ctx, 1)
	if err != nil || changes[0].Key != apiKey || textOf(changes[0].New) != "secret:openai" {
		t.Errorf("revision 1: %+v, %v", changes, err)
	}
	if _, _, err := live.Update(ctx, "token:o", "pin", liveconfig.Change{Set: []liveconfig.KeyValue{text(apiKey, "secret:openai@2")}}, rev(1)); err != nil {
		t.Errorf("a pinned version: %v", err)
	}
}

// TestRollbackChecksReferences: a rollback to a revision whose reference names a secret
// that is gone is refused as a change would be.
func TestRollbackChecksReferences(t *testing.T) {
	t.Parallel()
	_, live, v := withVault(t, nil, "openai", "sk")
	ctx := t.Context()
	if _, _, err := live.Update(ctx, "token:o", "", liveconfig.Change{Set: []liveconfig.KeyValue{text(apiKey, "secret:openai")}}, rev(0)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := live.Update(ctx, "token:o", "", liveconfig.Change{Unset: []string{apiKey}}, rev(1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Delete(ctx, "openai", "token:d", false); err != nil {
		t.Fatalf("delete once nothing refers to it: %v", err)
	}
	_, _, err := live.Rollback(ctx, "token:o", "", 1, rev(2))
	wantKind(t, err, errdefs.Invalid, apiKey, `secret "openai" is deleted`)
	if got := live.Current().Revision; got != 2 {
		t.Errorf("revision %d after the refused rollback", got)
	}
}

// TestReferencedSecretsCannotBeRemoved: delete of a secret a setting refers to, and
// destroy of a version one uses, are refused naming the settings, unless forced; the
// file's values count as much as the stored ones.
func TestReferencedSecretsCannotBeRemoved(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, "[compat.providers.local]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"secret:shared@1\"\n")
	_, live, v := withVault(t, []string{"--config", file}, "openai", "sk-1", "openai", "sk-2", "openai", "sk-3", "shared", "s-1", "free", "f")
	ctx := t.Context()
	if _, _, err := live.Update(ctx, "token:o", "", liveconfig.Change{Set: []liveconfig.KeyValue{
		text(apiKey, "secret:openai"), text("compat.providers.other.api_key", "secret:openai@2"),
	}}, rev(0)); err != nil {
		t.Fatal(err)
	}

	_, _, err := v.Delete(ctx, "openai", "token:d", false)
	e := wantKind(t, err, errdefs.FailedPrecondition, apiKey, "compat.providers.other.api_key", "--force")
	if e.Reason != vault.ReasonReferenced || e.Metadata[vault.MetadataReferredBy] != "compat.providers.openai.api_key,compat.providers.other.api_key" {
		t.Errorf("error info %q %v", e.Reason, e.Metadata)
	}
	_, _, err = v.Delete(ctx, "shared", "token:d", false)
	wantKind(t, err, errdefs.FailedPrecondition, "compat.providers.local.api_key")
	// Versions: the pinned one, and the latest for the unpinned reference.
	_, _, err = v.Destroy(ctx, "openai", 2, "token:d", false)
	wantKind(t, err, errdefs.FailedPrecondition, "version 2", "compat.providers.other.api_key")
	_, _, err = v.Destroy(ctx, "openai", 3, "token:d", false)
	wantKind(t, err, errdefs.FailedPrecondition, "version 3", apiKey)
	if _, referred, err := v.Destroy(ctx, "openai", 1, "token:d", false); err != nil || len(referred) != 0 {
		t.Errorf("destroy of a version nothing uses: %v, %v", referred, err)
	}
	if s, err := v.Get(ctx, "openai"); err != nil || s.DeletedAt != nil || s.Versions[0].DestroyedAt != nil || s.Versions[1].DestroyedAt != nil {
		t.Fatalf("the refusals changed the secret: %+v, %v", s, err)
	}
	if _, referred, err := v.Delete(ctx, "free", "token:d", false); err != nil || len(referred) != 0 {
		t.Errorf("delete of a secret nothing refers to: %v, %v", referred, err)
	}

	s, referred, err := v.Destroy(ctx, "openai", 2, "token:d", true)
	if err != nil || !slices.Equal(referred, []string{"compat.providers.other.api_key"}) || s.Versions[1].DestroyedAt == nil {
		t.Fatalf("forced destroy: %v, %v", referred, err)
	}
	s, referred, err = v.Delete(ctx, "openai", "token:d", true)
	if err != nil || !slices.Equal(referred, []string{apiKey, "compat.providers.other.api_key"}) || s.DeletedAt == nil {
		t.Fatalf("forced delete: %v, %v", referred, err)
	}
	// The references stay as written; using them now fails cleanly.
	if got := live.Config().Value(apiKey).Text; got != "secret:openai" {
		t.Errorf("the reference after the delete: %q", got)
	}
	for _, r := range live.Config().SecretRefs() {
		if r.Ref.Name != "openai" {
			continue
		}
		if _, err := v.Resolve(ctx, r.Ref); errdefs.KindOf(err) != errdefs.FailedPrecondition {
			t.Errorf("resolve %s after the delete: %v", r.Ref, err)
		}
	}
}

// TestReferenceAndDeleteCannotBothWin: a change that adds a reference to a secret and
// the delete of that secret, both waiting on the configuration's lock, cannot both
// succeed, whichever gets it first.
func TestReferenceAndDeleteCannotBothWin(t *testing.T) {
	t.Parallel()
	b, live, v := withVault(t, nil, "openai", "sk")
	ctx := t.Context()

	// Hold the lock, so that both calls queue behind it.
	holder, err := pgx.Connect(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock(hashtextextended('palyra.config', 0))"); err != nil {
		t.Fatal(err)
	}
	var (
		wg                   sync.WaitGroup
		updateErr, deleteErr error
	)
	wg.Go(func() {
		_, _, updateErr = live.Update(ctx, "token:o", "", liveconfig.Change{Set: []liveconfig.KeyValue{text(apiKey, "secret:openai")}}, nil)
	})
	wg.Go(func() { _, _, deleteErr = v.Delete(ctx, "openai", "token:d", false) })
	eventually.True(t, "both wait for the configuration's lock", func() bool {
		var waiting int
		err := b.store.Pool().QueryRow(ctx, "select count(*) from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())").Scan(&waiting)
		return err == nil && waiting == 2
	})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	switch {
	case updateErr == nil && deleteErr == nil:
		t.Fatal("both the reference and the delete of its secret succeeded")
	case updateErr == nil:
		wantKind(t, deleteErr, errdefs.FailedPrecondition, apiKey)
	case deleteErr == nil:
		wantKind(t, updateErr, errdefs.Invalid, apiKey, "deleted")
	default:
		t.Fatalf("both failed: %v; %v", updateErr, deleteErr)
	}
}

// writeConfig writes palyrad's configuration file.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := t.TempDir() + "/palyrad.toml"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
