// Package config is `palyra config`: read palyrad's configuration and change its runtime
// settings live, on every replica, as numbered revisions.
//
// Every change names the revision it expects: --expected-revision, or the revision the
// command read just before (apply reads it once for the whole file), so that a change
// made meanwhile by someone else is refused rather than overwritten.
package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewCommand returns `palyra config` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Show palyrad's configuration, change its runtime settings live",
		Long: `config reads palyrad's settings (config.read: admins and owners) and changes its runtime
settings (config.write: owners) on every replica at once, without a restart.

Bootstrap settings (listen address, data directory, database, TLS, ...) come from
palyrad's flags, PALYRA_* variables and configuration file, and are read-only here.
Runtime settings may also be stored in the database, which overrides those sources.
Every change is a numbered revision: history lists them, rollback restores one. A
change names the revision it expects (--expected-revision, or the one just read), so
that a change made meanwhile by someone else is refused, not overwritten.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newGetCommand(d), newSetCommand(d), newUnsetCommand(d), newExportCommand(d),
		newDiffCommand(d), newApplyCommand(d), newHistoryCommand(d), newRollbackCommand(d))
	return c
}

// maxKeyLen is the longest setting key the API takes.
const maxKeyLen = 128

func checkKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return cliusage.Wrap(fmt.Errorf("a setting key is 1 to %d bytes long, e.g. nodes.heartbeat_interval", maxKeyLen))
	}
	return nil
}

func newGetCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "get [KEY]",
		Short: "Show every setting, or one: value, source, whether it is runtime",
		Long: `get shows each setting's effective value, where it comes from (default, file,
environment, flag, or database with the revision that stored it) and whether it can be
changed live. Secret settings show only whether they are set. The current revision is
written to standard error.`,
		Example: `  palyra config get
  palyra config get nodes.heartbeat_interval -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &controlplanev1.GetConfigRequest{}
			if len(args) == 1 {
				if err := checkKey(args[0]); err != nil {
					return err
				}
				req.Key = args[0]
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Config.GetConfig(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			if d.Output != output.JSON {
				fmt.Fprintf(d.Stderr, "configuration revision %d\n", res.Msg.GetRevision())
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { settingsTable(w, res.Msg.GetSettings()) })
		},
	}
}

