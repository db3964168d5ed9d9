package capability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// Secrets of the test pages: none may reach a log.
const (
	secretCookie = "cookie-5ecret-0f-the-login"
	secretLocal  = "local-5ecret-0f-the-login"
)

// testSite is a site on loopback: a login page that sets a cookie and local storage,
// a page that shows them, and pages that reach for other hosts.
type testSite struct {
	*httptest.Server
	port    string
	mu      sync.Mutex
	hits    map[string]int // requests by path
	started chan struct{}  // /slow was requested
}

func newTestSite(t *testing.T) *testSite {
	t.Helper()
	s := &testSite{hits: map[string]int{}, started: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	page := func(w http.ResponseWriter, title, body string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><html><head><title>%s</title></head><body>%s</body></html>", title, body)
	}
	other := func() string { return "http://localhost:" + s.port } // the same server, by a name not allowed
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: secretCookie, Path: "/", Expires: time.Now().Add(time.Hour), HttpOnly: true})
		page(w, "Logged in", `<p>Welcome</p><script>localStorage.setItem("token", "`+secretLocal+`")</script>`)
	})
	mux.HandleFunc("/account", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("session")
		v := "none"
		if err == nil {
			v = c.Value
		}
		page(w, "Account", `<p id="cookie">cookie: `+v+`</p><p id="ls"></p>`+
			`<script>document.getElementById("ls").textContent = "local: " + localStorage.getItem("token")</script>`)
	})
	mux.HandleFunc("/links", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Links", `<a href="/account">mine</a> <a href="`+other()+`/account">theirs</a>`+
			`<img src="`+other()+`/pixel.png" alt="">`)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other()+"/account", http.StatusFound)
	})
	mux.HandleFunc("/popup", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Popup", `<p>opener</p><script>window.open("/account")</script>`)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>Big</title><p>")
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 64 { // 4 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.started <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Home", `<p>home</p>`)
	})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.Host+r.URL.Path]++
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	u, _ := url.Parse(s.URL)
	s.port = u.Port()
	return s
}

// hit returns how many requests reached host+path.
func (s *testSite) hit(hostPath string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[hostPath]
}

// testBrowser returns browser.navigate and browser.screenshot on Debian's chromium,
// with loopback allowed as cfg says, and a buffer of their debug log.
func testBrowser(t *testing.T, cfg BrowserConfig) (nav, shot *browser, log *syncBuffer) {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = Duration(90 * time.Second)
	}
	cfg.Enabled = true
	log = &syncBuffer{}
	caps := newBrowserCapabilities(cfg, pathLookup(os.Getenv("PATH")), slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	nav, shot = caps[0].(*browser), caps[1].(*browser)
	if !nav.Describe().Available {
		t.Fatal("no chromium on PATH: install Debian's chromium (make chromium)")
	}
	return nav, shot, log
}

// loopback is node.toml's allow_networks of the tests.
var loopback = BrowserConfig{AllowNetworks: []string{"127.0.0.0/8"}}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testProfile is profile "shop", allowed 127.0.0.1 only.
func testProfile(state []byte, version int64) *nodev1.BrowserProfile {
	return &nodev1.BrowserProfile{
		Id: "01JDQ3V5N6X0Y7Z8A9B0C1D2E3", Name: "shop", StateVersion: version, AllowedDomains: []string{"127.0.0.1"},
		ViewportWidth: 800, ViewportHeight: 600, Locale: "en-GB", TimeZone: "Europe/London", UserAgent: "PalyraTest/1.0",
		StorageState: state,
	}
}

