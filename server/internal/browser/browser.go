// Package browser is palyrad's browser profiles (sqlc/migrations/00016_browser_profiles.sql),
// served as BrowserProfileService, and what the dispatch path asks of them for the
// browser.* capabilities of nodes.
//
// # Profiles
//
// A profile's definition is a palyra.browser.v1.BrowserProfileSpec: its name (a
// lower-case DNS label, as a dispatch's input names it), a user agent, a viewport (by
// default 1280×800), a locale (a BCP 47 tag), a time zone (an IANA name this machine's
// time zone database knows), an optional proxy as a secret reference (secret:NAME or
// secret:NAME@VERSION, which must be usable when stored: vault.CheckRef), the domains it
// may visit (at least one: host names, lower-cased, or IP addresses; no scheme, port,
// path or wildcard) and labels. Create and Update check a definition whole and report
// every field at fault at once (Invalid, one violation per field). Each update is the
// next revision and names the revision it expects: a stale one is Aborted naming the
// current revision. Every change names its target for the audit log before its first
// write, which commits the call's audit outbox row.
//
// # State
//
// A profile's state (cookies and local storage, Playwright's storageState JSON) is kept
// in numbered versions, each sealed as the vault seals a secret's version (seal.go): a
// data key of its own, AES-256-GCM with the profile id and the version number as
// associated data, the data key wrapped under a key derived from the primary master
// key; StateKeys re-wraps them when the master key rotates. Only the newest
// keepVersions versions are kept. The API shows a state's version, time and size,
// never the state.
//
// # Dispatches
//
// Dispatches (package dispatch) call three hooks for the browser.* capabilities
// (dispatch.go): CheckInput when a dispatch is created (its input's "profile" must name
// a profile, its "url" must be on the profile's allowed domains), Profile each time one
// is sent (the profile by name as it is then, its newest state opened and its proxy
// resolved; a profile gone fails the dispatch), and SaveState when its result carries
// the state it ended with (sealed as the profile's next version, once per dispatch,
// audited as browser.state.save; discarded when the profile was deleted or replaced
// meanwhile). Two dispatches with one profile at once each start from the state newest
// when sent; the one that finishes last saves the newest version, the other's stays
// among the versions kept. No state, proxy URL or cookie is ever logged, put in an
// error, an audit event or a dispatch's row.
package browser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/proto"

	browserv1 "github.com/palyra/palyra/gen/go/palyra/browser/v1"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/labels"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/vault"
)

// The limits of a definition, and its defaults.
const (
	maxDescriptionBytes = 1024
	maxUserAgentBytes   = 512
	maxLocaleBytes      = 35
	maxTimeZoneBytes    = 64
	maxDomains          = 64
	minViewport         = 100
	maxViewportWidth    = 7680
	maxViewportHeight   = 4320

	// DefaultViewportWidth and DefaultViewportHeight are the viewport of a profile that
	// sets none.
	DefaultViewportWidth  = 1280
	DefaultViewportHeight = 800

	// defaultPageSize and maxPageSize bound List.
	defaultPageSize = 100
	maxPageSize     = 500
)

// ReasonStaleRevision is the ErrorInfo reason of a change refused for a stale expected
// revision; MetadataCurrentRevision is the metadata key of the current revision.
const (
	ReasonStaleRevision     = "STALE_REVISION"
	MetadataCurrentRevision = "current_revision"
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ulidRE     = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)
	hostnameRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	localeRE   = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$`)
	timeZoneRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$`)
)

// Secrets resolves the proxy's secret reference (vault.Vault).
type Secrets interface {
	Resolve(ctx context.Context, ref secretref.Ref) ([]byte, error)
}

