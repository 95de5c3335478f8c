// The phone button's service worker: it keeps the app's shell (page, script, style,
// icons, manifest) so that the app opens with no data connection at all; then the
// alarm cannot go over HTTPS and the page offers the SMS and the call instead.
// It never keeps an answer of the API (/api/): those go to the network, untouched.
"use strict";
const VERSION = "__VERSION__";
const SHELL = __SHELL__;
const CACHE = "phone-shell-" + VERSION;
// Both addresses of the app are the same page.
const PAGES = ["/phone", "/phone/enrol"];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((url) => new Request(url, { cache: "reload" }))))
      .then(() => self.skipWaiting())
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith("phone-shell-") && n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim())
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  // The shell, from the cache first (an alarm must not wait on a slow network); what is
  // not in it (the API, anything else) goes to the network as if there were no worker.
  const key = PAGES.includes(url.pathname) ? "/phone" : url.pathname;
  if (!SHELL.includes(key)) return;
  event.respondWith(
    caches.open(CACHE).then((cache) =>
      cache.match(key).then((kept) => kept || fetch(request))
    )
  );
});
