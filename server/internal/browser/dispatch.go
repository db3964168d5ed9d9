package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/palyra/palyra/gen/dbsqlc"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/envelope"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/store"
)

// CapabilityNavigate is the browser capability a profile is mostly used with.
const CapabilityNavigate = "browser.navigate"

const (
	// keepVersions is how many state versions of a profile are kept: the newest.
	keepVersions = 5
	// maxStateBytes bounds a state saved (node.v1.BrowserState's limit).
	maxStateBytes = 1 << 20
)

var _ dispatch.BrowserProfiles = (*Profiles)(nil)

// input is what the browser hooks read of a browser.* dispatch's input.
type input struct {
	Profile json.RawMessage `json:"profile"`
	URL     json.RawMessage `json:"url"`
}

// profileName returns the profile a dispatch's input names, or an Invalid error naming
// input.profile.
func profileName(in string) (string, *input, error) {
	var i input
	if err := json.Unmarshal([]byte(in), &i); err != nil {
		return "", nil, errdefs.InvalidField("input", "a browser capability's input is a JSON object")
	}
	var name string
	if len(i.Profile) == 0 || json.Unmarshal(i.Profile, &name) != nil || name == "" {
		return "", nil, errdefs.InvalidField("input.profile",
			`a browser capability's input names the browser profile it browses with: "profile": "NAME" (palyra browser profiles list)`)
	}
	if !nameRE.MatchString(name) {
		return "", nil, errdefs.InvalidField("input.profile", "%q is not a browser profile's name", name)
	}
	return name, &i, nil
}

// Exists reports whether a profile named name exists (agents check their browser
// tools' profiles with it).
func (p *Profiles) Exists(ctx context.Context, name string) (bool, error) {
	_, err := p.opts.Store.Q().GetBrowserProfileByName(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("browser: profile %q: %w", name, err)
	}
	return true, nil
}

// CheckInput refuses, when a browser.* dispatch is created, an input that names no
// existing profile, or whose "url" is not http(s) on one of the profile's allowed
// domains (Invalid, naming input.profile or input.url). The node checks every request
// of the page again.
func (p *Profiles) CheckInput(ctx context.Context, capability, in string) error {
	name, i, err := profileName(in)
	if err != nil {
		return err
	}
	row, err := p.opts.Store.Q().GetBrowserProfileByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return errdefs.InvalidField("input.profile", "there is no browser profile %q (palyra browser profiles list)", name)
	}
	if err != nil {
		return fmt.Errorf("browser: check the input of %s: %w", capability, err)
	}
	if len(i.URL) == 0 || string(i.URL) == "null" {
		return nil
	}
	var raw string
	if json.Unmarshal(i.URL, &raw) != nil {
		return errdefs.InvalidField("input.url", "the URL is a string")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return errdefs.InvalidField("input.url", "a browser navigates to http:// and https:// URLs only, with a host")
	}
	var domains []string
	if err := json.Unmarshal(row.AllowedDomains, &domains); err != nil {
		return fmt.Errorf("browser: profile %s: allowed domains: %w", row.ID, err)
	}
	if !Allowed(domains, u.Hostname()) {
		return errdefs.InvalidField("input.url", "host %q is not among the allowed domains of browser profile %q (%s): add it with palyra browser profiles update",
			u.Hostname(), name, strings.Join(domains, ", "))
	}
	return nil
}

// Allowed reports whether host is on domains: a domain allows itself and its
// subdomains, an IP address only itself.
func Allowed(domains []string, host string) bool {
	host = strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
		return slices.Contains(domains, host)
	}
	return slices.ContainsFunc(domains, func(d string) bool { return host == d || strings.HasSuffix(host, "."+d) })
}

// Profile returns the profile a browser.* dispatch's input names as it is now, to send
// with the dispatch: its newest state opened and its proxy resolved. A profile that no
// longer exists, or whose proxy or state cannot be used, is FailedPrecondition: the
// dispatch fails with that message, which never holds the state or the proxy's URL.
func (p *Profiles) Profile(ctx context.Context, dispatchID, in string) (*nodev1.BrowserProfile, error) {
	name, _, err := profileName(in)
	if err != nil {
		return nil, errdefs.New(errdefs.FailedPrecondition, "%s", errMessage(err))
	}
	q := p.opts.Store.Q()
	row, err := q.GetBrowserProfileByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errdefs.New(errdefs.FailedPrecondition, "browser profile %q no longer exists: it was deleted or renamed after the dispatch was created", name)
	}
	if err != nil {
		return nil, fmt.Errorf("browser: read profile %q: %w", name, err)
	}
	pr, err := profileOf(row, StateInfo{})
	if err != nil {
		return nil, err
	}
	spec := pr.Spec
	out := &nodev1.BrowserProfile{
		Id: pr.ID, Name: spec.GetName(), UserAgent: spec.GetUserAgent(),
		ViewportWidth: spec.GetViewport().GetWidth(), ViewportHeight: spec.GetViewport().GetHeight(),
		Locale: spec.GetLocale(), TimeZone: spec.GetTimeZone(), AllowedDomains: spec.GetAllowedDomains(),
	}
	if spec.GetProxy() != "" {
		if out.ProxyUrl, err = p.proxyURL(ctx, name, spec.GetProxy()); err != nil {
			return nil, err
		}
	}
	st, err := q.GetNewestBrowserProfileState(ctx, pr.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return out, nil
	case err != nil:
		return nil, fmt.Errorf("browser: read the state of profile %q: %w", name, err)
	}
	v := version{profileID: pr.ID, number: st.Version}
	if out.StorageState, err = p.wrap.open(p.opts.Keys, v, sealedOf(st)); err != nil {
		p.log.Error("a browser profile's state does not open", "profile", name, "state_version", st.Version, "dispatch_id", dispatchID, "err", err)
		return nil, err
	}
	out.StateVersion = st.Version
	return out, nil
}

