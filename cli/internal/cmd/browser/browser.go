// Package browser is `palyra browser profiles`: list, show, create, update and delete
// browser profiles (the identity, allowed domains and saved state that the browser.*
// capabilities of nodes browse with), and reset their state.
package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/pairing"
	"github.com/palyra/palyra/cli/internal/output"
	browserv1 "github.com/palyra/palyra/gen/go/palyra/browser/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewCommand returns `palyra browser` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "browser",
		Short: "Manage the browser profiles that nodes browse with",
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	profiles := &cobra.Command{
		Use:   "profiles",
		Short: "List, show, create, update and delete browser profiles, and reset their state",
		Long: `profiles manages palyrad's browser profiles. A profile is a browser identity (user
agent, viewport, locale, time zone, an optional proxy held in a secret), the domains it
may visit, and its state (cookies and local storage), which palyrad keeps sealed and
sends with each dispatch of a browser capability that names the profile
("profile": "NAME"); the state the dispatch ends with is saved as the next version, so
that a login holds from one dispatch to the next, on any node. The state itself is never
shown. Listing and showing need browser.read (operators, admins, owners); the other
commands need browser.write (admins and owners).`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	profiles.AddCommand(newListCommand(d), newShowCommand(d), newCreateCommand(d), newUpdateCommand(d),
		newDeleteCommand(d), newResetStateCommand(d))
	c.AddCommand(profiles)
	return c
}

// viewportPattern is a --viewport.
var viewportPattern = regexp.MustCompile(`^([0-9]{1,5})x([0-9]{1,5})$`)

// ref is a profile named by id or name.
type ref struct{ id, name string }

// parseRef reads a profile argument: a ULID is an id, a name otherwise. A bad one is a
// usage error.
func parseRef(arg string) (ref, error) {
	id, name, err := deps.ParseNameOrID("browser profile", arg)
	return ref{id: id, name: name}, err
}

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		paging   cliflag.Paging
		selector string
	)
	c := &cobra.Command{
		Use:     "list",
		Short:   "List browser profiles by name",
		Example: "  palyra browser profiles list --selector team=web",
		Args:    cobra.NoArgs,
		RunE: deps.List[*browserv1.BrowserProfile, *browserv1.ListBrowserProfilesResponse]{
			Paging: &paging,
			Noun:   "browser profiles",
			Page: func(ctx context.Context, c *client.Client, page string) (*browserv1.ListBrowserProfilesResponse, error) {
				return deps.Msg(c.Browser.ListBrowserProfiles(ctx, connect.NewRequest(&browserv1.ListBrowserProfilesRequest{
					LabelSelector: selector, PageSize: paging.Limit, PageToken: page,
				})))
			},
			Items: (*browserv1.ListBrowserProfilesResponse).GetProfiles,
			Response: func(list []*browserv1.BrowserProfile, next string) *browserv1.ListBrowserProfilesResponse {
				return &browserv1.ListBrowserProfilesResponse{Profiles: list, NextPageToken: next}
			},
			Table: listTable,
		}.RunE(d),
	}
	c.Flags().StringVar(&selector, "selector", "", "only the profiles whose labels match this selector, e.g. team=web,env!=dev")
	paging.Bind(c.Flags(), "browser profiles", "every browser profile")
	return c
}

func newShowCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME|ID",
		Short:   "Show a browser profile and its state's version, never the state",
		Example: "  palyra browser profiles show shop",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRef(args[0])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := getProfile(cmd.Context(), c, r)
			if err != nil {
				return err
			}
			return printProfile(d, res.GetProfile(), res.GetWarnings(), res)
		},
	}
}

// specFlags are the flags that define a profile, shared by create and update.
type specFlags struct {
	name, description, userAgent, viewport, locale, timeZone, proxy string
	domains, labels                                                 []string
	noProxy                                                         bool
}