// browse runs b with input and profile, failing t on a node error.
func browse(t *testing.T, ctx context.Context, b *browser, profile *nodev1.BrowserProfile, input string) (Result, BrowserResult, *nodev1.BrowserState, *recorder) {
	t.Helper()
	out := newRecorder()
	res, state, err := b.RunBrowser(ctx, json.RawMessage(input), profile, out)
	if err != nil {
		t.Fatalf("RunBrowser(%s) = %v", input, err)
	}
	var br BrowserResult
	if err := json.Unmarshal(res.JSON, &br); err != nil {
		t.Fatalf("result %s: %v", res.JSON, err)
	}
	return res, br, state, out
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestBrowserLoginPersists logs in, then gives the returned state to a second run,
// which sees the cookie and the local storage; neither reaches the log.
func TestBrowserLoginPersists(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	nav, _, log := testBrowser(t, loopback)
	ctx := testContext(t)

	res, br, state, _ := browse(t, ctx, nav, testProfile(nil, 0), `{"url":"`+site.URL+`/login","profile":"shop"}`)
	if res.Failed || br.Title != "Logged in" || !strings.Contains(br.Text, "Welcome") || br.Status != 200 {
		t.Fatalf("login: %+v %+v", res, br)
	}
	// The page requests nothing else; Chromium's own requests (Google's sign-in, its
	// component updates) are refused outside the page's context and not listed.
	if len(br.Blocked) != 0 || br.BlockedCount != 0 {
		t.Errorf("login: blocked %+v", br.Blocked)
	}
	if state == nil || state.GetProfileId() != "01JDQ3V5N6X0Y7Z8A9B0C1D2E3" || state.GetBaseVersion() != 0 || !br.State.Saved {
		t.Fatalf("login: state %v, summary %+v", state, br.State)
	}
	var s storageState
	if err := json.Unmarshal(state.GetStorageState(), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Cookies) != 1 || s.Cookies[0].Value != secretCookie || !s.Cookies[0].HTTPOnly || s.Cookies[0].Expires <= 0 ||
		len(s.Origins) != 1 || s.Origins[0].Origin != site.URL || len(s.Origins[0].LocalStorage) != 1 ||
		s.Origins[0].LocalStorage[0].Value != secretLocal {
		t.Fatalf("login: state %s", state.GetStorageState())
	}

	res, br, state2, _ := browse(t, ctx, nav, testProfile(state.GetStorageState(), 1), `{"url":"`+site.URL+`/account","profile":"shop"}`)
	if res.Failed || !strings.Contains(br.Text, "cookie: "+secretCookie) || !strings.Contains(br.Text, "local: "+secretLocal) {
		t.Fatalf("second run: %+v %q", res, br.Text)
	}
	if state2 == nil || state2.GetBaseVersion() != 1 || !bytes.Contains(state2.GetStorageState(), []byte(secretCookie)) {
		t.Fatalf("second run: state %v", state2)
	}

	// A fresh profile sees neither: nothing stays in the browser between runs.
	_, br, _, _ = browse(t, ctx, nav, testProfile(nil, 0), `{"url":"`+site.URL+`/account","profile":"shop"}`)
	if !strings.Contains(br.Text, "cookie: none") || !strings.Contains(br.Text, "local: null") {
		t.Errorf("a fresh profile sees %q", br.Text)
	}
	if l := log.String(); strings.Contains(l, secretCookie) || strings.Contains(l, secretLocal) || l == "" {
		t.Errorf("the log holds profile state (or nothing):\n%s", l)
	}
}

// TestBrowserBlocksOtherHosts: a subresource and a link's target on a host outside the
// allow-list ("localhost" when only 127.0.0.1 is allowed) are never requested; the
// subresource is reported.
func TestBrowserBlocksOtherHosts(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	nav, _, _ := testBrowser(t, loopback)
	res, br, _, _ := browse(t, testContext(t), nav, testProfile(nil, 0), `{"url":"`+site.URL+`/links","profile":"shop","links":true,"wait_for":"network_idle"}`)
	if res.Failed {
		t.Fatalf("failed: %s", res.Error)
	}
	want := "http://localhost:" + site.port + "/pixel.png"
	if !slices.Equal(br.Blocked, []BlockedRequest{{URL: want, Reason: blockedDomain}}) || br.BlockedCount != 1 {
		t.Errorf("blocked %+v, want %s alone, for its domain", br.Blocked, want)
	}
	if len(br.Links) != 2 || br.Links[0].URL != site.URL+"/account" || br.Links[0].Text != "mine" ||
		br.Links[1].URL != "http://localhost:"+site.port+"/account" {
		t.Errorf("links %+v", br.Links)
	}
	if n := site.hit("localhost:" + site.port + "/pixel.png"); n != 0 {
		t.Errorf("the blocked image was requested %d times", n)
	}
}

// TestBrowserBlocksRedirect: a redirect to a host outside the allow-list fails the
// dispatch, and says which request was blocked.
func TestBrowserBlocksRedirect(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	nav, _, _ := testBrowser(t, loopback)
	res, br, state, _ := browse(t, testContext(t), nav, testProfile(nil, 0), `{"url":"`+site.URL+`/redirect","profile":"shop"}`)
	want := "http://localhost:" + site.port + "/account"
	if !res.Failed || !strings.Contains(res.Error, "blocked") || !hasBlocked(br.Blocked, want, blockedDomain) || br.URL != want {
		t.Errorf("result %s %s, blocked %+v; want a failure naming %s", res.JSON, res.Error, br.Blocked, want)
	}
	if site.hit("localhost:"+site.port+"/account") != 0 {
		t.Error("the redirect's target was requested")
	}
	if state == nil {
		t.Error("no state after a run whose browser ran")
	}
}

// hasBlocked reports whether blocked lists url for reason.
func hasBlocked(blocked []BlockedRequest, url, reason string) bool {
	return slices.Contains(blocked, BlockedRequest{URL: url, Reason: reason})
}

// TestBrowserClosesPopups: a popup is closed and reported.
func TestBrowserClosesPopups(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	nav, _, _ := testBrowser(t, loopback)
	res, br, _, _ := browse(t, testContext(t), nav, testProfile(nil, 0), `{"url":"`+site.URL+`/popup","profile":"shop","wait_for":"network_idle"}`)
	if res.Failed || br.Title != "Popup" {
		t.Fatalf("result %+v %+v", res, br)
	}
	found := false
	for _, b := range br.Blocked {
		found = found || b.Reason == blockedPopup
	}
	if !found {
		t.Errorf("blocked %+v: no popup", br.Blocked)
	}
}

// TestBrowserRefusals: what is refused before a browser starts.
func TestBrowserRefusals(t *testing.T) {
	t.Parallel()
	nav, shot, _ := testBrowser(t, loopback)
	other := testProfile(nil, 0)
	other.Name = "other"
	badState := testProfile([]byte(`{"cookies": "`+secretCookie+`"}`), 3)
	badProxy := testProfile(nil, 0)
	badProxy.ProxyUrl = "socks5://user:pr0xy-secret@10.0.0.1:1080"
	for name, tc := range map[string]struct {
		b       *browser
		profile *nodev1.BrowserProfile
		input   string
		want    string
	}{
		"file URL":             {nav, testProfile(nil, 0), `{"url":"file:///etc/passwd","profile":"shop"}`, `not "file:"`},
		"data URL":             {nav, testProfile(nil, 0), `{"url":"data:text/html,hi","profile":"shop"}`, `not "data:"`},
		"javascript URL":       {nav, testProfile(nil, 0), `{"url":"javascript:alert(1)","profile":"shop"}`, `not "javascript:"`},
		"chrome URL":           {nav, testProfile(nil, 0), `{"url":"chrome://settings","profile":"shop"}`, `not "chrome:"`},
		"host not allowed":     {nav, testProfile(nil, 0), `{"url":"http://localhost/","profile":"shop"}`, "not among the allowed domains"},
		"no profile sent":      {nav, nil, `{"url":"http://127.0.0.1/","profile":"shop"}`, "carries no browser profile"},
		"another profile sent": {nav, other, `{"url":"http://127.0.0.1/","profile":"shop"}`, `carries profile "other", not "shop"`},
		"unknown field":        {nav, testProfile(nil, 0), `{"url":"http://127.0.0.1/","profile":"shop","cookies":[]}`, "unknown field"},
		"selector missing":     {nav, testProfile(nil, 0), `{"url":"http://127.0.0.1/","profile":"shop","wait_for":"selector"}`, "needs a selector"},
		"screenshot off":       {shot, testProfile(nil, 0), `{"url":"http://127.0.0.1/","profile":"shop","screenshot":false}`, "always takes a screenshot"},
		"bad state":            {nav, badState, `{"url":"http://127.0.0.1/","profile":"shop"}`, "storageState shape"},
		"socks proxy":          {nav, badProxy, `{"url":"http://127.0.0.1/","profile":"shop"}`, "not an http:// or https:// proxy"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, state, err := tc.b.RunBrowser(t.Context(), json.RawMessage(tc.input), tc.profile, newRecorder())
			var refused *RefusedError
			if !errors.As(err, &refused) || !strings.Contains(refused.Reason, tc.want) || state != nil || res.JSON != nil {
				t.Fatalf("RunBrowser = %+v, %v, %v; want a refusal with %q", res, state, err, tc.want)
			}
			if strings.Contains(refused.Reason, secretCookie) || strings.Contains(refused.Reason, "pr0xy-secret") {
				t.Errorf("the refusal quotes a secret: %s", refused.Reason)
			}
		})
	}
}

