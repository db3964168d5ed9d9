// Package agents is `palyra agents`: list, show, create, update and delete agents (named
// models with instructions whose tools are the capabilities of paired nodes), and make
// one the default. A definition comes from flags, from a protojson file of
// palyra.agents.v1.AgentSpec (--file), or both: the flags change what the file says.
package agents

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/pairing"
	"github.com/palyra/palyra/cli/internal/output"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// maxFileBytes bounds a definition file (or system prompt file) read.
const maxFileBytes = 1 << 20

// NewCommand returns `palyra agents` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "agents",
		Short: "List, show, create, update and delete agents, and set the default one",
		Long: `agents manages palyrad's agents: named models with a system prompt whose tools are the
capabilities of paired nodes (system.info, shell.execute, ...), each run on the nodes
the tool allows, under its policy (auto, ask: a human approves each call, deny). An
agent is used through the OpenAI-compatible API as the model agent:NAME (agent: for
the default agent). Listing and showing need agents.read (operators, admins, owners);
the other commands need agents.write (admins and owners).`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newListCommand(d), newShowCommand(d), newCreateCommand(d), newUpdateCommand(d),
		newDeleteCommand(d), newSetDefaultCommand(d), newRunCommand(d))
	return c
}

// idPattern is a ULID, as a --tool's node= takes.
var idPattern = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$`)

// ParseRef reads an agent argument: a ULID is an id, a name otherwise. A bad one is a
// usage error.
func ParseRef(arg string) (id, name string, err error) { return deps.ParseNameOrID("agent", arg) }

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		paging   cliflag.Paging
		selector string
	)
	c := &cobra.Command{
		Use:     "list",
		Short:   "List agents by name",
		Example: "  palyra agents list --selector team=ops",
		Args:    cobra.NoArgs,
		RunE: deps.List[*agentsv1.Agent, *agentsv1.ListAgentsResponse]{
			Paging: &paging,
			Noun:   "agents",
			Page: func(ctx context.Context, c *client.Client, page string) (*agentsv1.ListAgentsResponse, error) {
				return deps.Msg(c.Agents.ListAgents(ctx, connect.NewRequest(&agentsv1.ListAgentsRequest{
					LabelSelector: selector, PageSize: paging.Limit, PageToken: page,
				})))
			},
			Items: (*agentsv1.ListAgentsResponse).GetAgents,
			Response: func(list []*agentsv1.Agent, next string) *agentsv1.ListAgentsResponse {
				return &agentsv1.ListAgentsResponse{Agents: list, NextPageToken: next}
			},
			Table: listTable,
		}.RunE(d),
	}
	c.Flags().StringVar(&selector, "selector", "", "only the agents whose labels match this selector, e.g. team=ops,env!=dev")
	paging.Bind(c.Flags(), "agents", "every agent")
	return c
}

func newShowCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME|ID",
		Short: "Show an agent's definition, and warnings about its tools",
		Long: `show prints an agent's definition: its model, limits, labels, system prompt and tools,