// settingsTable writes settings with their values and sources.
func settingsTable(w io.Writer, settings []*controlplanev1.Setting) {
	fmt.Fprintln(w, "KEY\tVALUE\tSOURCE\tRUNTIME")
	for _, s := range settings {
		value := show(s.GetValue())
		if s.GetSecret() {
			value = "(not set)"
			if s.GetIsSet() {
				value = "(set)"
			}
		}
		source := output.Enum(s.GetSource())
		if s.GetRevision() != 0 {
			source += fmt.Sprintf(" (revision %d)", s.GetRevision())
		}
		runtime := "no"
		if s.GetRuntime() {
			runtime = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", output.Cell(s.GetKey()), value, source, runtime)
	}
}

// show formats a value for a table cell; "-" when there is none.
func show(v *controlplanev1.ConfigValue) string {
	if v == nil {
		return "-"
	}
	if l := v.GetList(); l != nil {
		if len(l.GetItems()) == 0 {
			return "[]"
		}
		return "[" + output.Cell(strings.Join(l.GetItems(), ",")) + "]"
	}
	if v.GetText() == "" {
		return `""`
	}
	return output.Cell(v.GetText())
}

// changeFlags are the flags of the commands that change the stored values.
type changeFlags struct {
	expected int64
	reason   string
}

func (f *changeFlags) bind(c *cobra.Command) {
	c.Flags().Int64Var(&f.expected, "expected-revision", 0,
		"the revision the change expects (default: the current one, read just before the change)")
	c.Flags().StringVar(&f.reason, "reason", "", "why, recorded with the revision (at most 512 bytes)")
}

// check refuses bad flags as usage errors.
func (f *changeFlags) check(c *cobra.Command) error {
	if c.Flags().Changed("expected-revision") && f.expected < 0 {
		return cliusage.Wrap(errors.New("--expected-revision must be 0 or more"))
	}
	if len(f.reason) > 512 {
		return cliusage.Wrap(errors.New("--reason is at most 512 bytes long"))
	}
	return nil
}

// expectedRevision returns --expected-revision, or else the current revision.
func (f *changeFlags) expectedRevision(cmd *cobra.Command, c *client.Client) (int64, error) {
	if cmd.Flags().Changed("expected-revision") {
		return f.expected, nil
	}
	return currentRevision(cmd, c)
}

func currentRevision(cmd *cobra.Command, c *client.Client) (int64, error) {
	res, err := c.Config.GetConfig(cmd.Context(), connect.NewRequest(&controlplanev1.GetConfigRequest{}))
	if err != nil {
		return 0, err
	}
	return res.Msg.GetRevision(), nil
}

// update makes change and prints the revision and what it changed.
func (f *changeFlags) update(cmd *cobra.Command, d *deps.Deps, change *controlplanev1.ConfigChangeSpec) error {
	return f.run(cmd, d, func(c *client.Client, expected int64) (proto.Message, *controlplanev1.ConfigRevision, []*controlplanev1.ConfigChange, error) {
		res, err := c.Config.UpdateConfig(cmd.Context(), connect.NewRequest(&controlplanev1.UpdateConfigRequest{
			Change: change, ExpectedRevision: &expected, Reason: f.reason,
		}))
		if err != nil {
			return nil, nil, nil, err
		}
		return res.Msg, res.Msg.GetRevision(), res.Msg.GetChanges(), nil
	})
}

// run makes a change with call, given the revision it expects, and prints the revision
// made and what changed.
func (f *changeFlags) run(cmd *cobra.Command, d *deps.Deps,
	call func(c *client.Client, expected int64) (proto.Message, *controlplanev1.ConfigRevision, []*controlplanev1.ConfigChange, error)) error {
	c, err := d.Client()
	if err != nil {
		return err
	}
	expected, err := f.expectedRevision(cmd, c)
	if err != nil {
		return err
	}
	msg, rev, changes, err := call(c, expected)
	if err != nil {
		return err
	}
	return printChanges(d, msg, rev, expected, changes)
}

// printChanges prints the result of a change: the revision made and a table of what
// changed.
func printChanges(d *deps.Deps, msg proto.Message, rev *controlplanev1.ConfigRevision, expected int64, changes []*controlplanev1.ConfigChange) error {
	if d.Output != output.JSON {
		if len(changes) == 0 {
			fmt.Fprintf(d.Stderr, "nothing to change: the configuration stays at revision %d\n", expected)
		} else {
			fmt.Fprintf(d.Stderr, "configuration revision %d\n", rev.GetRevision())
		}
	}
	return output.Print(d.Stdout, d.Output, msg, func(w io.Writer) { changesTable(w, changes, true) })
}

// changesTable writes what changed: the effective values before and after when known,
// else the stored ones.
func changesTable(w io.Writer, changes []*controlplanev1.ConfigChange, effective bool) {
	if len(changes) == 0 {
		return
	}
	if effective {
		fmt.Fprintln(w, "KEY\tOP\tBEFORE\tAFTER")
	} else {
		fmt.Fprintln(w, "KEY\tOP\tSTORED BEFORE\tSTORED AFTER")
	}
	for _, ch := range changes {
		before, after := ch.GetOldValue(), ch.GetNewValue()
		if effective && (ch.GetOldEffective() != nil || ch.GetNewEffective() != nil) {
			before, after = ch.GetOldEffective(), ch.GetNewEffective()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", output.Cell(ch.GetKey()), output.Cell(ch.GetOp()), show(before), show(after))
	}
}

func newSetCommand(d *deps.Deps) *cobra.Command {
	var f changeFlags
	c := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Set a runtime setting on every replica",
		Long: `set stores a runtime setting's value in the database, as a new revision: every replica
uses it at once. VALUE is written as for palyrad's flag (20s, 8, debug, ...); a list
setting takes its items comma-separated. A bad value is refused with the type expected.`,
		Example: `  palyra config set nodes.heartbeat_interval 20s
  palyra config set compat.models gpt-4o,llama3 --reason "new models" --expected-revision 4`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return cliusage.Wrap(fmt.Errorf("config set takes a key and a value, got %d arguments", len(args)))
			}
			if err := checkKey(args[0]); err != nil {
				return err
			}
			if err := f.check(cmd); err != nil {
				return err
			}
			return f.update(cmd, d, &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{{Key: args[0], Value: text(args[1])}}})
		},
	}
	f.bind(c)
	return c
}

