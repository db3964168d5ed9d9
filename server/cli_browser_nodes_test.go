package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// shopSite is a site on loopback: /login signs in with a session cookie whose value is
// a secret, /whoami says who the session is (never the cookie) and reaches for another
// host ("localhost", the same server by a name no profile allows), /redirect sends the
// browser to that host.
type shopSite struct {
	*httptest.Server
	port    string
	session string // the cookie's value: the profile's state, a secret

	mu   sync.Mutex
	hits map[string]int // requests by host and path
}

func newShopSite(t *testing.T) *shopSite {
	t.Helper()
	s := &shopSite{session: "sess-" + rand.Text(), hits: map[string]int{}}
	page := func(w http.ResponseWriter, title, body string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><html><head><title>%s</title></head><body>%s</body></html>", title, body)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: s.session, Path: "/", Expires: time.Now().Add(time.Hour), HttpOnly: true})
		page(w, "Signed in", "<p>Welcome, alice</p>")
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		who := "nobody"
		if c, err := r.Cookie("session"); err == nil && c.Value == s.session {
			who = "alice"
		}
		other := "http://localhost:" + s.port
		page(w, "Who am I", `<p>signed in as `+who+`</p><a href="`+other+`/whoami">elsewhere</a><img src="`+other+`/pixel.png" alt="">`)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+s.port+"/whoami", http.StatusFound)
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
func (s *shopSite) hit(hostPath string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[hostPath]
}

// browserNodeConfig is node.toml of a node that browses with Debian's chromium and may
// reach loopback.
const browserNodeConfig = "[browser]\nenabled = true\nexecutable = \"/usr/bin/chromium\"\nallow_networks = [\"127.0.0.0/8\"]\n"

// startBrowserNode starts a node (startNodeAgentWith) whose node.toml allows the browser
// loopback, and checks that it offers browser.navigate.
func startBrowserNode(t *testing.T, admin *cliUser, d *cliDaemon) *nodeAgent {
	t.Helper()
	stateDir := t.TempDir()
	writeRawNodeConfig(t, stateDir, browserNodeConfig)
	node := startNodeAgent(t, admin, d.url, d.fingerprint, stateDir)
	if caps := nodeCapabilities(t, admin, node.deviceID); !caps["browser.navigate"] || !caps["browser.screenshot"] {
		t.Fatalf("the node offers %v; it says:\n%s", caps, node.stderr)
	}
	return node
}

// browserResult is what `palyra nodes invoke` prints of a browser dispatch's result.
type browserResult struct {
	URL        string    `json:"url"`
	Title      string    `json:"title"`
	Text       string    `json:"text"`
	Blocked    []blocked `json:"blocked"`
	Screenshot *struct {
		Offset, Length int64
		ContentType    string `json:"content_type"`
		Width, Height  int
	} `json:"screenshot"`
	State struct {
		Saved   bool `json:"saved"`
		Cookies int  `json:"cookies"`
	} `json:"state"`
}

// blocked is a request the node's guard blocked.
type blocked struct {
	URL    string `json:"url"`
	Reason string `json:"reason"`
}

// blockedURLs lists the URLs of a result's blocked requests.
func (r browserResult) blockedURLs() []string {
	var urls []string
	for _, b := range r.Blocked {
		urls = append(urls, b.URL)
	}
	return urls
}

// checkScreenshot decodes the PNG file that invoke wrote and checks its size against
// the viewport and the result's screenshot.
func checkScreenshot(t *testing.T, path string, r browserResult, width, height int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the screenshot %s is no PNG: %v", path, err)
	}
	if got := img.Bounds().Size(); got.X != width || got.Y != height {
		t.Errorf("the screenshot is %dx%d, want the viewport's %dx%d", got.X, got.Y, width, height)
	}
	if s := r.Screenshot; s == nil || s.Length != int64(len(b)) || s.ContentType != "image/png" || s.Width != width || s.Height != height {
		t.Errorf("the result's screenshot %+v, for a file of %d bytes", s, len(b))
	}
}

