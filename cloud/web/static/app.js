// Every page: registers the service worker (/sw.js, offline copies of my bookings and the
// last charger page), keeps keypad PINs this browser was shown (a PIN is shown once: the
// bookings page lists them from here, also with no network), and forgets both on sign-out.
(function () {
  "use strict";
  var KEY = "cm.pins";
  function pins() {
    try { return JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { return {}; }
  }
  var shown = document.querySelector("[data-pin-booking]");
  if (shown) {
    var all = pins();
    all[shown.getAttribute("data-pin-booking")] = {
      pin: shown.getAttribute("data-pin"), until: shown.getAttribute("data-pin-until")
    };
    localStorage.setItem(KEY, JSON.stringify(all));
  }
  var known = pins();
  document.querySelectorAll("[data-booking-pin]").forEach(function (el) {
    var entry = known[el.getAttribute("data-booking-pin")];
    if (entry) { el.querySelector(".pin").textContent = entry.pin; el.hidden = false; }
  });
  var signout = document.getElementById("signout");
  if (signout) {
    signout.addEventListener("submit", function () {
      localStorage.removeItem(KEY);
      if (navigator.serviceWorker && navigator.serviceWorker.controller)
        navigator.serviceWorker.controller.postMessage("forget");
    });
  }
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js");
})();