// Options are the dependencies of Profiles.
type Options struct {
	Store *store.Store
	// Keys seal and open the states.
	Keys *identity.Keyring
	// Secrets resolves the proxies when dispatches are sent.
	Secrets Secrets
	// NodesOffering, when set, lists the nodes offering a capability
	// (dispatch.Service.NodesOffering), for the warning that no online node offers
	// browser.navigate.
	NodesOffering func(ctx context.Context, capability string) ([]dispatch.Node, error)
	// Audit stages the events of the states saved from dispatch results.
	Audit *audit.Log
	// Now stamps every change; nil uses time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Profiles stores browser profiles and their states. It is safe for concurrent use.
type Profiles struct {
	opts Options
	wrap wrapper
	log  *slog.Logger
}

// New returns the profiles of opts.Store; Store, Keys and Secrets are required.
func New(opts Options) (*Profiles, error) {
	if opts.Store == nil || opts.Keys == nil || opts.Secrets == nil {
		return nil, errors.New("browser: a store, keys and secrets are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Profiles{opts: opts, log: opts.Logger}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// Profile is a stored profile, without its state.
type Profile struct {
	ID string
	// Spec is its definition with the defaults filled in.
	Spec     *browserv1.BrowserProfileSpec
	Revision int64
	// State is its newest state's version, time and size; the zero StateInfo when it has
	// none.
	State     StateInfo
	CreatedAt time.Time
	CreatedBy string
	UpdatedAt time.Time
	UpdatedBy string
}

// StateInfo describes a state version without its content.
type StateInfo struct {
	Version   int64
	SavedAt   time.Time
	SizeBytes int64
}

// Ref names a profile by id or by name; exactly one is set.
type Ref struct {
	ID, Name string
}

// String names the profile for messages.
func (r Ref) String() string {
	if r.ID != "" {
		return "browser profile " + r.ID
	}
	return fmt.Sprintf("browser profile %q", r.Name)
}

// target is the audit target of a call that names a profile, until it is found.
func (r Ref) target() string {
	if r.ID != "" {
		return "browser_profile_id:" + r.ID
	}
	return "browser_profile:" + r.Name
}

// check refuses a Ref that names nothing or is malformed (Invalid, naming field).
func (r Ref) check() error {
	switch {
	case r.ID != "" && r.Name != "":
		return errdefs.InvalidField("id", "name a browser profile by its id or its name, not both")
	case r.ID != "":
		if !ulidRE.MatchString(r.ID) {
			return errdefs.InvalidField("id", "%q is not a browser profile id (a ULID)", r.ID)
		}
	case r.Name != "":
		if !nameRE.MatchString(r.Name) {
			return errdefs.InvalidField("name", "%q is not a browser profile's name", r.Name)
		}
	default:
		return errdefs.InvalidField("name", "name a browser profile by its id or its name")
	}
	return nil
}

// staleRevision is the Aborted error of a change whose expected revision is not the
// profile's current one.
func staleRevision(name string, expected, current int64) error {
	return &errdefs.Error{
		Kind: errdefs.Aborted,
		Message: fmt.Sprintf("browser profile %q is at revision %d, not %d: nothing was changed; read it again and redo your change",
			name, current, expected),
		Reason: ReasonStaleRevision, Metadata: map[string]string{MetadataCurrentRevision: fmt.Sprint(current)},
	}
}

// Create checks spec, fills in its defaults and stores it as a new profile at revision
// 1, on behalf of by. A name already taken is Conflict; a definition at fault is
// Invalid, naming every field at fault. It returns the profile and the warnings about it.
func (p *Profiles) Create(ctx context.Context, spec *browserv1.BrowserProfileSpec, by string) (Profile, []string, error) {
	if by == "" {
		return Profile{}, nil, errors.New("browser: create: no principal named")
	}
	spec, err := normalize(spec)
	if err != nil {
		return Profile{}, nil, err
	}
	audit.SetTarget(ctx, "browser_profile:"+spec.GetName()+" revision:1") // before the insert, which writes the call's audit outbox row
	row, err := toRow(spec)
	if err != nil {
		return Profile{}, nil, fmt.Errorf("browser: create: %w", err)
	}
	row.ID = ulid.Make().String()
	var out Profile
	err = p.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := checkProxy(ctx, tx, spec.GetProxy()); err != nil {
			return err
		}
		var err error
		out, err = insertProfile(ctx, tx, row, p.opts.Now().UTC(), by)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return Profile{}, nil, errdefs.Wrap(err, errdefs.Conflict, "a browser profile named %q exists already", spec.GetName())
	}
	if err != nil {
		return Profile{}, nil, wrapErr("create", err)
	}
	return out, p.warnings(ctx), nil
}

// Get returns a profile and the warnings about it as things stand now.
func (p *Profiles) Get(ctx context.Context, ref Ref) (Profile, []string, error) {
	if err := ref.check(); err != nil {
		return Profile{}, nil, err
	}
	pr, err := getProfile(ctx, p.opts.Store.Q(), ref)
	if err != nil {
		return Profile{}, nil, wrapErr("get", err)
	}
	return pr, p.warnings(ctx), nil
}

// List returns a page of profiles by name whose labels match selector, and the token
// of the next page (empty on the last).
func (p *Profiles) List(ctx context.Context, selector string, pageSize int, pageToken string) ([]Profile, string, error) {
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
	out, next, err := labels.Page(sel, pageSize, after, func(pr Profile) string { return pr.Spec.GetName() },
		func(pr Profile) map[string]string { return pr.Spec.GetLabels() },
		func(after string, limit int) ([]Profile, bool, error) {
			return listProfiles(ctx, p.opts.Store.Q(), after, limit)
		})
	if err != nil {
		return nil, "", wrapErr("list", err)
	}
	if next != "" {
		next = encodePageToken(next)
	}
	return out, next, nil
}

// Update replaces the definition of the profile ref by spec as its next revision, on
// behalf of by, if expected is its current revision (else Aborted). The definition is
// checked as Create checks it; a new name that another profile has is Conflict. The
// state stays.
func (p *Profiles) Update(ctx context.Context, ref Ref, spec *browserv1.BrowserProfileSpec, expected int64, by string) (Profile, []string, error) {
	if err := ref.check(); err != nil {
		return Profile{}, nil, err
	}
	if by == "" {
		return Profile{}, nil, errors.New("browser: update: no principal named")
	}
	if expected < 1 {
		return Profile{}, nil, errdefs.InvalidField("expected_revision", "name the profile's current revision (1 or more): read the profile first")
	}
	spec, err := normalize(spec)
	if err != nil {
		return Profile{}, nil, err
	}
	row, err := toRow(spec)
	if err != nil {
		return Profile{}, nil, fmt.Errorf("browser: update: %w", err)
	}
	var out Profile
	err = p.change(ctx, ref, &expected, func(tx *store.Tx, cur Profile) error {
		if err := checkProxy(ctx, tx, spec.GetProxy()); err != nil {
			return err
		}
		target := fmt.Sprintf("browser_profile:%s revision:%d", cur.Spec.GetName(), cur.Revision+1)
		if spec.GetName() != cur.Spec.GetName() {
			target = fmt.Sprintf("browser_profile:%s -> browser_profile:%s revision:%d", cur.Spec.GetName(), spec.GetName(), cur.Revision+1)
		}
		audit.SetTarget(ctx, target) // before the update, which writes the call's audit outbox row
		row.ID = cur.ID
		var err error
		out, err = updateProfile(ctx, tx, row, p.opts.Now().UTC(), by)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return Profile{}, nil, errdefs.Wrap(err, errdefs.Conflict, "a browser profile named %q exists already", spec.GetName())
	}
	if err != nil {
		return Profile{}, nil, wrapErr("update", err)
	}
	return out, p.warnings(ctx), nil
}

// Delete deletes the profile ref and its states, if expected is nil or its current
// revision (else Aborted), and returns it as it was.
func (p *Profiles) Delete(ctx context.Context, ref Ref, expected *int64) (Profile, error) {
	var out Profile
	err := p.change(ctx, ref, expected, func(tx *store.Tx, cur Profile) error {
		audit.SetTarget(ctx, fmt.Sprintf("browser_profile:%s revision:%d", cur.Spec.GetName(), cur.Revision)) // before the delete
		out = cur
		return tx.Q().DeleteBrowserProfile(ctx, cur.ID)
	})
	if err != nil {
		return Profile{}, wrapErr("delete", err)
	}
	return out, nil
}

// ResetState drops every state version of the profile ref, if expected is nil or its
// current revision (else Aborted), and returns the profile and how many versions were
// dropped. The next dispatch with it starts with no state.
func (p *Profiles) ResetState(ctx context.Context, ref Ref, expected *int64) (Profile, int64, error) {
	var (
		out     Profile
		dropped int64
	)
	err := p.change(ctx, ref, expected, func(tx *store.Tx, cur Profile) error {
		audit.SetTarget(ctx, fmt.Sprintf("browser_profile:%s state_reset (was state_version:%d)", cur.Spec.GetName(), cur.State.Version)) // before the delete
		var err error
		if dropped, err = tx.Q().DeleteBrowserProfileStates(ctx, cur.ID); err != nil {
			return err
		}
		out = cur
		out.State = StateInfo{}
		return nil
	})
	if err != nil {
		return Profile{}, 0, wrapErr("reset state", err)
	}
	return out, dropped, nil
}

// change runs fn in a transaction with the profile ref locked, if expected is nil or its
// current revision (else Aborted). The call's audit target names ref until fn names the
// change.
func (p *Profiles) change(ctx context.Context, ref Ref, expected *int64, fn func(tx *store.Tx, cur Profile) error) error {
	if err := ref.check(); err != nil {
		return err
	}
	audit.SetTarget(ctx, ref.target())
	return p.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		cur, err := lockProfile(ctx, tx, ref)
		if err != nil {
			return err
		}
		if expected != nil && cur.Revision != *expected {
			return staleRevision(cur.Spec.GetName(), *expected, cur.Revision)
		}
		return fn(tx, cur)
	})
}

// warnings returns what is amiss with a profile as things stand now without making it
// invalid: no online node offers a browser capability.
func (p *Profiles) warnings(ctx context.Context) []string {
	if p.opts.NodesOffering == nil {
		return nil
	}
	nodes, err := p.opts.NodesOffering(ctx, CapabilityNavigate)
	if err != nil {
		p.log.Warn("browser: the nodes offering browser.navigate could not be read", "err", err)
		return []string{"the nodes offering " + CapabilityNavigate + " could not be read"}
	}
	if !slices.ContainsFunc(nodes, func(n dispatch.Node) bool {
		return n.Presence == dispatch.PresenceOnline && !n.Revoked && slices.ContainsFunc(n.Capabilities, func(c dispatch.Capability) bool {
			return c.Name == CapabilityNavigate && c.Available
		})
	}) {
		return []string{"no online node offers " + CapabilityNavigate}
	}
	return nil
}

// checkProxy checks, in tx, that the secret a proxy reference names can be used, and
// holds Referrers off until tx ends.
func checkProxy(ctx context.Context, tx *store.Tx, proxy string) error {
	if proxy == "" {
		return nil
	}
	if err := tx.Q().LockBrowserProxyReferences(ctx); err != nil {
		return err
	}
	ref, err := secretref.Parse(proxy)
	if err != nil {
		return errdefs.InvalidField("spec.proxy", "%s", err) // checked by normalize
	}
	if err := vault.CheckRef(ctx, tx, ref); err != nil {
		if errdefs.KindOf(err) == errdefs.Invalid {
			return errdefs.InvalidField("spec.proxy", "%s cannot be used: %s", ref, errMessage(err))
		}
		return err
	}
	return nil
}

// Referrers returns the proxies of the profiles that refer to the secret name, any
// version, keyed "browser profile NAME (proxy)"; with the live configuration's, they
// make vault.Referrers. It holds off the proxies' checks until tx ends, so that no
// profile adds a reference meanwhile.
func (p *Profiles) Referrers(ctx context.Context, tx *store.Tx, name string) ([]config.SecretRef, error) {
	q := tx.Q()
	if err := q.LockBrowserProxyReferences(ctx); err != nil {
		return nil, fmt.Errorf("browser: referrers: %w", err)
	}
	rows, err := q.ListBrowserProfileProxies(ctx)
	if err != nil {
		return nil, fmt.Errorf("browser: referrers: %w", err)
	}
	var out []config.SecretRef
	for _, r := range rows {
		if ref, err := secretref.Parse(r.Proxy); err == nil && ref.Name == name {
			out = append(out, config.SecretRef{Key: "browser profile " + r.Name + " (proxy)", Ref: ref})
		}
	}
	return out, nil
}

// errMessage is a domain error's message.
func errMessage(err error) string {
	var e *errdefs.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// normalize checks spec and returns a copy with its defaults filled in and its domains
// normalized, or an Invalid error naming every field at fault.
func normalize(spec *browserv1.BrowserProfileSpec) (*browserv1.BrowserProfileSpec, error) {
	if spec == nil {
		return nil, errdefs.InvalidField("spec", "a browser profile needs a definition")
	}
	spec = proto.CloneOf(spec)
	var vs []errdefs.Violation
	bad := func(field, format string, args ...any) {
		vs = append(vs, errdefs.Violation{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	if !nameRE.MatchString(spec.GetName()) {
		bad("spec.name", "a browser profile's name is a lower-case DNS label: 1 to 63 letters a-z, digits and '-', starting and ending with a letter or digit (%q is not)", spec.GetName())
	}
	checkText(bad, "spec.description", spec.GetDescription(), maxDescriptionBytes)
	switch ua := spec.GetUserAgent(); {
	case len(ua) > maxUserAgentBytes:
		bad("spec.user_agent", "at most %d bytes, not %d", maxUserAgentBytes, len(ua))
	case strings.ContainsFunc(ua, func(r rune) bool { return r < 0x20 || r == 0x7f || r > 0x7e }):
		bad("spec.user_agent", "a user agent is printable ASCII")
	}
	checkViewport(bad, spec)
	if l := spec.GetLocale(); l != "" && (len(l) > maxLocaleBytes || !localeRE.MatchString(l)) {
		bad("spec.locale", "a locale is a BCP 47 language tag such as en-GB or de (%q is not)", l)
	}
	checkTimeZone(bad, spec.GetTimeZone())
	if proxy := spec.GetProxy(); proxy != "" {
		if _, err := secretref.Parse(proxy); err != nil {
			bad("spec.proxy", "the proxy is a reference to the secret holding its URL: %s", err)
		}
	}
	checkDomains(bad, spec)
	labels.Check("spec.labels", "a browser profile", spec.GetLabels(), bad)
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

// checkViewport checks spec's viewport and fills in the default.
func checkViewport(bad func(string, string, ...any), spec *browserv1.BrowserProfileSpec) {
	v := spec.GetViewport()
	if v == nil || (v.GetWidth() == 0 && v.GetHeight() == 0) {
		spec.Viewport = &browserv1.Viewport{Width: DefaultViewportWidth, Height: DefaultViewportHeight}
		return
	}
	if w := v.GetWidth(); w < minViewport || w > maxViewportWidth {
		bad("spec.viewport.width", "a viewport is %d to %d pixels wide, not %d", minViewport, maxViewportWidth, w)
	}
	if h := v.GetHeight(); h < minViewport || h > maxViewportHeight {
		bad("spec.viewport.height", "a viewport is %d to %d pixels high, not %d", minViewport, maxViewportHeight, h)
	}
}

// checkTimeZone checks that tz, when set, is an IANA name this machine knows.
func checkTimeZone(bad func(string, string, ...any), tz string) {
	if tz == "" {
		return
	}
	if len(tz) > maxTimeZoneBytes || !timeZoneRE.MatchString(tz) || tz == "Local" {
		bad("spec.time_zone", "a time zone is an IANA name such as Europe/London or UTC (%q is not)", tz)
		return
	}
	if _, err := time.LoadLocation(tz); err != nil {
		bad("spec.time_zone", "%q is not a time zone of the IANA database (e.g. Europe/London, America/New_York, UTC)", tz)
	}
}

// checkDomains checks spec's allowed domains and normalizes them in place: lower case,
// without a final dot, IP addresses in their canonical form; duplicates dropped.
func checkDomains(bad func(string, string, ...any), spec *browserv1.BrowserProfileSpec) {
	ds := spec.GetAllowedDomains()
	switch {
	case len(ds) == 0:
		bad("spec.allowed_domains", "a browser profile needs at least one allowed domain (e.g. example.com, or 127.0.0.1)")
		return
	case len(ds) > maxDomains:
		bad("spec.allowed_domains", "a browser profile has at most %d allowed domains, not %d", maxDomains, len(ds))
		return
	}
	out := make([]string, 0, len(ds))
	for i, d := range ds {
		n, problem := normalizeDomain(d)
		if problem != "" {
			bad(fmt.Sprintf("spec.allowed_domains[%d]", i), "%s", problem)
			continue
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	spec.AllowedDomains = out
}

// normalizeDomain returns d normalized, or what is wrong with it.
func normalizeDomain(d string) (string, string) {
	if strings.Contains(d, "://") || strings.ContainsAny(d, "/?#@*") {
		return "", fmt.Sprintf("%q is not a domain: give a host name or an IP address alone, without scheme, path or wildcard (a domain allows its subdomains)", d)
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(d, "["), "]")); err == nil && a.Zone() == "" {
		return a.Unmap().String(), ""
	}
	h := strings.TrimSuffix(strings.ToLower(d), ".")
	if strings.Contains(h, ":") {
		return "", fmt.Sprintf("%q is not a domain: give no port (any port of an allowed host is allowed)", d)
	}
	if len(h) > 253 || !hostnameRE.MatchString(h) {
		return "", fmt.Sprintf("%q is not a host name: labels of letters, digits and '-' joined by dots (internationalized names in their xn-- form)", d)
	}
	return h, ""
}

// wrapErr adds the operation to an error, keeping a domain error's message as it is.
func wrapErr(op string, err error) error {
	var k errdefs.Kinded
	if errors.As(err, &k) {
		return err
	}
	return fmt.Errorf("browser: %s: %w", op, err)
}