func newUnsetCommand(d *deps.Deps) *cobra.Command {
	var f changeFlags
	c := &cobra.Command{
		Use:   "unset KEY...",
		Short: "Remove stored values: the file, flag, environment or default value applies again",
		Example: `  palyra config unset nodes.heartbeat_interval
  palyra config unset log.level compat.models --reason "back to the file"`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cliusage.Wrap(errors.New("config unset takes the keys to unset"))
			}
			for _, k := range args {
				if err := checkKey(k); err != nil {
					return err
				}
			}
			if err := f.check(cmd); err != nil {
				return err
			}
			return f.update(cmd, d, &controlplanev1.ConfigChangeSpec{Unset: args})
		},
	}
	f.bind(c)
	return c
}

func text(v string) *controlplanev1.ConfigValue {
	return &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_Text{Text: v}}
}

func newExportCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "export",
		Short: "Write the runtime settings' effective values as TOML",
		Long: `export writes the effective values of every runtime setting as TOML on standard output:
a file palyrad takes as its configuration file (--config), and apply takes back.`,
		Example: `  palyra config export > palyrad.toml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Config.GetConfig(cmd.Context(), connect.NewRequest(&controlplanev1.GetConfigRequest{}))
			if err != nil {
				return err
			}
			out, err := Export(res.Msg)
			if err != nil {
				return err
			}
			_, err = d.Stdout.Write(out)
			return err
		},
	}
}

// Export renders the runtime settings of cfg as a TOML document, tables for dotted keys:
// counts as integers, booleans as booleans, lists as arrays, the rest as strings.
func Export(cfg *controlplanev1.GetConfigResponse) ([]byte, error) {
	doc := map[string]any{}
	for _, s := range cfg.GetSettings() {
		if !s.GetRuntime() || s.GetSecret() {
			continue
		}
		var v any = s.GetValue().GetText()
		switch {
		case s.GetValue().GetList() != nil:
			v = s.GetValue().GetList().GetItems()
		case s.GetType() == "count":
			n, err := strconv.ParseInt(s.GetValue().GetText(), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: the count %q is not a number", s.GetKey(), s.GetValue().GetText())
			}
			v = n
		case s.GetType() == "bool":
			b, err := strconv.ParseBool(s.GetValue().GetText())
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a boolean", s.GetKey(), s.GetValue().GetText())
			}
			v = b
		}
		table := doc
		parts := strings.Split(s.GetKey(), ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := table[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				table[p] = sub
			}
			table = sub
		}
		table[parts[len(parts)-1]] = v
	}
	body, err := toml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode TOML: %w", err)
	}
	head := fmt.Sprintf("# palyrad's runtime settings at configuration revision %d (palyra config export)\n", cfg.GetRevision())
	return append([]byte(head), body...), nil
}

// ReadFile reads a TOML file of settings, as palyrad's configuration file is written,
// into a change that sets every key it holds. Values may be strings, integers,
// booleans or arrays of strings; anything else is an error naming the key.
func ReadFile(path string) (*controlplanev1.ConfigChangeSpec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := toml.Unmarshal(raw, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s:%d:%d: %s", path, row, col, de.Error())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	change := &controlplanev1.ConfigChangeSpec{}
	if err := flatten(path, "", doc, change); err != nil {
		return nil, err
	}
	slices.SortFunc(change.Set, func(a, b *controlplanev1.ConfigSet) int { return strings.Compare(a.GetKey(), b.GetKey()) })
	return change, nil
}

func flatten(path, prefix string, table map[string]any, change *controlplanev1.ConfigChangeSpec) error {
	for k, v := range table {
		key := prefix + k
		var value *controlplanev1.ConfigValue
		switch v := v.(type) {
		case map[string]any:
			if err := flatten(path, key+".", v, change); err != nil {
				return err
			}
			continue
		case string:
			value = text(v)
		case int64:
			value = text(strconv.FormatInt(v, 10))
		case bool:
			value = text(strconv.FormatBool(v))
		case []any:
			items := make([]string, len(v))
			for i, it := range v {
				s, ok := it.(string)
				if !ok {
					return fmt.Errorf("%s: %s must be a list of strings", path, key)
				}
				items[i] = s
			}
			value = &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_List{List: &controlplanev1.ConfigList{Items: items}}}
		default:
			return fmt.Errorf("%s: %s has an unsupported value type %T (write it as a string)", path, key, v)
		}
		change.Set = append(change.Set, &controlplanev1.ConfigSet{Key: key, Value: value})
	}
	return nil
}

// fileFlag is the -f flag of diff and apply.
func fileFlag(c *cobra.Command, file *string) {
	c.Flags().StringVarP(file, "file", "f", "", "TOML file of settings, as palyrad's configuration file is written (required)")
}

func readFileFlag(file string) (*controlplanev1.ConfigChangeSpec, error) {
	if file == "" {
		return nil, cliusage.Wrap(errors.New("-f FILE is required"))
	}
	change, err := ReadFile(file)
	if err != nil {
		return nil, cliusage.Wrap(err)
	}
	return change, nil
}

func newDiffCommand(d *deps.Deps) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "diff -f FILE",
		Short: "Show what apply would change: every key whose stored value would change",
		Long: `diff checks the settings of FILE against palyrad without changing anything and shows
