package capability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"math"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/domstorage"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// The names of the browser capabilities.
const (
	// BrowserNavigateName is the name of the browser.navigate capability.
	BrowserNavigateName = "browser.navigate"
	// BrowserScreenshotName is the name of the browser.screenshot capability: the same,
	// always with a screenshot.
	BrowserScreenshotName = "browser.screenshot"
)

// Defaults and bounds of the [browser] table and of an input.
const (
	// DefaultBrowserTimeout is the longest a browser dispatch lasts.
	DefaultBrowserTimeout = time.Minute
	// DefaultBrowserMaxPageBytes is the page-size cap: the bytes one dispatch receives.
	DefaultBrowserMaxPageBytes = 32 << 20
	// DefaultBrowserMaxConcurrent is how many browsers run at once.
	DefaultBrowserMaxConcurrent = 2
	// MaxBrowserConcurrent bounds browser.max_concurrent.
	MaxBrowserConcurrent = 64
	// defaultBrowserExecutable is looked up on PATH when browser.executable is empty.
	defaultBrowserExecutable = "chromium"
	// defaultMaxTextBytes and maxTextBytes bound the visible text a result holds.
	defaultMaxTextBytes, maxTextBytes = 64 << 10, 512 << 10
	// maxLinks bounds the links a result holds; maxLinkText each link's text.
	maxLinks, maxLinkText = 500, 200
	// defaultViewport is the viewport of a profile that sets none.
	defaultViewportWidth, defaultViewportHeight = 1280, 720
	// maxViewport bounds a viewport's sides, maxFullPageHeight a full-page screenshot.
	maxViewport, maxFullPageHeight = 8192, 16384
	// stateGrace is how long reading the state at the end may take, after a cancel too.
	stateGrace = 5 * time.Second
)

// BrowserConfig configures browser.navigate and browser.screenshot (node.toml's
// [browser] table). Both are unavailable until Enabled, and without a browser
// executable.
type BrowserConfig struct {
	// Enabled lets this node browse: a node's operator opts in, as for shell.execute.
	Enabled bool `toml:"enabled"`
	// Executable is Chromium: an absolute path or a bare name found on PATH. Empty:
	// "chromium" on PATH when the capabilities are built; not found, they are
	// unavailable.
	Executable string `toml:"executable"`
	// Timeout is the longest a dispatch lasts (default 1m); the input may ask for less.
	Timeout Duration `toml:"timeout"`
	// MaxPageBytes caps the bytes one dispatch receives from the network, every request
	// together (default 32 MiB); reaching it aborts the load.
	MaxPageBytes int64 `toml:"max_page_bytes"`
	// MaxConcurrent is how many browsers run at once (default 2); more dispatches wait.
	MaxConcurrent int `toml:"max_concurrent"`
	// AllowNetworks are the networks (CIDR, or an address) of private, loopback,
	// link-local and other non-public addresses the browser may reach, e.g.
	// ["127.0.0.0/8"]; by default none. A cloud metadata address (169.254.169.254,
	// fd00:ec2::254, ...) is reached only when listed itself.
	AllowNetworks []string `toml:"allow_networks"`
}

// normalize validates the [browser] table as LoadConfig does, resolving an executable
// it names with lookPath.
func (c BrowserConfig) normalize(lookPath func(string) (string, error)) (BrowserConfig, error) {
	var errs []error
	if c.Executable != "" {
		p, err := resolveExecutable(c.Executable, lookPath)
		if err != nil {
			errs = append(errs, fmt.Errorf("browser.executable: %w", err))
		}
		c.Executable = p
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("browser.timeout: %v is not positive", c.Timeout))
	}
	if c.MaxPageBytes <= 0 {
		errs = append(errs, fmt.Errorf("browser.max_page_bytes: %d is not positive", c.MaxPageBytes))
	}
	if c.MaxConcurrent <= 0 || c.MaxConcurrent > MaxBrowserConcurrent {
		errs = append(errs, fmt.Errorf("browser.max_concurrent: %d is not between 1 and %d", c.MaxConcurrent, MaxBrowserConcurrent))
	}
	if _, err := parseNetworks(c.AllowNetworks); err != nil {
		errs = append(errs, fmt.Errorf("browser.allow_networks: %w", err))
	}
	return c, errors.Join(errs...)
}

// parseNetworks parses browser.allow_networks: CIDR prefixes or single addresses.
func parseNetworks(ss []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			ps = append(ps, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a network (\"127.0.0.0/8\") nor an address", s)
		}
		a = a.Unmap()
		ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
	}
	return ps, nil
}

