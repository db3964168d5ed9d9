package liveconfig_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/liveconfig"
	"github.com/palyra/palyra/server/internal/notify/notifytest"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// bundle is one database and what the replicas on it share.
type bundle struct {
	url   string
	store *store.Store
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{url: storetest.URL(t)}
	s, err := store.Open(t.Context(), store.Options{URL: b.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	b.store = s
	return b
}

// replica starts a live configuration on the database, over the bootstrap configuration
// that args (palyrad's flags) give, as palyrad's does.
func (b *bundle) replica(t *testing.T, args ...string) *liveconfig.Service {
	t.Helper()
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	getenv := func(string) string { return "" }
	config.RegisterFlags(fs, getenv)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	base, err := config.Load(fs, getenv)
	if err != nil {
		t.Fatal(err)
	}
	notes := notifytest.Start(t, b.url, liveconfig.Channel)
	live, err := liveconfig.New(t.Context(), liveconfig.Options{Store: b.store, Notify: notes, Base: base, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { live.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		bg.Wait()
	})
	return live
}

func text(key, v string) liveconfig.KeyValue {
	return liveconfig.KeyValue{Key: key, Value: config.Value{Text: v}}
}

func rev(n int64) *int64 { return &n }

// wantKind checks err's kind and that its message says every one of words.
func wantKind(t *testing.T, err error, kind errdefs.Kind, words ...string) *errdefs.Error {
	t.Helper()
	var e *errdefs.Error
	if !errors.As(err, &e) || e.Kind != kind {
		t.Fatalf("error %v: want kind %v", err, kind)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	return e
}

// TestChangeReachesEveryReplica: a change made through one replica is in effect on
// another, its source is the database, and log.level moves the other's LevelVar.
func TestChangeReachesEveryReplica(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, other := b.replica(t), b.replica(t, "--nodes-heartbeat-interval", "10s")
	if got := other.Config().Nodes.HeartbeatInterval; got != 10*time.Second {
		t.Fatalf("bootstrap heartbeat %v, want the flag's 10s", got)
	}
	if src := other.Config().Source("nodes.heartbeat_interval"); src != config.SourceFlag {
		t.Errorf("source %v, want flag", src)
	}
	r, diffs, err := a.Update(t.Context(), "token:test", "slower nodes", liveconfig.Change{Set: []liveconfig.KeyValue{
		text("nodes.heartbeat_interval", "20000ms"), text("log.level", "DEBUG"),
		{Key: "compat.models", Value: config.Value{List: true, Items: []string{"gpt-4o", "llama3"}}},
	}}, rev(0))
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision != 1 || len(diffs) != 3 || r.Actor != "token:test" || r.Reason != "slower nodes" {
		t.Fatalf("revision %+v, diffs %+v", r, diffs)
	}
	// Canonical forms are stored.
	if d := diffs[2]; d.Key != "nodes.heartbeat_interval" || d.New.Text != "20s" || d.OldEffective.Text != "15s" {
		t.Errorf("diff %+v", d)
	}
	eventually.True(t, "the other replica at revision 1", func() bool { return other.Current().Revision == 1 })
	c := other.Config()
	if c.Nodes.HeartbeatInterval != 20*time.Second || c.Log.Level != slog.LevelDebug || strings.Join(c.Compat.Models, ",") != "gpt-4o,llama3" {
		t.Errorf("other replica: heartbeat %v, level %v, models %v", c.Nodes.HeartbeatInterval, c.Log.Level, c.Compat.Models)
	}
	if src := c.Source("nodes.heartbeat_interval"); src != config.SourceDatabase {
		t.Errorf("source %v, want database", src)
	}
	if got := c.Log.LevelVar.Level(); got != slog.LevelDebug {
		t.Errorf("the other replica's LevelVar is %v", got)
	}
	if other.Current().StoredRevision("log.level") != 1 {
		t.Error("the stored value's revision is not 1")
	}

	// Unset: the flag's value again.
	if _, _, err := a.Update(t.Context(), "token:test", "", liveconfig.Change{Unset: []string{"nodes.heartbeat_interval"}}, rev(1)); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the other replica back at the flag's heartbeat", func() bool {
		c := other.Config()
		return c.Nodes.HeartbeatInterval == 10*time.Second && c.Source("nodes.heartbeat_interval") == config.SourceFlag
	})
}

// TestStaleRevisionChangesNothing: a change expecting an old revision is Aborted with
// the current revision, in the message and the metadata, and nothing changes.
func TestStaleRevisionChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.replica(t)
	if _, _, err := a.Update(t.Context(), "token:one", "", liveconfig.Change{Set: []liveconfig.KeyValue{text("pairing.pin_digits", "10")}}, rev(0)); err != nil {
		t.Fatal(err)
	}
	_, _, err := a.Update(t.Context(), "token:two", "", liveconfig.Change{Set: []liveconfig.KeyValue{text("pairing.pin_digits", "6")}}, rev(0))
	e := wantKind(t, err, errdefs.Aborted, "revision 1")
	if e.Reason != liveconfig.ReasonStaleRevision || e.Metadata[liveconfig.MetadataCurrentRevision] != "1" {
		t.Errorf("reason %q, metadata %v", e.Reason, e.Metadata)
	}
	_, _, err = a.Rollback(t.Context(), "token:two", "", 1, rev(5))
	wantKind(t, err, errdefs.Aborted, "revision 1")
	_, _, err = a.Validate(t.Context(), liveconfig.Change{Set: []liveconfig.KeyValue{text("pairing.pin_digits", "6")}}, rev(3))
	wantKind(t, err, errdefs.Aborted)
	snap, err := a.Reload(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != 1 || snap.Config.Pairing.PINDigits != 10 {
		t.Errorf("revision %d, pin digits %d: the stale change changed something", snap.Revision, snap.Config.Pairing.PINDigits)
	}
}

// TestBadChangesChangeNothing: every problem of a change is reported, each naming its
// key, and one bad key keeps the good ones from being applied.
func TestBadChangesChangeNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.replica(t)
	cases := map[string]struct {
		change liveconfig.Change
		kind   errdefs.Kind
		fields []string
		words  []string
	}{
		"wrong type": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{text("nodes.heartbeat_interval", "often")}},
			kind:   errdefs.Invalid, fields: []string{"nodes.heartbeat_interval"}, words: []string{"duration", "often"},
		},
		"out of range": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{text("pairing.pin_digits", "13")}},
			kind:   errdefs.Invalid, fields: []string{"pairing.pin_digits"}, words: []string{"between 6 and 12"},
		},
		"not a level": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{text("log.level", "loud")}},
			kind:   errdefs.Invalid, fields: []string{"log.level"}, words: []string{"debug, info, warn or error"},
		},
		"list for a scalar": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{{Key: "tokens.default_rate_limit", Value: config.Value{List: true, Items: []string{"1"}}}}},
			kind:   errdefs.Invalid, fields: []string{"tokens.default_rate_limit"}, words: []string{"not a list"},
		},
		"unknown key": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{text("nodes.heartbeat_intervall", "20s")}},
			kind:   errdefs.Invalid, fields: []string{"nodes.heartbeat_intervall"}, words: []string{`did you mean "nodes.heartbeat_interval"`},
		},
		"unknown key to unset": {
			change: liveconfig.Change{Unset: []string{"no.such.thing"}},
			kind:   errdefs.Invalid, fields: []string{"no.such.thing"}, words: []string{"unknown setting"},
		},
		"bootstrap key": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{text("listen", "0.0.0.0:7443")}},
			kind:   errdefs.FailedPrecondition, fields: []string{"listen"},
			words: []string{"bootstrap", "--listen", "PALYRA_LISTEN", "restart"},
		},
		"secret bootstrap key": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{text("master_key", "x")}},
			kind:   errdefs.FailedPrecondition, fields: []string{"master_key"}, words: []string{"PALYRA_MASTER_KEY"},
		},
		"named twice": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{text("log.level", "debug")}, Unset: []string{"log.level"}},
			kind:   errdefs.Invalid, fields: []string{"log.level"}, words: []string{"more than once"},
		},
		"one bad key among good ones": {
			change: liveconfig.Change{Set: []liveconfig.KeyValue{
				text("log.level", "debug"), text("pairing.request_ttl", "2d"), text("nodes.heartbeat_interval", "20s"), text("listen", ":1"),
			}},
			kind: errdefs.Invalid, fields: []string{"pairing.request_ttl", "listen"}, words: []string{"pairing.request_ttl", "listen"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for _, op := range []string{"validate", "update"} {
				var err error
				if op == "validate" {
					_, _, err = a.Validate(t.Context(), tc.change, nil)
				} else {
					_, _, err = a.Update(t.Context(), "token:test", "", tc.change, rev(0))
				}
				e := wantKind(t, err, tc.kind, tc.words...)
				if msg := err.Error(); !strings.HasPrefix(msg, tc.fields[0]+": ") || strings.HasPrefix(msg, tc.fields[0]+": "+tc.fields[0]) {
					t.Errorf("%s: %q does not name the key once, first", op, msg)
				}
				var fields []string
				for _, v := range e.FieldViolations() {
					fields = append(fields, v.Field)
				}
				if strings.Join(fields, " ") != strings.Join(tc.fields, " ") {
					t.Errorf("%s: violations name %v, want %v", op, fields, tc.fields)
				}
			}
		})
	}
	snap, err := a.Reload(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != 0 || snap.Config.Log.Level != slog.LevelInfo || snap.Config.Source("log.level") != config.SourceDefault {
		t.Errorf("revision %d, log level %v: a refused change changed something", snap.Revision, snap.Config.Log.Level)
	}
}

