// The host's dashboard: the charger list (online/offline, connectors' state) refreshes
// itself from /app/host/live every few seconds. Without JavaScript the page has a Reload
// link and shows the state as of its loading. A failed refresh keeps the last list and
// says so; signing out elsewhere (a redirect to sign in) stops the refreshing.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) return;
  var every = 1000 * (parseInt(live.getAttribute("data-refresh-s"), 10) || 10);
  var url = live.getAttribute("data-live-url");
  var timer = null;
  function schedule() { timer = window.setTimeout(refresh, every); }
  function refresh() {
    // Not while hidden, nor while the host is on a button in the list (the swap would
    // take their keyboard focus away).
    if (document.hidden || live.contains(document.activeElement)) { schedule(); return; }
    fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}, cache: "no-store"})
      .then(function (answer) {
        if (answer.redirected) return null;  // signed out: stop
        if (!answer.ok) throw new Error("status " + answer.status);
        return answer.text();
      })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        live.removeAttribute("data-stale");
        schedule();
      })
      .catch(function () {
        live.setAttribute("data-stale", "yes");
        var note = document.getElementById("live-state");
        if (note && note.getAttribute("data-stale-text")) note.textContent = note.getAttribute("data-stale-text");
        schedule();
      });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer !== null) { window.clearTimeout(timer); refresh(); }
  });
  schedule();
})();
