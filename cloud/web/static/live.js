// The live session page: one WebSocket to /app/sessions/{id}/live (the session cookie
// authenticates it), reconnecting with backoff and jitter while the phone's data comes and
// goes, and saying so ("Reconnecting…"). The server renders the last known figures first.
(function () {
  "use strict";
  var root = document.querySelector("[data-live]");
  if (!root) return;
  var labels = JSON.parse(root.getAttribute("data-labels"));
  var startedAt = Date.parse(root.getAttribute("data-started")) || null;
  var stoppedAt = Date.parse(root.getAttribute("data-stopped")) || null;
  var state = root.getAttribute("data-state");
  var money = new Intl.NumberFormat("en-IN", { style: "currency", currency: "INR" });
  var delay = 1000;

  function text(id, value) { document.getElementById(id).textContent = value; }
  function conn(kind) {
    var el = document.getElementById("conn");
    el.textContent = labels[kind];
    el.className = "conn " + kind;
  }
  function tick() {
    if (!startedAt) return;
    var s = Math.max(0, Math.floor(((stoppedAt || Date.now()) - startedAt) / 1000));
    var m = Math.floor(s / 60) % 60, h = Math.floor(s / 3600);
    text("elapsed", h + ":" + String(m).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0"));
  }
  function stopped() {
    state = "stopped";
    document.getElementById("stop-form").hidden = true;
    document.getElementById("receipt-link").hidden = false;
    conn("ended");
  }
  function session(s) {
    if (s.state) { state = s.state; text("state", labels[s.state] || s.state); }
    if (s.started_at) startedAt = Date.parse(s.started_at);
    if (typeof s.energy_wh === "number") text("energy", (s.energy_wh / 1000).toFixed(2) + " kWh");
    if (typeof s.power_w === "number") text("power", (s.power_w / 1000).toFixed(1) + " kW");
    if (typeof s.cost_paise === "number") text("cost", money.format(s.cost_paise / 100));
    if (s.state === "stopped") { stoppedAt = Date.parse(s.stopped_at || s.ts) || Date.now(); stopped(); }
  }
  function connect() {
    if (!window.WebSocket) return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + root.getAttribute("data-live"));
    socket.onopen = function () { delay = 1000; conn("live"); };
    socket.onmessage = function (event) {
      var frame = JSON.parse(event.data);
      if (frame.type === "snapshot") session(frame.session);
      else if (frame.type === "session") session(frame);
      else if (frame.type === "reading" && typeof frame.power_w === "number" && state !== "stopped")
        text("power", (frame.power_w / 1000).toFixed(1) + " kW");
    };
    socket.onclose = function (event) {
      if (state === "stopped") { conn("ended"); return; }
      if (event.code === 4401 || event.code === 4403) { conn("signin"); return; }
      conn("reconnecting");
      setTimeout(connect, delay + Math.random() * delay / 2);
      delay = Math.min(delay * 2, 15000);
    };
  }
  tick();
  setInterval(tick, 1000);
  if (state !== "stopped") connect();
})();
