// Package secrets is `palyra secrets`: store secrets in palyrad's vault as numbered
// versions, list and show their metadata, reveal a value (owners only, with a reason
// that the audit log records), delete and restore them, and destroy versions for good.
// A value is never taken from the command line, where other users and the shell's
// history could read it: set reads it from standard input or a file.
package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/pairing"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// MaxValueBytes is the largest value palyrad stores: 64 KiB.
const MaxValueBytes = 64 << 10

// NewCommand returns `palyra secrets` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "secrets",
		Short: "Store, list, reveal, delete and destroy secrets in palyrad's vault",
		Long: `secrets manages the secrets palyrad keeps for the resources that use them (API keys of
providers, say). Each set stores a new version; palyrad seals every version under a data
key of its own, wrapped by a key derived from its master key. Listing and showing give
metadata only (secrets.list: admins and owners); set, delete, restore and destroy need
secrets.write (admins and owners); reveal needs secrets.read (owners only) and a reason,
which the audit log records.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newSetCommand(d), newListCommand(d), newShowCommand(d), newRevealCommand(d),
		newDeleteCommand(d), newRestoreCommand(d), newDestroyCommand(d))
	return c
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ParseName checks a secret's name argument: a letter or digit, then letters, digits,
// '.', '_' or '-', at most 128 characters. A bad one is a usage error.
func ParseName(arg string) (string, error) {
	if !namePattern.MatchString(arg) {
		return "", cliusage.Wrap(fmt.Errorf("invalid secret name %q: 1 to 128 characters, a letter or digit, "+
			"then letters, digits, '.', '_' or '-'", arg))
	}
	return arg, nil
}

// ReadValue reads a value to store: from the file named (standard input for "-"), or
// from stdin when no file is named and stdin is not a terminal. It refuses a terminal
// (what is typed there shows on the screen), an empty value and one over MaxValueBytes.
func ReadValue(stdin io.Reader, stdinIsTerminal bool, file string) ([]byte, error) {
	var r io.Reader
	switch {
	case file != "" && file != "-":
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--from-file: %w", err)
		}
		defer f.Close()
		r = f
	case stdinIsTerminal:
		return nil, cliusage.Wrap(errors.New("the value is read from standard input or --from-file, never from the command line: " +
			"pipe it in (printf %s \"$VALUE\" | palyra secrets set NAME) or name a file"))
	default:
		r = stdin
	}
	value, err := io.ReadAll(io.LimitReader(r, MaxValueBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the value: %w", err)
	}
	switch {
	case len(value) == 0:
		return nil, errors.New("the value is empty: pipe it in or name a file with --from-file")
	case len(value) > MaxValueBytes:
		clear(value)
		return nil, fmt.Errorf("the value is larger than %d bytes (64 KiB), the most palyrad stores", MaxValueBytes)
	}
	return value, nil
}

func newSetCommand(d *deps.Deps) *cobra.Command {
	var (
		file, description string
		labels            []string
		expected          int64
	)
	c := &cobra.Command{
		Use:   "set NAME",
		Short: "Store a new version of a secret, read from standard input or a file",
		Long: `set stores a new version of a secret (version 1 creates it). The value comes from
standard input, or from --from-file, never from the command line; it is stored byte for
byte, a final line feed included (use printf or echo -n to leave it out). With
--expected-version N the version is stored only while the latest is N (0: the secret must
not exist yet), so that two writers cannot overwrite each other. --description and --label
replace the secret's description and labels; without them they are kept.`,
		Example: `  echo -n sk-test | palyra secrets set openai --description "OpenAI API key" --label team=ml
  palyra secrets set tls-key --from-file key.pem --expected-version 3`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := ParseName(args[0])
			if err != nil {
				return err
			}
			req := &controlplanev1.PutSecretRequest{Name: name}
			if req.Labels, err = pairing.ParseLabels(labels); err != nil {
				return err
			}
			if cmd.Flags().Changed("description") {
				req.Description = &description
			}
			if cmd.Flags().Changed("expected-version") {
				if expected < 0 {
					return cliusage.Wrap(fmt.Errorf("--expected-version must be 0 (the secret must not exist) or a version, got %d", expected))
				}
				req.ExpectedVersion = &expected
			}
			if req.Value, err = ReadValue(d.Stdin, d.StdinIsTerminal, file); err != nil {
				return err
			}
			defer clear(req.Value)
			if bytes.HasSuffix(req.Value, []byte("\n")) {
				fmt.Fprintln(d.Stderr, "note: the value ends with a line feed, which is stored with it")
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Secrets.PutSecret(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { secretTable(w, res.Msg.GetSecret()) })
		},
	}
	c.Flags().StringVar(&file, "from-file", "", "read the value from this file (- for standard input)")
	c.Flags().StringVar(&description, "description", "", "what the secret is for (replaces the description)")
	c.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable; replaces the labels)")
	c.Flags().Int64Var(&expected, "expected-version", 0, "store only if the latest version is this one (0: only if the secret does not exist)")
	return c
}

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		paging  cliflag.Paging
		deleted bool
	)
	c := &cobra.Command{
		Use:     "list",
		Short:   "List secrets, newest first: metadata only",
		Example: "  palyra secrets list --deleted",
		Args:    cobra.NoArgs,
		RunE: deps.List[*controlplanev1.Secret, *controlplanev1.ListSecretsResponse]{
			Paging: &paging,
			Noun:   "secrets",
			Page: func(ctx context.Context, c *client.Client, page string) (*controlplanev1.ListSecretsResponse, error) {
				return deps.Msg(c.Secrets.ListSecrets(ctx, connect.NewRequest(&controlplanev1.ListSecretsRequest{
					PageSize: paging.Limit, IncludeDeleted: deleted, PageToken: page,
				})))
			},
			Items: (*controlplanev1.ListSecretsResponse).GetSecrets,
			Response: func(list []*controlplanev1.Secret, next string) *controlplanev1.ListSecretsResponse {
				return &controlplanev1.ListSecretsResponse{Secrets: list, NextPageToken: next}
			},
			Table: listTable,
		}.RunE(d),
	}
	c.Flags().BoolVar(&deleted, "deleted", false, "list deleted secrets too")
	paging.Bind(c.Flags(), "secrets", "every secret")
	return c
}

func newShowCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a secret's metadata and versions, never its value",
		Example: "  palyra secrets show openai",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.GetSecretResponse]{
			ParseID: ParseName,
			Call: func(ctx context.Context, c *client.Client, name string) (*controlplanev1.GetSecretResponse, error) {
				return deps.Msg(c.Secrets.GetSecret(ctx, connect.NewRequest(&controlplanev1.GetSecretRequest{Name: name})))
			},
			Table: func(w io.Writer, m *controlplanev1.GetSecretResponse) { secretTable(w, m.GetSecret()) },
		}.RunE(d),
	}
}

func newRevealCommand(d *deps.Deps) *cobra.Command {
	var (
		reason  string
		version int64
		raw     bool
	)
	c := &cobra.Command{
		Use:   "reveal NAME --reason REASON",
		Short: "Write a secret's value to standard output (owners only; the reason is audited)",
		Long: `reveal writes the value of a secret's latest version, or of --version N, to standard
output as it is stored, without adding anything (but a final line feed on a terminal).
It needs the secrets.read permission (owners only) and a --reason, which the audit log
records with the version. A value holding control characters that a terminal would act
on is refused on a terminal unless --raw is given; redirected to a file or a pipe, it
is written as it is. With -o json the value is base64 in the JSON answer.`,
		Example: `  palyra secrets reveal openai --reason "rotate the key at the provider" > key.txt
  palyra secrets reveal openai --version 2 --reason "compare with the old key"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := ParseName(args[0])
			if err != nil {
				return err
			}
			if err := cliflag.CheckReason(reason); err != nil {
				return err
			}
			if version < 0 {
				return cliusage.Wrap(fmt.Errorf("--version must be a version number, got %d", version))
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Secrets.RevealSecret(cmd.Context(), connect.NewRequest(&controlplanev1.RevealSecretRequest{
				Name: name, Version: version, Reason: reason,
			}))
			if err != nil {
				return err
			}
			value := res.Msg.GetValue()
			defer clear(value)
			if d.Output == output.JSON {
				return output.Print(d.Stdout, d.Output, res.Msg, nil)
			}
			if d.StdoutIsTerminal {
				if !raw && !output.Safe(string(value)) {
					return fmt.Errorf("version %d of %s holds control characters that your terminal would act on: "+
						"redirect the output to a file or a pipe, or pass --raw to write it here anyway", res.Msg.GetVersion(), name)
				}
				if !bytes.HasSuffix(value, []byte("\n")) {
					value = append(value, '\n')
				}
			}
			_, err = d.Stdout.Write(value)
			return err
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why you need the value, recorded in the audit log (required)")
	c.Flags().Int64Var(&version, "version", 0, "the version to reveal (default: the latest)")
	c.Flags().BoolVar(&raw, "raw", false, "write a value holding control characters to a terminal anyway")
	return c
}

func newDeleteCommand(d *deps.Deps) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a secret, keeping its versions so that restore can bring it back",
		Long: `delete soft-deletes a secret: it is no longer listed (but with --deleted) nor
revealable, and cannot get new versions, until palyra secrets restore brings it back with
all its versions. Its name stays taken meanwhile. To erase a value for good, use destroy.

A secret that palyrad's settings refer to (secret:NAME, e.g. a provider's api_key) is
not deleted: the error names the settings. --force deletes it all the same and prints
the settings that referred to it, which then refer to a secret that cannot be used.`,
		Example: "  palyra secrets delete openai",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.DeleteSecretResponse]{
			ParseID: ParseName,
			Call: func(ctx context.Context, c *client.Client, name string) (*controlplanev1.DeleteSecretResponse, error) {
				return deps.Msg(c.Secrets.DeleteSecret(ctx, connect.NewRequest(&controlplanev1.DeleteSecretRequest{Name: name, Force: force})))
			},
			Table: func(w io.Writer, m *controlplanev1.DeleteSecretResponse) {
				referredTable(w, m.GetReferredBy())
				secretTable(w, m.GetSecret())
			},
		}.RunE(d),
	}
	c.Flags().BoolVar(&force, "force", false, "delete even when palyrad's configuration refers to the secret")
	return c
}

func newRestoreCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "restore NAME",
		Short:   "Bring back a deleted secret with all its versions",
		Example: "  palyra secrets restore openai",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.RestoreSecretResponse]{
			ParseID: ParseName,
			Call: func(ctx context.Context, c *client.Client, name string) (*controlplanev1.RestoreSecretResponse, error) {
				return deps.Msg(c.Secrets.RestoreSecret(ctx, connect.NewRequest(&controlplanev1.RestoreSecretRequest{Name: name})))
			},
			Table: func(w io.Writer, m *controlplanev1.RestoreSecretResponse) { secretTable(w, m.GetSecret()) },
		}.RunE(d),
	}
}

func newDestroyCommand(d *deps.Deps) *cobra.Command {
	var (
		version int64
		force   bool
	)
	c := &cobra.Command{
		Use:   "destroy NAME --version N",
		Short: "Erase the value of one version for good",
		Long: `destroy erases a version's ciphertext and data key from palyrad's database: the value
can never be revealed again, by anyone. The version's metadata stays.

A version that palyrad's settings refer to (secret:NAME@N pinned to it, or secret:NAME
when it is the latest version) is not destroyed: the error names the settings. --force
destroys it all the same and prints them.`,
		Example: "  palyra secrets destroy openai --version 1",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.DestroySecretVersionResponse]{
			ParseID: ParseName,
			Check: func() error {
				if version < 1 {
					return cliusage.Wrap(errors.New("--version is required: the number of the version to destroy (see palyra secrets show)"))
				}
				return nil
			},
			Call: func(ctx context.Context, c *client.Client, name string) (*controlplanev1.DestroySecretVersionResponse, error) {
				return deps.Msg(c.Secrets.DestroySecretVersion(ctx, connect.NewRequest(&controlplanev1.DestroySecretVersionRequest{Name: name, Version: version, Force: force})))
			},
			Table: func(w io.Writer, m *controlplanev1.DestroySecretVersionResponse) {
				referredTable(w, m.GetReferredBy())
				secretTable(w, m.GetSecret())
			},
		}.RunE(d),
	}
	c.Flags().Int64Var(&version, "version", 0, "the version to destroy (required)")
	c.Flags().BoolVar(&force, "force", false, "destroy even when palyrad's configuration refers to the version")
	return c
}

// secretTable writes a secret's metadata as rows of a name and a value, then its
// versions as a table.
// referredTable names the settings that referred to what a forced delete or destroy
// removed; nothing when none did.
func referredTable(w io.Writer, keys []string) {
	if len(keys) > 0 {
		fmt.Fprintf(w, "Referred by\t%s (forced: they refer to what is gone)\n", strings.Join(keys, ", "))
	}
}

func secretTable(w io.Writer, s *controlplanev1.Secret) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("Name", s.GetName())
	row("ID", s.GetId())
	row("Description", output.Cell(s.GetDescription()))
	row("Labels", pairing.Labels(s.GetLabels()))
	row("Latest version", strconv.FormatInt(s.GetLatestVersion(), 10))
	row("Created", fmt.Sprintf("%s by %s", output.Time(s.GetCreateTime(), "-"), output.Cell(s.GetCreatedBy())))
	row("Updated", fmt.Sprintf("%s by %s", output.Time(s.GetUpdateTime(), "-"), output.Cell(s.GetUpdatedBy())))
	if s.GetDeleteTime() != nil {
		row("Deleted", fmt.Sprintf("%s by %s", output.Time(s.GetDeleteTime(), "-"), output.Cell(s.GetDeletedBy())))
	}
	if s.GetLastReadTime() != nil {
		row("Last read", fmt.Sprintf("%s by %s", output.Time(s.GetLastReadTime(), "-"), output.Cell(s.GetLastReadBy())))
	} else {
		row("Last read", "never")
	}
	if len(s.GetVersions()) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "VERSION\tCREATED\tBY\tSTATE\tKEY")
	for _, v := range s.GetVersions() {
		state, key := "active", v.GetKekId()
		if v.GetDestroyTime() != nil {
			state, key = "destroyed "+output.Time(v.GetDestroyTime(), "-")+" by "+output.Cell(v.GetDestroyedBy()), "-"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", v.GetVersion(), output.Time(v.GetCreateTime(), "-"), output.Cell(v.GetCreatedBy()), state, key)
	}
}

// listTable writes secrets as a table with a header.
func listTable(w io.Writer, secrets []*controlplanev1.Secret) {
	fmt.Fprintln(w, "NAME\tVERSION\tSTATE\tUPDATED\tLAST READ\tLABELS\tDESCRIPTION")
	for _, s := range secrets {
		state := "active"
		if s.GetDeleteTime() != nil {
			state = "deleted"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.GetName(), s.GetLatestVersion(), state,
			output.Time(s.GetUpdateTime(), "-"), output.Time(s.GetLastReadTime(), "never"),
			pairing.Labels(s.GetLabels()), output.Cell(s.GetDescription()))
	}
}