// TestValidateReportsWithoutChanging: a valid dry run says what would change and the
// revision it would make, and makes none.
func TestValidateReportsWithoutChanging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.replica(t)
	diffs, next, err := a.Validate(t.Context(), liveconfig.Change{Set: []liveconfig.KeyValue{
		text("pairing.request_ttl", "1h"), text("log.level", "info"),
	}}, rev(0))
	if err != nil {
		t.Fatal(err)
	}
	// log.level info is not stored yet: storing it is a change, its effective value is not.
	if next != 1 || len(diffs) != 2 || diffs[1].Key != "pairing.request_ttl" || diffs[1].OldEffective.Text != "15m0s" || diffs[1].NewEffective.Text != "1h0m0s" {
		t.Errorf("next %d, diffs %+v", next, diffs)
	}
	if a.Current().Revision != 0 {
		t.Error("a dry run made a revision")
	}
	// A change to the values already stored makes no revision.
	if _, _, err := a.Update(t.Context(), "token:test", "", liveconfig.Change{Set: []liveconfig.KeyValue{text("log.level", "warn")}}, rev(0)); err != nil {
		t.Fatal(err)
	}
	r, diffs, err := a.Update(t.Context(), "token:test", "", liveconfig.Change{Set: []liveconfig.KeyValue{text("log.level", "WARN")}}, rev(1))
	if err != nil || r.Revision != 1 || len(diffs) != 0 {
		t.Errorf("no-op update: revision %+v, diffs %v, err %v", r, diffs, err)
	}
}