// BrowserCapability is a capability that runs with a browser profile: the agent passes
// it Dispatch.browser_profile and sends the state it returns as
// DispatchResult.browser_state. Run alone refuses every input.
type BrowserCapability interface {
	Capability
	// RunBrowser runs like Run, with the profile palyrad resolved (nil when the dispatch
	// carried none, which is refused). state is the profile's state at the end, when the
	// browser ran and its state could be read, whatever the outcome, err included.
	RunBrowser(ctx context.Context, input json.RawMessage, profile *nodev1.BrowserProfile, out Output) (res Result, state *nodev1.BrowserState, err error)
}

// browserSchema is the input of browser.navigate and browser.screenshot.
const browserSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "%s input",
  "type": "object",
  "properties": {
    "url": {"description": "The http or https URL to load; its host must be among the profile's allowed domains.", "type": "string", "minLength": 1, "maxLength": 8192},
    "profile": {"description": "The browser profile to browse with, by name.", "type": "string", "minLength": 1, "maxLength": 128},
    "wait_for": {"description": "What ends the load: the load event (default), the network being idle, or a CSS selector being visible.", "enum": ["load", "network_idle", "selector"]},
    "selector": {"description": "The CSS selector wait_for \"selector\" waits for.", "type": "string", "minLength": 1, "maxLength": 1024},
    "text": {"description": "Return the page's visible text (default true).", "type": "boolean", "default": true},
    "max_text_bytes": {"description": "The most text returned (default 65536).", "type": "integer", "minimum": 1, "maximum": 524288},
    "links": {"description": "Return the page's links (at most 500).", "type": "boolean"},
    "screenshot": {"description": "Take a PNG screenshot, written as the dispatch's output.%s", "type": "boolean"},
    "full_page": {"description": "The screenshot shows the whole page, not the viewport.", "type": "boolean"},
    "timeout_seconds": {"description": "Shortens the node's browser.timeout.", "type": "integer", "minimum": 1}
  },
  "required": ["url", "profile"],
  "additionalProperties": false
}`

// browserInput is the input of browser.navigate and browser.screenshot.
type browserInput struct {
	URL            string `json:"url"`
	Profile        string `json:"profile"`
	WaitFor        string `json:"wait_for,omitempty"`
	Selector       string `json:"selector,omitempty"`
	Text           *bool  `json:"text,omitempty"`
	MaxTextBytes   int    `json:"max_text_bytes,omitempty"`
	Links          bool   `json:"links,omitempty"`
	Screenshot     *bool  `json:"screenshot,omitempty"`
	FullPage       bool   `json:"full_page,omitempty"`
	TimeoutSeconds int64  `json:"timeout_seconds,omitempty"`
}

// BrowserResult is the result of browser.navigate and browser.screenshot.
type BrowserResult struct {
	// URL is the page's final URL, after redirects.
	URL string `json:"url"`
	// Title is the page's title.
	Title string `json:"title"`
	// Status is the HTTP status of the page's document, when one was received.
	Status int64 `json:"status,omitempty"`
	// Text is the page's visible text (document.body.innerText), when asked.
	Text string `json:"text,omitempty"`
	// TextTruncated is true when the text was cut at max_text_bytes.
	TextTruncated bool `json:"text_truncated,omitempty"`
	// Links are the page's links, when asked.
	Links []BrowserLink `json:"links,omitempty"`
	// LinksTruncated is true when the page had more than 500.
	LinksTruncated bool `json:"links_truncated,omitempty"`
	// Screenshot says where the PNG screenshot is in the dispatch's output.
	Screenshot *BrowserScreenshot `json:"screenshot,omitempty"`
	// Blocked are the requests the guards refused (the first 100), and popups closed.
	Blocked []BlockedRequest `json:"blocked"`
	// BlockedCount counts them all.
	BlockedCount int `json:"blocked_count"`
	// BytesReceived counts the bytes received from the network.
	BytesReceived int64 `json:"bytes_received"`
	// State says what became of the profile's state.
	State BrowserStateSummary `json:"state"`
}

// BrowserLink is a link of the page.
type BrowserLink struct {
	// URL is the link's absolute URL.
	URL string `json:"url"`
	// Text is its text, cut at 200 characters.
	Text string `json:"text,omitempty"`
}

// BrowserScreenshot locates the screenshot in the dispatch's output: the bytes
// [offset, offset+length) of the output (stdout), a PNG image. The output is capped
// by the dispatch's max_output_bytes: a truncated output holds part of it.
type BrowserScreenshot struct {
	Offset      int64  `json:"offset"`
	Length      int64  `json:"length"`
	ContentType string `json:"content_type"`
	Width       int    `json:"width"`
	Height      int    `json:"height"`
	FullPage    bool   `json:"full_page,omitempty"`
}

// BrowserStateSummary describes the state sent back, never its content.
type BrowserStateSummary struct {
	// Saved is true when the state at the end is sent back for palyrad to store.
	Saved bool `json:"saved"`
	// Cookies and Origins count its cookies and origins with local storage.
	Cookies int `json:"cookies"`
	Origins int `json:"origins"`
	// Bytes is its size.
	Bytes int `json:"bytes"`
	// Error says why it was not saved.
	Error string `json:"error,omitempty"`
}

// browser is browser.navigate or browser.screenshot.
type browser struct {
	name       string
	screenshot bool // always take one
	exe        string
	cfg        BrowserConfig
	networks   []netip.Prefix
	slots      chan struct{}
	log        *slog.Logger

	tempDir   string        // where browsers' user data directories go; "" is os.TempDir()
	onStarted func(pid int) // tests: the browser's process
}

var _ BrowserCapability = (*browser)(nil)

// newBrowserCapabilities returns browser.navigate and browser.screenshot, sharing one
// limit of browsers at once; lookPath finds the default executable.
func newBrowserCapabilities(cfg BrowserConfig, lookPath func(string) (string, error), log *slog.Logger) []Capability {
	d := DefaultConfig().Browser
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.MaxPageBytes <= 0 {
		cfg.MaxPageBytes = d.MaxPageBytes
	}
	if cfg.MaxConcurrent <= 0 || cfg.MaxConcurrent > MaxBrowserConcurrent {
		cfg.MaxConcurrent = d.MaxConcurrent
	}
	networks, err := parseNetworks(cfg.AllowNetworks)
	if err != nil {
		log.Warn("ignoring browser.allow_networks", "err", err)
		networks = nil
	}
	exe := cfg.Executable
	if exe == "" && cfg.Enabled {
		exe, _ = lookPath(defaultBrowserExecutable)
	}
	if !cfg.Enabled {
		exe = ""
	}
	if exe != "" {
		if info, err := os.Stat(exe); err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			log.Warn("browser capabilities unavailable: the browser executable is not usable", "executable", exe)
			exe = ""
		}
	}
	slots := make(chan struct{}, cfg.MaxConcurrent)
	return []Capability{
		&browser{name: BrowserNavigateName, exe: exe, cfg: cfg, networks: networks, slots: slots, log: log},
		&browser{name: BrowserScreenshotName, screenshot: true, exe: exe, cfg: cfg, networks: networks, slots: slots, log: log},
	}
}

// Describe implements Capability.
func (b *browser) Describe() Descriptor {
	desc := "Loads a page in a fresh headless Chromium with a browser profile; returns its URL, title, text, links and blocked requests."
	shot := ""
	if b.screenshot {
		desc = "Loads a page like browser.navigate and takes a PNG screenshot, written as the dispatch's output."
		shot = " Always true here."
	}
	return Descriptor{
		Name: b.name, Description: desc, Available: b.exe != "",
		InputSchema: json.RawMessage(fmt.Sprintf(browserSchema, b.name, shot)),
	}
}

// Run implements Capability: a browser dispatch needs its profile (RunBrowser).
func (b *browser) Run(ctx context.Context, input json.RawMessage, out Output) (Result, error) {
	res, _, err := b.RunBrowser(ctx, input, nil, out)
	return res, err
}

// plan is a checked dispatch: what to load, how, and with which profile.
type plan struct {
	in       browserInput
	target   *url.URL
	profile  *nodev1.BrowserProfile
	domains  domainList
	state    storageState
	proxy    *url.URL
	width    int64
	height   int64
	timeout  time.Duration
	maxText  int
	wantText bool
	shot     bool
}

// check decodes and checks the input and the profile; a problem is a *RefusedError
// that never quotes the profile's state or proxy.
func (b *browser) check(input json.RawMessage, profile *nodev1.BrowserProfile) (*plan, error) {
	p := &plan{profile: profile, timeout: time.Duration(b.cfg.Timeout), maxText: defaultMaxTextBytes, wantText: true}
	if err := decodeInput(b.name, input, &p.in); err != nil {
		return nil, err
	}
	in := &p.in
	if !b.cfg.Enabled {
		return nil, refusef("%s: this node does not browse: its node.toml's [browser] table does not set enabled = true", b.name)
	}
	if b.exe == "" {
		return nil, refusef("%s: no browser on this node: install Chromium, or set browser.executable in node.toml", b.name)
	}
	u, err := url.Parse(in.URL)
	switch {
	case in.URL == "":
		return nil, refusef("%s: url is required", b.name)
	case err != nil:
		return nil, refusef("%s: url is not a URL", b.name)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, refusef("%s: only http and https URLs may be loaded, not %q", b.name, u.Scheme+":")
	case u.Hostname() == "":
		return nil, refusef("%s: url has no host", b.name)
	}
	p.target = u
	if in.Profile == "" {
		return nil, refusef("%s: profile is required", b.name)
	}
	if profile == nil {
		return nil, refusef("%s: the dispatch carries no browser profile: palyrad resolves %q when it sends the dispatch", b.name, in.Profile)
	}
	if profile.GetName() != in.Profile {
		return nil, refusef("%s: the dispatch carries profile %q, not %q", b.name, profile.GetName(), in.Profile)
	}
	if p.domains, err = newDomainList(profile.GetAllowedDomains()); err != nil {
		return nil, refusef("%s: profile %q: %v", b.name, profile.GetName(), err)
	}
	if !p.domains.allows(u.Hostname()) {
		return nil, refusef("%s: %s is not among the allowed domains of profile %q", b.name, u.Hostname(), profile.GetName())
	}
	if p.state, err = parseStorageState(profile.GetStorageState()); err != nil {
		return nil, refusef("%s: profile %q: %v", b.name, profile.GetName(), err)
	}
	if raw := profile.GetProxyUrl(); raw != "" {
		pu, err := url.Parse(raw)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Hostname() == "" {
			return nil, refusef("%s: profile %q: its proxy is not an http:// or https:// proxy URL", b.name, profile.GetName())
		}
		p.proxy = pu
	}
	p.width, p.height = int64(profile.GetViewportWidth()), int64(profile.GetViewportHeight())
	if p.width == 0 || p.height == 0 {
		p.width, p.height = defaultViewportWidth, defaultViewportHeight
	}
	if p.width > maxViewport || p.height > maxViewport {
		return nil, refusef("%s: profile %q: a viewport of %dx%d, at most %dx%d", b.name, profile.GetName(), p.width, p.height, maxViewport, maxViewport)
	}
	if tz := profile.GetTimeZone(); tz != "" {
		if _, err := time.LoadLocation(tz); err != nil || strings.ContainsAny(tz, ",\x00") || tz == "Local" {
			return nil, refusef("%s: profile %q: time zone %q is not an IANA time zone", b.name, profile.GetName(), tz)
		}
	}
	if l := profile.GetLocale(); l != "" && !localePattern(l) {
		return nil, refusef("%s: profile %q: locale %q is not a language tag such as \"en-GB\"", b.name, profile.GetName(), l)
	}
	if strings.ContainsFunc(profile.GetUserAgent(), unicode.IsControl) {
		return nil, refusef("%s: profile %q: the user agent holds control characters", b.name, profile.GetName())
	}
	switch in.WaitFor {
	case "":
		if in.Selector != "" {
			in.WaitFor = "selector"
		} else {
			in.WaitFor = "load"
		}
	case "load", "network_idle":
		if in.Selector != "" {
			return nil, refusef("%s: selector is only for wait_for \"selector\"", b.name)
		}
	case "selector":
		if in.Selector == "" {
			return nil, refusef("%s: wait_for \"selector\" needs a selector", b.name)
		}
	default:
		return nil, refusef("%s: wait_for is \"load\", \"network_idle\" or \"selector\", not %q", b.name, in.WaitFor)
	}
	if in.Text != nil {
		p.wantText = *in.Text
	}
	if in.MaxTextBytes < 0 || in.MaxTextBytes > maxTextBytes {
		return nil, refusef("%s: max_text_bytes must be between 1 and %d", b.name, maxTextBytes)
	} else if in.MaxTextBytes > 0 {
		p.maxText = in.MaxTextBytes
	}
	p.shot = b.screenshot
	if in.Screenshot != nil {
		if b.screenshot && !*in.Screenshot {
			return nil, refusef("%s always takes a screenshot: leave screenshot out, or use %s", b.name, BrowserNavigateName)
		}
		p.shot = *in.Screenshot
	}
	if in.FullPage && !p.shot {
		return nil, refusef("%s: full_page is for a screenshot", b.name)
	}
	if in.TimeoutSeconds < 0 {
		return nil, refusef("%s: timeout_seconds must be positive", b.name)
	}
	if in.TimeoutSeconds > 0 && in.TimeoutSeconds <= int64(p.timeout/time.Second) {
		p.timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}
	return p, nil
}

// localePattern accepts a BCP 47 language tag's form.
func localePattern(s string) bool {
	if len(s) > 35 {
		return false
	}
	for i, part := range strings.Split(s, "-") {
		if part == "" || len(part) > 8 || (i == 0 && len(part) < 2) {
			return false
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// Causes of a load's end that are not the dispatch's.
var (
	errPageTooLarge = errors.New("the page-size cap was reached")
	errTimeLimit    = errors.New("the time limit was reached")
)

// RunBrowser implements BrowserCapability.
func (b *browser) RunBrowser(ctx context.Context, input json.RawMessage, profile *nodev1.BrowserProfile, out Output) (Result, *nodev1.BrowserState, error) {
	p, err := b.check(input, profile)
	if err != nil {
		return Result{}, nil, err
	}
	select {
	case b.slots <- struct{}{}:
		defer func() { <-b.slots }()
	case <-ctx.Done():
		return Result{}, nil, ctx.Err()
	}

	tooLarge := make(chan struct{})
	g, err := startGuard(p.domains, addressPolicy{allowed: b.networks}, p.proxy, b.cfg.MaxPageBytes,
		func() { close(tooLarge) })
	if err != nil {
		return Result{}, nil, err
	}
	defer g.Close()
	browserCtx, stop, err := b.start(ctx, p, g)
	defer stop()
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, nil, ctx.Err()
		}
		return Result{}, nil, fmt.Errorf("start the browser: %w", err)
	}

	// load ends at the time limit, the page-size cap or the dispatch's end; the browser
	// outlives it, for the state to be read, until stop.
	ended, endLoad := context.WithCancelCause(browserCtx)
	defer endLoad(nil)
	defer context.AfterFunc(ctx, func() { endLoad(context.Cause(ctx)) })()
	go func() {
		select {
		case <-tooLarge:
			endLoad(errPageTooLarge)
		case <-ended.Done():
		}
	}()
	load, cancelTimer := context.WithTimeoutCause(ended, p.timeout, errTimeLimit)
	defer cancelTimer()

	// The page: its browser context and tab, created by the first command.
	if err := chromedp.Do(browserCtx, chromedp.Func(func(context.Context, *chromedp.Target) error { return nil })); err != nil {
		if load.Err() != nil {
			return Result{}, nil, b.loadEnd(ctx, load, err)
		}
		return Result{}, nil, fmt.Errorf("open the page: %w", err)
	}
	if b.onStarted != nil {
		if proc := chromedp.FromContext(browserCtx).Browser.Process(); proc != nil {
			b.onStarted(proc.Pid)
		}
	}
	b.log.Debug("browser started", "capability", b.name, "profile", p.profile.GetName())

	res := BrowserResult{Blocked: []BlockedRequest{}}
	runErr := b.browse(load, browserCtx, p, g, &res, out)

	// The state, whatever happened, from a context the dispatch's end does not cancel.
	stateCtx, cancelState := context.WithTimeout(browserCtx, stateGrace)
	state, summary := b.readState(stateCtx, p)
	cancelState()
	res.State = summary
	res.Blocked, res.BlockedCount, res.BytesReceived = g.report()
	if res.Blocked == nil {
		res.Blocked = []BlockedRequest{}
	}

	result := Result{}
	if runErr != nil {
		if err := b.loadEnd(ctx, load, runErr); ctx.Err() != nil {
			return result, state, err
		} else {
			runErr = err
		}
		result.Failed, result.Error = true, runErr.Error()
	} else if why := g.blockedOrigin(mustParse(res.URL)); why != "" {
		result.Failed, result.Error = true, fmt.Sprintf("%s: the page was blocked: %s", b.name, why)
	}
	result.JSON, err = json.Marshal(res)
	if err != nil {
		return Result{}, state, err
	}
	return result, state, nil
}

// mustParse parses a URL the browser reported, or returns an empty one.
func mustParse(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		return &url.URL{}
	}
	return u
}

// loadEnd says why the load ended: the dispatch's end (its error), the time limit,
// the page-size cap, or err.
func (b *browser) loadEnd(ctx, load context.Context, err error) error {
	switch cause := context.Cause(load); {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(cause, errPageTooLarge):
		return fmt.Errorf("%s: the page-size cap of %d bytes (browser.max_page_bytes) was reached; the load was aborted", b.name, b.cfg.MaxPageBytes)
	case errors.Is(cause, errTimeLimit):
		return fmt.Errorf("%s: timed out: %w", b.name, errTimeLimit)
	}
	return fmt.Errorf("%s: %v", b.name, err)
}

// start prepares a fresh Chromium for p behind g: its own temporary user data
// directory, the profile's user agent, locale, time zone and viewport, the page in a
// browser context of its own whose every request goes through g, Chromium's own
// requests to g's refusing listener, no name resolved by Chromium itself. The returned
// stop kills it (and its children) and removes the directory. The browser runs on a context of its own, so
// that its state can still be read once the dispatch ends; stop ends it at the latest
// stateGrace after ctx does. It returns the page's context, stop, and the error that
// kept the browser from starting.
func (b *browser) start(ctx context.Context, p *plan, g *guard) (context.Context, func(), error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(b.exe),
		chromedp.ProxyServer("http://"+g.ownAddr()),
		chromedp.Flag("proxy-bypass-list", "<-loopback>"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("force-webrtc-ip-handling-policy", "disable_non_proxied_udp"),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,DnsOverHttps,MediaRouter,OptimizationHints,"+
			"NetworkTimeServiceQuerying,OptimizationGuideModelDownloading,AutofillServerCommunication,"+
			"CertificateTransparencyComponentUpdater,ChromeSignin,PushMessaging"),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-signin-promo", true),
		chromedp.Flag("disable-gaia-services", true),
		chromedp.Flag("allow-pre-commit-input", false),
		chromedp.WindowSize(int(p.width), int(p.height)),
	)
	if ua := p.profile.GetUserAgent(); ua != "" {
		opts = append(opts, chromedp.UserAgent(ua))
	}
	if l := p.profile.GetLocale(); l != "" {
		opts = append(opts, chromedp.Flag("lang", l), chromedp.Flag("accept-lang", l))
	}
	if tz := p.profile.GetTimeZone(); tz != "" {
		opts = append(opts, chromedp.Env("TZ="+tz))
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(ctx), opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancelBrowser()
			cancelAlloc() // kills the browser, waits, removes the directory
		})
	}
	hard := context.AfterFunc(ctx, func() {
		t := time.NewTimer(stateGrace)
		defer t.Stop()
		select {
		case <-t.C:
			stop()
		case <-allocCtx.Done():
		}
	})
	end := func() {
		hard()
		stop()
	}
	// The browser: started by the first command, on its own context (chromedp ties the
	// browser to the context that starts it), with a first tab that stays blank. A
	// dispatch cancelled meanwhile stops it (the hard stop above).
	if err := chromedp.Do(browserCtx, chromedp.Func(func(context.Context, *chromedp.Target) error { return nil })); err != nil {
		return nil, end, err
	}
	// The page's browser context, created with the page by its first command; the hard
	// stop ends it with the browser.
	pageCtx, cancelPage := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext(func(p *target.CreateBrowserContextParams) {
		p.ProxyServer, p.ProxyBypassList = "http://"+g.addr(), "<-loopback>"
	}))
	return pageCtx, func() {
		cancelPage()
		end()
	}, nil
}

// browse applies the profile, loads the page and reads what the input asks for into
// res, the screenshot into out. load bounds the load; browserCtx is the tab.
func (b *browser) browse(load, browserCtx context.Context, p *plan, g *guard, res *BrowserResult, out Output) error {
	tab := chromedp.FromContext(browserCtx).Target.TargetID
	// Popups: closed, and reported.
	if err := chromedp.ListenBrowser(browserCtx, func(ev any) {
		if e, ok := ev.(*target.EventTargetCreated); ok && e.TargetInfo.Type == "page" && e.TargetInfo.TargetID != tab {
			g.blockPopup(e.TargetInfo.URL)
			go chromedp.CallBrowser(browserCtx, target.CloseTarget, target.CloseTargetParams{TargetID: e.TargetInfo.TargetID}) //nolint:errcheck // the browser may be gone
		}
	}); err != nil {
		return err
	}
	run := func(steps ...chromedp.Action[chromedp.Void]) error { return chromedp.Do(load, steps...) }
	if err := run(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: p.width, Height: p.height, DeviceScaleFactor: 1,
		}); err != nil {
			return err
		}
		if tz := p.profile.GetTimeZone(); tz != "" {
			if _, err := cdp.Call(ctx, t, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: tz}); err != nil {
				return err
			}
		}
		if l := p.profile.GetLocale(); l != "" {
			if _, err := cdp.Call(ctx, t, emulation.SetLocaleOverride, emulation.SetLocaleOverrideParams{Locale: l}); err != nil {
				return err
			}
		}
		if cs := p.state.cookieParams(); len(cs) > 0 {
			// Into the page's browser context, which only the browser target names.
			bc := chromedp.FromContext(browserCtx).BrowserContextID
			if _, err := chromedp.CallBrowser(ctx, storage.SetCookies, storage.SetCookiesParams{Cookies: cs, BrowserContextID: bc}); err != nil {
				return errors.New("the profile's cookies could not be set")
			}
		}
		_, err := cdp.Call(ctx, t, page.SetLifecycleEventsEnabled, page.SetLifecycleEventsEnabledParams{Enabled: true})
		return err
	})); err != nil {
		return err
	}
	if err := b.seedLocalStorage(load, p); err != nil {
		return err
	}

	lifecycle := chromedp.Events(load, page.LifecycleEvent)
	resp, err := chromedp.Run(load, chromedp.NavigateResponse(p.target.String()))
	if err != nil {
		if load.Err() != nil {
			return err
		}
		// A navigation that failed (blocked, unreachable) still has a page to report.
		res.URL, _ = chromedp.Run(browserCtx, chromedp.Location())
		if res.URL == "" || strings.HasPrefix(res.URL, "chrome-error:") {
			res.URL = p.target.String()
		}
		if why := g.blockedOrigin(mustParse(res.URL)); why != "" {
			return fmt.Errorf("the page was blocked: %s", why)
		}
		return fmt.Errorf("the page could not be loaded: %v", err)
	}
	if resp != nil {
		res.Status = resp.Status
	}
	switch p.in.WaitFor {
	case "network_idle":
		for ev, err := range lifecycle {
			if err != nil {
				return err
			}
			if ev.Name == "networkIdle" && string(ev.FrameID) == string(tab) {
				break
			}
		}
	case "selector":
		if err := run(chromedp.WaitVisible(chromedp.CSS(p.in.Selector))); err != nil {
			return err
		}
	}
	if res.URL, err = chromedp.Run(load, chromedp.Location()); err != nil {
		return err
	}
	if res.Title, err = chromedp.Run(load, chromedp.Title()); err != nil {
		return err
	}
	if p.wantText {
		text, err := chromedp.Run(load, chromedp.Evaluate[string](fmt.Sprintf(
			`(document.body ? document.body.innerText : "").slice(0, %d)`, p.maxText+1)))
		if err != nil {
			return err
		}
		if len(text) > p.maxText {
			text, res.TextTruncated = truncate(text, p.maxText), true
			text = strings.TrimSuffix(text, "…")
		}
		res.Text = text
	}
	if p.in.Links {
		links, err := chromedp.Run(load, chromedp.Evaluate[[]BrowserLink](fmt.Sprintf(
			`Array.from(document.links).slice(0, %d).map(a => ({url: a.href, text: (a.innerText || "").trim().slice(0, %d)}))`,
			maxLinks+1, maxLinkText)))
		if err != nil {
			return err
		}
		if len(links) > maxLinks {
			links, res.LinksTruncated = links[:maxLinks], true
		}
		res.Links = links
	}
	if p.shot {
		shot, err := b.screenshotPNG(load, p)
		if err != nil {
			return fmt.Errorf("the screenshot failed: %v", err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(shot))
		if err != nil {
			return fmt.Errorf("the screenshot is not a PNG: %v", err)
		}
		out.Write(Stdout, shot)
		res.Screenshot = &BrowserScreenshot{
			Offset: 0, Length: int64(len(shot)), ContentType: "image/png", Width: cfg.Width, Height: cfg.Height, FullPage: p.in.FullPage,
		}
	}
	return nil
}

// screenshotPNG captures the viewport, or the whole page up to maxFullPageHeight.
func (b *browser) screenshotPNG(ctx context.Context, p *plan) ([]byte, error) {
	return chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
		params := page.CaptureScreenshotParams{Format: page.CaptureScreenshotFormatPng, FromSurface: new(true)}
		if p.in.FullPage {
			m, err := cdp.Call(ctx, t, page.GetLayoutMetrics, cdp.Empty{})
			if err != nil {
				return nil, err
			}
			w, h := float64(p.width), float64(p.height)
			if m.CSSContentSize != nil {
				w, h = math.Max(w, math.Ceil(m.CSSContentSize.Width)), math.Max(h, math.Ceil(m.CSSContentSize.Height))
			}
			params.CaptureBeyondViewport = new(true)
			params.Clip = &page.Viewport{Width: math.Min(w, maxViewport), Height: math.Min(h, maxFullPageHeight), Scale: 1}
		}
		r, err := cdp.Call(ctx, t, page.CaptureScreenshot, params)
		if err != nil {
			return nil, err
		}
		return r.Data, nil
	})
}

// seedLocalStorage puts the state's local storage in place before the page loads: for
// each allowed origin, the tab loads an empty page of that origin served from here
// (Fetch.fulfillRequest: nothing goes to the network) and sets the items.
func (b *browser) seedLocalStorage(ctx context.Context, p *plan) error {
	var origins []stateOrigin
	for _, o := range p.state.Origins {
		if u, err := url.Parse(o.Origin); err == nil && p.domains.allows(u.Hostname()) && len(o.LocalStorage) > 0 {
			origins = append(origins, o)
		}
	}
	if len(origins) == 0 {
		return nil
	}
	seedCtx, stopSeeding := context.WithCancel(ctx)
	defer stopSeeding()
	paused := chromedp.Events(seedCtx, fetch.RequestPaused)
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*"}}}); err != nil {
		return err
	}
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			chromedp.Call(seedCtx, fetch.FulfillRequest, fetch.FulfillRequestParams{ //nolint:errcheck // the navigation reports a failure
				RequestID: ev.RequestID, ResponseCode: 200,
				ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "text/html"}},
				Body:            []byte("<!doctype html><title></title>"),
			})
		}
	}()
	for _, o := range origins {
		items, err := json.Marshal(o.LocalStorage)
		if err != nil {
			return err
		}
		if err := chromedp.Do(ctx,
			chromedp.Navigate(strings.TrimSuffix(o.Origin, "/")+"/"),
			chromedp.Evaluate[chromedp.Void](`for (const i of `+string(items)+`) localStorage.setItem(i.name, i.value)`),
		); err != nil {
			return errors.New("the profile's local storage could not be set")
		}
	}
	stopSeeding()
	_, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{})
	return err
}

// readState reads the cookies and the local storage of the tab's frames at the end,
// as the profile's next state; nil when it cannot be read or is too large.
func (b *browser) readState(ctx context.Context, p *plan) (*nodev1.BrowserState, BrowserStateSummary) {
	var sum BrowserStateSummary
	cookies, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: chromedp.FromContext(ctx).BrowserContextID})
	if err != nil {
		b.log.Debug("cannot read the browser's state", "capability", b.name, "err", err)
		sum.Error = "the browser's state could not be read; the profile keeps its state"
		return nil, sum
	}
	var read []stateOrigin
	if tree, err := chromedp.Call(ctx, page.GetFrameTree, cdp.Empty{}); err == nil {
		if _, err := chromedp.Call(ctx, domstorage.Enable, cdp.Empty{}); err == nil {
			seen := map[string]bool{}
			var walk func(t *page.FrameTree)
			walk = func(t *page.FrameTree) {
				if t == nil || t.Frame == nil {
					return
				}
				o := t.Frame.SecurityOrigin
				if (strings.HasPrefix(o, "http://") || strings.HasPrefix(o, "https://")) && !seen[o] {
					seen[o] = true
					items, err := chromedp.Call(ctx, domstorage.GetDOMStorageItems, domstorage.GetDOMStorageItemsParams{
						StorageID: &domstorage.StorageID{SecurityOrigin: o, IsLocalStorage: true},
					})
					if err == nil {
						so := stateOrigin{Origin: o, LocalStorage: []stateStorage{}}
						for _, it := range items.Entries {
							if len(it) == 2 {
								so.LocalStorage = append(so.LocalStorage, stateStorage{Name: it[0], Value: it[1]})
							}
						}
						read = append(read, so)
					}
				}
				for _, c := range t.ChildFrames {
					walk(c)
				}
			}
			walk(tree.FrameTree)
		}
	}
	s := storageState{Cookies: stateCookies(cookies.Cookies), Origins: p.state.Origins}.withOrigins(read)
	raw, err := s.marshal()
	if err != nil {
		sum.Error = "the browser's state could not be encoded; the profile keeps its state"
		return nil, sum
	}
	sum.Cookies, sum.Origins, sum.Bytes = len(s.Cookies), len(s.Origins), len(raw)
	if len(raw) > MaxBrowserStateBytes {
		sum.Error = fmt.Sprintf("the state is %d bytes, more than the %d a profile keeps; the profile keeps its state", len(raw), MaxBrowserStateBytes)
		return nil, sum
	}
	sum.Saved = true
	return &nodev1.BrowserState{ProfileId: p.profile.GetId(), BaseVersion: p.profile.GetStateVersion(), StorageState: raw}, sum
}
