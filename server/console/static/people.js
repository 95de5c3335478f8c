// The people pages: a one-time link from the API's answer is shown once, with a copy
// button (it is in no page the server renders); an end date becomes the end of that
// day in the browser's time zone, as the API's "until" wants it.
"use strict";
(function () {
  document.addEventListener("api-done", (event) => {
    const form = event.target;
    if (!form.classList || !form.classList.contains("gives-link")) return;
    const box = document.getElementById("link-box");
    const answer = event.detail || {};
    document.getElementById("link").value = answer.link || "";
    document.getElementById("link-expires").textContent =
      new Date(answer.link_expires_at || answer.expires_at).toLocaleString();
    box.hidden = false;
    if (form.id === "new-person") form.reset();
    document.getElementById("link").focus();
    document.getElementById("link").select();
  });

  // A phone's enrolment link: shown once, with its QR code (drawn by the server from the
  // link sent in a POST body, so the token stays out of every URL and log).
  document.addEventListener("api-done", async (event) => {
    const form = event.target;
    if (!form.classList || !form.classList.contains("gives-phone-link")) return;
    const answer = event.detail || {};
    const field = document.getElementById("phone-link");
    field.value = answer.link || "";
    document.getElementById("phone-link-expires").textContent = new Date(answer.expires_at).toLocaleString();
    document.getElementById("phone-link-box").hidden = false;
    field.focus();
    field.select();
    const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
    const qr = await fetch("/console/qr", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ text: answer.link }),
    });
    if (!qr.ok) return;
    const image = document.getElementById("phone-qr");
    image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(await qr.text());
    image.hidden = false;
  });

  document.addEventListener("click", async (event) => {
    if (!(event.target instanceof Element) || event.target.id !== "copy-link") return;
    const field = document.getElementById("link");
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
    } catch (e) {
      document.execCommand("copy");
    }
    document.getElementById("copied").hidden = false;
  });

  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || !input.dataset.endOfDay) return;
    const target = document.getElementById(input.dataset.endOfDay);
    target.value = input.value ? new Date(input.value + "T23:59:59").toISOString() : "";
  });
})();

// A form marked says-done shows the API's answer ("detail") or its own words when sent.
document.addEventListener("api-done", (event) => {
  const form = event.target;
  if (!form.classList || !form.classList.contains("says-done")) return;
  const box = form.querySelector(".form-done");
  if (!box) return;
  if (event.detail && typeof event.detail.detail === "string") box.textContent = event.detail.detail;
  box.hidden = false;
});