// proxyURL resolves a profile's proxy reference and checks that it holds a proxy URL;
// the errors never hold the value.
func (p *Profiles) proxyURL(ctx context.Context, name, proxy string) (string, error) {
	ref, err := secretref.Parse(proxy)
	if err != nil {
		return "", errdefs.New(errdefs.FailedPrecondition, "the proxy of browser profile %q is not a secret reference", name)
	}
	value, err := p.opts.Secrets.Resolve(ctx, ref)
	if err != nil {
		return "", errdefs.New(errdefs.FailedPrecondition, "the proxy %s of browser profile %q cannot be used: %s", ref, name, errMessage(err))
	}
	s := strings.TrimSpace(string(value))
	clear(value)
	u, err := url.Parse(s)
	if err != nil || !slices.Contains([]string{"http", "https", "socks5"}, u.Scheme) || u.Host == "" {
		return "", errdefs.New(errdefs.FailedPrecondition,
			"the secret %s, the proxy of browser profile %q, does not hold a proxy URL (http://, https:// or socks5://[user:password@]host:port)", ref, name)
	}
	return s, nil
}

// sealedOf is a stored state version's seal.
func sealedOf(r dbsqlc.BrowserProfileState) envelope.Sealed {
	return envelope.Sealed{KEKID: r.KekID, DataKeyNonce: r.DataKeyNonce, WrappedDataKey: r.WrappedDataKey, ValueNonce: r.ValueNonce, Ciphertext: r.Ciphertext}
}

// SaveState seals the state a browser.* dispatch's result from device deviceID carries
// as the next version of the profile its input names, once per dispatch (a result sent
// again saves nothing), keeps the newest keepVersions versions, and audits
// browser.state.save, by the device, with the profile and the version. A state for a profile deleted (or deleted and created
// anew) since the dispatch was sent, or not JSON, or too large, is discarded and
// logged without its content. Only a failure to store it is an error.
func (p *Profiles) SaveState(ctx context.Context, deviceID, dispatchID, in string, st *nodev1.BrowserState) error {
	name, _, err := profileName(in)
	if err != nil {
		p.log.Warn("browser state discarded: the dispatch names no profile", "dispatch_id", dispatchID)
		return nil
	}
	state := st.GetStorageState()
	discard := func(why string) error {
		p.log.Info("browser state discarded: "+why, "profile", name, "dispatch_id", dispatchID, "size_bytes", len(state))
		return nil
	}
	switch {
	case len(state) > maxStateBytes:
		return discard(fmt.Sprintf("larger than %d bytes", maxStateBytes))
	case len(state) > 0 && !json.Valid(state):
		return discard("not JSON")
	}
	var (
		saved  int64
		staged []audit.Record
		gone   string
	)
	now := p.opts.Now().UTC()
	err = p.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		saved, staged, gone = 0, nil, ""
		pr, err := lockProfile(ctx, tx, Ref{Name: name})
		if errdefs.KindOf(err) == errdefs.NotFound {
			gone = "the profile was deleted"
			return nil
		}
		if err != nil {
			return err
		}
		if pr.ID != st.GetProfileId() {
			gone = "the profile was deleted and another of its name created"
			return nil
		}
		q := tx.Q()
		if _, err := q.GetBrowserProfileStateByDispatch(ctx, dbsqlc.GetBrowserProfileStateByDispatchParams{ProfileID: pr.ID, DispatchID: dispatchID}); err == nil {
			return nil // saved already, from this result sent before
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		n, err := q.NextBrowserProfileStateVersion(ctx, pr.ID)
		if err != nil {
			return err
		}
		s, err := p.wrap.seal(p.opts.Keys.Primary(), version{profileID: pr.ID, number: n}, state)
		if err != nil {
			return err
		}
		if _, err := q.InsertBrowserProfileState(ctx, dbsqlc.InsertBrowserProfileStateParams{
			ProfileID: pr.ID, Version: n, DispatchID: dispatchID, Now: now, SizeBytes: int64(len(state)),
			KekID: s.KEKID, DataKeyNonce: s.DataKeyNonce, WrappedDataKey: s.WrappedDataKey, ValueNonce: s.ValueNonce, Ciphertext: s.Ciphertext,
		}); err != nil {
			return err
		}
		if _, err := q.PruneBrowserProfileStates(ctx, dbsqlc.PruneBrowserProfileStatesParams{ProfileID: pr.ID, Keep: keepVersions}); err != nil {
			return err
		}
		saved = n
		if p.opts.Audit != nil {
			staged, err = p.opts.Audit.Stage(ctx, tx, audit.Event{Time: now, Principal: "device:" + deviceID, Procedure: "browser.state.save",
				Target: fmt.Sprintf("browser_profile:%s state_version:%d dispatch:%s", name, n, dispatchID), Outcome: audit.Success, Code: "ok"})
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("browser: save the state of profile %q from dispatch %s: %w", name, dispatchID, err)
	}
	if gone != "" {
		return discard(gone)
	}
	if saved == 0 {
		return nil
	}
	if len(staged) > 0 {
		if err := p.opts.Audit.Publish(ctx, staged); err != nil {
			p.log.Warn("browser.state.save not published yet; the audit drainer moves it", "err", err)
		}
	}
	p.log.Info("browser state saved", "profile", name, "state_version", saved, "base_version", st.GetBaseVersion(),
		"dispatch_id", dispatchID, "size_bytes", len(state))
	return nil
}