and warns (on standard error) about each tool that no online node allowed to run it
offers now.`,
		Example: "  palyra agents show helper",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, name, err := ParseRef(args[0])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := getAgent(cmd.Context(), c, id, name)
			if err != nil {
				return err
			}
			return printAgent(d, res.GetAgent(), res.GetWarnings(), res)
		},
	}
}

// specFlags are the flags that define an agent, shared by create and update.
type specFlags struct {
	file, name, description, model, systemPrompt, systemPromptFile string
	tools, labels                                                  []string
	noTools                                                        bool
	maxSteps, maxToolCalls                                         uint32
	maxTokens                                                      uint64
	deadline                                                       cliflag.Duration
}

// bind adds the flags to fs; update also takes --name (a rename) and --no-tools.
func (f *specFlags) bind(fs *pflag.FlagSet, update bool) {
	fs.StringVar(&f.file, "file", "", "read the definition from this protojson file of an AgentSpec (- for standard input); the other flags change it")
	if update {
		fs.StringVar(&f.name, "name", "", "rename the agent")
		fs.BoolVar(&f.noTools, "no-tools", false, "remove every tool")
	}
	fs.StringVar(&f.model, "model", "", "the model the agent calls, one that palyra compat models lists")
	fs.StringVar(&f.description, "description", "", "what the agent is for")
	fs.StringVar(&f.systemPrompt, "system-prompt", "", "the agent's instructions")
	fs.StringVar(&f.systemPromptFile, "system-prompt-file", "", "read the instructions from this file (- for standard input)")
	fs.StringArrayVar(&f.tools, "tool", nil, "a tool: CAPABILITY[,name=N][,node=ID|selector=SEL][,policy=auto|ask|deny][,profile=P][,description=TEXT] "+
		"(repeatable; replaces the tools)")
	fs.Uint32Var(&f.maxSteps, "max-steps", 0, "the most model calls of a run, 1 to 64 (default 8)")
	fs.Uint32Var(&f.maxToolCalls, "max-tool-calls", 0, "the most tool calls of a run, 1 to 256 (default 16)")
	fs.Uint64Var(&f.maxTokens, "max-tokens", 0, "the most tokens a run's model calls use together (default: no limit)")
	fs.Var(&f.deadline, "deadline", "how long a run may take, e.g. 90s, 10m, 2h; at most 24h (default 5m)")
	fs.StringArrayVar(&f.labels, "label", nil, "label key=value (repeatable; replaces the labels)")
}

// apply reads --file into spec (replacing it) and then changes it by the other flags
// given.
func (f *specFlags) apply(fs *pflag.FlagSet, stdin io.Reader, spec *agentsv1.AgentSpec) error {
	if f.file != "" {
		b, err := readFile(stdin, f.file, "--file")
		if err != nil {
			return err
		}
		spec.Reset()
		if err := protojson.Unmarshal(b, spec); err != nil {
			return cliusage.Wrap(fmt.Errorf("--file %s is not an agent's definition (protojson of palyra.agents.v1.AgentSpec): %w", f.file, err))
		}
	}
	if fs.Changed("system-prompt") && fs.Changed("system-prompt-file") {
		return cliusage.Wrap(errors.New("give --system-prompt or --system-prompt-file, not both"))
	}
	if f.file == "-" && f.systemPromptFile == "-" {
		return cliusage.Wrap(errors.New("--file and --system-prompt-file cannot both read standard input"))
	}
	if fs.Changed("tool") && f.noTools {
		return cliusage.Wrap(errors.New("give --tool or --no-tools, not both"))
	}
	set := func(flag string, apply func()) {
		if fs.Changed(flag) {
			apply()
		}
	}
	set("name", func() { spec.Name = f.name })
	set("model", func() { spec.Model = f.model })
	set("description", func() { spec.Description = f.description })
	set("system-prompt", func() { spec.SystemPrompt = f.systemPrompt })
	if fs.Changed("system-prompt-file") {
		b, err := readFile(stdin, f.systemPromptFile, "--system-prompt-file")
		if err != nil {
			return err
		}
		spec.SystemPrompt = string(b)
	}
	if f.noTools {
		spec.Tools = nil
	}
	if fs.Changed("tool") {
		spec.Tools = nil
		for _, s := range f.tools {
			t, err := ParseTool(s)
			if err != nil {
				return err
			}
			spec.Tools = append(spec.Tools, t)
		}
	}
	if fs.Changed("label") {
		labels, err := pairing.ParseLabels(f.labels)
		if err != nil {
			return err
		}
		spec.Labels = labels
	}
	if fs.Changed("max-steps") || fs.Changed("max-tool-calls") || fs.Changed("max-tokens") || fs.Changed("deadline") {
		if spec.Limits == nil {
			spec.Limits = &agentsv1.AgentLimits{}
		}
	}
	set("max-steps", func() { spec.Limits.MaxSteps = f.maxSteps })
	set("max-tool-calls", func() { spec.Limits.MaxToolCalls = f.maxToolCalls })
	set("max-tokens", func() { spec.Limits.MaxTokens = f.maxTokens })
	set("deadline", func() { spec.Limits.Deadline = durationpb.New(f.deadline.Value) })
	return nil
}

// readFile reads a file given to flag, standard input for "-".
func readFile(stdin io.Reader, name, flag string) ([]byte, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if len(b) > maxFileBytes {
		return nil, cliusage.Wrap(fmt.Errorf("%s %s is larger than 1 MiB", flag, name))
	}
	return b, nil
}

// toolKeys are the keys of a --tool's options.
var toolKeys = []string{"name", "node", "selector", "policy", "profile", "description"}

// ParseTool reads a --tool: CAPABILITY[,name=N][,node=ID|selector=SEL][,policy=P]
// [,profile=P][,description=TEXT]. A piece after a comma that does not begin with one of the keys
// belongs to the value before it, so that selectors and descriptions may hold commas.
// A bad one is a usage error.
func ParseTool(s string) (*agentsv1.Tool, error) {
	bad := func(format string, args ...any) error {
		return cliusage.Wrap(fmt.Errorf("--tool %q: %s", s, fmt.Sprintf(format, args...)))
	}
	pieces := strings.Split(s, ",")
	t := &agentsv1.Tool{Capability: strings.TrimSpace(pieces[0])}
	if t.Capability == "" || strings.Contains(t.Capability, "=") {
		return nil, bad("begin with the capability, e.g. system.info")
	}
	var opts [][2]string
	for _, p := range pieces[1:] {
		k, v, ok := strings.Cut(p, "=")
		if ok && slices.Contains(toolKeys, strings.TrimSpace(k)) {
			opts = append(opts, [2]string{strings.TrimSpace(k), v})
			continue
		}
		if len(opts) == 0 {
			return nil, bad("%q is not one of %s=...", p, strings.Join(toolKeys, "=, "))
		}
		opts[len(opts)-1][1] += "," + p
	}
	seen := map[string]bool{}
	for _, o := range opts {
		k, v := o[0], o[1]
		if seen[k] {
			return nil, bad("%s= is given twice", k)
		}
		seen[k] = true
		switch k {
		case "name":
			t.Name = v
		case "node":
			if t.Target != nil {
				return nil, bad("give node= or selector=, not both")
			}
			if !idPattern.MatchString(v) {
				return nil, bad("node= takes a node's id (palyra nodes list), not %q", v)
			}
			t.Target = &agentsv1.Tool_NodeId{NodeId: strings.ToUpper(v)}
		case "selector":
			if t.Target != nil {
				return nil, bad("give node= or selector=, not both")
			}
			t.Target = &agentsv1.Tool_NodeSelector{NodeSelector: v}
		case "policy":
			p, ok := agentsv1.ToolPolicy_value["TOOL_POLICY_"+strings.ToUpper(v)]
			if !ok || p == 0 {
				return nil, bad("policy= is auto, ask or deny, not %q", v)
			}
			t.Policy = agentsv1.ToolPolicy(p)
		case "profile":
			t.BrowserProfile = v
		case "description":
			t.Description = v
		}
	}
	return t, nil
}

func newCreateCommand(d *deps.Deps) *cobra.Command {
	var f specFlags
	c := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create an agent from flags, a definition file, or both",
		Long: `create stores a new agent at revision 1. Its definition comes from the flags, or from