every key apply would change, with its effective value before and after. Problems (a
bad value, an unknown key, a bootstrap setting) are reported each with its key.`,
		Example: `  palyra config diff -f palyrad.toml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			change, err := readFileFlag(file)
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Config.ValidateConfig(cmd.Context(), connect.NewRequest(&controlplanev1.ValidateConfigRequest{Change: change}))
			if err != nil {
				return err
			}
			if len(res.Msg.GetChanges()) == 0 && d.Output != output.JSON {
				fmt.Fprintln(d.Stderr, "no differences")
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { changesTable(w, res.Msg.GetChanges(), true) })
		},
	}
	fileFlag(c, &file)
	return c
}

func newApplyCommand(d *deps.Deps) *cobra.Command {
	var (
		file   string
		dryRun bool
		f      changeFlags
	)
	c := &cobra.Command{
		Use:   "apply -f FILE [--dry-run]",
		Short: "Store every setting of a TOML file as one revision",
		Long: `apply stores the settings of FILE (palyra config export writes one) as one revision, all
or nothing, expecting the revision current when it starts: a change made meanwhile is
refused, not overwritten. Keys the file does not name keep their values. --dry-run
shows what would change and the revision it would make, and changes nothing.`,
		Example: `  palyra config export > runtime.toml && $EDITOR runtime.toml
  palyra config apply -f runtime.toml --dry-run
  palyra config apply -f runtime.toml --reason "tuned heartbeats"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			change, err := readFileFlag(file)
			if err != nil {
				return err
			}
			if err := f.check(cmd); err != nil {
				return err
			}
			if !dryRun {
				return f.update(cmd, d, change)
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			expected, err := f.expectedRevision(cmd, c)
			if err != nil {
				return err
			}
			res, err := c.Config.ValidateConfig(cmd.Context(), connect.NewRequest(&controlplanev1.ValidateConfigRequest{
				Change: change, ExpectedRevision: &expected,
			}))
			if err != nil {
				return err
			}
			if d.Output != output.JSON {
				if len(res.Msg.GetChanges()) == 0 {
					fmt.Fprintf(d.Stderr, "dry run: nothing to change; the configuration stays at revision %d\n", expected)
				} else {
					fmt.Fprintf(d.Stderr, "dry run: would make configuration revision %d\n", res.Msg.GetRevision())
				}
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { changesTable(w, res.Msg.GetChanges(), true) })
		},
	}
	fileFlag(c, &file)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "show what would change; change nothing")
	f.bind(c)
	return c
}

func newHistoryCommand(d *deps.Deps) *cobra.Command {
	var paging cliflag.Paging
	list := deps.List[*controlplanev1.ConfigRevision, *controlplanev1.ListConfigRevisionsResponse]{
		Paging: &paging,
		Noun:   "revisions",
		Page: func(ctx context.Context, c *client.Client, page string) (*controlplanev1.ListConfigRevisionsResponse, error) {
			return deps.Msg(c.Config.ListConfigRevisions(ctx, connect.NewRequest(&controlplanev1.ListConfigRevisionsRequest{
				PageSize: paging.Limit, PageToken: page,
			})))
		},
		Items: (*controlplanev1.ListConfigRevisionsResponse).GetRevisions,
		Response: func(revs []*controlplanev1.ConfigRevision, next string) *controlplanev1.ListConfigRevisionsResponse {
			return &controlplanev1.ListConfigRevisionsResponse{Revisions: revs, NextPageToken: next}
		},
		Table: revisionsTable,
	}.RunE(d)
	c := &cobra.Command{
		Use:   "history [REVISION]",
		Short: "List the configuration's revisions, or show what one changed",
		Example: `  palyra config history
  palyra config history 7`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return list(cmd, args)
			}
			if err := paging.Check(cmd.Flags()); err != nil {
				return err
			}
			rev, err := parseRevision(args[0])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Config.GetConfigRevision(cmd.Context(), connect.NewRequest(&controlplanev1.GetConfigRevisionRequest{Revision: rev}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
				revisionsTable(w, []*controlplanev1.ConfigRevision{res.Msg.GetRevision()})
				fmt.Fprintln(w)
				changesTable(w, res.Msg.GetChanges(), false)
			})
		},
	}
	paging.Bind(c.Flags(), "revisions", "every revision")
	return c
}

// parseRevision parses a revision number argument.
func parseRevision(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, cliusage.Wrap(fmt.Errorf("a revision is a number from 1, got %q", s))
	}
	return n, nil
}

func revisionsTable(w io.Writer, revs []*controlplanev1.ConfigRevision) {
	fmt.Fprintln(w, "REVISION\tTIME\tACTOR\tCHANGES\tROLLBACK OF\tREASON")
	for _, r := range revs {
		rollback := "-"
		if r.GetRollbackOf() != 0 {
			rollback = strconv.FormatInt(r.GetRollbackOf(), 10)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\n", r.GetRevision(), output.Time(r.GetCreateTime(), "-"),
			output.Cell(r.GetActor()), r.GetChangeCount(), rollback, output.Cell(r.GetReason()))
	}
}

func newRollbackCommand(d *deps.Deps) *cobra.Command {
	var f changeFlags
	c := &cobra.Command{
		Use:     "rollback REVISION",
		Short:   "Restore the stored values as they were right after a revision, as a new revision",
		Example: `  palyra config rollback 3 --reason "the new heartbeat overloads the database"`,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliusage.Wrap(fmt.Errorf("config rollback takes one revision, got %d arguments", len(args)))
			}
			rev, err := parseRevision(args[0])
			if err != nil {
				return err
			}
			if err := f.check(cmd); err != nil {
				return err
			}
			return f.run(cmd, d, func(c *client.Client, expected int64) (proto.Message, *controlplanev1.ConfigRevision, []*controlplanev1.ConfigChange, error) {
				res, err := c.Config.RollbackConfig(cmd.Context(), connect.NewRequest(&controlplanev1.RollbackConfigRequest{
					Revision: rev, ExpectedRevision: &expected, Reason: f.reason,
				}))
				if err != nil {
					return nil, nil, nil, err
				}
				return res.Msg, res.Msg.GetRevision(), res.Msg.GetChanges(), nil
			})
		},
	}
	f.bind(c)
	return c
}
