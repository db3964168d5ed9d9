// Package agents is palyrad's agents: named models with instructions whose tools are
// capabilities of paired nodes (sqlc/migrations/00015_agents.sql), served as
// AgentService.
//
// # Definitions
//
// An agent's definition is a palyra.agents.v1.AgentSpec: its name (a lower-case DNS
// label; the compat API's model "agent:NAME"), a model the compat API serves, a system
// prompt, up to 32 tools, limits and labels. Create and Update check a definition whole
// and report every field at fault at once (Invalid, one violation per field); they fill
// in the defaults (a tool's name from its capability, the auto policy, the limits), so
// that what is stored is what a run uses. Each update is the next revision of the agent,
// and names the revision it expects, like the live configuration's changes: a stale one
// is Aborted naming the current revision. At most one agent is the default (the model
// "agent:"); SetDefault moves the mark in one transaction. Every change names its target
// for the audit log before its first write, which commits the call's audit outbox row.
//
// A tool whose capability no online node offers (among the nodes its target allows) is
// no error: nodes come and go. Create, Update and Get answer warnings about it.
//
// A browser.* tool names the browser profile every call browses with, which must exist
// when the agent is stored (one deleted since is a warning). The run loop offers the
// model the capability's input without "profile", sets the tool's in each call, and
// refuses a call that names one: the agent, not the model, picks the identity.
//
// # Runs
//
// Runs of agents, their steps and the run loop live in the run*.go files.
package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/labels"
	"github.com/palyra/palyra/server/internal/store"
)

// The limits of a definition, and the defaults of its limits.
const (
	maxDescriptionBytes     = 1024
	maxModelBytes           = 256
	maxSystemPromptBytes    = 32 << 10
	maxTools                = 32
	maxToolDescriptionBytes = 4096
	maxSelectorBytes        = 4096

	// DefaultMaxSteps, DefaultMaxToolCalls and DefaultDeadline are the limits of an
	// agent that sets none; maxMaxSteps, maxMaxToolCalls and maxDeadline bound them.
	DefaultMaxSteps     = 8
	DefaultMaxToolCalls = 16
	DefaultDeadline     = 5 * time.Minute
	maxMaxSteps         = 64
	maxMaxToolCalls     = 256
	maxDeadline         = 24 * time.Hour

	// defaultPageSize and maxPageSize bound List.
	defaultPageSize = 100
	maxPageSize     = 500
)

// ModelPrefix begins the compat API's model id of an agent: "agent:NAME", and
// "agent:" alone for the default agent.
const ModelPrefix = "agent:"

// ReasonStaleRevision is the ErrorInfo reason of an update refused for a stale expected
// revision; MetadataCurrentRevision is the metadata key of the current revision.
const (
	ReasonStaleRevision     = "STALE_REVISION"
	MetadataCurrentRevision = "current_revision"
)

var (
	nameRE       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	toolNameRE   = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	capabilityRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	ulidRE       = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)
)

// Models lists the models the compat API serves (compat.Handler.ModelIDs).
type Models interface {
	ModelIDs(ctx context.Context) ([]string, error)
}

// Nodes is what agents need of the node registry (dispatch.Service): the nodes offering
// a capability, and one node.
type Nodes interface {
	NodesOffering(ctx context.Context, capability string) ([]dispatch.Node, error)
	NodeByID(ctx context.Context, id string) (dispatch.Node, error)
}

// BrowserProfiles is what agents need of the browser profiles (browser.Profiles): the
// profile of a browser.* tool must exist.
type BrowserProfiles interface {
	Exists(ctx context.Context, name string) (bool, error)
}