// TestCLIBrowserOnNodes is the "done when" with real processes: palyrad, two
// `palyra node run` that launch Debian's chromium, a site on loopback, and the CLI. A
// login made through one node holds in the next dispatch, on either node; a
// subresource on a host outside the profile's allowed domains and a redirect to one are
// blocked and named, and nothing else is; the screenshot goes to a file (from nodes
// invoke, dispatches show and dispatches watch), a PNG of the viewport's size; an
// agent's browser tool names an existing profile; a profile deleted while its
// dispatch is queued fails that dispatch; and the profile's state shows in no log, no
// audit event and nowhere in PostgreSQL in clear.
func TestCLIBrowserOnNodes(t *testing.T) {
	t.Parallel()
	cliBinary(t)
	dbURL := storetest.URL(t)
	dataDir := t.TempDir()
	daemon := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", dbURL, "--compat-model", "palyra-echo")
	d := &cliDaemon{url: "https://" + daemon.addr, dataDir: dataDir, caFile: filepath.Join(dataDir, "ca.pem"),
		fingerprint: caFingerprint(t, dataDir), tokenFile: filepath.Join(dataDir, "bootstrap-token")}
	owner := newCLIUser(t)
	owner.login(t, d, "owner")
	site := newShopSite(t)
	shots := t.TempDir()

	a := startBrowserNode(t, owner, d)
	owner.ok(t, "browser", "profiles", "create", "shop", "--allow-domain", "127.0.0.1", "--viewport", "800x600")

	// invoke runs browser.navigate on node with input; it returns the printed result,
	// stderr, and the exit code.
	invoke := func(node *nodeAgent, input map[string]any, args ...string) (browserResult, string, int) {
		t.Helper()
		in, _ := json.Marshal(input)
		code, out, stderr := owner.run(t, "", append([]string{"nodes", "invoke", node.deviceID, "browser.navigate", "--input", string(in), "--timeout", "2m"}, args...)...)
		var r browserResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("nodes invoke %s: exit code %d, stdout is no result (%v):\n%s\nstderr:\n%s", in, code, err, out, stderr)
		}
		return r, stderr, code
	}

	// 1. The login, with a screenshot: the PNG goes to the file, never to stdout. The page
	// requests nothing else, so nothing is blocked: Chromium's own requests are not the
	// page's.
	login, stderr, code := invoke(a, map[string]any{"url": site.URL + "/login", "profile": "shop", "screenshot": true},
		"--screenshot", filepath.Join(shots, "login.png"))
	if code != 0 || login.Title != "Signed in" || !strings.Contains(login.Text, "Welcome, alice") || !login.State.Saved || login.State.Cookies != 1 {
		t.Fatalf("login: exit code %d, %+v\n%s", code, login, stderr)
	}
	if len(login.Blocked) != 0 {
		t.Errorf("a page that requests nothing else had requests blocked: %+v", login.Blocked)
	}
	if !strings.Contains(stderr, "palyra: wrote the screenshot of dispatch ") || !strings.Contains(stderr, filepath.Join(shots, "login.png")+" (image/png, 800x600, ") {
		t.Errorf("login: stderr %q does not say where the screenshot went", stderr)
	}
	checkScreenshot(t, filepath.Join(shots, "login.png"), login, 800, 600)
	// dispatches show --include-output and dispatches watch cut it out alike.
	loginID := regexp.MustCompile(`screenshot of dispatch ([0-9A-Z]{26}) `).FindStringSubmatch(stderr)[1]
	code, out, stderr := owner.run(t, "", "dispatches", "show", loginID, "--include-output", "--screenshot", filepath.Join(shots, "shown.png"))
	if code != 0 || strings.Contains(out, "PNG") || !strings.Contains(stderr, filepath.Join(shots, "shown.png")) {
		t.Errorf("dispatches show --include-output: exit code %d\n%s\n%s", code, out, stderr)
	}
	code, out, stderr = owner.run(t, "", "dispatches", "watch", loginID, "--screenshot", filepath.Join(shots, "watched.png"))
	if code != 0 || strings.Contains(out, "PNG") || !strings.Contains(out, "Signed in") || !strings.Contains(stderr, filepath.Join(shots, "watched.png")) {
		t.Errorf("dispatches watch: exit code %d\n%s\n%s", code, out, stderr)
	}
	want, _ := os.ReadFile(filepath.Join(shots, "login.png"))
	for _, name := range []string{"shown.png", "watched.png"} {
		if got, err := os.ReadFile(filepath.Join(shots, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes (%v), not the screenshot's %d", name, len(got), err, len(want))
		}
	}

	// 2. The next dispatch, on the same node, is signed in; the page's image on
	// localhost is blocked, named, and never requested.
	pixel := "http://localhost:" + site.port + "/pixel.png"
	who, stderr, code := invoke(a, map[string]any{"url": site.URL + "/whoami", "profile": "shop", "wait_for": "network_idle"})
	if code != 0 || !strings.Contains(who.Text, "signed in as alice") {
		t.Fatalf("whoami on the first node: exit code %d, %+v\n%s", code, who, stderr)
	}
	if !slices.Equal(who.Blocked, []blocked{{URL: pixel, Reason: "the host is not among the profile's allowed domains"}}) {
		t.Errorf("whoami blocked %+v, want %s alone, for its domain", who.Blocked, pixel)
	}
	if n := site.hit("localhost:" + site.port + "/pixel.png"); n != 0 {
		t.Errorf("the blocked image was requested %d times", n)
	}

	// 3. The same on a second node, followed, with browser.screenshot.
	b := startBrowserNode(t, owner, d)
	in, _ := json.Marshal(map[string]any{"url": site.URL + "/whoami", "profile": "shop"})
	code, out, stderr = owner.run(t, "", "nodes", "invoke", b.deviceID, "browser.screenshot", "--input", string(in), "--follow",
		"--timeout", "2m", "--screenshot", filepath.Join(shots, "whoami.png"))
	var whoB browserResult
	if err := json.Unmarshal([]byte(out), &whoB); err != nil || code != 0 || !strings.Contains(whoB.Text, "signed in as alice") {
		t.Fatalf("whoami on the second node: exit code %d (%v)\n%s\n%s", code, err, out, stderr)
	}
	checkScreenshot(t, filepath.Join(shots, "whoami.png"), whoB, 800, 600)

	// An agent's browser tool names an existing profile, which every call browses with.
	cliWant(t, owner.fails(t, 1, "agents", "create", "shopper", "--model", "palyra-echo", "--tool", "browser.navigate"), "spec.tools[0].browser_profile")
	cliWant(t, owner.fails(t, 1, "agents", "create", "shopper", "--model", "palyra-echo", "--tool", "browser.navigate,profile=bank"),
		`there is no browser profile "bank"`)
	if out := owner.ok(t, "agents", "create", "shopper", "--model", "palyra-echo", "--tool", "browser.navigate,profile=shop"); !regexp.MustCompile(`browser_navigate\s+browser.navigate\s+any\s+auto\s+shop\s`).MatchString(out) {
		t.Errorf("agents create with a browser tool printed:\n%s", out)
	}

	// 4. A redirect to a host outside the allowed domains fails the dispatch, naming it.
	redirected, stderr, code := invoke(a, map[string]any{"url": site.URL + "/redirect", "profile": "shop"})
	target := "http://localhost:" + site.port + "/whoami"
	if code != 1 || !slices.Contains(redirected.blockedURLs(), target) || !strings.Contains(stderr, "failed") || !strings.Contains(stderr, "blocked") {
		t.Errorf("redirect: exit code %d, blocked %+v, stderr %q; want a failure blocking %s", code, redirected.Blocked, stderr, target)
	}
	if n := site.hit("localhost:" + site.port + "/whoami"); n != 0 {
		t.Errorf("the redirect's target was requested %d times", n)
	}

	// 5. A profile deleted while its dispatch waits for its node fails the dispatch
	// when the node is back, unsent.
	b.stop(t)
	owner.ok(t, "browser", "profiles", "create", "temp", "--allow-domain", "127.0.0.1")
	in, _ = json.Marshal(map[string]any{"url": site.URL + "/login", "profile": "temp"})
	waiting := owner.start(t, "nodes", "invoke", b.deviceID, "browser.navigate", "--input", string(in), "--timeout", "2m", "--follow")
	eventually.NoError(t, "the dispatch queued for the stopped node", func() error {
		var list struct {
			Dispatches []json.RawMessage `json:"dispatches"`
		}
		decode(t, owner.ok(t, "dispatches", "list", "--node", b.deviceID, "--state", "queued", "-o", "json"), &list)
		if len(list.Dispatches) != 1 {
			return fmt.Errorf("%d queued dispatches; invoke says %q", len(list.Dispatches), waiting.stderr)
		}
		return nil
	})
	owner.ok(t, "browser", "profiles", "delete", "temp")
	b = restartNodeAgent(t, b)
	if code := exited(t, waiting); code != 1 || !strings.Contains(waiting.stderr.String(), `browser profile "temp" no longer exists`) {
		t.Errorf("the dispatch of the deleted profile: exit code %d, stderr %q", code, waiting.stderr)
	}
	logins := site.hit("127.0.0.1:" + site.port + "/login")
	if logins != 1 {
		t.Errorf("/login was requested %d times, want once: the dispatch of the deleted profile ran", logins)
	}

	// The profile's state is nowhere but in the browser: not in palyrad's log, the
	// nodes' logs, the audit, or any table of PostgreSQL in clear.
	for name, text := range map[string]string{
		"palyrad's log": daemon.stderr.String(), "the first node's log": a.stderr.String(), "the second node's log": b.stderr.String(),
		"the audit": owner.ok(t, "audit", "list", "--all", "-o", "json"),
	} {
		if strings.Contains(text, site.session) {
			t.Errorf("%s holds the session cookie", name)
		}
	}
	if table := tableHolding(t, dbURL, site.session); table != "" {
		t.Errorf("table %s holds the session cookie in clear", table)
	}
	a.stop(t)
	b.stop(t)
}

// tableHolding returns the first table of the database whose rows hold s, as text or
// as bytes; "" when none does.
func tableHolding(t *testing.T, dbURL, s string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	rows, err := conn.Query(t.Context(), `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables
		WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) == 0 {
		t.Fatalf("%d tables: %v", len(tables), err)
	}
	for _, table := range tables {
		var n int
		// The table's name comes from the catalog, quoted. A bytea column shows as hex in
		// the row's text.
		q := fmt.Sprintf("SELECT count(*) FROM %s t WHERE strpos(t::text, $1) > 0 OR strpos(t::text, encode(convert_to($1, 'UTF8'), 'hex')) > 0", table)
		if err := conn.QueryRow(t.Context(), q, s).Scan(&n); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if n > 0 {
			return table
		}
	}
	return ""
}
