// The service worker (scope /): pages from the network first, and a copy of my bookings,
// my sessions, the last search (any query: one copy) and the last charger page kept for when there is none; static files from
// the cache first (their URLs change with their content). "forget" (sign-out) empties it.
"use strict";
var PAGES = "cm-pages-v1";
var STATIC = "cm-static-v1";
var KEPT = [/^\/app\/bookings$/, /^\/app\/sessions$/, /^\/c\/[^/]+$/, /^\/app$/,
            /^\/app\/search$/];

self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });
self.addEventListener("message", function (event) {
  if (event.data === "forget") event.waitUntil(caches.delete(PAGES));
});

function keepLastCharger(cache, path) {
  // One charger page at a time: the last one opened.
  if (!/^\/c\//.test(path)) return Promise.resolve();
  return cache.keys().then(function (requests) {
    return Promise.all(requests.filter(function (r) {
      var other = new URL(r.url).pathname;
      return /^\/c\//.test(other) && other !== path;
    }).map(function (r) { return cache.delete(r); }));
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== location.origin) return;
  if (url.pathname.indexOf("/static/") === 0) {
    event.respondWith(caches.open(STATIC).then(function (cache) {
      return cache.match(request).then(function (hit) {
        return hit || fetch(request).then(function (answer) {
          if (answer.ok) cache.put(request, answer.clone());
          return answer;
        });
      });
    }));
    return;
  }
  var kept = request.mode === "navigate" && KEPT.some(function (re) { return re.test(url.pathname); });
  if (!kept) return;
  var key = url.origin + url.pathname;
  event.respondWith(fetch(request).then(function (answer) {
    if (answer.ok && !answer.redirected) {
      var copy = answer.clone();
      caches.open(PAGES).then(function (cache) {
        return keepLastCharger(cache, url.pathname).then(function () { return cache.put(key, copy); });
      });
    }
    return answer;
  }).catch(function () {
    return caches.open(PAGES).then(function (cache) {
      return cache.match(key).then(function (hit) { return hit || Response.error(); });
    });
  }));
});