// Options are the dependencies of Agents.
type Options struct {
	Store *store.Store
	// Models checks an agent's model.
	Models Models
	// Nodes checks the nodes of an agent's tools and finds those offering them.
	Nodes Nodes
	// Profiles checks the browser profiles of browser.* tools; nil knows none, so that
	// every browser.* tool is refused.
	Profiles BrowserProfiles
	// Now stamps every change; nil uses time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Agents stores agent definitions. It is safe for concurrent use.
type Agents struct {
	store    *store.Store
	models   Models
	nodes    Nodes
	profiles BrowserProfiles
	now      func() time.Time
	log      *slog.Logger
}

// New returns the agents of opts.Store; Store, Models and Nodes are required.
func New(opts Options) *Agents {
	a := &Agents{store: opts.Store, models: opts.Models, nodes: opts.Nodes, profiles: opts.Profiles, now: opts.Now, log: opts.Logger}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a
}

// Agent is a stored agent.
type Agent struct {
	ID string
	// Spec is its definition with the defaults filled in.
	Spec      *agentsv1.AgentSpec
	Revision  int64
	IsDefault bool
	CreatedAt time.Time
	CreatedBy string
	UpdatedAt time.Time
	UpdatedBy string
}

// Ref names an agent by id or by name; exactly one is set.
type Ref struct {
	ID, Name string
}

// String names the agent for messages.
func (r Ref) String() string {
	if r.ID != "" {
		return "agent " + r.ID
	}
	return fmt.Sprintf("agent %q", r.Name)
}

// check refuses a Ref that names nothing or is malformed (Invalid, naming field).
func (r Ref) check() error {
	switch {
	case r.ID != "" && r.Name != "":
		return errdefs.InvalidField("id", "name an agent by its id or its name, not both")
	case r.ID != "":
		if !ulidRE.MatchString(r.ID) {
			return errdefs.InvalidField("id", "%q is not an agent id (a ULID)", r.ID)
		}
	case r.Name != "":
		if !nameRE.MatchString(r.Name) {
			return errdefs.InvalidField("name", "%q is not an agent's name", r.Name)
		}
	default:
		return errdefs.InvalidField("name", "name an agent by its id or its name")
	}
	return nil
}

// StaleRevisionError refuses a change whose expected revision is not the agent's
// current one.
type StaleRevisionError struct {
	Name     string
	Expected int64
	Current  int64
}

// Error says what the current revision is.
func (e *StaleRevisionError) Error() string {
	return fmt.Sprintf("agent %q is at revision %d, not %d: nothing was changed; read it again and redo your change", e.Name, e.Current, e.Expected)
}

// ErrorKind implements errdefs.Kinded: Aborted.
func (e *StaleRevisionError) ErrorKind() errdefs.Kind { return errdefs.Aborted }

// asError returns the typed error with its ErrorInfo for the edge.
func (e *StaleRevisionError) asError() *errdefs.Error {
	return &errdefs.Error{
		Kind: errdefs.Aborted, Message: e.Error(), Reason: ReasonStaleRevision,
		Metadata: map[string]string{MetadataCurrentRevision: fmt.Sprint(e.Current)}, Cause: e,
	}
}

// Create checks spec, fills in its defaults and stores it as a new agent at revision 1,
// on behalf of by. A name already taken is Conflict; a definition at fault is Invalid,
// naming every field at fault. It returns the agent and the warnings about it.
func (a *Agents) Create(ctx context.Context, spec *agentsv1.AgentSpec, by string) (Agent, []string, error) {
	if by == "" {
		return Agent{}, nil, errors.New("agents: create: no principal named")
	}
	spec, err := a.normalize(ctx, spec)
	if err != nil {
		return Agent{}, nil, err
	}
	audit.SetTarget(ctx, "agent:"+spec.GetName()+" revision:1") // before the insert, which writes the call's audit outbox row
	row, err := toRow(spec)
	if err != nil {
		return Agent{}, nil, fmt.Errorf("agents: create: %w", err)
	}
	row.ID = ulid.Make().String()
	var out Agent
	err = a.store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		out, err = insertAgent(ctx, tx, row, a.now().UTC(), by)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return Agent{}, nil, errdefs.Wrap(err, errdefs.Conflict, "an agent named %q exists already", spec.GetName())
	}
	if err != nil {
		return Agent{}, nil, wrapErr("create", err)
	}
	return out, a.Warnings(ctx, out.Spec), nil
}