// bind adds the flags to fs; update also takes --name (a rename) and --no-proxy.
func (f *specFlags) bind(fs *pflag.FlagSet, update bool) {
	if update {
		fs.StringVar(&f.name, "name", "", "rename the profile")
		fs.BoolVar(&f.noProxy, "no-proxy", false, "browse without a proxy")
	}
	fs.StringArrayVar(&f.domains, "allow-domain", nil, "a host the browser may load from: a domain (its subdomains too) or an IP address, "+
		"no scheme, port or path (repeatable; replaces the allowed domains)")
	fs.StringVar(&f.description, "description", "", "what the profile is for")
	fs.StringVar(&f.userAgent, "user-agent", "", "the User-Agent the browser sends (default: Chromium's)")
	fs.StringVar(&f.viewport, "viewport", "", "the page's size WIDTHxHEIGHT in CSS pixels (default 1280x800)")
	fs.StringVar(&f.locale, "locale", "", "the browser's locale, a BCP 47 tag such as en-GB")
	fs.StringVar(&f.timeZone, "time-zone", "", "the browser's time zone, an IANA name such as Europe/London (default: the node's)")
	fs.StringVar(&f.proxy, "proxy", "", "the secret holding the proxy's URL, secret:NAME or secret:NAME@VERSION (palyra secrets set)")
	fs.StringArrayVar(&f.labels, "label", nil, "label key=value (repeatable; replaces the labels)")
}

// apply changes spec by the flags given.
func (f *specFlags) apply(fs *pflag.FlagSet, spec *browserv1.BrowserProfileSpec) error {
	if fs.Changed("proxy") && f.noProxy {
		return cliusage.Wrap(errors.New("give --proxy or --no-proxy, not both"))
	}
	if fs.Changed("proxy") && !strings.HasPrefix(f.proxy, "secret:") {
		return cliusage.Wrap(errors.New("--proxy takes a reference to the secret holding the proxy's URL, secret:NAME or secret:NAME@VERSION, " +
			"never the URL itself: palyra secrets set NAME, then --proxy secret:NAME"))
	}
	set := func(flag string, apply func()) {
		if fs.Changed(flag) {
			apply()
		}
	}
	set("name", func() { spec.Name = f.name })
	set("description", func() { spec.Description = f.description })
	set("user-agent", func() { spec.UserAgent = f.userAgent })
	set("locale", func() { spec.Locale = f.locale })
	set("time-zone", func() { spec.TimeZone = f.timeZone })
	set("proxy", func() { spec.Proxy = f.proxy })
	set("allow-domain", func() { spec.AllowedDomains = f.domains })
	if f.noProxy {
		spec.Proxy = ""
	}
	if fs.Changed("viewport") {
		m := viewportPattern.FindStringSubmatch(f.viewport)
		if m == nil {
			return cliusage.Wrap(fmt.Errorf("--viewport is WIDTHxHEIGHT, e.g. 1280x800, not %q", f.viewport))
		}
		w, _ := strconv.ParseUint(m[1], 10, 32)
		h, _ := strconv.ParseUint(m[2], 10, 32)
		spec.Viewport = &browserv1.Viewport{Width: uint32(w), Height: uint32(h)}
	}
	if fs.Changed("label") {
		labels, err := pairing.ParseLabels(f.labels)
		if err != nil {
			return err
		}
		spec.Labels = labels
	}
	return nil
}

