// The console's service worker: makes the console installable and lets its shell open
// offline. It caches only the static shell (index.html, the manifest, the icons and the
// hashed files under /assets/) and never an API response: RPCs (/palyra.*, /grpc.*),
// /v1/ and anything that is not a GET of a shell file go to the network untouched.
const CACHE = "palyra-shell-v1";
const SHELL = ["/", "/manifest.webmanifest", "/icons/icon.svg", "/icons/icon-192.png"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

/** isShell says whether a same-origin GET may be answered from the cache. */
function isShell(url, request) {
  if (request.method !== "GET" || url.origin !== self.location.origin) return false;
  if (url.pathname.startsWith("/assets/") || url.pathname.startsWith("/icons/")) return true;
  if (url.pathname === "/manifest.webmanifest") return true;
  // Client routes: a navigation to a path without a file extension and outside the API.
  const first = url.pathname.split("/")[1] ?? "";
  return request.mode === "navigate" && !first.includes(".") && first !== "v1" && first !== "metrics";
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (!isShell(url, event.request)) return; // the network, never the cache
  if (event.request.mode === "navigate") {
    // The network first, so that a new palyrad's console is picked up; the cached
    // shell when palyrad cannot be reached.
    event.respondWith(
      fetch(event.request)
        .then((res) => {
          if (res.ok) {
            const copy = res.clone();
            caches.open(CACHE).then((cache) => cache.put("/", copy));
          }
          return res;
        })
        .catch(() => caches.match("/").then((cached) => cached ?? Response.error())),
    );
    return;
  }
  // Hashed assets never change under their name: the cache first.
  event.respondWith(
    caches.match(event.request).then((cached) =>
      cached ??
      fetch(event.request).then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return res;
      }),
    ),
  );
});
