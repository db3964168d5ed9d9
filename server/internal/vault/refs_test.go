package vault_test

import (
	"testing"

	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/vault"
)

// TestResolve: a reference resolves to its pinned version's value, else the latest's,
// without a reveal's stamp; once the secret or the version is gone it is
// FailedPrecondition naming it, never another value. The vault caches resolutions, as
// palyrad's does.
func TestResolve(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.v = b.listening(t).v
	b.put(t, "openai", "sk-one")
	b.put(t, "openai", "sk-two")
	resolve := func(ref string) (string, error) {
		t.Helper()
		r, err := secretref.Parse(ref)
		if err != nil {
			t.Fatal(err)
		}
		v, err := b.v.Resolve(ctx, r)
		return string(v), err
	}
	if got, err := resolve("secret:openai"); err != nil || got != "sk-two" {
		t.Errorf("latest: %q, %v", got, err)
	}
	if got, err := resolve("secret:openai@1"); err != nil || got != "sk-one" {
		t.Errorf("pinned: %q, %v", got, err)
	}
	if s, err := b.v.Get(ctx, "openai"); err != nil || s.LastReadAt != nil {
		t.Errorf("a server-side use stamped the secret's last read: %+v, %v", s, err)
	}
	_, err := resolve("secret:openai@3")
	wantKind(t, "a version that does not exist", err, errdefs.FailedPrecondition, "secret:openai@3", "no version 3")
	_, err = resolve("secret:missing")
	wantKind(t, "a secret that does not exist", err, errdefs.FailedPrecondition, `"missing" does not exist`)

	if _, _, err := b.v.Destroy(ctx, "openai", 1, "token:x", false); err != nil {
		t.Fatal(err)
	}
	_, err = resolve("secret:openai@1")
	wantKind(t, "a destroyed version", err, errdefs.FailedPrecondition, "version 1", "destroyed")
	if got, err := resolve("secret:openai"); err != nil || got != "sk-two" {
		t.Errorf("latest after destroying version 1: %q, %v", got, err)
	}
	if _, _, err := b.v.Delete(ctx, "openai", "token:d", false); err != nil {
		t.Fatal(err)
	}
	got, err := resolve("secret:openai")
	wantKind(t, "a deleted secret", err, errdefs.FailedPrecondition, "deleted")
	if got != "" {
		t.Errorf("resolved %q from a deleted secret", got)
	}
	if _, err := b.v.Resolve(ctx, secretref.Ref{Name: "a/b"}); errdefs.KindOf(err) != errdefs.Invalid {
		t.Errorf("a malformed reference: %v", err)
	}
}

// TestResolveSeesItsOwnChangesAtOnce: the replica that changes a secret resolves the
// change as soon as the change returns, without waiting for a notification (there is
// none here: the triggers are disabled).
func TestResolveSeesItsOwnChangesAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.v = b.listening(t).v
	b.sql(t, "alter table secrets disable trigger secrets_notify",
		"alter table secret_versions disable trigger secret_versions_notify")
	b.put(t, "k", "one")
	want := func(what, ref, value string) {
		t.Helper()
		if got, err := resolve(t, b.v, ref); err != nil || got != value {
			t.Errorf("%s: %s resolves to %q, %v; want %q", what, ref, got, err, value)
		}
	}
	want("the first put", "secret:k", "one")
	want("the first put", "secret:k@1", "one")
	b.put(t, "k", "two")
	want("a put", "secret:k", "two")
	want("a put", "secret:k@1", "one")
	if _, _, err := b.v.Destroy(ctx, "k", 1, "token:w", false); err != nil {
		t.Fatal(err)
	}
	_, err := resolve(t, b.v, "secret:k@1")
	wantKind(t, "a destroyed version", err, errdefs.FailedPrecondition, "destroyed")
	if _, _, err := b.v.Delete(ctx, "k", "token:w", false); err != nil {
		t.Fatal(err)
	}
	_, err = resolve(t, b.v, "secret:k")
	wantKind(t, "a deleted secret", err, errdefs.FailedPrecondition, "deleted")
	if _, err := b.v.Restore(ctx, "k", "token:w"); err != nil {
		t.Fatal(err)
	}
	want("a restore", "secret:k", "two")
}

// TestCheckRef: the check made when a setting is set says, as Invalid naming the
// secret, what makes a reference unusable.
func TestCheckRef(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.put(t, "k", "v1")
	b.put(t, "k", "v2")
	b.put(t, "gone", "g")
	if _, _, err := b.v.Destroy(ctx, "k", 1, "token:x", false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.v.Delete(ctx, "gone", "token:x", false); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[secretref.Ref]string{
		{Name: "k"}:                "",
		{Name: "k", Version: 2}:    "",
		{Name: "k", Version: 1}:    "destroyed",
		{Name: "k", Version: 9}:    "no version 9",
		{Name: "gone"}:             `"gone" is deleted`,
		{Name: "nope"}:             `"nope" does not exist`,
		{Name: "nope", Version: 1}: `"nope" does not exist`,
	} {
		err := vault.CheckRef(ctx, b.store, ref)
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", ref, err)
			}
			continue
		}
		wantKind(t, ref.String(), err, errdefs.Invalid, want)
	}
}
