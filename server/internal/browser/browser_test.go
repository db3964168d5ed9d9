package browser_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/proto"

	browserv1 "github.com/palyra/palyra/gen/go/palyra/browser/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/browser"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
	"github.com/palyra/palyra/server/internal/vault"
)

// testDevice is the device the tests' results come from.
const testDevice = "01JD0000000000000000000001"

// proxyURL is the value of the proxy secret of the tests: it must never show.
const proxyURL = "http://shopper:pr0xy-pa55w0rd@proxy.internal:3128"

// syncBuffer collects the log lines of a test.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bundle is profiles on a database of their own, with the vault they resolve proxies
// from, a real audit log, and their log lines.
type bundle struct {
	url   string
	store *store.Store
	kek   *identity.KeyEncryptionKey
	vault *vault.Vault
	audit *audit.Log
	clock *testclock.Clock
	logs  *syncBuffer
	p     *browser.Profiles
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{url: storetest.URL(t), clock: testclock.New(time.Date(2031, 5, 1, 9, 0, 0, 0, time.UTC)), logs: &syncBuffer{}}
	b.store = openStore(t, b.url)
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatal(err)
	}
	b.kek = ring.Primary()
	if b.vault, err = vault.New(vault.Options{Store: b.store, Keys: ring, Now: b.clock.Now}); err != nil {
		t.Fatal(err)
	}
	b.audit = audit.New(audit.Options{Store: b.store, ReplicaID: "test-replica"})
	b.p = b.replica(t, ring)
	return b
}

