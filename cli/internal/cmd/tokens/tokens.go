// Package tokens is `palyra auth tokens`: create, list, show, rotate and revoke API
// tokens. A token's secret is printed once, when it is created or rotated; palyrad
// keeps only its hash.
package tokens

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewCommand returns `palyra auth tokens` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "tokens",
		Short: "Create, list, show, rotate and revoke API tokens, and set their budgets",
		Long: `tokens manages palyrad's API tokens (it needs the tokens.manage permission). A token
reads plr_<id>_<secret>; its secret is shown once, when it is created or rotated, and
palyrad keeps only its hash. A token can hold no permission that its creator lacks, and a
token created or rotated by a token expires no later and allows no more calls a minute
than that token (a console session: its token). A token may have a daily token budget:
the prompt plus completion tokens it may use per UTC day through the OpenAI-compatible
API, across all models and replicas.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newCreateCommand(d), newListCommand(d), newGetCommand(d), newRotateCommand(d), newRevokeCommand(d), newSetBudgetCommand(d))
	return c
}

// roles maps the --role names to the API's roles.
var roles = map[string]accessv1.Role{
	"owner":    accessv1.Role_ROLE_OWNER,
	"admin":    accessv1.Role_ROLE_ADMIN,
	"operator": accessv1.Role_ROLE_OPERATOR,
}

// states maps the --state names to the API's token states.
var states = map[string]accessv1.TokenState{
	"active":  accessv1.TokenState_TOKEN_STATE_ACTIVE,
	"expired": accessv1.TokenState_TOKEN_STATE_EXPIRED,
	"revoked": accessv1.TokenState_TOKEN_STATE_REVOKED,
}

var permissionPattern = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)

// ParseID parses a token id argument: the 26-character id that `tokens list` shows,
// in either case, optionally written as the principal "token:<id>".
func ParseID(arg string) (string, error) {
	return cliflag.ParseID(strings.TrimPrefix(arg, "token:"), "token", "palyra auth tokens list")
}

// secretWarning is printed on stderr with every secret.
const secretWarning = "Save the secret now: it will not be shown again (palyrad keeps only its hash)."

func newCreateCommand(d *deps.Deps) *cobra.Command {
	var (
		label     string
		role      = cliflag.NewChoice("owner", "admin", "operator")
		scopes    []string
		expiresIn cliflag.Duration
		rateLimit uint32
		budget    int64
	)
	c := &cobra.Command{
		Use:   "create",
		Short: "Create an API token and print its secret once",
		Example: `  palyra auth tokens create --label ci-deploy --role operator --expires-in 30d
  palyra auth tokens create --label audit-export --role admin --scope audit.read --rate-limit 10 -o json
  palyra auth tokens create --label chat-app --role operator --scope compat.chat.create --daily-token-budget 100000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n := utf8.RuneCountInString(label); n == 0 || n > 64 {
				return cliusage.Wrap(errors.New("--label is required: 1 to 64 characters saying what the token is for"))
			}
			if role.Value == "" {
				return cliusage.Wrap(errors.New("--role is required: owner, admin or operator"))
			}
			req := &accessv1.CreateTokenRequest{Label: label, Role: roles[role.Value], Scopes: scopes}
			for i, s := range scopes {
				if !permissionPattern.MatchString(s) {
					return cliusage.Wrap(fmt.Errorf("--scope %q is not a permission name such as nodes.read", s))
				}
				if slices.Contains(scopes[:i], s) {
					return cliusage.Wrap(fmt.Errorf("--scope %s is given twice", s))
				}
			}
			if cmd.Flags().Changed("rate-limit") {
				if rateLimit < 1 || rateLimit > 100000 {
					return cliusage.Wrap(fmt.Errorf("--rate-limit must be between 1 and 100000 calls a minute, got %d", rateLimit))
				}
				req.RateLimitPerMinute = &rateLimit
			}
			if cmd.Flags().Changed("daily-token-budget") {
				if budget < 1 {
					return cliusage.Wrap(fmt.Errorf("--daily-token-budget must be a positive number of tokens, got %d", budget))
				}
				req.DailyTokenBudget = &budget
			}
			if expiresIn.Value > 0 {
				req.ExpireTime = timestamppb.New(d.Clock().Add(expiresIn.Value))
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Access.CreateToken(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			fmt.Fprintln(d.Stderr, secretWarning)
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
				tokenTable(w, res.Msg.GetToken())
				fmt.Fprintf(w, "Secret\t%s\n", res.Msg.GetSecret())
			})
		},
	}
	c.Flags().StringVar(&label, "label", "", "what the token is for, e.g. ci-deploy (required)")
	c.Flags().Var(role, "role", "role of the token (required)")
	c.Flags().StringArrayVar(&scopes, "scope", nil, "narrow the role to this permission, e.g. nodes.read (repeatable)")
	c.Flags().Var(&expiresIn, "expires-in", "lifetime, e.g. 30d, 24h or 1d12h (default: never expires; needed when your own token expires)")
	c.Flags().Uint32Var(&rateLimit, "rate-limit", 0, "calls a minute, across replicas (default 120, or your own token's limit when lower)")
	c.Flags().Int64Var(&budget, "daily-token-budget", 0, "prompt plus completion tokens a UTC day through the OpenAI-compatible API (default: no budget)")
	return c
}

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		state  = cliflag.NewChoice("active", "expired", "revoked")
		paging cliflag.Paging
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List API tokens, newest first",
		Example: `  palyra auth tokens list --state active
  palyra auth tokens list --all -o json`,
		Args: cobra.NoArgs,
		RunE: deps.List[*accessv1.Token, *accessv1.ListTokensResponse]{
			Paging: &paging,
			Noun:   "tokens",
			Page: func(ctx context.Context, c *client.Client, page string) (*accessv1.ListTokensResponse, error) {
				return deps.Msg(c.Access.ListTokens(ctx, connect.NewRequest(&accessv1.ListTokensRequest{
					PageSize: paging.Limit, State: states[state.Value], PageToken: page,
				})))
			},
			Items: (*accessv1.ListTokensResponse).GetTokens,
			Response: func(tokens []*accessv1.Token, next string) *accessv1.ListTokensResponse {
				return &accessv1.ListTokensResponse{Tokens: tokens, NextPageToken: next}
			},
			Table: listTable,
		}.RunE(d),
	}
	c.Flags().Var(state, "state", "list only the tokens in this state")
	paging.Bind(c.Flags(), "tokens", "every token")
	return c
}

func newGetCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Short:   "Show an API token",
		Example: "  palyra auth tokens get 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*accessv1.GetTokenResponse]{
			ParseID: ParseID,
			Call: func(ctx context.Context, c *client.Client, id string) (*accessv1.GetTokenResponse, error) {
				return deps.Msg(c.Access.GetToken(ctx, connect.NewRequest(&accessv1.GetTokenRequest{Id: id})))
			},
			Table: func(w io.Writer, m *accessv1.GetTokenResponse) { tokenTable(w, m.GetToken()) },
		}.RunE(d),
	}
}

func newRotateCommand(d *deps.Deps) *cobra.Command {
	var expiresIn cliflag.Duration
	c := &cobra.Command{
		Use:   "rotate ID",
		Short: "Replace a token by a new one with the same label, role and scopes; print the new secret once",
		Long: `rotate replaces a token by a new one with the same label, role, scopes, rate limit and
daily token budget.
The old secret stops working at once; the new one is printed once. The new token may not
expire later, nor allow more calls a minute, than your own token.`,
		Example: "  palyra auth tokens rotate 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --expires-in 90d",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := ParseID(args[0])
			if err != nil {
				return err
			}
			req := &accessv1.RotateTokenRequest{Id: id}
			if expiresIn.Value > 0 {
				req.ExpireTime = timestamppb.New(d.Clock().Add(expiresIn.Value))
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Access.RotateToken(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			output.Fprintf(d.Stderr, "Token %s is revoked and replaced by %s. %s\n", id, res.Msg.GetToken().GetId(), secretWarning)
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
				tokenTable(w, res.Msg.GetToken())
				fmt.Fprintf(w, "Secret\t%s\n", res.Msg.GetSecret())
			})
		},
	}
	c.Flags().Var(&expiresIn, "expires-in", "lifetime of the new token, e.g. 30d (default: the old token's expiry)")
	return c
}

