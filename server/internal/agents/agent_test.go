package agents_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/server/internal/agents"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// The nodes of the tests: one online offering system.info, labelled zone=a; one
// offline offering shell.execute; one revoked offering system.info.
const (
	onlineNode  = "01JD0000000000000000000001"
	offlineNode = "01JD0000000000000000000002"
	revokedNode = "01JD0000000000000000000003"
	missingNode = "01JD0000000000000000000009"
)

// modelList serves a fixed list of models, as the compat API would.
type modelList []string

func (m modelList) ModelIDs(context.Context) ([]string, error) { return m, nil }

// nodeList is a fixed inventory of nodes: the registry's answers (the registry itself is
// dispatch's, tested there and with real nodes in the daemon's tests).
type nodeList []dispatch.Node

func (l nodeList) NodesOffering(_ context.Context, capability string) ([]dispatch.Node, error) {
	var out []dispatch.Node
	for _, n := range l {
		if slices.ContainsFunc(n.Capabilities, func(c dispatch.Capability) bool { return c.Name == capability }) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (l nodeList) NodeByID(_ context.Context, id string) (dispatch.Node, error) {
	for _, n := range l {
		if n.ID == id {
			return n, nil
		}
	}
	return dispatch.Node{}, errdefs.New(errdefs.NotFound, "there is no node %s", id)
}

var testNodes = nodeList{
	{ID: onlineNode, Name: "web-1", Presence: dispatch.PresenceOnline, Labels: map[string]string{"zone": "a"},
		Capabilities: []dispatch.Capability{{Name: "system.info", Available: true}}},
	{ID: offlineNode, Name: "db-1", Presence: dispatch.PresenceOffline,
		Capabilities: []dispatch.Capability{{Name: "shell.execute", Available: true}}},
	{ID: revokedNode, Name: "old-1", Presence: dispatch.PresenceOffline, Revoked: true,
		Capabilities: []dispatch.Capability{{Name: "system.info", Available: true}}},
}

// profileSet is the browser profiles that exist, by name.
type profileSet struct {
	mu    sync.Mutex
	names map[string]bool
}

func (p *profileSet) Exists(_ context.Context, name string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.names[name], nil
}

// remove deletes a profile.
func (p *profileSet) remove(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.names, name)
}

type bundle struct {
	a        *agents.Agents
	store    *store.Store
	clock    *testclock.Clock
	profiles *profileSet // "shop" and "bank"
}

func setup(t *testing.T) *bundle {
	t.Helper()
	s := storetest.New(t)
	clock := testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	profiles := &profileSet{names: map[string]bool{"shop": true, "bank": true}}
	return &bundle{store: s, clock: clock, profiles: profiles, a: agents.New(agents.Options{
		Store: s, Models: modelList{"gpt-test", "palyra-echo", "agent:ignored"}, Nodes: testNodes, Profiles: profiles, Now: clock.Now,
	})}
}

// spec is a valid definition.
func spec(name string) *agentsv1.AgentSpec {
	return &agentsv1.AgentSpec{
		Name: name, Model: "gpt-test", SystemPrompt: "You help.", Description: "a test agent",
		Tools:  []*agentsv1.Tool{{Capability: "system.info"}},
		Labels: map[string]string{"team": "ops"},
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

// wantFields checks that err is Invalid naming exactly fields.
func wantFields(t *testing.T, what string, err error, fields ...string) {
	t.Helper()
	e, ok := err.(*errdefs.Error)
	if !ok || e.Kind != errdefs.Invalid {
		t.Errorf("%s: got %v (%s), want Invalid", what, err, errdefs.KindOf(err))
		return
	}
	var got []string
	for _, v := range e.FieldViolations() {
		got = append(got, v.Field)
	}
	if !slices.Equal(got, fields) {
		t.Errorf("%s: fields %q (%v), want %q", what, got, e.FieldViolations(), fields)
	}
}

// count returns how many agents are stored.
func (b *bundle) count(t *testing.T) int {
	t.Helper()
	list, _, err := b.a.List(t.Context(), "", 500, "")
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// TestCreateFillsInTheDefaults creates an agent and reads it back as stored.
func TestCreateFillsInTheDefaults(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ag, warnings, err := b.a.Create(t.Context(), spec("helper"), "token:a")
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings %q for a tool an online node offers", warnings)
	}
	want := spec("helper")
	want.Tools[0].Name = "system_info"
	want.Tools[0].Policy = agentsv1.ToolPolicy_TOOL_POLICY_AUTO
	want.Limits = &agentsv1.AgentLimits{MaxSteps: 8, MaxToolCalls: 16, Deadline: durationpb.New(5 * time.Minute)}
	if !proto.Equal(ag.Spec, want) {
		t.Errorf("stored %v, want %v", ag.Spec, want)
	}
	if ag.Revision != 1 || ag.IsDefault || ag.CreatedBy != "token:a" || ag.UpdatedBy != "token:a" || !ag.CreatedAt.Equal(b.clock.Now()) || len(ag.ID) != 26 {
		t.Errorf("agent %+v", ag)
	}
	for _, ref := range []agents.Ref{{ID: ag.ID}, {Name: "helper"}} {
		got, _, err := b.a.Get(t.Context(), ref)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got.Spec, want) || got.ID != ag.ID || got.Revision != 1 {
			t.Errorf("Get(%v) = %+v", ref, got)
		}
	}
	_, _, err = b.a.Get(t.Context(), agents.Ref{Name: "nobody"})
	wantKind(t, "get a missing agent", err, errdefs.NotFound, `agent "nobody"`)
}

// TestBadDefinitionsChangeNothing refuses every kind of bad definition, naming the
// fields at fault, and stores nothing.
func TestBadDefinitionsChangeNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name   string
		edit   func(s *agentsv1.AgentSpec)
		fields []string
		says   string
	}{
		{"upper-case name", func(s *agentsv1.AgentSpec) { s.Name = "Helper" }, []string{"spec.name"}, "DNS label"},
		{"empty name", func(s *agentsv1.AgentSpec) { s.Name = "" }, []string{"spec.name"}, "DNS label"},
		{"long name", func(s *agentsv1.AgentSpec) { s.Name = strings.Repeat("a", 64) }, []string{"spec.name"}, "DNS label"},
		{"name ends with a dash", func(s *agentsv1.AgentSpec) { s.Name = "helper-" }, []string{"spec.name"}, "DNS label"},
		{"unknown model", func(s *agentsv1.AgentSpec) { s.Model = "gpt-nope" }, []string{"spec.model"}, `no model "gpt-nope": they are gpt-test, palyra-echo`},
		{"no model", func(s *agentsv1.AgentSpec) { s.Model = "" }, []string{"spec.model"}, "needs a model"},
		{"an agent as model", func(s *agentsv1.AgentSpec) { s.Model = "agent:ignored" }, []string{"spec.model"}, "another agent"},
		{"long system prompt", func(s *agentsv1.AgentSpec) { s.SystemPrompt = strings.Repeat("x", 32<<10+1) }, []string{"spec.system_prompt"}, "at most 32768 bytes"},
		{"bad selector", func(s *agentsv1.AgentSpec) {
			s.Tools[0].Target = &agentsv1.Tool_NodeSelector{NodeSelector: "zone in (a"}
		}, []string{"spec.tools[0].node_selector"}, "selector"},
		{"missing node", func(s *agentsv1.AgentSpec) {
			s.Tools[0].Target = &agentsv1.Tool_NodeId{NodeId: missingNode}
		}, []string{"spec.tools[0].node_id"}, "there is no node " + missingNode},
		{"bad node id", func(s *agentsv1.AgentSpec) {
			s.Tools[0].Target = &agentsv1.Tool_NodeId{NodeId: "web-1"}
		}, []string{"spec.tools[0].node_id"}, "not a node id"},
		{"duplicate tool name", func(s *agentsv1.AgentSpec) {
			s.Tools = append(s.Tools, &agentsv1.Tool{Capability: "shell.execute", Name: "system_info"})
		}, []string{"spec.tools[1].name"}, `"system_info" is the name of spec.tools[0] too`},
		{"duplicate derived tool name", func(s *agentsv1.AgentSpec) {
			s.Tools = append(s.Tools, &agentsv1.Tool{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: onlineNode}})
		}, []string{"spec.tools[1].name"}, "is the name of spec.tools[0] too"},
		{"bad tool name", func(s *agentsv1.AgentSpec) { s.Tools[0].Name = "get info" }, []string{"spec.tools[0].name"}, "1 to 64 letters"},
		{"bad capability", func(s *agentsv1.AgentSpec) { s.Tools[0].Capability = "System.Info" }, []string{"spec.tools[0].capability"}, "like system.info"},
		{"undefined policy", func(s *agentsv1.AgentSpec) { s.Tools[0].Policy = 9 }, []string{"spec.tools[0].policy"}, "auto, ask and deny"},
		{"too many tools", func(s *agentsv1.AgentSpec) {
			s.Tools = nil
			for i := range 33 {
				s.Tools = append(s.Tools, &agentsv1.Tool{Capability: "system.info", Name: fmt.Sprint("t", i)})
			}
		}, []string{"spec.tools"}, "at most 32 tools"},
		{"max_steps", func(s *agentsv1.AgentSpec) { s.Limits = &agentsv1.AgentLimits{MaxSteps: 65} }, []string{"spec.limits.max_steps"}, "at most 64"},
		{"max_tool_calls", func(s *agentsv1.AgentSpec) { s.Limits = &agentsv1.AgentLimits{MaxToolCalls: 257} }, []string{"spec.limits.max_tool_calls"}, "at most 256"},
		{"long deadline", func(s *agentsv1.AgentSpec) {
			s.Limits = &agentsv1.AgentLimits{Deadline: durationpb.New(25 * time.Hour)}
		}, []string{"spec.limits.deadline"}, "at most 24 h"},
		{"negative deadline", func(s *agentsv1.AgentSpec) {
			s.Limits = &agentsv1.AgentLimits{Deadline: durationpb.New(-time.Second)}
		}, []string{"spec.limits.deadline"}, "1 ms to 24 h"},
		{"bad label key", func(s *agentsv1.AgentSpec) { s.Labels = map[string]string{"Team": "ops"} }, []string{"spec.labels[Team]"}, "key"},
		{"several at once", func(s *agentsv1.AgentSpec) {
			s.Name, s.Model, s.Limits = "X", "nope", &agentsv1.AgentLimits{MaxSteps: 100}
		}, []string{"spec.name", "spec.model", "spec.limits.max_steps"}, "DNS label"},
	}
	for _, tt := range tests {
		s := spec("helper")
		tt.edit(s)
		_, _, err := b.a.Create(t.Context(), s, "token:a")
		wantFields(t, tt.name, err, tt.fields...)
		wantKind(t, tt.name, err, errdefs.Invalid, tt.says)
	}
	if n := b.count(t); n != 0 {
		t.Errorf("%d agents stored by bad definitions", n)
	}
	_, _, err := b.a.Create(t.Context(), nil, "token:a")
	wantKind(t, "no definition", err, errdefs.Invalid, "spec")
}

