// The search page's enhancements: "Use my location" (fills the form's latitude and
// longitude, then searches) and the map (Leaflet, from the list's own data). Without this
// file, or without Leaflet, the form and the list work as they are.
(function () {
  "use strict";
  var form = document.getElementById("search-form");
  var locate = document.getElementById("locate");
  if (form && locate && navigator.geolocation) {
    locate.hidden = false;
    locate.addEventListener("click", function () {
      navigator.geolocation.getCurrentPosition(function (where) {
        form.elements.lat.value = where.coords.latitude.toFixed(5);
        form.elements.lon.value = where.coords.longitude.toFixed(5);
        form.submit();
      });
    });
  }
  var box = document.getElementById("map");
  if (!box || typeof window.L === "undefined") return;
  var markers = JSON.parse(box.getAttribute("data-markers") || "[]");
  var centre = box.getAttribute("data-centre").split(",").map(Number);
  box.hidden = false;
  // No animations: a resize (or a screenshot's) never catches the markers mid-zoom.
  var map = L.map(box, {
    scrollWheelZoom: false, zoomAnimation: false, fadeAnimation: false, markerZoomAnimation: false
  }).setView(centre, 12);
  var tiles = box.getAttribute("data-tiles");
  if (tiles) {
    L.tileLayer(tiles, { maxZoom: 19, attribution: box.getAttribute("data-attribution") || "" })
      .addTo(map);
  }
  L.circleMarker(centre, { radius: 5, color: "#555", weight: 2, fillOpacity: 0.3 }).addTo(map);
  var bounds = [centre];
  markers.forEach(function (m) {
    var link = document.createElement("a");
    link.href = "/app/chargers/" + encodeURIComponent(m.id);
    link.textContent = m.name;
    L.circleMarker([m.lat, m.lon], { radius: 9, color: "#0b6e4f", weight: 3, fillOpacity: 0.6 })
      .bindPopup(link).addTo(map);
    bounds.push([m.lat, m.lon]);
  });
  if (bounds.length > 1) map.fitBounds(bounds, { padding: [24, 24], maxZoom: 15 });
})();