// replica returns profiles on the bundle's database with keys, as another replica has.
func (b *bundle) replica(t *testing.T, keys *identity.Keyring) *browser.Profiles {
	t.Helper()
	p, err := browser.New(browser.Options{Store: b.store, Keys: keys, Secrets: b.vault, Audit: b.audit, Now: b.clock.Now,
		Logger: slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return p
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

// shop is the definition most tests start from.
func shop() *browserv1.BrowserProfileSpec {
	return &browserv1.BrowserProfileSpec{
		Name: "shop", Description: "the web shop", UserAgent: "PalyraTest/1.0", Locale: "en-GB", TimeZone: "Europe/London",
		AllowedDomains: []string{"Shop.Example.COM.", "127.0.0.1", "[::1]"}, Labels: map[string]string{"team": "web"},
	}
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

// fields are the fields an Invalid error names.
func fields(err error) []string {
	var e *errdefs.Error
	var out []string
	if errors.As(err, &e) {
		for _, v := range e.FieldViolations() {
			out = append(out, v.Field)
		}
	}
	return out
}

// TestCreateGetListUpdateDelete goes through a profile's life: the defaults filled in,
// the domains normalized, stale revisions refused changing nothing, a rename, the list
// by labels and pages, and the delete.
func TestCreateGetListUpdateDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	pr, _, err := b.p.Create(ctx, shop(), "token:a")
	if err != nil {
		t.Fatal(err)
	}
	if pr.Revision != 1 || pr.CreatedBy != "token:a" || pr.State.Version != 0 {
		t.Errorf("created: %+v", pr)
	}
	if got := pr.Spec.GetAllowedDomains(); !slices.Equal(got, []string{"shop.example.com", "127.0.0.1", "::1"}) {
		t.Errorf("allowed domains %q, want normalized", got)
	}
	if v := pr.Spec.GetViewport(); v.GetWidth() != 1280 || v.GetHeight() != 800 {
		t.Errorf("default viewport %v", v)
	}
	_, _, err = b.p.Create(ctx, shop(), "token:a")
	wantKind(t, "a second shop", err, errdefs.Conflict, `"shop" exists already`)

	byID, _, err := b.p.Get(ctx, browser.Ref{ID: pr.ID})
	if err != nil || !proto.Equal(byID.Spec, pr.Spec) {
		t.Errorf("get by id: %v %v", byID.Spec, err)
	}
	byName, _, err := b.p.Get(ctx, browser.Ref{Name: "shop"})
	if err != nil || byName.ID != pr.ID {
		t.Errorf("get by name: %v %v", byName.ID, err)
	}
	_, _, err = b.p.Get(ctx, browser.Ref{Name: "nope"})
	wantKind(t, "get an unknown profile", err, errdefs.NotFound, `"nope"`)

	for i := range 4 {
		spec := shop()
		spec.Name = fmt.Sprintf("p%d", i)
		spec.Labels = map[string]string{"team": []string{"web", "ops"}[i%2]}
		if _, _, err := b.p.Create(ctx, spec, "token:a"); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	token := ""
	for {
		page, next, err := b.p.List(ctx, "team=web", 1, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			names = append(names, p.Spec.GetName())
		}
		if token = next; token == "" {
			break
		}
	}
	if !slices.Equal(names, []string{"p0", "p2", "shop"}) {
		t.Errorf("team=web by pages of one: %q", names)
	}
	_, _, err = b.p.List(ctx, "team in (", 0, "")
	wantKind(t, "a bad selector", err, errdefs.Invalid, "label_selector")

	spec := shop()
	spec.Name = "shop-2"
	spec.Viewport = &browserv1.Viewport{Width: 390, Height: 844}
	_, _, err = b.p.Update(ctx, browser.Ref{Name: "shop"}, spec, 7, "token:b")
	wantKind(t, "a stale revision", err, errdefs.Aborted, "revision 1, not 7")
	var e *errdefs.Error
	if errors.As(err, &e) && e.Metadata[browser.MetadataCurrentRevision] != "1" {
		t.Errorf("stale revision metadata %v", e.Metadata)
	}
	if got, _, _ := b.p.Get(ctx, browser.Ref{ID: pr.ID}); got.Revision != 1 || got.Spec.GetName() != "shop" {
		t.Errorf("a refused update changed the profile: %+v", got)
	}
	up, _, err := b.p.Update(ctx, browser.Ref{Name: "shop"}, spec, 1, "token:b")
	if err != nil {
		t.Fatal(err)
	}
	if up.Revision != 2 || up.Spec.GetName() != "shop-2" || up.UpdatedBy != "token:b" || up.Spec.GetViewport().GetWidth() != 390 {
		t.Errorf("updated: %+v", up)
	}
	spec.Name = "p0"
	_, _, err = b.p.Update(ctx, browser.Ref{ID: pr.ID}, spec, 2, "token:b")
	wantKind(t, "a rename onto another's name", err, errdefs.Conflict, `"p0"`)

	_, err = b.p.Delete(ctx, browser.Ref{Name: "shop-2"}, new(int64(1)))
	wantKind(t, "a stale delete", err, errdefs.Aborted, "revision 2, not 1")
	del, err := b.p.Delete(ctx, browser.Ref{Name: "shop-2"}, new(int64(2)))
	if err != nil || del.ID != pr.ID {
		t.Fatalf("delete: %v %v", del.ID, err)
	}
	_, _, err = b.p.Get(ctx, browser.Ref{ID: pr.ID})
	wantKind(t, "get a deleted profile", err, errdefs.NotFound)
}

// TestBadDefinitionsNameTheirFields checks that a definition at fault is Invalid
// naming every field at fault, and stores nothing.
func TestBadDefinitionsNameTheirFields(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	cases := map[string]struct {
		edit func(*browserv1.BrowserProfileSpec)
		want []string
	}{
		"no domains":       {func(s *browserv1.BrowserProfileSpec) { s.AllowedDomains = nil }, []string{"spec.allowed_domains"}},
		"a scheme":         {func(s *browserv1.BrowserProfileSpec) { s.AllowedDomains = []string{"https://a.com"} }, []string{"spec.allowed_domains[0]"}},
		"a port":           {func(s *browserv1.BrowserProfileSpec) { s.AllowedDomains = []string{"ok.com", "a.com:8080"} }, []string{"spec.allowed_domains[1]"}},
		"a path":           {func(s *browserv1.BrowserProfileSpec) { s.AllowedDomains = []string{"a.com/x"} }, []string{"spec.allowed_domains[0]"}},
		"a wildcard":       {func(s *browserv1.BrowserProfileSpec) { s.AllowedDomains = []string{"*.a.com"} }, []string{"spec.allowed_domains[0]"}},
		"a bad label":      {func(s *browserv1.BrowserProfileSpec) { s.AllowedDomains = []string{"-a.com"} }, []string{"spec.allowed_domains[0]"}},
		"a bad name":       {func(s *browserv1.BrowserProfileSpec) { s.Name = "Shop_1" }, []string{"spec.name"}},
		"an unknown zone":  {func(s *browserv1.BrowserProfileSpec) { s.TimeZone = "Mars/Olympus_Mons" }, []string{"spec.time_zone"}},
		"a path as zone":   {func(s *browserv1.BrowserProfileSpec) { s.TimeZone = "../../etc/passwd" }, []string{"spec.time_zone"}},
		"Local":            {func(s *browserv1.BrowserProfileSpec) { s.TimeZone = "Local" }, []string{"spec.time_zone"}},
		"a bad locale":     {func(s *browserv1.BrowserProfileSpec) { s.Locale = "english please" }, []string{"spec.locale"}},
		"a tiny viewport":  {func(s *browserv1.BrowserProfileSpec) { s.Viewport = &browserv1.Viewport{Width: 10, Height: 800} }, []string{"spec.viewport.width"}},
		"a half viewport":  {func(s *browserv1.BrowserProfileSpec) { s.Viewport = &browserv1.Viewport{Width: 1280} }, []string{"spec.viewport.height"}},
		"a proxy URL":      {func(s *browserv1.BrowserProfileSpec) { s.Proxy = proxyURL }, []string{"spec.proxy"}},
		"a missing secret": {func(s *browserv1.BrowserProfileSpec) { s.Proxy = "secret:nowhere" }, []string{"spec.proxy"}},
		"a control in UA":  {func(s *browserv1.BrowserProfileSpec) { s.UserAgent = "a\nb" }, []string{"spec.user_agent"}},
		"a bad label key":  {func(s *browserv1.BrowserProfileSpec) { s.Labels = map[string]string{"Team!": "x"} }, []string{"spec.labels[Team!]"}},
		"several at once": {func(s *browserv1.BrowserProfileSpec) {
			s.Name, s.TimeZone, s.AllowedDomains = "", "Nowhere/Land", []string{"a.com:1"}
		}, []string{"spec.name", "spec.time_zone", "spec.allowed_domains[0]"}},
	}
	for name, c := range cases {
		spec := shop()
		c.edit(spec)
		_, _, err := b.p.Create(ctx, spec, "token:a")
		wantKind(t, name, err, errdefs.Invalid)
		if got := fields(err); !slices.Equal(got, c.want) {
			t.Errorf("%s: fields %q, want %q (%v)", name, got, c.want, err)
		}
		if strings.Contains(fmt.Sprint(err), "pr0xy-pa55w0rd") {
			t.Errorf("%s: the error repeats the proxy's password: %v", name, err)
		}
	}
	if list, _, err := b.p.List(ctx, "", 0, ""); err != nil || len(list) != 0 {
		t.Errorf("refused definitions stored %d profiles (%v)", len(list), err)
	}
}

// saveState saves state as the result of a new dispatch with profile pr.
func (b *bundle) saveState(t *testing.T, p *browser.Profiles, profileID, name string, base int64, state string) string {
	t.Helper()
	id := ulid.Make().String()
	if err := p.SaveState(t.Context(), testDevice, id, `{"profile":"`+name+`","url":"http://127.0.0.1/"}`,
		&nodev1.BrowserState{ProfileId: profileID, BaseVersion: base, StorageState: []byte(state)}); err != nil {
		t.Fatal(err)
	}
	return id
}

// cookieState is a state holding a cookie whose value is secret.
func cookieState(n int) string {
	return fmt.Sprintf(`{"cookies":[{"name":"session","value":"s3cr3t-cookie-%d","domain":"127.0.0.1","path":"/"}],"origins":[]}`, n)
}

// TestStateIsSealedVersionedAndBounded saves states as dispatch results do: each is
// the next version, sealed (the database never holds it in clear), the newest five
// kept, the newest sent with the next dispatch; a result sent again saves nothing; a
// state for a profile deleted or replaced is discarded; a reset drops them all and the
// numbers go on. Neither state nor proxy shows in the logs or the audit log.
func TestStateIsSealedVersionedAndBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.vault.Put(ctx, vault.PutRequest{Name: "shop-proxy", Value: []byte(proxyURL), By: "token:a"}); err != nil {
		t.Fatal(err)
	}
	spec := shop()
	spec.Proxy = "secret:shop-proxy"
	pr, _, err := b.p.Create(ctx, spec, "token:a")
	if err != nil {
		t.Fatal(err)
	}
	in := `{"profile":"shop","url":"http://127.0.0.1:8080/login"}`
	sent, err := b.p.Profile(ctx, "d0", in)
	if err != nil {
		t.Fatal(err)
	}
	if sent.GetId() != pr.ID || sent.GetStateVersion() != 0 || len(sent.GetStorageState()) != 0 || sent.GetProxyUrl() != proxyURL ||
		sent.GetTimeZone() != "Europe/London" || sent.GetViewportWidth() != 1280 || !slices.Contains(sent.GetAllowedDomains(), "127.0.0.1") {
		t.Errorf("the first dispatch's profile: %v", sent)
	}
	var last string
	for i := 1; i <= 7; i++ {
		last = b.saveState(t, b.p, pr.ID, "shop", int64(i-1), cookieState(i))
	}
	// The same result again (the node did not get the ack) saves nothing.
	if err := b.p.SaveState(ctx, testDevice, last, in, &nodev1.BrowserState{ProfileId: pr.ID, BaseVersion: 6, StorageState: []byte(cookieState(99))}); err != nil {
		t.Fatal(err)
	}
	got, _, err := b.p.Get(ctx, browser.Ref{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if got.State.Version != 7 || got.State.SizeBytes != int64(len(cookieState(7))) || !got.State.SavedAt.Equal(b.clock.Now()) {
		t.Errorf("state info %+v", got.State)
	}
	sent, err = b.p.Profile(ctx, "d8", in)
	if err != nil || sent.GetStateVersion() != 7 || string(sent.GetStorageState()) != cookieState(7) {
		t.Fatalf("the next dispatch's state: v%d %q %v", sent.GetStateVersion(), sent.GetStorageState(), err)
	}

	conn, err := pgx.Connect(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var versions []int64
	rows, err := conn.Query(ctx, `select version from browser_profile_states order by version`)
	if err != nil {
		t.Fatal(err)
	}
	if versions, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(versions, []int64{3, 4, 5, 6, 7}) {
		t.Errorf("versions kept %v, want the newest five", versions)
	}
	var dump string
	if err := conn.QueryRow(ctx, `select string_agg(t::text, ' ') from (select * from browser_profile_states) t`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	var dumpProfiles string
	if err := conn.QueryRow(ctx, `select string_agg(t::text, ' ') from (select * from browser_profiles) t`).Scan(&dumpProfiles); err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{"s3cr3t-cookie", `"cookies"`, "pr0xy-pa55w0rd"} {
		if strings.Contains(dump+dumpProfiles, clear) || strings.Contains(dump, fmt.Sprintf("%x", clear)) {
			t.Errorf("the database holds %q in clear", clear)
		}
	}

	// A state for a profile deleted and created anew is discarded, as is one for a
	// profile deleted.
	b.saveState(t, b.p, ulid.Make().String(), "shop", 7, cookieState(100))
	if got, _, _ := b.p.Get(ctx, browser.Ref{Name: "shop"}); got.State.Version != 7 {
		t.Errorf("a state of another profile id was saved: %+v", got.State)
	}
	b.saveState(t, b.p, pr.ID, "gone", 0, cookieState(101))

	reset, dropped, err := b.p.ResetState(ctx, browser.Ref{Name: "shop"}, nil)
	if err != nil || dropped != 5 || reset.State.Version != 0 {
		t.Fatalf("reset: %+v dropped %d, %v", reset.State, dropped, err)
	}
	sent, err = b.p.Profile(ctx, "d9", in)
	if err != nil || sent.GetStateVersion() != 0 || len(sent.GetStorageState()) != 0 {
		t.Errorf("after the reset: v%d %q %v", sent.GetStateVersion(), sent.GetStorageState(), err)
	}
	b.saveState(t, b.p, pr.ID, "shop", 0, cookieState(8))
	if got, _, _ := b.p.Get(ctx, browser.Ref{Name: "shop"}); got.State.Version != 8 {
		t.Errorf("after a reset the next version is %d, want 8", got.State.Version)
	}

	// Deleted: the dispatches not sent fail, states coming back are discarded.
	if _, err := b.p.Delete(ctx, browser.Ref{Name: "shop"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = b.p.Profile(ctx, "d10", in)
	wantKind(t, "sending with a deleted profile", err, errdefs.FailedPrecondition, `"shop" no longer exists`)
	b.saveState(t, b.p, pr.ID, "shop", 8, cookieState(102))
	var n int
	if err := conn.QueryRow(ctx, `select count(*) from browser_profile_states`).Scan(&n); err != nil || n != 0 {
		t.Errorf("states left after the delete: %d %v", n, err)
	}
	if !strings.Contains(b.logs.String(), "browser state discarded: the profile was deleted") {
		t.Errorf("the discarded state is not logged:\n%s", b.logs.String())
	}

	var events string
	if err := conn.QueryRow(ctx, `select coalesce(string_agg(principal || ' ' || procedure || ' ' || target, E'\n' order by sequence), '') from audit_events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(events, "device:"+testDevice+" browser.state.save browser_profile:shop state_version:7 dispatch:"+last) {
		t.Errorf("no browser.state.save event for version 7:\n%s", events)
	}
	for _, secret := range []string{"s3cr3t-cookie", "pr0xy-pa55w0rd"} {
		if strings.Contains(events, secret) || strings.Contains(b.logs.String(), secret) {
			t.Errorf("%q shows in the audit log or the logs", secret)
		}
	}
}

// TestCheckInput checks what a browser.* dispatch's input must be when created.
func TestCheckInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, _, err := b.p.Create(ctx, shop(), "token:a"); err != nil {
		t.Fatal(err)
	}
	for in, field := range map[string]string{
		`{"url":"http://127.0.0.1/"}`:                                  "input.profile",
		`{"profile":3,"url":"http://127.0.0.1/"}`:                      "input.profile",
		`{"profile":"nope","url":"http://127.0.0.1/"}`:                 "input.profile",
		`{"profile":"shop","url":"http://evil.example.com/"}`:          "input.url",
		`{"profile":"shop","url":"http://example.com/"}`:               "input.url",
		`{"profile":"shop","url":"http://127.0.0.2/"}`:                 "input.url",
		`{"profile":"shop","url":"file:///etc/passwd"}`:                "input.url",
		`{"profile":"shop","url":"javascript:alert(1)"}`:               "input.url",
		`{"profile":"shop","url":"http://shop.example.com.evil.net/"}`: "input.url",
	} {
		err := b.p.CheckInput(ctx, "browser.navigate", in)
		wantKind(t, in, err, errdefs.Invalid)
		if got := fields(err); !slices.Equal(got, []string{field}) {
			t.Errorf("%s: fields %q, want %s", in, got, field)
		}
	}
	for _, in := range []string{
		`{"profile":"shop","url":"http://127.0.0.1:8080/login"}`,
		`{"profile":"shop","url":"https://shop.example.com/"}`,
		`{"profile":"shop","url":"https://cdn.SHOP.example.com./x"}`,
		`{"profile":"shop","url":"http://[::1]:9/"}`,
		`{"profile":"shop"}`,
	} {
		if err := b.p.CheckInput(ctx, "browser.navigate", in); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
}

// TestMasterKeyRotationRewrapsStateKeys checks that StateKeys re-wraps the data keys of
// the states under the new primary without touching the sealed states, after which a
// replica with the new key alone opens them.
func TestMasterKeyRotationRewrapsStateKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	pr, _, err := b.p.Create(ctx, shop(), "token:a")
	if err != nil {
		t.Fatal(err)
	}
	b.saveState(t, b.p, pr.ID, "shop", 0, cookieState(1))
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatal(err)
	}
	newKEK := ring.Primary()
	onlyNew := b.replica(t, identity.NewKeyring(newKEK))
	in := `{"profile":"shop"}`
	_, err = onlyNew.Profile(ctx, "d", in)
	wantKind(t, "a replica without the old key", err, errdefs.FailedPrecondition, b.kek.ID())

	keys := new(browser.StateKeys)
	usage, err := keys.KeyUsage(ctx, b.store)
	if err != nil || usage[b.kek.ID()] != 1 {
		t.Errorf("key usage before %v %v", usage, err)
	}
	conn, err := pgx.Connect(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var before, after []byte
	if err := conn.QueryRow(ctx, `select ciphertext from browser_profile_states`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	rewrap := func(ring *identity.Keyring) (n int, err error) {
		err = b.store.InTx(ctx, func(tx *store.Tx) error {
			n, err = keys.RewrapBatch(ctx, tx, ring, 100)
			return err
		})
		return n, err
	}
	_, err = rewrap(identity.NewKeyring(newKEK))
	wantKind(t, "a re-wrap without the old key", err, errdefs.FailedPrecondition, b.kek.ID())
	if n, err := rewrap(identity.NewKeyring(newKEK, b.kek)); err != nil || n != 1 {
		t.Fatalf("re-wrap: %d %v", n, err)
	}
	if err := conn.QueryRow(ctx, `select ciphertext from browser_profile_states`).Scan(&after); err != nil || !bytes.Equal(before, after) {
		t.Errorf("the re-wrap changed the sealed state (%v)", err)
	}
	sent, err := onlyNew.Profile(ctx, "d", in)
	if err != nil || string(sent.GetStorageState()) != cookieState(1) {
		t.Errorf("the new key alone after the re-wrap: %q %v", sent.GetStorageState(), err)
	}
	if n, err := rewrap(identity.NewKeyring(newKEK, b.kek)); err != nil || n != 0 {
		t.Errorf("a second re-wrap: %d %v", n, err)
	}
	// A state moved to another row does not open.
	b.saveState(t, b.p, pr.ID, "shop", 1, cookieState(2))
	storetest.AsSuperuser(t, b.url, `update browser_profile_states set ciphertext = (select ciphertext from browser_profile_states where version = 1) where version = 2`)
	_, err = b.replica(t, identity.NewKeyring(newKEK, b.kek)).Profile(ctx, "d", in)
	wantKind(t, "a state moved from another row", err, errdefs.DataLoss, "state version 2")
}

// TestTheLastFinisherIsNewest runs two dispatches with one profile at once: both start
// from the same state, the one that finishes last makes the newest version, and the
// other's is kept among the versions.
func TestTheLastFinisherIsNewest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	pr, _, err := b.p.Create(ctx, shop(), "token:a")
	if err != nil {
		t.Fatal(err)
	}
	in := `{"profile":"shop"}`
	first, err := b.p.Profile(ctx, "d1", in)
	if err != nil {
		t.Fatal(err)
	}
	second, err := b.p.Profile(ctx, "d2", in)
	if err != nil || first.GetStateVersion() != second.GetStateVersion() {
		t.Fatalf("the two dispatches start from v%d and v%d (%v)", first.GetStateVersion(), second.GetStateVersion(), err)
	}
	b.saveState(t, b.p, pr.ID, "shop", 0, cookieState(2)) // the second finishes first
	b.saveState(t, b.p, pr.ID, "shop", 0, cookieState(1))
	next, err := b.p.Profile(ctx, "d3", in)
	if err != nil || next.GetStateVersion() != 2 || string(next.GetStorageState()) != cookieState(1) {
		t.Errorf("the newest state is v%d %q (%v), want the last finisher's", next.GetStateVersion(), next.GetStorageState(), err)
	}
	conn, err := pgx.Connect(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `select count(*) from browser_profile_states`).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d versions kept (%v), want both", n, err)
	}
}
