// The host's dashboard: the charger list (online/offline, connectors' state) refreshes
// itself from /app/host/live when the push socket (/app/host/live/ws, the session cookie
// authenticates it) says one of the host's chargers changed, and slowly on a timer besides
// (a device that goes silent publishes nothing: it turns offline by age). While the socket
// is down — no WebSocket, a proxy that refuses it, the phone's data gone — the list is
// fetched every few seconds as before, and the socket is retried with backoff and jitter.
// Without JavaScript the page has a Reload link and shows the state as of its loading. A
// failed refresh keeps the last list and says so; signing out elsewhere (a redirect to sign
// in, or the socket closed 4401/4403) stops the refreshing.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) return;
  var polled = 1000 * (parseInt(live.getAttribute("data-refresh-s"), 10) || 10);
  var pushed = 1000 * (parseInt(live.getAttribute("data-pushed-refresh-s"), 10) || 60);
  var url = live.getAttribute("data-live-url");
  var pushUrl = live.getAttribute("data-push-url");
  var timer = null, stopped = false, inFlight = false, again = false, delay = 1000;
  function every() { return live.getAttribute("data-push") === "yes" ? pushed : polled; }
  function schedule() {
    if (stopped) return;
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(refresh, every());
  }
  function stop() { stopped = true; if (timer !== null) window.clearTimeout(timer); }
  function refresh() {
    if (timer !== null) { window.clearTimeout(timer); timer = null; }  // one timer at most
    // Not while hidden, nor while the host is on a button in the list (the swap would
    // take their keyboard focus away).
    if (stopped) return;
    if (document.hidden || live.contains(document.activeElement)) { schedule(); return; }
    if (inFlight) { again = true; return; }  // news during a fetch: fetch once more after
    inFlight = true;
    fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}, cache: "no-store"})
      .then(function (answer) {
        if (answer.redirected) return null;  // signed out: stop
        if (!answer.ok) throw new Error("status " + answer.status);
        return answer.text();
      })
      .then(function (html) {
        inFlight = false;
        if (html === null) { stop(); return; }
        live.innerHTML = html;
        live.removeAttribute("data-stale");
        if (again) { again = false; refresh(); } else schedule();
      })
      .catch(function () {
        inFlight = false;
        live.setAttribute("data-stale", "yes");
        var note = document.getElementById("live-state");
        if (note && note.getAttribute("data-stale-text")) note.textContent = note.getAttribute("data-stale-text");
        schedule();
      });
  }
  function connect() {
    if (!window.WebSocket || !pushUrl || stopped) return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + pushUrl);
    socket.onmessage = function (event) {
      var frame = JSON.parse(event.data);
      if (frame.type === "snapshot") {
        delay = 1000;
        live.setAttribute("data-push", "yes");
        schedule();
      } else if (frame.type === "changed") {
        refresh();
      }
    };
    socket.onclose = function (event) {
      live.removeAttribute("data-push");
      if (event.code === 4401 || event.code === 4403) { stop(); return; }
      schedule();  // back to polling until the socket is back
      window.setTimeout(connect, delay + Math.random() * delay / 2);
      delay = Math.min(delay * 2, 30000);
    };
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer !== null) { window.clearTimeout(timer); refresh(); }
  });
  schedule();
  connect();
})();