// TestRollback restores a revision's stored values as a new revision, unsetting what was
// stored since, and the history says what each revision changed.
func TestRollback(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.replica(t)
	other := b.replica(t)
	steps := []liveconfig.Change{
		{Set: []liveconfig.KeyValue{text("nodes.heartbeat_interval", "20s")}},
		{Set: []liveconfig.KeyValue{text("nodes.heartbeat_interval", "30s"), text("log.level", "debug")}},
		{Unset: []string{"nodes.heartbeat_interval"}},
	}
	for i, c := range steps {
		if _, _, err := a.Update(t.Context(), "token:test", "step", c, rev(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	r, diffs, err := a.Rollback(t.Context(), "token:owner", "back to 1", 1, rev(3))
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision != 4 || r.RollbackOf != 1 || len(diffs) != 2 {
		t.Fatalf("rollback revision %+v, diffs %+v", r, diffs)
	}
	eventually.True(t, "the other replica at revision 4", func() bool { return other.Current().Revision == 4 })
	c := other.Config()
	if c.Nodes.HeartbeatInterval != 20*time.Second || c.Log.Level != slog.LevelInfo || c.Source("log.level") != config.SourceDefault {
		t.Errorf("after the rollback: heartbeat %v, log level %v (%v)", c.Nodes.HeartbeatInterval, c.Log.Level, c.Source("log.level"))
	}
	got, changes, err := a.GetRevision(t.Context(), 4)
	if err != nil {
		t.Fatal(err)
	}
	if got.RollbackOf != 1 || got.Actor != "token:owner" || got.Reason != "back to 1" || got.ChangeCount != 2 {
		t.Errorf("revision 4: %+v", got)
	}
	want := map[string]string{"log.level": "unset debug -> none", "nodes.heartbeat_interval": "set none -> 20s"}
	for _, d := range changes {
		desc := d.Op + " " + textOf(d.Old) + " -> " + textOf(d.New)
		if want[d.Key] != desc {
			t.Errorf("revision 4 changed %s: %s, want %s", d.Key, desc, want[d.Key])
		}
	}
	if _, _, err := a.GetRevision(t.Context(), 9); errdefs.KindOf(err) != errdefs.NotFound {
		t.Errorf("revision 9: %v", err)
	}
	_, _, err = a.Rollback(t.Context(), "token:owner", "", 9, rev(4))
	wantKind(t, err, errdefs.NotFound, "revision 9")

	// History pages newest first.
	var seen []int64
	token := ""
	for {
		page, next, err := a.History(t.Context(), token, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			seen = append(seen, r.Revision)
		}
		if token = next; token == "" {
			break
		}
	}
	if len(seen) != 4 || seen[0] != 4 || seen[3] != 1 {
		t.Errorf("history %v", seen)
	}
	if _, _, err := a.History(t.Context(), "garbage", 3); errdefs.KindOf(err) != errdefs.Invalid {
		t.Errorf("a malformed page token: %v", err)
	}
}

func textOf(v *config.Value) string {
	if v == nil {
		return "none"
	}
	return v.String()
}

// TestReloadAfterReconnect: a replica that missed a notification (its LISTEN connection
// was down) reloads when it reconnects, instead of staying stale.
func TestReloadAfterReconnect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, other := b.replica(t), b.replica(t)
	ctx := t.Context()
	// The change commits without its notification.
	if _, err := b.store.Pool().Exec(ctx, "alter table config_revisions disable trigger config_revisions_notify"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Update(ctx, "token:test", "", liveconfig.Change{Set: []liveconfig.KeyValue{text("pairing.pin_digits", "12")}}, rev(0)); err != nil {
		t.Fatal(err)
	}
	if other.Current().Revision != 0 {
		t.Fatal("the other replica saw a change that was not announced: the test proves nothing")
	}
	// Every LISTEN connection drops; the listeners reconnect and tell their subscribers to
	// reload.
	if _, err := b.store.Pool().Exec(ctx, "select pg_terminate_backend(pid) from pg_stat_activity where query ilike 'listen%' and pid <> pg_backend_pid()"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the other replica at revision 1 after reconnecting", func() bool {
		return other.Current().Revision == 1 && other.Config().Pairing.PINDigits == 12
	})
}

// TestStoredValuesThatNoLongerApply: a stored value that the settings refuse (a range
// narrowed in a later release, a setting that became bootstrap) is ignored, not fatal.
func TestStoredValuesThatNoLongerApply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.replica(t)
	if _, _, err := a.Update(t.Context(), "token:test", "", liveconfig.Change{Set: []liveconfig.KeyValue{text("pairing.pin_digits", "9")}}, rev(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Pool().Exec(t.Context(), `insert into config_values (key, value, revision) values
		('listen', '"0.0.0.0:1"', 1), ('nodes.heartbeat_interval', '"1h"', 1)`); err != nil {
		t.Fatal(err)
	}
	snap, err := a.Reload(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := snap.Config
	if c.Pairing.PINDigits != 9 || c.Listen == "0.0.0.0:1" || c.Nodes.HeartbeatInterval != 15*time.Second {
		t.Errorf("pin digits %d, listen %s, heartbeat %v", c.Pairing.PINDigits, c.Listen, c.Nodes.HeartbeatInterval)
	}
}
