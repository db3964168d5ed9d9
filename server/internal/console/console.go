// Package console serves the browser console (desktop/, built by Vite into dist/) that
// palyrad embeds, at / on its one listener, same origin as the API.
//
//   - A file of the build is served as it is; its hashed assets under /assets/ are
//     cached for a year (immutable), everything else (index.html, the service worker,
//     the manifest) is revalidated on every load, so that a new palyrad is picked up.
//   - Any other GET of a client route (a path without a file extension) gets
//     index.html, for the single-page app's router; API-looking paths (a first segment
//     with a dot, as in /palyra.access.v1.AccessService/..., or /v1/) and missing files
//     are 404, so the console never answers for the API.
//   - Every answer carries a strict Content-Security-Policy (scripts, styles, fetches and
//     workers from the same origin only; images also from data: and blob: URLs, the
//     screenshots of browser dispatches; no framing) and refuses to be sniffed.
//   - Without a build (go build without Node), / says how to build the console.
//
// The apiserver mounts it under "/", the least specific pattern: every RPC, /v1/,
// /metrics and the health and reflection services win over it.
package console

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:dist
var dist embed.FS

// placeholder is the one committed file of dist/, for builds without the console; it is
// not served.
const placeholder = "README.md"

// ContentSecurityPolicy is the policy of every console response.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"font-src 'self'; connect-src 'self'; manifest-src 'self'; worker-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console.
type Handler struct {
	files fs.FS
	index []byte // nil when the console is not built
}

// New returns the handler of the console embedded in palyrad.
func New() *Handler {
	sub, _ := fs.Sub(dist, "dist") // cannot fail: dist is embedded
	return NewFS(sub)
}

// NewFS returns a handler serving the build in files (tests).
func NewFS(files fs.FS) *Handler {
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		index = nil
	}
	return &Handler{files: files, index: index}
}

// Built reports whether the console is built into the handler.
func (h *Handler) Built() bool { return h.index != nil }

// notBuilt is the page served at / by a palyrad built without the console.
const notBuilt = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Palyra console not built</title></head>
<body><main><h1>The Palyra console is not built into this palyrad</h1>
<p>This palyrad was built without the console (<code>go build</code> alone does not build it).
Build it with <code>make build</code> (needs Node.js 20 or later and <code>npm ci</code>),
then restart palyrad. The API on this address works as usual.</p></main></body></html>
`

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if h.index == nil {
		if notClientRoute(name) {
			http.NotFound(w, r)
			return
		}
		hdr.Set("Cache-Control", "no-cache")
		hdr.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(notBuilt))
		return
	}
	if name == placeholder {
		http.NotFound(w, r)
		return
	}
	if name != "" && name != "index.html" {
		if data, err := fs.ReadFile(h.files, name); err == nil {
			if strings.HasPrefix(name, "assets/") {
				hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
			} else {
				hdr.Set("Cache-Control", "no-cache")
			}
			http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
			return
		}
		if notClientRoute(name) {
			http.NotFound(w, r)
			return
		}
	}
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(h.index))
}

// notClientRoute reports whether a path that is no file of the build must be 404 rather
// than the app: a missing file (a dot in the last segment), and the API's paths (a dot
// in the first segment, as in every RPC service, health and reflection; v1/ of the
// OpenAI endpoints; metrics).
func notClientRoute(name string) bool {
	if name == "" {
		return false
	}
	first, _, _ := strings.Cut(name, "/")
	return strings.Contains(path.Base(name), ".") || strings.Contains(first, ".") ||
		first == "v1" || first == "metrics"
}