// TestBrowserRefusesLoopbackByDefault: without allow_networks, a loopback address is
// refused, though the profile allows it.
func TestBrowserRefusesLoopbackByDefault(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	nav, _, _ := testBrowser(t, BrowserConfig{})
	res, br, _, _ := browse(t, testContext(t), nav, testProfile(nil, 0), `{"url":"`+site.URL+`/","profile":"shop"}`)
	if !res.Failed || !strings.Contains(res.Error, blockedAddress) || !hasBlocked(br.Blocked, site.URL+"/", blockedAddress) {
		t.Errorf("result %s %s, blocked %+v; want the loopback address refused", res.JSON, res.Error, br.Blocked)
	}
	if site.hit("127.0.0.1:"+site.port+"/") != 0 {
		t.Error("the page was requested")
	}
}

// TestBrowserScreenshot: the screenshot is the output, a PNG of the viewport's size,
// where the result says.
func TestBrowserScreenshot(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	_, shot, _ := testBrowser(t, loopback)
	res, br, _, out := browse(t, testContext(t), shot, testProfile(nil, 0), `{"url":"`+site.URL+`/","profile":"shop","text":false}`)
	if res.Failed || br.Screenshot == nil || br.Text != "" {
		t.Fatalf("result %+v %+v", res, br)
	}
	s := br.Screenshot
	data := []byte(out.Stdout())
	if s.Offset != 0 || s.Length != int64(len(data)) || s.ContentType != "image/png" || s.Width != 800 || s.Height != 600 {
		t.Errorf("screenshot %+v, output of %d bytes", s, len(data))
	}
	img, err := png.Decode(bytes.NewReader(data[s.Offset : s.Offset+s.Length]))
	if err != nil {
		t.Fatalf("the output is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 800 || b.Dy() != 600 {
		t.Errorf("the PNG is %dx%d, want the viewport's 800x600", b.Dx(), b.Dy())
	}
}

// TestBrowserPageSizeCap: a page over browser.max_page_bytes aborts the load and says so.
func TestBrowserPageSizeCap(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	cfg := loopback
	cfg.MaxPageBytes = 256 << 10
	nav, _, _ := testBrowser(t, cfg)
	res, br, _, _ := browse(t, testContext(t), nav, testProfile(nil, 0), `{"url":"`+site.URL+`/big","profile":"shop"}`)
	if !res.Failed || !strings.Contains(res.Error, "page-size cap") || br.BytesReceived < 256<<10 || br.BytesReceived > 4<<20 {
		t.Errorf("result %+v, %d bytes received", res, br.BytesReceived)
	}
}

// TestBrowserStops: cancelling a dispatch, and its time limit, stop the browser: no
// process of it is left, and its directory is gone.
func TestBrowserStops(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"cancel", "time limit"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			site := newTestSite(t)
			nav, _, log := testBrowser(t, loopback)
			pids := make(chan int, 1)
			nav.onStarted = func(pid int) { pids <- pid }
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			input := `{"url":"` + site.URL + `/slow","profile":"shop"}`
			if how == "time limit" {
				input = `{"url":"` + site.URL + `/slow","profile":"shop","timeout_seconds":10}`
			}
			type ran struct {
				res   Result
				state *nodev1.BrowserState
				err   error
			}
			done := make(chan ran, 1)
			go func() {
				res, state, err := nav.RunBrowser(ctx, json.RawMessage(input), testProfile(nil, 0), newRecorder())
				done <- ran{res, state, err}
			}()
			var pid int
			select {
			case pid = <-pids:
			case r := <-done:
				t.Fatalf("RunBrowser = %+v, %v before the browser started", r.res, r.err)
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
			if err != nil {
				t.Fatal(err)
			}
			var dataDir string
			for a := range bytes.SplitSeq(cmdline, []byte{0}) {
				if d, ok := strings.CutPrefix(string(a), "--user-data-dir="); ok {
					dataDir = d
				}
			}
			if dataDir == "" {
				t.Fatalf("the browser runs without --user-data-dir: %q", cmdline)
			}
			select {
			case <-site.started:
			case r := <-done:
				t.Fatalf("RunBrowser = %+v, %v before the page was requested", r.res, r.err)
			}
			if how == "cancel" {
				cancel()
			}
			r := <-done
			switch how {
			case "cancel":
				if !errors.Is(r.err, context.Canceled) {
					t.Errorf("RunBrowser = %+v, %v; want context.Canceled", r.res, r.err)
				}
			default:
				if r.err != nil || !r.res.Failed || !strings.Contains(r.res.Error, "timed out") {
					t.Errorf("RunBrowser = %+v, %v; want a failure at the time limit", r.res, r.err)
				}
			}
			if r.state == nil {
				t.Errorf("no state after a run whose browser ran: %s\n%s", r.res.JSON, log)
			}
			eventually.True(t, "no process of the browser is left", func() bool { return len(processesUsing(dataDir)) == 0 })
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the data directory is still there: %v", err)
			}
		})
	}
}

