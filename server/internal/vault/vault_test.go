package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/ratelimit"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
	"github.com/palyra/palyra/server/internal/vault"
)

// testEpoch is the start of every test clock.
var testEpoch = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

// testBundle is a vault on a database of its own, with one master key.
type testBundle struct {
	url   string
	store *store.Store
	clock *testclock.Clock
	kek   *identity.KeyEncryptionKey
	v     *vault.Vault
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{url: storetest.URL(t), clock: testclock.New(testEpoch), kek: newKEK(t)}
	b.store = openStore(t, b.url)
	b.v = b.replica(t, identity.NewKeyring(b.kek), nil)
	return b
}

// replica returns a vault on the bundle's database with keys, as another replica has.
func (b *testBundle) replica(t *testing.T, keys *identity.Keyring, limit *ratelimit.Keyed) *vault.Vault {
	t.Helper()
	v, err := vault.New(vault.Options{Store: openStore(t, b.url), Keys: keys, RevealLimit: limit, Now: b.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{URL: url})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// newKEK returns the key-encryption key of a new master key.
func newKEK(t *testing.T) *identity.KeyEncryptionKey {
	t.Helper()
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatal(err)
	}
	return ring.Primary()
}

// sql runs statements on the test database as the server's superuser, to tamper with
// rows behind the vault's back (past its trigger).
func (b *testBundle) sql(t *testing.T, stmts ...string) {
	t.Helper()
	storetest.AsSuperuser(t, b.url, stmts...)
}

func (b *testBundle) put(t *testing.T, name, value string) vault.Secret {
	t.Helper()
	s, err := b.v.Put(t.Context(), vault.PutRequest{Name: name, Value: []byte(value), By: "token:writer"})
	if err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
	return s
}

func (b *testBundle) reveal(t *testing.T, name string, version int64) (string, error) {
	t.Helper()
	r, err := b.v.Reveal(t.Context(), name, version, "test", "token:owner")
	return string(r.Value), err
}

func wantKind(t *testing.T, what string, err error, kind errdefs.Kind, contains ...string) {
	t.Helper()
	if errdefs.KindOf(err) != kind {
		t.Errorf("%s: got %v (%s), want %s", what, err, errdefs.KindOf(err), kind)
		return
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("%s: %q does not say %q", what, err, c)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestPutVersionsAndCheckAndSet puts versions, reveals each, and checks that a stale
// expected version is Aborted, names the current version and writes nothing.
func TestPutVersionsAndCheckAndSet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	s, err := b.v.Put(ctx, vault.PutRequest{Name: "openai", Value: []byte("sk-one"), Description: ptr("the API key"),
		Labels: map[string]string{"team": "ml"}, ExpectedVersion: ptr(int64(0)), By: "token:a"})
	if err != nil {
		t.Fatal(err)
	}
	if s.LatestVersion != 1 || s.Description != "the API key" || s.Labels["team"] != "ml" || s.CreatedBy != "token:a" ||
		len(s.Versions) != 1 || s.Versions[0].KEKID != b.kek.ID() || !s.CreatedAt.Equal(testEpoch) {
		t.Fatalf("after the first put: %+v", s)
	}
	b.clock.Set(testEpoch.Add(time.Minute))
	s, err = b.v.Put(ctx, vault.PutRequest{Name: "openai", Value: []byte("sk-two"), ExpectedVersion: ptr(int64(1)), By: "token:b"})
	if err != nil {
		t.Fatal(err)
	}
	if s.LatestVersion != 2 || s.Description != "the API key" || s.Labels["team"] != "ml" || s.UpdatedBy != "token:b" ||
		len(s.Versions) != 2 || s.Versions[0].Number != 2 || s.Versions[0].CreatedBy != "token:b" || !s.UpdatedAt.Equal(testEpoch.Add(time.Minute)) {
		t.Fatalf("after the second put: %+v", s)
	}

	// Stale: expected 1 while at 2; expected 0 while it exists; expected 3 for a new one.
	for _, tc := range []struct {
		name     string
		expected int64
		says     string
	}{
		{"openai", 1, "at version 2, not 1"},
		{"openai", 0, "at version 2, not 0"},
		{"other", 3, "does not exist"},
	} {
		_, err := b.v.Put(ctx, vault.PutRequest{Name: tc.name, Value: []byte("sk-stale"), Description: ptr("changed"),
			ExpectedVersion: ptr(tc.expected), By: "token:c"})
		wantKind(t, fmt.Sprintf("%s expecting %d", tc.name, tc.expected), err, errdefs.Aborted, tc.says)
		var stale *vault.StaleVersionError
		if !errors.As(err, &stale) {
			t.Errorf("not a *StaleVersionError: %T", err)
		}
	}
	got, err := b.v.Get(ctx, "openai")
	if err != nil || got.LatestVersion != 2 || got.Description != "the API key" || len(got.Versions) != 2 {
		t.Errorf("after the stale puts: %+v, %v", got, err)
	}
	if _, err := b.v.Get(ctx, "other"); errdefs.KindOf(err) != errdefs.NotFound {
		t.Errorf("a stale put created the secret: %v", err)
	}
	for version, want := range map[int64]string{0: "sk-two", 1: "sk-one", 2: "sk-two"} {
		if got, err := b.reveal(t, "openai", version); err != nil || got != want {
			t.Errorf("reveal version %d: %q, %v; want %q", version, got, err, want)
		}
	}
	_, err = b.reveal(t, "openai", 3)
	wantKind(t, "reveal version 3", err, errdefs.NotFound, "no version 3", "latest is 2")
	_, err = b.reveal(t, "nope", 0)
	wantKind(t, "reveal a missing secret", err, errdefs.NotFound, `"nope"`)
}

// TestConcurrentPutsNumberVersionsWithoutGaps puts from two replicas at once.
func TestConcurrentPutsNumberVersionsWithoutGaps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := b.replica(t, identity.NewKeyring(b.kek), nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		v := b.v
		if i%2 == 1 {
			v = other
		}
		wg.Go(func() {
			_, err := v.Put(t.Context(), vault.PutRequest{Name: "shared", Value: fmt.Appendf(nil, "v%d", i), By: "token:w"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	s, err := b.v.Get(t.Context(), "shared")
	if err != nil || s.LatestVersion != 20 || len(s.Versions) != 20 {
		t.Fatalf("after 20 puts: %+v, %v", s, err)
	}
	for i, v := range s.Versions {
		if v.Number != int64(20-i) {
			t.Errorf("version %d is numbered %d", 20-i, v.Number)
		}
	}
}

// TestBadInputChangesNothing checks names, values and reasons that are refused.
func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	for _, name := range []string{"", "a/b", "a b", "tab\tname", "nul\x00", "esc\x1b[2J", ".hidden", "-dash", "é", strings.Repeat("a", 129)} {
		_, err := b.v.Put(ctx, vault.PutRequest{Name: name, Value: []byte("x"), By: "token:w"})
		wantKind(t, fmt.Sprintf("name %q", name), err, errdefs.Invalid, "name")
		var e *errdefs.Error
		if errors.As(err, &e) && e.Field != "name" {
			t.Errorf("name %q: the error names field %q", name, e.Field)
		}
	}
	if _, err := b.v.Put(ctx, vault.PutRequest{Name: strings.Repeat("a", 128), Value: []byte("x"), By: "token:w"}); err != nil {
		t.Errorf("a 128-character name: %v", err)
	}
	for size, ok := range map[int]bool{0: false, 1: true, vault.MaxValueBytes: true, vault.MaxValueBytes + 1: false, 65 << 10: false} {
		_, err := b.v.Put(ctx, vault.PutRequest{Name: "sized", Value: bytes.Repeat([]byte{'v'}, size), By: "token:w"})
		if ok != (err == nil) {
			t.Errorf("a value of %d bytes: %v", size, err)
		}
		var e *errdefs.Error
		if !ok && (!errors.As(err, &e) || e.Field != "value" || e.Kind != errdefs.Invalid) {
			t.Errorf("a value of %d bytes: %v, want Invalid naming value", size, err)
		}
	}
	s, err := b.v.Get(ctx, "sized")
	if err != nil || s.LatestVersion != 2 {
		t.Errorf("after two good sizes: %+v, %v", s, err)
	}
	for _, reason := range []string{"", "   ", "why\x1b[31m", "new\nline", strings.Repeat("r", 257), "bad \xff utf-8"} {
		_, err := b.v.Reveal(ctx, "sized", 0, reason, "token:owner")
		wantKind(t, fmt.Sprintf("reason %q", reason), err, errdefs.Invalid, "reason")
	}
	if s, _ := b.v.Get(ctx, "sized"); s.LastReadAt != nil {
		t.Errorf("a refused reveal counted as a read: %v", s.LastReadAt)
	}
	if _, err := b.v.Reveal(ctx, "sized", 0, strings.Repeat("r", 256), "token:owner"); err != nil {
		t.Errorf("a 256-character reason: %v", err)
	}
}

// TestRevealRecordsTheRead checks the last read time and reader, and the rate limit.
func TestRevealRecordsTheRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	v := b.replica(t, identity.NewKeyring(b.kek), ratelimit.NewKeyed(ratelimit.Options{Burst: 2, PerMinute: 1, Now: b.clock.Now}))
	b.put(t, "db", "hunter2")
	b.clock.Set(testEpoch.Add(time.Hour))
	for range 2 {
		r, err := v.Reveal(t.Context(), "db", 0, "deploy", "token:alice")
		if err != nil || string(r.Value) != "hunter2" || r.Version != 1 || r.Name != "db" {
			t.Fatalf("reveal: %+v, %v", r, err)
		}
	}
	_, err := v.Reveal(t.Context(), "db", 0, "deploy", "token:alice")
	wantKind(t, "a third reveal", err, errdefs.ResourceExhausted, "token:alice")
	if _, err := v.Reveal(t.Context(), "db", 0, "deploy", "token:bob"); err != nil {
		t.Errorf("another caller is limited too: %v", err)
	}
	s, err := b.v.Get(t.Context(), "db")
	if err != nil || s.LastReadAt == nil || !s.LastReadAt.Equal(testEpoch.Add(time.Hour)) || s.LastReadBy != "token:bob" {
		t.Errorf("last read: %+v, %v", s, err)
	}
}

// TestDeleteRestoreAndDestroy checks soft delete, restore and the destruction of a
// version, in the API and in the rows.
func TestDeleteRestoreAndDestroy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.put(t, "keep", "k1")
	b.put(t, "gone", "g1")
	b.put(t, "gone", "g2")
	s, _, err := b.v.Delete(ctx, "gone", "token:d", false)
	if err != nil || s.DeletedAt == nil || s.DeletedBy != "token:d" {
		t.Fatalf("delete: %+v, %v", s, err)
	}
	_, _, err = b.v.Delete(ctx, "gone", "token:d", false)
	wantKind(t, "delete twice", err, errdefs.FailedPrecondition, "already deleted")
	names := func(includeDeleted bool) []string {
		list, next, err := b.v.List(ctx, 0, "", includeDeleted)
		if err != nil || next != "" {
			t.Fatalf("list: %v %q", err, next)
		}
		var out []string
		for _, s := range list {
			out = append(out, s.Name)
		}
		return out
	}
	if got := names(false); !slices.Equal(got, []string{"keep"}) {
		t.Errorf("listed after the delete: %v", got)
	}
	if got := names(true); !slices.Equal(got, []string{"gone", "keep"}) {
		t.Errorf("listed with the deleted: %v", got)
	}
	_, err = b.reveal(t, "gone", 0)
	wantKind(t, "reveal a deleted secret", err, errdefs.FailedPrecondition, "deleted")
	_, err = b.v.Put(ctx, vault.PutRequest{Name: "gone", Value: []byte("g3"), By: "token:w"})
	wantKind(t, "put to a deleted secret", err, errdefs.FailedPrecondition, "restore")
	if s, err := b.v.Restore(ctx, "gone", "token:r"); err != nil || s.DeletedAt != nil || s.LatestVersion != 2 {
		t.Fatalf("restore: %+v, %v", s, err)
	}
	_, err = b.v.Restore(ctx, "gone", "token:r")
	wantKind(t, "restore twice", err, errdefs.FailedPrecondition, "not deleted")
	if got, err := b.reveal(t, "gone", 0); err != nil || got != "g2" {
		t.Errorf("reveal after the restore: %q, %v", got, err)
	}

	s, _, err = b.v.Destroy(ctx, "gone", 1, "token:x", false)
	if err != nil || s.Versions[1].DestroyedAt == nil || s.Versions[1].DestroyedBy != "token:x" || s.Versions[1].KEKID != "" || s.Versions[0].DestroyedAt != nil {
		t.Fatalf("destroy: %+v, %v", s, err)
	}
	_, err = b.reveal(t, "gone", 1)
	wantKind(t, "reveal a destroyed version", err, errdefs.FailedPrecondition, "destroyed")
	_, _, err = b.v.Destroy(ctx, "gone", 1, "token:x", false)
	wantKind(t, "destroy twice", err, errdefs.FailedPrecondition, "already destroyed")
	_, _, err = b.v.Destroy(ctx, "gone", 3, "token:x", false)
	wantKind(t, "destroy a version that does not exist", err, errdefs.NotFound, "no version 3")
	if got, err := b.reveal(t, "gone", 2); err != nil || got != "g2" {
		t.Errorf("the other version: %q, %v", got, err)
	}
	// The row holds nothing of the value any more, and the trigger keeps it so.
	conn, err := pgx.Connect(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `select count(*) from secret_versions v join secrets s on s.id = v.secret_id
		where s.name = 'gone' and v.version = 1 and v.ciphertext is null and v.wrapped_data_key is null and v.kek_id is null`).Scan(&n)
	if err != nil || n != 1 {
		t.Errorf("the destroyed row: %d, %v", n, err)
	}
	_, err = conn.Exec(ctx, `update secret_versions set destroyed_at = null, destroyed_by = null, kek_id = 'x', data_key_nonce = 'x',
		wrapped_data_key = 'x', value_nonce = 'x', ciphertext = 'x' where version = 1 and destroyed_at is not null`)
	if err == nil || !strings.Contains(err.Error(), "is destroyed") {
		t.Errorf("undoing a destroy: %v, want the trigger's refusal", err)
	}
	_, err = conn.Exec(ctx, `update secret_versions set ciphertext = ciphertext || 'x'::bytea where destroyed_at is null`)
	if err == nil || !strings.Contains(err.Error(), "never changes") {
		t.Errorf("changing a sealed value: %v, want the trigger's refusal", err)
	}
}

// TestMovedCiphertextIsCorruption moves a ciphertext, then a wrapped data key, then
// both, from one row to another: each reveal is DataLoss, never the other value.
func TestMovedCiphertextIsCorruption(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, columns, part string
	}{
		{"ciphertext", "value_nonce, ciphertext", "value"},
		{"wrapped data key", "data_key_nonce, wrapped_data_key", "data key"},
		{"everything", "kek_id, data_key_nonce, wrapped_data_key, value_nonce, ciphertext", "data key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.put(t, "alpha", "alpha-value-1")
			b.put(t, "beta", "beta-value-1")
			b.put(t, "beta", "beta-value-2")
			// alpha v1 into beta v1 (another secret), beta v2 into alpha v1 (another
			// secret and version), as someone with write access to the database might.
			set := func(src, dst string) string {
				cols := strings.Split(tc.columns, ", ")
				var assign []string
				for _, c := range cols {
					assign = append(assign, fmt.Sprintf("%s = src.%s", c, c))
				}
				return fmt.Sprintf(`update secret_versions dst set %s from secret_versions src
					join secrets ss on ss.id = src.secret_id, secrets ds
					where %s and ds.id = dst.secret_id and %s`, strings.Join(assign, ", "), src, dst)
			}
			b.sql(t, "alter table secret_versions disable trigger secret_versions_immutable",
				set("ss.name = 'alpha' and src.version = 1", "ds.name = 'beta' and dst.version = 1"),
				set("ss.name = 'beta' and src.version = 2", "ds.name = 'alpha' and dst.version = 1"))
			for _, row := range []struct {
				name    string
				version int64
			}{{"beta", 1}, {"alpha", 1}} {
				got, err := b.reveal(t, row.name, row.version)
				wantKind(t, fmt.Sprintf("%s v%d", row.name, row.version), err, errdefs.DataLoss, tc.part, "corrupt")
				if got != "" || strings.Contains(fmt.Sprint(err), "value-") {
					t.Errorf("%s v%d revealed %q / %v", row.name, row.version, got, err)
				}
			}
			if got, err := b.reveal(t, "beta", 2); err != nil || got != "beta-value-2" {
				t.Errorf("the untouched row: %q, %v", got, err)
			}
		})
	}
}

// TestReplicaWithoutTheKey checks that a replica lacking the row's key-encryption key
// refuses naming it, that a replica holding both keys reads every version, and that
// re-wrapping moves the data keys to the new key without touching the values.
func TestReplicaWithoutTheKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.put(t, "old", "sealed-under-the-old-key")
	newKEK := newKEK(t)
	onlyNew := b.replica(t, identity.NewKeyring(newKEK), nil)
	_, err := onlyNew.Reveal(ctx, "old", 0, "test", "token:o")
	wantKind(t, "a replica without the old key", err, errdefs.FailedPrecondition, b.kek.ID(), "master key")

	both := b.replica(t, identity.NewKeyring(newKEK, b.kek), nil)
	if _, err := both.Put(ctx, vault.PutRequest{Name: "new", Value: []byte("sealed-under-the-new-key"), By: "token:w"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"old": "sealed-under-the-old-key", "new": "sealed-under-the-new-key"} {
		if r, err := both.Reveal(ctx, name, 0, "test", "token:o"); err != nil || string(r.Value) != want {
			t.Errorf("%s with both keys: %q, %v", name, r.Value, err)
		}
	}
	_, err = b.reveal(t, "new", 0)
	wantKind(t, "the old replica reads the new version", err, errdefs.FailedPrecondition, newKEK.ID())

	var before []byte
	conn, err := pgx.Connect(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	readCiphertext := func() []byte {
		var c []byte
		if err := conn.QueryRow(ctx, `select ciphertext from secret_versions v join secrets s on s.id = v.secret_id where s.name = 'old'`).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	before = readCiphertext()
	rewrap := func(keys *identity.Keyring) (n int, err error) {
		err = b.store.InTx(ctx, func(tx *store.Tx) error {
			n, err = new(vault.DataKeys).RewrapBatch(ctx, tx, keys, 100)
			return err
		})
		return n, err
	}
	_, err = rewrap(identity.NewKeyring(newKEK))
	wantKind(t, "a re-wrap by a replica without the old key", err, errdefs.FailedPrecondition, b.kek.ID())
	n, err := rewrap(identity.NewKeyring(newKEK, b.kek))
	if err != nil || n != 1 {
		t.Fatalf("re-wrap: %d, %v", n, err)
	}
	if !bytes.Equal(readCiphertext(), before) {
		t.Error("re-wrapping changed the sealed value")
	}
	if r, err := onlyNew.Reveal(ctx, "old", 0, "test", "token:o"); err != nil || string(r.Value) != "sealed-under-the-old-key" {
		t.Errorf("the new key alone after the re-wrap: %q, %v", r.Value, err)
	}
	if n, err := rewrap(identity.NewKeyring(newKEK, b.kek)); err != nil || n != 0 {
		t.Errorf("a second re-wrap: %d, %v", n, err)
	}
}