func newCreateCommand(d *deps.Deps) *cobra.Command {
	var f specFlags
	c := &cobra.Command{
		Use:   "create NAME --allow-domain DOMAIN...",
		Short: "Create a browser profile",
		Long: `create stores a new browser profile at revision 1, without state. At least one
--allow-domain is required: the browser loads nothing (pages, redirects, subresources,
popups) from other hosts. A domain allows its subdomains; an IP address only itself.
The proxy, when given, is a reference to the secret holding its URL, credentials
included, which must exist.`,
		Example: `  palyra browser profiles create shop --allow-domain 127.0.0.1
  palyra browser profiles create shop --allow-domain shop.example.com --user-agent "Mozilla/5.0 ..." \
    --viewport 1280x800 --locale en-GB --time-zone Europe/London --proxy secret:shop-proxy --label team=web`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRef(args[0])
			if err != nil || r.name == "" {
				return cliusage.Wrap(fmt.Errorf("invalid browser profile name %q: 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit", args[0]))
			}
			spec := &browserv1.BrowserProfileSpec{Name: r.name}
			if err := f.apply(cmd.Flags(), spec); err != nil {
				return err
			}
			if len(spec.GetAllowedDomains()) == 0 {
				return cliusage.Wrap(errors.New("--allow-domain is required: the hosts the browser may load from, e.g. --allow-domain example.com"))
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := deps.Msg(c.Browser.CreateBrowserProfile(cmd.Context(), connect.NewRequest(&browserv1.CreateBrowserProfileRequest{Spec: spec})))
			if err != nil {
				return err
			}
			return printProfile(d, res.GetProfile(), res.GetWarnings(), res)
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
		Short: "Change a browser profile as its next revision; its state stays",
		Long: `update changes a browser profile: the flags given change its current definition
(--allow-domain and --label replace the allowed domains and labels), and palyrad stores
the result as the next revision; the state stays. With --expected-revision N the change
is made only while the profile is at revision N; without it, update reads the profile
and expects the revision it read, and says so.`,
		Example: `  palyra browser profiles update shop --allow-domain shop.example.com --allow-domain cdn.example.net --expected-revision 2
  palyra browser profiles update shop --no-proxy`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRef(args[0])
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
			cur, err := getProfile(cmd.Context(), c, r)
			if err != nil {
				return err
			}
			spec := cur.GetProfile().GetSpec()
			if err := f.apply(cmd.Flags(), spec); err != nil {
				return err
			}
			if !cmd.Flags().Changed("expected-revision") {
				expected = cur.GetProfile().GetRevision()
				fmt.Fprintf(d.Stderr, "note: updating revision %d of browser profile %s, the one just read (pass --expected-revision to name the one you saw)\n",
					expected, cur.GetProfile().GetSpec().GetName())
			}
			res, err := deps.Msg(c.Browser.UpdateBrowserProfile(cmd.Context(), connect.NewRequest(&browserv1.UpdateBrowserProfileRequest{
				Profile: &browserv1.UpdateBrowserProfileRequest_Id{Id: cur.GetProfile().GetId()}, Spec: spec, ExpectedRevision: &expected,
			})))
			if err != nil {
				return err
			}
			return printProfile(d, res.GetProfile(), res.GetWarnings(), res)
		},
	}
	f.bind(c.Flags(), true)
	c.Flags().Int64Var(&expected, "expected-revision", 0, "change the profile only while it is at this revision")
	return c
}

// expectedFlag is --expected-revision of delete and reset-state: unset means any.
func expectedFlag(cmd *cobra.Command, expected int64) (*int64, error) {
	if !cmd.Flags().Changed("expected-revision") {
		return nil, nil
	}
	if expected < 1 {
		return nil, cliusage.Wrap(fmt.Errorf("--expected-revision must be a revision (1 or more), got %d", expected))
	}
	return &expected, nil
}

func newDeleteCommand(d *deps.Deps) *cobra.Command {
	var expected int64
	c := &cobra.Command{
		Use:   "delete NAME|ID",
		Short: "Delete a browser profile and its state",
		Long: `delete deletes a browser profile and every version of its state. Dispatches that name
it and were not sent yet fail; the state a running one sends back is discarded. With
--expected-revision N it is deleted only while at revision N.`,
		Example: "  palyra browser profiles delete shop",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRef(args[0])
			if err != nil {
				return err
			}
			req := &browserv1.DeleteBrowserProfileRequest{Profile: &browserv1.DeleteBrowserProfileRequest_Name{Name: r.name}}
			if r.id != "" {
				req.Profile = &browserv1.DeleteBrowserProfileRequest_Id{Id: r.id}
			}
			if req.ExpectedRevision, err = expectedFlag(cmd, expected); err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := deps.Msg(c.Browser.DeleteBrowserProfile(cmd.Context(), connect.NewRequest(req)))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res, func(w io.Writer) {
				p := res.GetProfile()
				fmt.Fprintf(w, "Deleted browser profile %s (%s) at revision %d, and its state\n", p.GetSpec().GetName(), p.GetId(), p.GetRevision())
			})
		},
	}
	c.Flags().Int64Var(&expected, "expected-revision", 0, "delete the profile only while it is at this revision")
	return c
}

