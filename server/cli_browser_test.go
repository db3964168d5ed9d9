package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCLIBrowserProfiles walks browser profiles through `palyra browser profiles`:
// create from flags (with a proxy held in a secret), list, show (table and -o json),
// update with and without --expected-revision, reset-state and delete; it refuses bad
// input with usage errors or palyrad's errors naming the field, and an operator's
// changes. The proxy's URL shows nowhere.
func TestCLIBrowserProfiles(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t)
	owner := newCLIUser(t)
	owner.login(t, d, "owner")
	const proxy = "http://shopper:pr0xy-s3cret@proxy.internal:3128"
	if code, out, stderr := owner.run(t, proxy, "secrets", "set", "shop-proxy"); code != 0 {
		t.Fatalf("secrets set: exit code %d\n%s\n%s", code, out, stderr)
	}
	var outputs strings.Builder

	code, out, stderr := owner.run(t, "", "browser", "profiles", "create", "shop", "--allow-domain", "127.0.0.1", "--allow-domain", "Shop.Example.com",
		"--user-agent", "PalyraTest/1.0", "--viewport", "390x844", "--locale", "en-GB", "--time-zone", "Europe/London",
		"--proxy", "secret:shop-proxy", "--label", "team=web")
	outputs.WriteString(out + stderr)
	if code != 0 {
		t.Fatalf("create: exit code %d\n%s\n%s", code, out, stderr)
	}
	rows := statusTable(t, out)
	if rows["Name"] != "shop" || rows["Revision"] != "1" || rows["Allowed domains"] != "127.0.0.1,shop.example.com" ||
		rows["Viewport"] != "390x844" || rows["Time zone"] != "Europe/London" || rows["Proxy"] != "secret:shop-proxy" ||
		rows["State"] != "none" || rows["Labels"] != "team=web" || rows["User agent"] != "PalyraTest/1.0" {
		t.Errorf("create printed %q", rows)
	}
	if !strings.Contains(stderr, "warning: no online node offers browser.navigate") {
		t.Errorf("create did not warn that no node browses: %q", stderr)
	}
	owner.ok(t, "browser", "profiles", "create", "blog", "--allow-domain", "blog.example.org")

	var shown struct {
		Profile struct {
			ID   string `json:"id"`
			Spec struct {
				Viewport struct {
					Width int `json:"width"`
				} `json:"viewport"`
			} `json:"spec"`
			Revision     string `json:"revision"`
			StateVersion string `json:"stateVersion"`
		} `json:"profile"`
	}
	js := owner.ok(t, "browser", "profiles", "show", "shop", "-o", "json")
	outputs.WriteString(js)
	if err := json.Unmarshal([]byte(js), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown.Profile.ID) != 26 || shown.Profile.Spec.Viewport.Width != 390 || shown.Profile.Revision != "1" {
		t.Errorf("show -o json: %s", js)
	}
	out = owner.ok(t, "browser", "profiles", "list")
	outputs.WriteString(out)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "blog ") ||
		strings.Join(strings.Fields(lines[2])[:4], " ") != "shop 127.0.0.1,shop.example.com - 1" {
		t.Errorf("list printed:\n%s", out)
	}
	if out := owner.ok(t, "browser", "profiles", "list", "--selector", "team=web"); strings.Count(out, "\n") != 2 {
		t.Errorf("list --selector team=web printed:\n%s", out)
	}

	// Bad input: usage errors exit 2 before any call; palyrad's refusals exit 1 naming
	// the field.
	for _, args := range [][]string{
		{"create", "Shop", "--allow-domain", "a.com"},
		{"create", "x"},
		{"create", "x", "--allow-domain", "a.com", "--viewport", "big"},
		{"create", "x", "--allow-domain", "a.com", "--proxy", proxy},
		{"update", "shop", "--expected-revision", "0"},
		{"update", "shop", "--proxy", "secret:a", "--no-proxy"},
		{"reset-state", "shop", "--expected-revision", "-1"},
	} {
		outputs.WriteString(owner.fails(t, 2, append([]string{"browser", "profiles"}, args...)...))
	}
	cliWant(t, owner.fails(t, 1, "browser", "profiles", "create", "shop", "--allow-domain", "a.com"), `a browser profile named "shop" exists already`)
	cliWant(t, owner.fails(t, 1, "browser", "profiles", "create", "x", "--allow-domain", "https://a.com/"), "spec.allowed_domains[0]")
	cliWant(t, owner.fails(t, 1, "browser", "profiles", "create", "x", "--allow-domain", "a.com", "--time-zone", "Mars/Base"), "spec.time_zone")
	cliWant(t, owner.fails(t, 1, "browser", "profiles", "create", "x", "--allow-domain", "a.com", "--proxy", "secret:none"), "spec.proxy")

	// Update: without --expected-revision it expects the revision it read, and says so.
	code, out, stderr = owner.run(t, "", "browser", "profiles", "update", "shop", "--description", "the shop", "--allow-domain", "127.0.0.1")
	if code != 0 || !strings.Contains(stderr, "note: updating revision 1 of browser profile shop") {
		t.Fatalf("update: exit code %d\n%s\n%s", code, out, stderr)
	}
	if rows := statusTable(t, out); rows["Revision"] != "2" || rows["Description"] != "the shop" || rows["Allowed domains"] != "127.0.0.1" {
		t.Errorf("update printed %q", rows)
	}
	cliWant(t, owner.fails(t, 1, "browser", "profiles", "update", "shop", "--locale", "de", "--expected-revision", "1"), "revision 2, not 1")
	// The vault refuses to delete the proxy's secret while a profile refers to it.
	cliWant(t, owner.fails(t, 1, "secrets", "delete", "shop-proxy"), "browser profile shop (proxy)")
	if rows := statusTable(t, owner.ok(t, "browser", "profiles", "update", "shop", "--no-proxy", "--expected-revision", "2")); rows["Proxy"] != "none" {
		t.Errorf("update --no-proxy printed %q", rows)
	}
	owner.ok(t, "secrets", "delete", "shop-proxy")
	if out := owner.ok(t, "browser", "profiles", "reset-state", "shop"); out != "Reset the state of browser profile shop: 0 saved version(s) dropped\n" {
		t.Errorf("reset-state: %q", out)
	}
	cliWant(t, owner.fails(t, 1, "browser", "profiles", "delete", "shop", "--expected-revision", "2"), "revision 3, not 2")
	if out := owner.ok(t, "browser", "profiles", "delete", "shop", "--expected-revision", "3"); !strings.HasPrefix(out, "Deleted browser profile shop (") {
		t.Errorf("delete: %q", out)
	}
	cliWant(t, owner.fails(t, 1, "browser", "profiles", "show", "shop"), `there is no browser profile "shop"`)

	// An operator reads profiles and changes none.
	_, secret := owner.createToken(t, "--label", "op", "--role", "operator")
	op := owner.with("PALYRA_TOKEN", secret)
	if out := op.ok(t, "browser", "profiles", "list"); !strings.Contains(out, "blog") {
		t.Errorf("operator list:\n%s", out)
	}
	cliWant(t, op.fails(t, 1, "browser", "profiles", "create", "mine", "--allow-domain", "a.com"), "browser.write")
	cliWant(t, op.fails(t, 1, "browser", "profiles", "reset-state", "blog"), "browser.write")
	if strings.Contains(outputs.String(), "pr0xy-s3cret") {
		t.Error("the proxy's password shows in the CLI's output")
	}
}
