// Live availability on the QR page: re-reads the charger's JSON (the same /c/{code}) and
// updates the connector states and the online badge. The page works without it.
(function () {
  "use strict";
  var page = document.querySelector("[data-live-url]");
  var list = document.querySelector("[data-labels]");
  if (!page || !list || !window.fetch) return;
  var labels = JSON.parse(list.getAttribute("data-labels"));
  function refresh() {
    if (document.hidden) return;
    fetch(page.getAttribute("data-live-url"), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (view) {
        if (!view) return;
        var badge = document.getElementById("online");
        badge.textContent = labels[view.status.online ? "online" : "offline"];
        badge.className = "badge " + (view.status.online ? "ok" : "warn");
        view.status.connectors.forEach(function (c) {
          var el = list.querySelector('[data-connector="' + c.number + '"]');
          if (!el) return;
          el.textContent = labels[c.status] || c.status;
          el.className = "status s-" + c.status.toLowerCase();
        });
      })
      .catch(function () { /* patchy data: the next round tries again */ });
  }
  setInterval(refresh, 15000);
  document.addEventListener("visibilitychange", refresh);
})();