// TestDuplicateName refuses a second agent of the same name, by create and by rename.
func TestDuplicateName(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, _, err := b.a.Create(t.Context(), spec("helper"), "token:a"); err != nil {
		t.Fatal(err)
	}
	_, _, err := b.a.Create(t.Context(), spec("helper"), "token:a")
	wantKind(t, "create a duplicate", err, errdefs.Conflict, `an agent named "helper" exists already`)
	other, _, err := b.a.Create(t.Context(), spec("other"), "token:a")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = b.a.Update(t.Context(), agents.Ref{ID: other.ID}, spec("helper"), 1, "token:a")
	wantKind(t, "rename onto another", err, errdefs.Conflict, `"helper" exists already`)
	if got, _, _ := b.a.Get(t.Context(), agents.Ref{ID: other.ID}); got.Revision != 1 || got.Spec.GetName() != "other" {
		t.Errorf("the refused rename changed the agent: %+v", got)
	}
}

// TestUpdateRevisions updates an agent revision by revision, refuses a stale revision
// naming the current one, and renames.
func TestUpdateRevisions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ag, _, err := b.a.Create(t.Context(), spec("helper"), "token:a")
	if err != nil {
		t.Fatal(err)
	}
	s := spec("helper")
	s.SystemPrompt = "You help more."
	s.Tools[0].Policy = agentsv1.ToolPolicy_TOOL_POLICY_ASK
	b.clock.Advance(time.Minute)
	up, _, err := b.a.Update(t.Context(), agents.Ref{Name: "helper"}, s, 1, "token:b")
	if err != nil {
		t.Fatal(err)
	}
	if up.Revision != 2 || up.Spec.GetSystemPrompt() != "You help more." || up.Spec.GetTools()[0].GetPolicy() != agentsv1.ToolPolicy_TOOL_POLICY_ASK ||
		up.UpdatedBy != "token:b" || up.CreatedBy != "token:a" || !up.UpdatedAt.Equal(b.clock.Now()) || !up.CreatedAt.Equal(ag.CreatedAt) {
		t.Errorf("updated %+v", up)
	}
	s.SystemPrompt = "stale"
	_, _, err = b.a.Update(t.Context(), agents.Ref{ID: ag.ID}, s, 1, "token:c")
	wantKind(t, "stale revision", err, errdefs.Aborted, "revision 2, not 1")
	if e, ok := err.(*errdefs.Error); !ok || e.Reason != agents.ReasonStaleRevision || e.Metadata[agents.MetadataCurrentRevision] != "2" {
		t.Errorf("stale revision: %#v", err)
	}
	_, _, err = b.a.Update(t.Context(), agents.Ref{ID: ag.ID}, s, 0, "token:c")
	wantKind(t, "no revision", err, errdefs.Invalid, "expected_revision")
	if got, _, _ := b.a.Get(t.Context(), agents.Ref{ID: ag.ID}); got.Spec.GetSystemPrompt() != "You help more." {
		t.Errorf("a refused update changed the agent: %v", got.Spec)
	}
	s = spec("helper-2")
	renamed, _, err := b.a.Update(t.Context(), agents.Ref{ID: ag.ID}, s, 2, "token:c")
	if err != nil || renamed.Spec.GetName() != "helper-2" || renamed.Revision != 3 {
		t.Fatalf("rename: %+v, %v", renamed, err)
	}
	_, _, err = b.a.Get(t.Context(), agents.Ref{Name: "helper"})
	wantKind(t, "the old name", err, errdefs.NotFound)
	bad := spec("helper-2")
	bad.Model = "gpt-nope"
	_, _, err = b.a.Update(t.Context(), agents.Ref{ID: ag.ID}, bad, 3, "token:c")
	wantFields(t, "update to a missing model", err, "spec.model")
	_, _, err = b.a.Update(t.Context(), agents.Ref{Name: "nobody"}, spec("nobody"), 1, "token:c")
	wantKind(t, "update a missing agent", err, errdefs.NotFound)
}

