package daemon_test

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/daemon"
)

func (td *testDaemon) configClient(token string) controlplanev1connect.ConfigServiceClient {
	return controlplanev1connect.NewConfigServiceClient(td.client(token), td.baseURL)
}

func textValue(s string) *controlplanev1.ConfigValue {
	return &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_Text{Text: s}}
}

// setConfig sets key to value through td expecting revision expected.
func (td *testDaemon) setConfig(t *testing.T, expected int64, key, value string) (*controlplanev1.UpdateConfigResponse, error) {
	t.Helper()
	res, err := td.configClient(td.owner).UpdateConfig(t.Context(), connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change:           &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{{Key: key, Value: textValue(value)}}},
		ExpectedRevision: &expected,
		Reason:           "test",
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// setting returns key's setting as td reports it.
func (td *testDaemon) setting(t *testing.T, key string) (*controlplanev1.Setting, int64) {
	t.Helper()
	res, err := td.configClient(td.owner).GetConfig(t.Context(), connect.NewRequest(&controlplanev1.GetConfigRequest{Key: key}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetSettings()[0], res.Msg.GetRevision()
}

// TestRuntimeSettingsReachEveryReplica is issue 12's "done when": a heartbeat interval
// set through replica A is what a node attached to replica B is told at its next
// welcome, GetConfig on B says it comes from the database, log.level changes B's
// logger, the compat models B lists change, and a rollback restores the values.
func TestRuntimeSettingsReachEveryReplica(t *testing.T) {
	t.Parallel()
	a := startAccess(t)
	var logs lockedBuffer
	b := a.startReplicaWithLogger(t, func(cfg *config.Config) *slog.Logger { return daemon.NewLogger(cfg.Log, &logs) })
	b.owner = a.owner
	dev := a.enroll(t, time.Hour)

	node, w := attachNode(t, b, dev)
	if got := w.GetHeartbeatInterval().AsDuration(); got != 15*time.Second {
		t.Fatalf("first welcome: heartbeat %v, want the default 15s", got)
	}
	node.close()

	if _, err := a.flagsClient(a.owner).SetFlag(t.Context(), connect.NewRequest(&accessv1.SetFlagRequest{Key: "compat_api", Enabled: true})); err != nil {
		t.Fatal(err)
	}
	res, err := a.configClient(a.owner).UpdateConfig(t.Context(), connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: "nodes.heartbeat_interval", Value: textValue("20s")},
			{Key: "log.level", Value: textValue("debug")},
			{Key: "compat.models", Value: textValue("gpt-4o,llama3")},
		}},
		ExpectedRevision: new(int64),
		Reason:           "issue 12",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Msg.GetRevision(); r.GetRevision() != 1 || r.GetReason() != "issue 12" || !strings.HasPrefix(r.GetActor(), "token:") {
		t.Errorf("revision %v", r)
	}

	// The welcome reads B's snapshot, which only the notification can have changed.
	eventually.True(t, "a node attached to B told the new interval at its welcome", func() bool {
		node, w := attachNode(t, b, dev)
		defer node.close()
		return w.GetHeartbeatInterval().AsDuration() == 20*time.Second
	})
	eventually.True(t, "B's log level at debug", func() bool { return b.cfg.Log.LevelVar.Level() == slog.LevelDebug })
	// A debug line of B's: its token cache says so when its listener reconnects.
	const debugLine = "verified-token cache flushed"
	if strings.Contains(logs.String(), debugLine) {
		t.Fatal("B logged at debug level before log.level said so")
	}
	a.sql(t, "select pg_terminate_backend(pid) from pg_stat_activity where query ilike 'listen%' and pid <> pg_backend_pid()")
	eventually.True(t, "B logs at debug level", func() bool { return strings.Contains(logs.String(), debugLine) })
	s, rev := b.setting(t, "nodes.heartbeat_interval")
	if rev != 1 || s.GetValue().GetText() != "20s" || s.GetSource() != controlplanev1.ConfigSource_CONFIG_SOURCE_DATABASE || s.GetRevision() != 1 {
		t.Errorf("B: revision %d, %v", rev, s)
	}
	models := compatv1connect.NewCompatServiceClient(b.client(a.owner), b.baseURL)
	list, err := models.ListModels(t.Context(), connect.NewRequest(&compatv1.ListModelsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Msg.GetModels() {
		ids = append(ids, m.GetId())
	}
	if !slices.Equal(ids, []string{"gpt-4o", "llama3"}) {
		t.Errorf("B lists %v", ids)
	}

	// A rollback through B to revision 1 restores 20s on A.
	if _, err := b.setConfig(t, 1, "nodes.heartbeat_interval", "30s"); err != nil {
		t.Fatal(err)
	}
	rb, err := b.configClient(a.owner).RollbackConfig(t.Context(), connect.NewRequest(&controlplanev1.RollbackConfigRequest{
		Revision: 1, ExpectedRevision: ptr(int64(2)), Reason: "undo",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if r := rb.Msg.GetRevision(); r.GetRevision() != 3 || r.GetRollbackOf() != 1 {
		t.Errorf("rollback revision %v", r)
	}
	eventually.True(t, "replica A back at 20s", func() bool {
		s, _ := a.setting(t, "nodes.heartbeat_interval")
		return s.GetValue().GetText() == "20s"
	})
}

func ptr[T any](v T) *T { return &v }

// TestConfigRefusals: every bad change is refused with its code, naming the key, and
// changes nothing; the stale revision is machine-readable; reading needs config.read
// (admin and owner), writing config.write (owner).
func TestConfigRefusals(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	ctx := t.Context()
	if _, err := b.setConfig(t, 0, "pairing.pin_digits", "10"); err != nil {
		t.Fatal(err)
	}

	_, err := b.setConfig(t, 0, "pairing.pin_digits", "6")
	wantCode(t, "stale revision", err, connect.CodeAborted)
	var ce *connect.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Message(), "revision 1") {
		t.Errorf("stale revision: %v does not name the current revision", err)
	}
	found := false
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok && info.GetReason() == "STALE_REVISION" && info.GetMetadata()["current_revision"] == "1" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("stale revision: no ErrorInfo with the current revision in %v", ce.Details())
	}

	cases := map[string]struct {
		key, value string
		code       connect.Code
		words      []string
	}{
		"wrong type":    {"nodes.heartbeat_interval", "soon", connect.CodeInvalidArgument, []string{"nodes.heartbeat_interval", "duration"}},
		"out of range":  {"nodes.heartbeat_interval", "1h", connect.CodeInvalidArgument, []string{"nodes.heartbeat_interval", "between 1s and 5m0s"}},
		"not a number":  {"tokens.default_rate_limit", "many", connect.CodeInvalidArgument, []string{"tokens.default_rate_limit", "whole number"}},
		"unknown key":   {"nodes.heartbeat", "20s", connect.CodeInvalidArgument, []string{"unknown setting", "nodes.heartbeat_interval"}},
		"bootstrap key": {"server.max_connections", "10", connect.CodeFailedPrecondition, []string{"bootstrap", "--server-max-connections", "PALYRA_SERVER_MAX_CONNECTIONS"}},
	}
	for name, tc := range cases {
		_, err := b.setConfig(t, 1, tc.key, tc.value)
		wantCode(t, name, err, tc.code)
		for _, w := range tc.words {
			if err != nil && !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v does not say %q", name, err, w)
			}
		}
	}
	// One bad key among good ones: nothing is applied; the dry run reports both.
	change := &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
		{Key: "log.level", Value: textValue("debug")},
		{Key: "pairing.request_ttl", Value: textValue("forever")},
		{Key: "pairing.pin_digits", Value: textValue("99")},
	}}
	_, err = b.configClient(b.owner).UpdateConfig(ctx, connect.NewRequest(&controlplanev1.UpdateConfigRequest{Change: change, ExpectedRevision: ptr(int64(1))}))
	wantCode(t, "one bad key", err, connect.CodeInvalidArgument)
	_, err = b.configClient(b.owner).ValidateConfig(ctx, connect.NewRequest(&controlplanev1.ValidateConfigRequest{Change: change}))
	wantCode(t, "dry run of bad keys", err, connect.CodeInvalidArgument)
	if fields := fieldsOf(err); !slices.Equal(fields, []string{"pairing.request_ttl", "pairing.pin_digits"}) {
		t.Errorf("dry run: violations name %v", fields)
	}
	_, err = b.configClient(b.owner).UpdateConfig(ctx, connect.NewRequest(&controlplanev1.UpdateConfigRequest{Change: change}))
	wantCode(t, "no expected revision", err, connect.CodeInvalidArgument)
	if s, rev := b.setting(t, "log.level"); rev != 1 || s.GetValue().GetText() != "info" || s.GetSource() != controlplanev1.ConfigSource_CONFIG_SOURCE_DEFAULT {
		t.Errorf("after the refusals: revision %d, log.level %v", rev, s)
	}

	// The master key shows whether it is set, never a value; database.url no password.
	res, err := b.configClient(b.owner).GetConfig(ctx, connect.NewRequest(&controlplanev1.GetConfigRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Msg.GetSettings() {
		switch s.GetKey() {
		case "master_key":
			if s.GetValue() != nil || !s.GetSecret() || s.GetRuntime() {
				t.Errorf("master_key: %v", s)
			}
		case "database.url":
			if strings.Contains(s.GetValue().GetText(), "@") || !strings.Contains(s.GetValue().GetText(), "external") {
				t.Errorf("database.url shows %q", s.GetValue().GetText())
			}
		case "listen":
			if s.GetRuntime() || s.GetSource() != controlplanev1.ConfigSource_CONFIG_SOURCE_FLAG || !strings.Contains(s.GetChangeHint(), "--listen") {
				t.Errorf("listen: %v", s)
			}
		}
	}

	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "ops", Role: accessv1.Role_ROLE_OPERATOR})
	_, admin := b.createToken(t, &accessv1.CreateTokenRequest{Label: "admin", Role: accessv1.Role_ROLE_ADMIN})
	_, err = b.configClient(operator).GetConfig(ctx, connect.NewRequest(&controlplanev1.GetConfigRequest{}))
	wantCode(t, "operator reads the configuration", err, connect.CodePermissionDenied)
	if _, err := b.configClient(admin).GetConfig(ctx, connect.NewRequest(&controlplanev1.GetConfigRequest{})); err != nil {
		t.Errorf("admin reads the configuration: %v", err)
	}
	if _, err := b.configClient(admin).ListConfigRevisions(ctx, connect.NewRequest(&controlplanev1.ListConfigRevisionsRequest{})); err != nil {
		t.Errorf("admin reads the history: %v", err)
	}
	_, err = b.configClient(admin).UpdateConfig(ctx, connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Unset: []string{"pairing.pin_digits"}}, ExpectedRevision: ptr(int64(1)),
	}))
	wantCode(t, "admin changes the configuration", err, connect.CodePermissionDenied)
	_, err = b.configClient(admin).RollbackConfig(ctx, connect.NewRequest(&controlplanev1.RollbackConfigRequest{Revision: 1, ExpectedRevision: ptr(int64(1))}))
	wantCode(t, "admin rolls the configuration back", err, connect.CodePermissionDenied)

	// The audit log has the change with its old and new values.
	events, err := b.auditClient(b.owner).ListAuditEvents(ctx, connect.NewRequest(&accessv1.ListAuditEventsRequest{
		Procedure: controlplanev1connect.ConfigServiceUpdateConfigProcedure, Outcome: accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if e := events.Msg.GetEvents(); len(e) != 1 || e[0].GetTarget() != `config:revision 1: pairing.pin_digits "8" -> "10"` {
		t.Errorf("audit events of UpdateConfig: %v", e)
	}
}