// Get returns an agent and the warnings about it as things stand now.
func (a *Agents) Get(ctx context.Context, ref Ref) (Agent, []string, error) {
	if err := ref.check(); err != nil {
		return Agent{}, nil, err
	}
	ag, err := getAgent(ctx, a.store.Q(), ref)
	if err != nil {
		return Agent{}, nil, wrapErr("get", err)
	}
	return ag, a.Warnings(ctx, ag.Spec), nil
}

// Default returns the default agent; FailedPrecondition when there is none.
func (a *Agents) Default(ctx context.Context) (Agent, error) {
	ag, err := getDefaultAgent(ctx, a.store.Q())
	if err != nil {
		return Agent{}, wrapErr("default", err)
	}
	return ag, nil
}

// List returns a page of agents by name whose labels match selector, and the token of
// the next page (empty on the last).
func (a *Agents) List(ctx context.Context, selector string, pageSize int, pageToken string) ([]Agent, string, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, "", errdefs.Wrap(err, errdefs.Invalid, "label_selector: %s", err)
	}
	if pageSize <= 0 {
		pageSize = defaultPageSize
	}
	pageSize = min(pageSize, maxPageSize)
	after, err := decodePageToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	out, next, err := labels.Page(sel, pageSize, after, func(ag Agent) string { return ag.Spec.GetName() },
		func(ag Agent) map[string]string { return ag.Spec.GetLabels() },
		func(after string, limit int) ([]Agent, bool, error) {
			return listAgents(ctx, a.store.Q(), after, limit)
		})
	if err != nil {
		return nil, "", wrapErr("list", err)
	}
	if next != "" {
		next = encodePageToken(next)
	}
	return out, next, nil
}

