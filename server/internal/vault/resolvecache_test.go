package vault_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/vault"
)

// listeningReplica is a vault as palyrad runs it: its own pool, a notification listener
// on vault.Channel, and Run.
type listeningReplica struct {
	v        *vault.Vault
	store    *store.Store
	listener *notify.Listener
	// app is the application_name of its LISTEN connection.
	app string
}

// listening starts a replica on the bundle's database with the bundle's key and waits
// until it caches resolutions. Everything stops when the test ends.
func (b *testBundle) listening(t *testing.T) *listeningReplica {
	t.Helper()
	r := &listeningReplica{store: openStore(t, b.url), app: "listener-" + ulid.Make().String()}
	cfg, err := pgx.ParseConfig(b.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = r.app
	listener := notify.New(notify.Options{Config: cfg, Channels: []string{vault.Channel}})
	r.listener = listener
	r.v, err = vault.New(vault.Options{Store: r.store, Keys: identity.NewKeyring(b.kek), Notify: listener, Now: b.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	var wg sync.WaitGroup
	wg.Go(func() { listener.Run(ctx) })
	wg.Go(func() { r.v.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	eventually.True(t, "the replica to cache resolutions", func() bool { return vault.Caching(r.v) })
	return r
}

// resolve resolves the reference ref on v.
func resolve(t *testing.T, v *vault.Vault, ref string) (string, error) {
	t.Helper()
	r, err := secretref.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	value, err := v.Resolve(t.Context(), r)
	return string(value), err
}

// resolvesTo waits until v resolves ref to want.
func resolvesTo(t *testing.T, what string, v *vault.Vault, ref, want string) {
	t.Helper()
	eventually.True(t, what, func() bool {
		got, err := resolve(t, v, ref)
		return err == nil && got == want
	})
}

// failsWith waits until resolving ref on v fails with FailedPrecondition saying says.
func failsWith(t *testing.T, what string, v *vault.Vault, ref, says string) {
	t.Helper()
	eventually.True(t, what, func() bool {
		_, err := resolve(t, v, ref)
		return errdefs.KindOf(err) == errdefs.FailedPrecondition && strings.Contains(err.Error(), says)
	})
}

// TestResolveFromMemory: a repeated resolution reads nothing. The replica's pool is
// closed after the first resolutions: the same references still resolve, another one
// cannot.
func TestResolveFromMemory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.put(t, "openai", "sk-one")
	b.put(t, "openai", "sk-two")
	r := b.listening(t)
	for _, ref := range []string{"secret:openai", "secret:openai@1"} {
		if _, err := resolve(t, r.v, ref); err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
	}
	r.store.Close()
	for ref, want := range map[string]string{"secret:openai": "sk-two", "secret:openai@1": "sk-one"} {
		if got, err := resolve(t, r.v, ref); err != nil || got != want {
			t.Errorf("%s from memory: %q, %v", ref, got, err)
		}
	}
	if _, err := resolve(t, r.v, "secret:openai@2"); err == nil {
		t.Error("a reference never resolved before resolves without the database")
	}
}

// TestResolveFailuresAreNotCached: a reference that cannot be used is read again at the
// next resolution, and resolves once the secret exists.
func TestResolveFailuresAreNotCached(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.listening(t)
	_, err := resolve(t, r.v, "secret:later")
	wantKind(t, "a secret that does not exist yet", err, errdefs.FailedPrecondition, "does not exist")
	if _, err := r.v.Put(t.Context(), vault.PutRequest{Name: "later", Value: []byte("v"), By: "token:w"}); err != nil {
		t.Fatal(err)
	}
	if got, err := resolve(t, r.v, "secret:later"); err != nil || got != "v" {
		t.Errorf("once it exists: %q, %v", got, err)
	}
}

// TestResolveSeesOtherReplicasChanges: what replica B changes (put, destroy, delete,
// restore), replica A, which resolved the references before, sees.
func TestResolveSeesOtherReplicasChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	a, other := b.listening(t), b.listening(t)
	if _, err := other.v.Put(ctx, vault.PutRequest{Name: "k", Value: []byte("one"), By: "token:w"}); err != nil {
		t.Fatal(err)
	}
	resolvesTo(t, "A to resolve the first version", a.v, "secret:k", "one")
	resolvesTo(t, "A to resolve version 1", a.v, "secret:k@1", "one")

	if _, err := other.v.Put(ctx, vault.PutRequest{Name: "k", Value: []byte("two"), By: "token:w"}); err != nil {
		t.Fatal(err)
	}
	resolvesTo(t, "A to resolve the latest to B's put", a.v, "secret:k", "two")
	if got, err := resolve(t, a.v, "secret:k@1"); err != nil || got != "one" {
		t.Errorf("a pinned version after a put: %q, %v", got, err)
	}

	if _, _, err := other.v.Destroy(ctx, "k", 1, "token:w", false); err != nil {
		t.Fatal(err)
	}
	failsWith(t, "A to refuse the version B destroyed", a.v, "secret:k@1", "destroyed")

	if _, _, err := other.v.Delete(ctx, "k", "token:w", false); err != nil {
		t.Fatal(err)
	}
	failsWith(t, "A to refuse the secret B deleted", a.v, "secret:k", "deleted")
	failsWith(t, "A to refuse a pinned version of the secret B deleted", a.v, "secret:k@2", "deleted")

	if _, err := other.v.Restore(ctx, "k", "token:w"); err != nil {
		t.Fatal(err)
	}
	resolvesTo(t, "A to resolve the secret B restored", a.v, "secret:k", "two")
}

// TestResolveAfterALostNotification: with the notifications of secret changes lost, a
// replica keeps serving what it resolved before; the Reset of its listener's
// reconnection forgets it.
func TestResolveAfterALostNotification(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.put(t, "k", "one")
	a := b.listening(t)
	resolvesTo(t, "A to resolve the first version", a.v, "secret:k", "one")
	b.sql(t, "alter table secrets disable trigger secrets_notify",
		"alter table secret_versions disable trigger secret_versions_notify")
	b.put(t, "k", "two")
	if got, err := resolve(t, a.v, "secret:k"); err != nil || got != "one" {
		t.Fatalf("without the notification, A resolves %q, %v: want what it cached", got, err)
	}
	// The listener loses its connection. Meanwhile A reads the database; once the
	// listener is back (its Reset reached this subscription, and A's), A caches again,
	// and must have forgotten the first version.
	sub, err := a.listener.Subscribe(vault.Channel)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	b.sql(t, "select pg_terminate_backend(pid) from pg_stat_activity where application_name = '"+a.app+"'")
	for reset := false; !reset; {
		select {
		case e := <-sub.Events():
			reset = e.Reset
		case <-time.After(eventually.Deadline):
			t.Fatal("the listener does not reconnect")
		}
	}
	resolvesTo(t, "A to resolve the new version once its listener is back", a.v, "secret:k", "two")
}

// TestSecretChangesNotify: every change of a secret or of its versions is announced on
// vault.Channel with the secret's name, re-wraps by a master key rotation and edits by
// hand included; the stamp of a reveal is not.
func TestSecretChangesNotify(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	cfg, err := pgx.ParseConfig(b.url)
	if err != nil {
		t.Fatal(err)
	}
	listener := notify.New(notify.Options{Config: cfg, Channels: []string{vault.Channel}})
	sub, err := listener.Subscribe(vault.Channel)
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		listener.Run(lctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// next returns the next name announced, skipping the listener's Resets.
	next := func(what string) string {
		t.Helper()
		for {
			select {
			case e := <-sub.Events():
				if !e.Reset {
					return e.Payload
				}
			case <-time.After(eventually.Deadline):
				t.Fatalf("%s: no notification", what)
			}
		}
	}
	select {
	case <-listener.Ready():
	case <-time.After(eventually.Deadline):
		t.Fatal("the listener is not ready")
	}
	steps := []struct {
		what string
		do   func()
	}{
		{"create", func() { b.put(t, "a", "one") }},
		{"put", func() { b.put(t, "a", "two") }},
		{"destroy", func() {
			if _, _, err := b.v.Destroy(ctx, "a", 1, "token:w", false); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete", func() {
			if _, _, err := b.v.Delete(ctx, "a", "token:w", false); err != nil {
				t.Fatal(err)
			}
		}},
		{"restore", func() {
			if _, err := b.v.Restore(ctx, "a", "token:w"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, s := range steps {
		s.do()
		if got := next(s.what); got != "a" {
			t.Errorf("%s announced %q, want the secret's name", s.what, got)
		}
	}
	// A reveal stamps the secret's last read: not announced, so the next name is b's.
	if _, err := b.reveal(t, "a", 0); err != nil {
		t.Fatal(err)
	}
	b.put(t, "b", "x")
	if got := next("a reveal, then b's put"); got != "b" {
		t.Errorf("a reveal was announced: %q", got)
	}
	// A master key rotation re-wraps the data keys of a's version 2 and b's version 1.
	err = b.store.InTx(ctx, func(tx *store.Tx) error {
		_, err := new(vault.DataKeys).RewrapBatch(ctx, tx, identity.NewKeyring(newKEK(t), b.kek), 100)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{next("re-wrap"), next("re-wrap")}; !slices.Contains(got, "a") || !slices.Contains(got, "b") {
		t.Errorf("a re-wrap announced %q, want a and b", got)
	}
	b.sql(t, "update secrets set description = 'by hand' where name = 'a'")
	if got := next("an edit by hand"); got != "a" {
		t.Errorf("an edit by hand announced %q", got)
	}
}