--file (protojson of palyra.agents.v1.AgentSpec, as palyra agents show -o json prints
an agent's "spec"), changed by the flags given; NAME, when given, is its name.

Each --tool is a capability of nodes offered to the model as a function:
  CAPABILITY[,name=N][,node=ID|selector=SEL][,policy=auto|ask|deny][,profile=P][,description=TEXT]
name defaults to the capability with dots as underscores; node= allows one node,
selector= the nodes whose labels match it (default: any node offering the capability);
policy defaults to auto (ask: a human approves each call; deny: refused). profile= is
the browser profile every call of a browser.* tool browses with, required for those
and refused for others; the model cannot pick another. A tool that no online node
offers is saved with a warning on standard error.`,
		Example: `  palyra agents create helper --model gpt-4o --system-prompt "You look after the fleet." \
    --tool system.info --tool shell.execute,selector=env=prod,policy=ask --max-steps 12
  palyra agents create shopper --model gpt-4o --tool browser.navigate,profile=shop
  palyra agents create --file helper.json --label team=ops`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := &agentsv1.AgentSpec{}
			if err := f.apply(cmd.Flags(), d.Stdin, spec); err != nil {
				return err
			}
			if len(args) == 1 {
				_, name, err := ParseRef(args[0])
				if err != nil || name == "" {
					return cliusage.Wrap(fmt.Errorf("invalid agent name %q: 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit", args[0]))
				}
				spec.Name = name
			}
			if spec.GetName() == "" {
				return cliusage.Wrap(errors.New("name the agent: palyra agents create NAME, or a name in --file"))
			}
			if spec.GetModel() == "" {
				return cliusage.Wrap(errors.New("--model is required (or a model in --file): one that palyra compat models lists"))
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Agents.CreateAgent(cmd.Context(), connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: spec}))
			if err != nil {
				return err
			}
			return printAgent(d, res.Msg.GetAgent(), res.Msg.GetWarnings(), res.Msg)
		},
	}
	f.bind(c.Flags(), false)
	return c
}

func newUpdateCommand(d *deps.Deps) *cobra.Command {
	var (
		f        specFlags
		expected int64
	)
	c := &cobra.Command{
		Use:   "update NAME|ID",
		Short: "Change an agent's definition as its next revision",
		Long: `update changes an agent: the flags given change its current definition (--file replaces
it first; --tool and --label replace the tools and labels), and palyrad stores the result
as the next revision. With --expected-revision N the change is made only while the agent
is at revision N, so that no one's change is overwritten unseen; without it, update reads
the agent and expects the revision it read, and says so. Runs already started keep the
definition they started with.`,
		Example: `  palyra agents update helper --max-steps 16 --expected-revision 3
  palyra agents update helper --tool system.info --tool shell.execute,policy=ask`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, name, err := ParseRef(args[0])
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("expected-revision") && expected < 1 {
				return cliusage.Wrap(fmt.Errorf("--expected-revision must be a revision (1 or more), got %d", expected))
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			cur, err := getAgent(cmd.Context(), c, id, name)
			if err != nil {
				return err
			}
			spec := cur.GetAgent().GetSpec()
			if err := f.apply(cmd.Flags(), d.Stdin, spec); err != nil {
				return err
			}
			if !cmd.Flags().Changed("expected-revision") {
				expected = cur.GetAgent().GetRevision()
				fmt.Fprintf(d.Stderr, "note: updating revision %d of agent %s, the one just read (pass --expected-revision to name the one you saw)\n",
					expected, cur.GetAgent().GetSpec().GetName())
			}
			res, err := c.Agents.UpdateAgent(cmd.Context(), connect.NewRequest(&agentsv1.UpdateAgentRequest{
				Agent: &agentsv1.UpdateAgentRequest_Id{Id: cur.GetAgent().GetId()}, Spec: spec, ExpectedRevision: &expected,
			}))
			if err != nil {
				return err
			}
			return printAgent(d, res.Msg.GetAgent(), res.Msg.GetWarnings(), res.Msg)
		},
	}
	f.bind(c.Flags(), true)
	c.Flags().Int64Var(&expected, "expected-revision", 0, "change the agent only while it is at this revision")
	return c
}

func newDeleteCommand(d *deps.Deps) *cobra.Command {
	var expected int64
	c := &cobra.Command{
		Use:   "delete NAME|ID",
		Short: "Delete an agent; its runs stay",
		Long: `delete deletes an agent. Its runs stay, with the definition they ran; a deleted default
agent leaves no default. With --expected-revision N it is deleted only while at revision N.`,
		Example: "  palyra agents delete helper",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, name, err := ParseRef(args[0])
			if err != nil {
				return err
			}
			req := &agentsv1.DeleteAgentRequest{}
			setRef(id, name, func(id string) { req.Agent = &agentsv1.DeleteAgentRequest_Id{Id: id} },
				func(name string) { req.Agent = &agentsv1.DeleteAgentRequest_Name{Name: name} })
			if cmd.Flags().Changed("expected-revision") {
				if expected < 1 {
					return cliusage.Wrap(fmt.Errorf("--expected-revision must be a revision (1 or more), got %d", expected))
				}
				req.ExpectedRevision = &expected
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Agents.DeleteAgent(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
				fmt.Fprintf(w, "Deleted agent %s (%s) at revision %d\n", res.Msg.GetAgent().GetSpec().GetName(), res.Msg.GetAgent().GetId(), res.Msg.GetAgent().GetRevision())
			})
		},
	}
	c.Flags().Int64Var(&expected, "expected-revision", 0, "delete the agent only while it is at this revision")
	return c
}

func newSetDefaultCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "set-default NAME|ID",
		Short:   "Make an agent the default one (the model agent:)",
		Example: "  palyra agents set-default helper",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, name, err := ParseRef(args[0])
			if err != nil {
				return err
			}
			req := &agentsv1.SetDefaultAgentRequest{}
			setRef(id, name, func(id string) { req.Agent = &agentsv1.SetDefaultAgentRequest_Id{Id: id} },
				func(name string) { req.Agent = &agentsv1.SetDefaultAgentRequest_Name{Name: name} })
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Agents.SetDefaultAgent(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
				was := "no agent was"
				if p := res.Msg.GetPreviousName(); p != "" {
					was = "it was " + p
				}
				fmt.Fprintf(w, "Agent %s is the default (%s)\n", res.Msg.GetAgent().GetSpec().GetName(), was)
			})
		},
	}
}

// setRef sets a request's agent to the id or the name.
func setRef(id, name string, byID, byName func(string)) {
	if id != "" {
		byID(id)
		return
	}
	byName(name)
}

// getAgent reads an agent by id or name.
func getAgent(ctx context.Context, c *client.Client, id, name string) (*agentsv1.GetAgentResponse, error) {
	req := &agentsv1.GetAgentRequest{}
	setRef(id, name, func(id string) { req.Agent = &agentsv1.GetAgentRequest_Id{Id: id} },
		func(name string) { req.Agent = &agentsv1.GetAgentRequest_Name{Name: name} })
	return deps.Msg(c.Agents.GetAgent(ctx, connect.NewRequest(req)))
}

// printAgent prints an agent as a table (its warnings on standard error) or the
// response res as JSON.
func printAgent(d *deps.Deps, ag *agentsv1.Agent, warnings []string, res proto.Message) error {
	if d.Output != output.JSON {
		for _, w := range warnings {
			output.Fprintf(d.Stderr, "warning: %s\n", w)
		}
	}
	return output.Print(d.Stdout, d.Output, res, func(w io.Writer) { agentTable(w, ag) })
}

// agentTable writes an agent as rows of a name and a value, then its tools as a table.
func agentTable(w io.Writer, ag *agentsv1.Agent) {
	s := ag.GetSpec()
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("Name", s.GetName())
	row("ID", ag.GetId())
	row("Model", s.GetModel())
	row("Default", strconv.FormatBool(ag.GetIsDefault()))
	row("Revision", strconv.FormatInt(ag.GetRevision(), 10))
	row("Description", output.Cell(s.GetDescription()))
	row("Labels", pairing.Labels(s.GetLabels()))
	row("Limits", limits(s.GetLimits()))
	row("Created", fmt.Sprintf("%s by %s", output.Time(ag.GetCreateTime(), "-"), output.Cell(ag.GetCreatedBy())))
	row("Updated", fmt.Sprintf("%s by %s", output.Time(ag.GetUpdateTime(), "-"), output.Cell(ag.GetUpdatedBy())))
	row("System prompt", prompt(s.GetSystemPrompt()))
	if len(s.GetTools()) == 0 {
		row("Tools", "none")
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "TOOL\tCAPABILITY\tNODES\tPOLICY\tPROFILE\tDESCRIPTION")
	for _, t := range s.GetTools() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), t.GetCapability(), target(t), output.Enum(t.GetPolicy()),
			output.Cell(t.GetBrowserProfile()), output.Cell(t.GetDescription()))
	}
}

// limits formats an agent's limits for a cell.
func limits(l *agentsv1.AgentLimits) string {
	tokens := "no token limit"
	if l.GetMaxTokens() > 0 {
		tokens = fmt.Sprintf("%d tokens", l.GetMaxTokens())
	}
	return fmt.Sprintf("%d steps, %d tool calls, %s, %s", l.GetMaxSteps(), l.GetMaxToolCalls(), tokens, l.GetDeadline().AsDuration().Round(time.Millisecond))
}

// prompt formats a system prompt for a cell: its first line, at most 60 characters,
// and its size when that is not all of it.
func prompt(p string) string {
	if p == "" {
		return "-"
	}
	first, _, _ := strings.Cut(p, "\n")
	if r := []rune(first); len(r) > 60 {
		first = string(r[:60])
	}
	if first == p {
		return output.Cell(p)
	}
	return fmt.Sprintf("%s... (%d bytes)", output.Cell(first), len(p))
}

// target formats the nodes a tool may run on.
func target(t *agentsv1.Tool) string {
	switch x := t.GetTarget().(type) {
	case *agentsv1.Tool_NodeId:
		return "node " + x.NodeId
	case *agentsv1.Tool_NodeSelector:
		if x.NodeSelector != "" {
			return output.Cell(x.NodeSelector)
		}
	}
	return "any"
}

// listTable writes agents as a table with a header.
func listTable(w io.Writer, list []*agentsv1.Agent) {
	fmt.Fprintln(w, "NAME\tDEFAULT\tMODEL\tTOOLS\tREVISION\tUPDATED\tLABELS\tDESCRIPTION")
	for _, ag := range list {
		s := ag.GetSpec()
		var tools []string
		for _, t := range s.GetTools() {
			tools = append(tools, t.GetName())
		}
		def := "-"
		if ag.GetIsDefault() {
			def = "default"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.GetName(), def, output.Cell(s.GetModel()), output.List(tools),
			ag.GetRevision(), output.Time(ag.GetUpdateTime(), "-"), pairing.Labels(s.GetLabels()), output.Cell(s.GetDescription()))
	}
}
