package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

var build = fstest.MapFS{
	"index.html":              {Data: []byte("<!doctype html><title>Palyra</title>")},
	"assets/index-abc123.js":  {Data: []byte("console.log(1)")},
	"sw.js":                   {Data: []byte("self.addEventListener('fetch', () => {})")},
	"manifest.webmanifest":    {Data: []byte("{}")},
	"icons/icon-192.png":      {Data: []byte("png")},
	"assets/index-abc123.css": {Data: []byte("body{}")},
}

func get(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	if csp := rec.Header().Get("Content-Security-Policy"); csp != ContentSecurityPolicy {
		t.Errorf("%s %s: Content-Security-Policy %q", method, target, csp)
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("%s %s: no nosniff", method, target)
	}
	return rec
}

func TestServesTheBuild(t *testing.T) {
	t.Parallel()
	h := NewFS(build)
	if !h.Built() {
		t.Fatal("Built() is false with an index.html")
	}
	for _, tc := range []struct {
		target, body, cache string
		code                int
	}{
		{"/", "<title>Palyra</title>", "no-cache", 200},
		{"/index.html", "<title>Palyra</title>", "no-cache", 200},
		{"/nodes", "<title>Palyra</title>", "no-cache", 200},
		{"/nodes/01JABC/dispatches?x=1", "<title>Palyra</title>", "no-cache", 200},
		{"/assets/index-abc123.js", "console.log(1)", "public, max-age=31536000, immutable", 200},
		{"/sw.js", "self.addEventListener", "no-cache", 200},
		{"/manifest.webmanifest", "{}", "no-cache", 200},
		{"/icons/icon-192.png", "png", "no-cache", 200},
		// Missing files and the API's paths are never the app.
		{"/assets/missing-123.js", "404", "", 404},
		{"/favicon.ico", "404", "", 404},
		{"/README.md", "404", "", 404},
		{"/palyra.access.v1.AccessService/Unknown", "404", "", 404},
		{"/grpc.health.v1.Health/Check", "404", "", 404},
		{"/v1/unknown", "404", "", 404},
		{"/metrics", "404", "", 404},
	} {
		rec := get(t, h, http.MethodGet, tc.target)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("GET %s: %d %q, want %d with %q", tc.target, rec.Code, rec.Body, tc.code, tc.body)
		}
		if got := rec.Header().Get("Cache-Control"); tc.cache != "" && got != tc.cache {
			t.Errorf("GET %s: Cache-Control %q, want %q", tc.target, got, tc.cache)
		}
	}
	if rec := get(t, h, http.MethodPost, "/nodes"); rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /nodes: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
	if rec := get(t, h, http.MethodHead, "/"); rec.Code != http.StatusOK {
		t.Errorf("HEAD /: %d", rec.Code)
	}
}

func TestSaysHowToBuildWithoutABuild(t *testing.T) {
	t.Parallel()
	h := NewFS(fstest.MapFS{"README.md": {Data: []byte("placeholder")}})
	if h.Built() {
		t.Fatal("Built() is true without an index.html")
	}
	for _, target := range []string{"/", "/nodes"} {
		rec := get(t, h, http.MethodGet, target)
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "make build") {
			t.Errorf("GET %s without a build: %d %q", target, rec.Code, rec.Body)
		}
	}
	if rec := get(t, h, http.MethodGet, "/palyra.access.v1.AccessService/WhoAmI"); rec.Code != http.StatusNotFound {
		t.Errorf("an API path without a build: %d", rec.Code)
	}
}