func newRevokeCommand(d *deps.Deps) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a token at once, and every console session opened with it",
		Example: `  palyra auth tokens revoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --reason "laptop lost"`,
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*accessv1.RevokeTokenResponse]{
			ParseID: ParseID,
			Check:   func() error { return cliflag.CheckReasonLength(reason) },
			Call: func(ctx context.Context, c *client.Client, id string) (*accessv1.RevokeTokenResponse, error) {
				return deps.Msg(c.Access.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: id, Reason: reason})))
			},
			Table: func(w io.Writer, m *accessv1.RevokeTokenResponse) { tokenTable(w, m.GetToken()) },
		}.RunE(d),
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded with the revocation")
	return c
}

// ParseBudget parses a budget argument: a positive number of tokens, or "none" (nil).
func ParseBudget(s string) (*int64, error) {
	if strings.EqualFold(s, "none") {
		return nil, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return nil, cliusage.Wrap(fmt.Errorf("the budget must be a positive number of tokens, or none; got %q", s))
	}
	return &n, nil
}

func newSetBudgetCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "set-budget ID TOKENS|none",
		Short: "Set or remove a token's daily token budget for the OpenAI-compatible API",
		Long: `set-budget sets the prompt plus completion tokens a token may use per UTC day through the
OpenAI-compatible API, across all models and replicas, or removes the budget (none). Once
the day's usage reaches the budget, the token's calls are refused (429 insufficient_quota)
until the next UTC midnight; a call that starts under the budget may overshoot it by its
own tokens. The change applies from the token's next call.`,
		Example: `  palyra auth tokens set-budget 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 200000
  palyra auth tokens set-budget 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 none`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := ParseID(args[0])
			if err != nil {
				return err
			}
			budget, err := ParseBudget(args[1])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Access.SetTokenBudget(cmd.Context(), connect.NewRequest(&accessv1.SetTokenBudgetRequest{Id: id, DailyTokenBudget: budget}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { tokenTable(w, res.Msg.GetToken()) })
		},
	}
}

// budget is a token's daily token budget as the tables show it.
func budget(t *accessv1.Token) string {
	if t.DailyTokenBudget == nil {
		return "none"
	}
	return strconv.FormatInt(t.GetDailyTokenBudget(), 10) + "/day"
}

// tokenTable writes one token as rows of a name and a value.
func tokenTable(w io.Writer, t *accessv1.Token) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", t.GetId())
	row("Label", output.Cell(t.GetLabel()))
	row("User", output.Cell(t.GetUser()))
	row("Role", output.Enum(t.GetRole()))
	row("State", output.Enum(t.GetState()))
	if len(t.GetScopes()) > 0 {
		row("Scopes", output.List(t.GetScopes()))
	}
	row("Permissions", output.List(t.GetPermissions()))
	row("Rate limit", fmt.Sprintf("%d/min", t.GetRateLimitPerMinute()))
	row("Token budget", budget(t))
	row("Created", fmt.Sprintf("%s by %s", output.Time(t.GetCreateTime(), "-"), output.Cell(t.GetCreatedBy())))
	row("Expires", output.Time(t.GetExpireTime(), "never"))
	row("Last used", output.Time(t.GetLastUseTime(), "never"))
	if t.GetRevokeTime() != nil {
		row("Revoked", fmt.Sprintf("%s (%s)", output.Time(t.GetRevokeTime(), "-"), output.Cell(t.GetRevokeReason())))
	}
	if t.GetRotatedFrom() != "" {
		row("Rotated from", t.GetRotatedFrom())
	}
	if t.GetRotatedTo() != "" {
		row("Rotated to", t.GetRotatedTo())
	}
}

// listTable writes tokens as a table with a header.
func listTable(w io.Writer, tokens []*accessv1.Token) {
	fmt.Fprintln(w, "ID\tLABEL\tROLE\tSTATE\tEXPIRES\tLAST USED\tCREATED BY\tTOKEN BUDGET")
	for _, t := range tokens {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetId(), output.Cell(t.GetLabel()), output.Enum(t.GetRole()),
			output.Enum(t.GetState()), output.Time(t.GetExpireTime(), "never"), output.Time(t.GetLastUseTime(), "never"),
			output.Cell(t.GetCreatedBy()), budget(t))
	}
}