// TestConcurrentUpdatesOneWins runs updates expecting the same revision at once: one
// wins, the others are told the new revision.
func TestConcurrentUpdatesOneWins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ag, _, err := b.a.Create(t.Context(), spec("helper"), "token:a")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		won    int
		stales int
	)
	for i := range 5 {
		wg.Go(func() {
			s := spec("helper")
			s.Description = fmt.Sprint("writer ", i)
			_, _, err := b.a.Update(t.Context(), agents.Ref{ID: ag.ID}, s, 1, "token:a")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errdefs.KindOf(err) == errdefs.Aborted && strings.Contains(err.Error(), "revision 2, not 1"):
				stales++
			default:
				t.Errorf("update: %v", err)
			}
		})
	}
	wg.Wait()
	if won != 1 || stales != 4 {
		t.Errorf("%d updates won, %d were stale; want 1 and 4", won, stales)
	}
}

// TestDeleteAndTheDefault deletes agents and moves the default mark.
func TestDeleteAndTheDefault(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	for _, name := range []string{"one", "two"} {
		if _, _, err := b.a.Create(ctx, spec(name), "token:a"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.a.Default(ctx)
	wantKind(t, "no default yet", err, errdefs.FailedPrecondition, "set-default")
	ag, previous, err := b.a.SetDefault(ctx, agents.Ref{Name: "one"})
	if err != nil || !ag.IsDefault || previous != "" {
		t.Fatalf("set one: %+v, %q, %v", ag, previous, err)
	}
	if _, previous, err = b.a.SetDefault(ctx, agents.Ref{Name: "one"}); err != nil || previous != "" {
		t.Errorf("set one again: %q, %v", previous, err)
	}
	two, _, _ := b.a.Get(ctx, agents.Ref{Name: "two"})
	if _, previous, err = b.a.SetDefault(ctx, agents.Ref{ID: two.ID}); err != nil || previous != "one" {
		t.Errorf("set two: previous %q, %v", previous, err)
	}
	if d, err := b.a.Default(ctx); err != nil || d.Spec.GetName() != "two" {
		t.Errorf("default %+v, %v", d, err)
	}
	if one, _, _ := b.a.Get(ctx, agents.Ref{Name: "one"}); one.IsDefault {
		t.Error("one is still the default")
	}
	// Concurrent moves leave exactly one default.
	var wg sync.WaitGroup
	for _, name := range []string{"one", "two", "one", "two"} {
		wg.Go(func() {
			if _, _, err := b.a.SetDefault(ctx, agents.Ref{Name: name}); err != nil {
				t.Errorf("set %s: %v", name, err)
			}
		})
	}
	wg.Wait()
	list, _, _ := b.a.List(ctx, "", 0, "")
	defaults := 0
	for _, ag := range list {
		if ag.IsDefault {
			defaults++
		}
	}
	if defaults != 1 {
		t.Errorf("%d defaults after concurrent moves", defaults)
	}

	d, _ := b.a.Default(ctx)
	_, err = b.a.Delete(ctx, agents.Ref{ID: d.ID}, new(int64(2)))
	wantKind(t, "delete at a stale revision", err, errdefs.Aborted, "revision 1, not 2")
	deleted, err := b.a.Delete(ctx, agents.Ref{ID: d.ID}, new(int64(1)))
	if err != nil || deleted.ID != d.ID || !deleted.IsDefault {
		t.Fatalf("delete: %+v, %v", deleted, err)
	}
	_, err = b.a.Default(ctx)
	wantKind(t, "the default deleted", err, errdefs.FailedPrecondition)
	_, err = b.a.Delete(ctx, agents.Ref{ID: d.ID}, nil)
	wantKind(t, "delete again", err, errdefs.NotFound)
	_, _, err = b.a.SetDefault(ctx, agents.Ref{Name: "nobody"})
	wantKind(t, "set a missing default", err, errdefs.NotFound)
	if n := b.count(t); n != 1 {
		t.Errorf("%d agents left, want 1", n)
	}
}

// TestListPagesAndSelects pages through agents by name and filters them by labels.
func TestListPagesAndSelects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 7 {
		s := spec(fmt.Sprintf("agent-%d", i))
		s.Labels = map[string]string{"parity": []string{"even", "odd"}[i%2]}
		if _, _, err := b.a.Create(t.Context(), s, "token:a"); err != nil {
			t.Fatal(err)
		}
	}
	page := func(selector string, size int) [][]string {
		var pages [][]string
		token := ""
		for {
			list, next, err := b.a.List(t.Context(), selector, size, token)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, ag := range list {
				names = append(names, ag.Spec.GetName())
			}
			pages = append(pages, names)
			if next == "" {
				return pages
			}
			token = next
		}
	}
	if got := fmt.Sprint(page("", 3)); got != "[[agent-0 agent-1 agent-2] [agent-3 agent-4 agent-5] [agent-6]]" {
		t.Errorf("pages %s", got)
	}
	if got := fmt.Sprint(page("parity=odd", 2)); got != "[[agent-1 agent-3] [agent-5]]" {
		t.Errorf("odd pages %s", got)
	}
	if got := fmt.Sprint(page("parity=even", 4)); got != "[[agent-0 agent-2 agent-4 agent-6]]" {
		t.Errorf("even pages %s", got)
	}
	_, _, err := b.a.List(t.Context(), "parity in (odd", 0, "")
	wantKind(t, "bad selector", err, errdefs.Invalid, "label_selector")
	_, _, err = b.a.List(t.Context(), "", 0, "garbage")
	wantKind(t, "bad token", err, errdefs.Invalid, "page_token")
}

// TestWarnings warns about tools that no online node offers, whatever their target, and
// saves the agent all the same.
func TestWarnings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := spec("helper")
	s.Tools = []*agentsv1.Tool{
		{Capability: "system.info"},
		{Capability: "system.info", Name: "zone_a", Target: &agentsv1.Tool_NodeSelector{NodeSelector: "zone=a"}},
		{Capability: "system.info", Name: "zone_b", Target: &agentsv1.Tool_NodeSelector{NodeSelector: "zone=b"}},
		{Capability: "shell.execute"},
		{Capability: "browser.navigate", BrowserProfile: "shop"},
		{Capability: "system.info", Name: "web", Target: &agentsv1.Tool_NodeId{NodeId: onlineNode}},
		{Capability: "shell.execute", Name: "on_web", Target: &agentsv1.Tool_NodeId{NodeId: onlineNode}},
		{Capability: "shell.execute", Name: "on_db", Target: &agentsv1.Tool_NodeId{NodeId: offlineNode}},
		{Capability: "system.info", Name: "on_old", Target: &agentsv1.Tool_NodeId{NodeId: revokedNode}},
	}
	ag, warnings, err := b.a.Create(t.Context(), s, "token:a")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`tool zone_b: no online node matching "zone=b" offers system.info`,
		"tool shell_execute: no online node offers shell.execute",
		"tool browser_navigate: no online node offers browser.navigate",
		"tool on_web: node web-1 (" + onlineNode + ") does not offer shell.execute",
		"tool on_db: node db-1 (" + offlineNode + "), the only one it may run on, is offline",
		"tool on_old: node old-1 (" + revokedNode + ") is revoked",
	}
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings\n%q\nwant\n%q", warnings, want)
	}
	if _, got, err := b.a.Get(t.Context(), agents.Ref{ID: ag.ID}); err != nil || !slices.Equal(got, want) {
		t.Errorf("Get warnings %q, %v", got, err)
	}
	// A browser tool's profile deleted since is a warning, not an error.
	b.profiles.remove("shop")
	want = slices.Insert(want, 3, `tool browser_navigate: browser profile "shop" does not exist: its calls are refused until it does`)
	if _, got, err := b.a.Get(t.Context(), agents.Ref{ID: ag.ID}); err != nil || !slices.Equal(got, want) {
		t.Errorf("Get warnings after the profile's deletion\n%q, %v\nwant\n%q", got, err, want)
	}
}

