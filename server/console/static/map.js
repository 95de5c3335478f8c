// The map of a phone's alarm (console and SMS link): every data-refresh seconds the page
// is read again and its #map-live part swapped for the fresh one; it stops once the
// alarm is over or the link has expired (the fresh part then has no data-refresh).
"use strict";
(function () {
  function schedule() {
    const live = document.getElementById("map-live");
    const seconds = live && Number(live.dataset.refresh);
    if (seconds > 0) setTimeout(refresh, seconds * 1000);
  }

  async function refresh() {
    try {
      const answer = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.getElementById("map-live");
      const live = document.getElementById("map-live");
      if (fresh && live) live.replaceWith(document.importNode(fresh, true));
    } catch (e) {
      // Offline for a moment: keep what is shown and try again.
    }
    schedule();
  }

  document.addEventListener("DOMContentLoaded", schedule);
})();