// processesUsing lists the processes whose command line names dir as their user data
// directory.
func processesUsing(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte("--user-data-dir="+dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestAddressPolicy(t *testing.T) {
	t.Parallel()
	nets, err := parseNetworks([]string{"127.0.0.0/8", "10.1.0.0/16", "169.254.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	p := addressPolicy{allowed: nets}
	for addr, want := range map[string]bool{
		"93.184.216.34": true, "127.0.0.1": true, "10.1.2.3": true, "10.2.0.1": false, "192.168.1.1": false,
		"169.254.1.1": true, "169.254.169.254": false, "::1": false, "::ffff:127.0.0.1": true, "fd00:ec2::254": false,
		"fe80::1": false, "100.100.100.200": false, "2606:4700::1111": true, "0.0.0.0": false,
	} {
		if got := p.permits(netip.MustParseAddr(addr)); got != want {
			t.Errorf("permits(%s) = %v, want %v", addr, got, want)
		}
	}
	meta, _ := parseNetworks([]string{"169.254.169.254"})
	if !(addressPolicy{allowed: meta}).permits(netip.MustParseAddr("169.254.169.254")) {
		t.Error("a metadata address listed itself is refused")
	}
	l, err := newDomainList([]string{"Example.com", "10.0.0.1", "[::1]"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"example.com": true, "shop.example.com": true, "EXAMPLE.COM.": true, "badexample.com": false,
		"example.com.evil.net": false, "10.0.0.1": true, "10.0.0.2": false, "::1": true, "[::1]": true,
	} {
		if got := l.allows(host); got != want {
			t.Errorf("allows(%s) = %v, want %v", host, got, want)
		}
	}
	if _, err := newDomainList([]string{"*.example.com"}); err == nil {
		t.Error("a wildcard is accepted")
	}
}

// TestGuardRefusesTheBrowsersOwnRequests: the listener of Chromium's own requests
// refuses every one, plain or CONNECT, even to an allowed domain, and reports none:
// they are not the page's.
func TestGuardRefusesTheBrowsersOwnRequests(t *testing.T) {
	t.Parallel()
	site := newTestSite(t)
	domains, err := newDomainList([]string{"127.0.0.1", "update.googleapis.com"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := startGuard(domains, addressPolicy{allowed: mustPrefixes("127.0.0.0/8")}, nil, 1<<20, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	proxy, _ := url.Parse("http://" + g.ownAddr())
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
	for _, u := range []string{site.URL + "/", "http://update.googleapis.com/service/update2/json", "https://accounts.google.com/ListAccounts"} {
		res, err := c.Get(u)
		if err == nil {
			res.Body.Close()
			if res.StatusCode != http.StatusForbidden {
				t.Errorf("%s through the browser's own listener: %s", u, res.Status)
			}
		} else if !strings.Contains(err.Error(), "Forbidden") { // CONNECT refused
			t.Errorf("%s through the browser's own listener: %v", u, err)
		}
	}
	if n := site.hit("127.0.0.1:" + site.port + "/"); n != 0 {
		t.Errorf("the site was requested %d times", n)
	}
	if blocked, n, received := g.report(); len(blocked) != 0 || n != 0 || received != 0 {
		t.Errorf("reported %+v (%d), %d bytes received", blocked, n, received)
	}
}