// Update replaces the definition of the agent ref by spec as its next revision, on
// behalf of by, if expected is its current revision (else a *StaleRevisionError,
// Aborted). The definition is checked as Create checks it; a new name that another
// agent has is Conflict.
func (a *Agents) Update(ctx context.Context, ref Ref, spec *agentsv1.AgentSpec, expected int64, by string) (Agent, []string, error) {
	if err := ref.check(); err != nil {
		return Agent{}, nil, err
	}
	if by == "" {
		return Agent{}, nil, errors.New("agents: update: no principal named")
	}
	if expected < 1 {
		return Agent{}, nil, errdefs.InvalidField("expected_revision", "name the agent's current revision (1 or more): read the agent first")
	}
	spec, err := a.normalize(ctx, spec)
	if err != nil {
		return Agent{}, nil, err
	}
	row, err := toRow(spec)
	if err != nil {
		return Agent{}, nil, fmt.Errorf("agents: update: %w", err)
	}
	audit.SetTarget(ctx, refTarget(ref))
	var out Agent
	err = a.store.InTx(ctx, func(tx *store.Tx) error {
		cur, err := lockAgent(ctx, tx, ref)
		if err != nil {
			return err
		}
		if cur.Revision != expected {
			return (&StaleRevisionError{Name: cur.Spec.GetName(), Expected: expected, Current: cur.Revision}).asError()
		}
		target := fmt.Sprintf("agent:%s revision:%d", cur.Spec.GetName(), cur.Revision+1)
		if spec.GetName() != cur.Spec.GetName() {
			target = fmt.Sprintf("agent:%s -> agent:%s revision:%d", cur.Spec.GetName(), spec.GetName(), cur.Revision+1)
		}
		audit.SetTarget(ctx, target) // before the update, which writes the call's audit outbox row
		row.ID = cur.ID
		out, err = updateAgent(ctx, tx, row, a.now().UTC(), by)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return Agent{}, nil, errdefs.Wrap(err, errdefs.Conflict, "an agent named %q exists already", spec.GetName())
	}
	if err != nil {
		return Agent{}, nil, wrapErr("update", err)
	}
	return out, a.Warnings(ctx, out.Spec), nil
}

// Delete deletes the agent ref, if expected is nil or its current revision (else a
// *StaleRevisionError, Aborted), and returns it as it was. Its runs stay.
func (a *Agents) Delete(ctx context.Context, ref Ref, expected *int64) (Agent, error) {
	if err := ref.check(); err != nil {
		return Agent{}, err
	}
	audit.SetTarget(ctx, refTarget(ref))
	var out Agent
	err := a.store.InTx(ctx, func(tx *store.Tx) error {
		cur, err := lockAgent(ctx, tx, ref)
		if err != nil {
			return err
		}
		if expected != nil && cur.Revision != *expected {
			return (&StaleRevisionError{Name: cur.Spec.GetName(), Expected: *expected, Current: cur.Revision}).asError()
		}
		audit.SetTarget(ctx, fmt.Sprintf("agent:%s revision:%d", cur.Spec.GetName(), cur.Revision)) // before the delete
		out = cur
		return deleteAgent(ctx, tx, cur.ID)
	})
	if err != nil {
		return Agent{}, wrapErr("delete", err)
	}
	return out, nil
}

// SetDefault makes the agent ref the default, taking the mark from the agent that had
// it in the same transaction, and returns the agent and the name of the previous
// default ("" when there was none or it was this one).
func (a *Agents) SetDefault(ctx context.Context, ref Ref) (Agent, string, error) {
	if err := ref.check(); err != nil {
		return Agent{}, "", err
	}
	audit.SetTarget(ctx, refTarget(ref))
	var (
		out      Agent
		previous string
		err      error
	)
	// Two calls at once on two replicas: the second's mark meets the unique index of the
	// default, and a second attempt sees the first's mark.
	for attempt := 0; attempt < 3; attempt++ {
		err = a.store.InTx(ctx, func(tx *store.Tx) error {
			cur, err := lockAgent(ctx, tx, ref)
			if err != nil {
				return err
			}
			previous = ""
			switch old, err := getDefaultAgent(ctx, tx.Q()); {
			case err == nil && old.ID != cur.ID:
				previous = old.Spec.GetName()
			case err != nil && !errors.Is(err, store.ErrNotFound):
				return err
			}
			target := "agent:" + cur.Spec.GetName() + " default"
			if previous != "" {
				target += " (was agent:" + previous + ")"
			}
			audit.SetTarget(ctx, target) // before the writes, which write the call's audit outbox row
			if err := setDefault(ctx, tx, cur.ID); err != nil {
				return err
			}
			out = cur
			out.IsDefault = true
			return nil
		})
		if !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	if err != nil {
		return Agent{}, "", wrapErr("set default", err)
	}
	return out, previous, nil
}

// refTarget is the audit target of a call that names an agent, until it is found.
func refTarget(r Ref) string {
	if r.ID != "" {
		return "agent_id:" + r.ID
	}
	return "agent:" + r.Name
}

// Warnings returns what is amiss with spec's tools as things stand now, without making
// it invalid: a tool whose capability no online node that its target allows offers, a
// browser.* tool whose profile was deleted since. A failure to read the nodes is a
// warning too.
func (a *Agents) Warnings(ctx context.Context, spec *agentsv1.AgentSpec) []string {
	var out []string
	for _, t := range spec.GetTools() {
		w, err := a.toolWarning(ctx, t)
		if err != nil {
			a.log.Warn("agents: the nodes of a tool could not be read", "capability", t.GetCapability(), "err", err)
			w = fmt.Sprintf("tool %s: the nodes offering %s could not be read", t.GetName(), t.GetCapability())
		}
		if w != "" {
			out = append(out, w)
		}
		if name := t.GetBrowserProfile(); name != "" && a.profiles != nil {
			if ok, err := a.profiles.Exists(ctx, name); err == nil && !ok {
				out = append(out, fmt.Sprintf("tool %s: browser profile %q does not exist: its calls are refused until it does", t.GetName(), name))
			}
		}
	}
	return out
}

// toolWarning returns the warning about one tool, or "".
func (a *Agents) toolWarning(ctx context.Context, t *agentsv1.Tool) (string, error) {
	nodes, err := a.nodes.NodesOffering(ctx, t.GetCapability())
	if err != nil {
		return "", err
	}
	nodes = slices.DeleteFunc(nodes, func(n dispatch.Node) bool { return !Offers(n, t.GetCapability()) })
	switch target := t.GetTarget().(type) {
	case *agentsv1.Tool_NodeId:
		i := slices.IndexFunc(nodes, func(n dispatch.Node) bool { return n.ID == target.NodeId })
		if i >= 0 && nodes[i].Presence == dispatch.PresenceOnline {
			return "", nil
		}
		n, err := a.nodes.NodeByID(ctx, target.NodeId)
		if err != nil {
			if errdefs.KindOf(err) == errdefs.NotFound {
				return fmt.Sprintf("tool %s: node %s does not exist", t.GetName(), target.NodeId), nil
			}
			return "", err
		}
		switch {
		case n.Revoked:
			return fmt.Sprintf("tool %s: node %s (%s) is revoked", t.GetName(), n.Name, n.ID), nil
		case i < 0:
			return fmt.Sprintf("tool %s: node %s (%s) does not offer %s", t.GetName(), n.Name, n.ID, t.GetCapability()), nil
		}
		return fmt.Sprintf("tool %s: node %s (%s), the only one it may run on, is %s", t.GetName(), n.Name, n.ID, n.Presence), nil
	case *agentsv1.Tool_NodeSelector:
		sel, err := labels.Parse(target.NodeSelector)
		if err != nil {
			return "", err // checked when stored
		}
		if !slices.ContainsFunc(nodes, func(n dispatch.Node) bool {
			return n.Presence == dispatch.PresenceOnline && sel.Matches(NodeLabels(n))
		}) {
			if sel.Empty() {
				return fmt.Sprintf("tool %s: no online node offers %s", t.GetName(), t.GetCapability()), nil
			}
			return fmt.Sprintf("tool %s: no online node matching %q offers %s", t.GetName(), target.NodeSelector, t.GetCapability()), nil
		}
	default:
		if !slices.ContainsFunc(nodes, func(n dispatch.Node) bool { return n.Presence == dispatch.PresenceOnline }) {
			return fmt.Sprintf("tool %s: no online node offers %s", t.GetName(), t.GetCapability()), nil
		}
	}
	return "", nil
}

// Offers reports whether node n, unrevoked, announces capability as available.
func Offers(n dispatch.Node, capability string) bool {
	return !n.Revoked && slices.ContainsFunc(n.Capabilities, func(c dispatch.Capability) bool {
		return c.Name == capability && c.Available
	})
}

// NodeLabels are the labels a tool's selector matches: those the node reported,
// overridden by those given to its device.
func NodeLabels(n dispatch.Node) map[string]string {
	out := make(map[string]string, len(n.Labels)+len(n.ReportedLabels))
	maps.Copy(out, n.ReportedLabels)
	maps.Copy(out, n.Labels)
	return out
}

// normalize checks spec and returns a copy with its defaults filled in, or an Invalid
// error naming every field at fault.
func (a *Agents) normalize(ctx context.Context, spec *agentsv1.AgentSpec) (*agentsv1.AgentSpec, error) {
	if spec == nil {
		return nil, errdefs.InvalidField("spec", "an agent needs a definition")
	}
	spec = proto.CloneOf(spec)
	var vs []errdefs.Violation
	bad := func(field, format string, args ...any) {
		vs = append(vs, errdefs.Violation{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	if !nameRE.MatchString(spec.GetName()) {
		bad("spec.name", "an agent's name is a lower-case DNS label: 1 to 63 letters a-z, digits and '-', starting and ending with a letter or digit (%q is not)", spec.GetName())
	}
	checkText(bad, "spec.description", spec.GetDescription(), maxDescriptionBytes)
	checkText(bad, "spec.system_prompt", spec.GetSystemPrompt(), maxSystemPromptBytes)
	if err := a.checkModel(ctx, bad, spec.GetModel()); err != nil {
		return nil, err
	}
	a.checkTools(ctx, bad, spec)
	checkLimits(bad, spec)
	labels.Check("spec.labels", "an agent", spec.GetLabels(), bad)
	if len(vs) > 0 {
		return nil, errdefs.InvalidFields(vs...)
	}
	return spec, nil
}

// checkText checks a free text field.
func checkText(bad func(string, string, ...any), field, s string, limit int) {
	switch {
	case len(s) > limit:
		bad(field, "at most %d bytes, not %d", limit, len(s))
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		bad(field, "must be UTF-8 without NUL characters")
	}
}

// checkModel checks that model is one the compat API serves and no agent. It fails only
// when the models cannot be listed.
func (a *Agents) checkModel(ctx context.Context, bad func(string, string, ...any), model string) error {
	switch {
	case model == "":
		bad("spec.model", "an agent needs a model: one that `palyra compat models` lists")
		return nil
	case strings.HasPrefix(model, ModelPrefix):
		bad("spec.model", "an agent's model cannot be another agent (%q)", model)
		return nil
	case len(model) > maxModelBytes:
		bad("spec.model", "at most %d bytes", maxModelBytes)
		return nil
	}
	ids, err := a.models.ModelIDs(ctx)
	if err != nil {
		return fmt.Errorf("agents: the models: %w", err)
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return strings.HasPrefix(id, ModelPrefix) })
	if !slices.Contains(ids, model) {
		known := "none is configured (compat.models, compat.providers) and no online node serves one"
		if len(ids) > 0 {
			shown := ids[:min(len(ids), 10)]
			known = "they are " + strings.Join(shown, ", ")
			if len(ids) > len(shown) {
				known += fmt.Sprintf(" and %d more (palyra compat models)", len(ids)-len(shown))
			}
		}
		bad("spec.model", "the compat API serves no model %q: %s", model, known)
	}
	return nil
}

// checkTools checks spec's tools and fills in their defaults.
func (a *Agents) checkTools(ctx context.Context, bad func(string, string, ...any), spec *agentsv1.AgentSpec) {
	if len(spec.GetTools()) > maxTools {
		bad("spec.tools", "an agent has at most %d tools, not %d", maxTools, len(spec.GetTools()))
		return
	}
	names := map[string]int{}
	for i, t := range spec.GetTools() {
		field := fmt.Sprintf("spec.tools[%d]", i)
		if t == nil {
			bad(field, "a tool must not be empty")
			continue
		}
		if !capabilityRE.MatchString(t.GetCapability()) || len(t.GetCapability()) > 128 {
			bad(field+".capability", "a capability's name is like system.info: lower-case words of letters, digits and '_', joined by dots (%q is not)", t.GetCapability())
			continue
		}
		a.checkBrowserProfile(ctx, bad, field+".browser_profile", t)
		if t.GetName() == "" {
			t.Name = strings.ReplaceAll(t.GetCapability(), ".", "_")
		}
		if !toolNameRE.MatchString(t.GetName()) {
			bad(field+".name", "a tool's name is 1 to 64 letters, digits, '_' and '-' (%q is not)", t.GetName())
		} else if j, dup := names[t.GetName()]; dup {
			bad(field+".name", "tool name %q is the name of spec.tools[%d] too: give one of them another name", t.GetName(), j)
		} else {
			names[t.GetName()] = i
		}
		switch target := t.GetTarget().(type) {
		case *agentsv1.Tool_NodeId:
			a.checkNode(ctx, bad, field+".node_id", target.NodeId)
		case *agentsv1.Tool_NodeSelector:
			if len(target.NodeSelector) > maxSelectorBytes {
				bad(field+".node_selector", "at most %d bytes", maxSelectorBytes)
			} else if _, err := labels.Parse(target.NodeSelector); err != nil {
				bad(field+".node_selector", "%s", err)
			}
		}
		switch t.GetPolicy() {
		case agentsv1.ToolPolicy_TOOL_POLICY_UNSPECIFIED:
			t.Policy = agentsv1.ToolPolicy_TOOL_POLICY_AUTO
		case agentsv1.ToolPolicy_TOOL_POLICY_AUTO, agentsv1.ToolPolicy_TOOL_POLICY_ASK, agentsv1.ToolPolicy_TOOL_POLICY_DENY:
		default:
			bad(field+".policy", "the policies are auto, ask and deny")
		}
		checkText(bad, field+".description", t.GetDescription(), maxToolDescriptionBytes)
	}
}

// checkBrowserProfile checks a tool's browser profile: a browser.* tool names an
// existing one, another tool none.
func (a *Agents) checkBrowserProfile(ctx context.Context, bad func(string, string, ...any), field string, t *agentsv1.Tool) {
	name, capability := t.GetBrowserProfile(), t.GetCapability()
	switch {
	case !dispatch.IsBrowser(capability):
		if name != "" {
			bad(field, "only a browser.* tool browses with a browser profile, not %s", capability)
		}
		return
	case name == "":
		bad(field, "a %s tool browses with a browser profile that the agent fixes: name one (palyra browser profiles list)", capability)
		return
	case !nameRE.MatchString(name):
		bad(field, "%q is not a browser profile's name", name)
		return
	}
	ok := false
	if a.profiles != nil {
		var err error
		if ok, err = a.profiles.Exists(ctx, name); err != nil {
			a.log.Warn("agents: a tool's browser profile could not be read", "profile", name, "err", err)
			return // a call with it is refused if it does not exist then
		}
	}
	if !ok {
		bad(field, "there is no browser profile %q (palyra browser profiles list)", name)
	}
}

// checkNode checks that a tool's node exists.
func (a *Agents) checkNode(ctx context.Context, bad func(string, string, ...any), field, id string) {
	if !ulidRE.MatchString(id) {
		bad(field, "%q is not a node id (a ULID)", id)
		return
	}
	if _, err := a.nodes.NodeByID(ctx, id); err != nil {
		if errdefs.KindOf(err) == errdefs.NotFound {
			bad(field, "there is no node %s", id)
			return
		}
		a.log.Warn("agents: a tool's node could not be read", "node_id", id, "err", err)
	}
}

// checkLimits checks spec's limits and fills in their defaults.
func checkLimits(bad func(string, string, ...any), spec *agentsv1.AgentSpec) {
	if spec.Limits == nil {
		spec.Limits = &agentsv1.AgentLimits{}
	}
	l := spec.Limits
	switch {
	case l.MaxSteps == 0:
		l.MaxSteps = DefaultMaxSteps
	case l.MaxSteps > maxMaxSteps:
		bad("spec.limits.max_steps", "at most %d model calls a run, not %d", maxMaxSteps, l.MaxSteps)
	}
	switch {
	case l.MaxToolCalls == 0:
		l.MaxToolCalls = DefaultMaxToolCalls
	case l.MaxToolCalls > maxMaxToolCalls:
		bad("spec.limits.max_tool_calls", "at most %d tool calls a run, not %d", maxMaxToolCalls, l.MaxToolCalls)
	}
	if l.MaxTokens > 1<<62 {
		bad("spec.limits.max_tokens", "at most %d", uint64(1)<<62)
	}
	if l.Deadline == nil {
		l.Deadline = durationpb.New(DefaultDeadline)
		return
	}
	d := l.Deadline.AsDuration()
	switch {
	case l.Deadline.CheckValid() != nil || d < time.Millisecond:
		bad("spec.limits.deadline", "a run's deadline is 1 ms to 24 h")
	case d > maxDeadline:
		bad("spec.limits.deadline", "a run's deadline is at most 24 h, not %s", d)
	default:
		l.Deadline = durationpb.New(d.Truncate(time.Millisecond))
	}
}

// wrapErr adds the operation to an error, keeping a domain error's message as it is.
func wrapErr(op string, err error) error {
	var k errdefs.Kinded
	if errors.As(err, &k) {
		return err
	}
	return fmt.Errorf("agents: %s: %w", op, err)
}