// TestBrowserTools: a browser.* tool names an existing browser profile, and no other
// tool names one; every such field is named at once, and nothing is stored.
func TestBrowserTools(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := spec("browser")
	s.Tools = []*agentsv1.Tool{
		{Capability: "browser.navigate"},
		{Capability: "system.info", BrowserProfile: "shop"},
		{Capability: "browser.screenshot", BrowserProfile: "gone"},
		{Capability: "browser.navigate", Name: "bad_name", BrowserProfile: "Shop"},
	}
	_, _, err := b.a.Create(t.Context(), s, "token:a")
	wantFields(t, "bad browser tools", err, "spec.tools[0].browser_profile", "spec.tools[1].browser_profile",
		"spec.tools[2].browser_profile", "spec.tools[3].browser_profile")
	if e, ok := err.(*errdefs.Error); ok {
		for i, want := range []string{"a browser.navigate tool browses with a browser profile", "only a browser.* tool browses with a browser profile, not system.info",
			`there is no browser profile "gone"`, `"Shop" is not a browser profile's name`} {
			if got := e.FieldViolations()[i].Description; !strings.Contains(got, want) {
				t.Errorf("violation %d says %q, not %q", i, got, want)
			}
		}
	}
	if n := b.count(t); n != 0 {
		t.Fatalf("%d agents stored", n)
	}

	s.Tools = []*agentsv1.Tool{
		{Capability: "browser.navigate", BrowserProfile: "shop"},
		{Capability: "browser.navigate", Name: "bank", BrowserProfile: "bank"},
	}
	ag, _, err := b.a.Create(t.Context(), s, "token:a")
	if err != nil {
		t.Fatal(err)
	}
	if got := ag.Spec.GetTools()[1]; got.GetBrowserProfile() != "bank" || got.GetName() != "bank" {
		t.Errorf("stored tool %v", got)
	}
	// An update is checked alike.
	s.Tools[1].BrowserProfile = "gone"
	_, _, err = b.a.Update(t.Context(), agents.Ref{ID: ag.ID}, s, ag.Revision, "token:a")
	wantFields(t, "update with a missing profile", err, "spec.tools[1].browser_profile")
}