func newResetStateCommand(d *deps.Deps) *cobra.Command {
	var expected int64
	c := &cobra.Command{
		Use:   "reset-state NAME|ID",
		Short: "Drop a browser profile's state: the next dispatch starts with no cookies",
		Long: `reset-state drops every saved version of a browser profile's state (cookies and local
storage): the next dispatch with it starts empty, as if new. With --expected-revision N
it is done only while the profile is at revision N.`,
		Example: "  palyra browser profiles reset-state shop",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRef(args[0])
			if err != nil {
				return err
			}
			req := &browserv1.ResetBrowserProfileStateRequest{Profile: &browserv1.ResetBrowserProfileStateRequest_Name{Name: r.name}}
			if r.id != "" {
				req.Profile = &browserv1.ResetBrowserProfileStateRequest_Id{Id: r.id}
			}
			if req.ExpectedRevision, err = expectedFlag(cmd, expected); err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := deps.Msg(c.Browser.ResetBrowserProfileState(cmd.Context(), connect.NewRequest(req)))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res, func(w io.Writer) {
				fmt.Fprintf(w, "Reset the state of browser profile %s: %d saved version(s) dropped\n", res.GetProfile().GetSpec().GetName(), res.GetDroppedVersions())
			})
		},
	}
	c.Flags().Int64Var(&expected, "expected-revision", 0, "reset the state only while the profile is at this revision")
	return c
}

// getProfile reads a profile by id or name.
func getProfile(ctx context.Context, c *client.Client, r ref) (*browserv1.GetBrowserProfileResponse, error) {
	req := &browserv1.GetBrowserProfileRequest{Profile: &browserv1.GetBrowserProfileRequest_Name{Name: r.name}}
	if r.id != "" {
		req.Profile = &browserv1.GetBrowserProfileRequest_Id{Id: r.id}
	}
	return deps.Msg(c.Browser.GetBrowserProfile(ctx, connect.NewRequest(req)))
}

// printProfile prints a profile as a table (its warnings on standard error) or the
// response res as JSON.
func printProfile(d *deps.Deps, p *browserv1.BrowserProfile, warnings []string, res proto.Message) error {
	if d.Output != output.JSON {
		for _, w := range warnings {
			output.Fprintf(d.Stderr, "warning: %s\n", w)
		}
	}
	return output.Print(d.Stdout, d.Output, res, func(w io.Writer) { profileTable(w, p) })
}

// profileTable writes a profile as rows of a name and a value.
func profileTable(w io.Writer, p *browserv1.BrowserProfile) {
	s := p.GetSpec()
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	orDefault := func(v, def string) string {
		if v == "" {
			return def
		}
		return output.Cell(v)
	}
	row("Name", s.GetName())
	row("ID", p.GetId())
	row("Revision", strconv.FormatInt(p.GetRevision(), 10))
	row("Description", output.Cell(s.GetDescription()))
	row("Allowed domains", output.List(s.GetAllowedDomains()))
	row("User agent", orDefault(s.GetUserAgent(), "Chromium's"))
	row("Viewport", fmt.Sprintf("%dx%d", s.GetViewport().GetWidth(), s.GetViewport().GetHeight()))
	row("Locale", orDefault(s.GetLocale(), "Chromium's"))
	row("Time zone", orDefault(s.GetTimeZone(), "the node's"))
	row("Proxy", orDefault(s.GetProxy(), "none"))
	row("Labels", pairing.Labels(s.GetLabels()))
	row("State", state(p))
	row("Created", fmt.Sprintf("%s by %s", output.Time(p.GetCreateTime(), "-"), output.Cell(p.GetCreatedBy())))
	row("Updated", fmt.Sprintf("%s by %s", output.Time(p.GetUpdateTime(), "-"), output.Cell(p.GetUpdatedBy())))
}

// state describes a profile's state without showing it.
func state(p *browserv1.BrowserProfile) string {
	if p.GetStateVersion() == 0 {
		return "none"
	}
	return fmt.Sprintf("version %d, %d bytes, saved %s", p.GetStateVersion(), p.GetStateSizeBytes(), output.Time(p.GetStateSaveTime(), "-"))
}

// listTable writes profiles as a table with a header.
func listTable(w io.Writer, list []*browserv1.BrowserProfile) {
	fmt.Fprintln(w, "NAME\tALLOWED DOMAINS\tSTATE\tREVISION\tUPDATED\tLABELS\tDESCRIPTION")
	for _, p := range list {
		s := p.GetSpec()
		st := "-"
		if p.GetStateVersion() > 0 {
			st = "v" + strconv.FormatInt(p.GetStateVersion(), 10)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.GetName(), output.List(s.GetAllowedDomains()), st, p.GetRevision(),
			output.Time(p.GetUpdateTime(), "-"), pairing.Labels(s.GetLabels()), output.Cell(s.GetDescription()))
	}
}
