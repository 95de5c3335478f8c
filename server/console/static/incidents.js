// An incident's page: "Resolve" keeps the note written beside it. The resolve form is
// sent by console.js; once the incident is resolved its note goes to the notes API,
// then the page reloads to show both in the timeline.
"use strict";
(function () {
  document.addEventListener("api-done", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.id !== "resolve") return;
    const note = document.getElementById("resolve-note");
    const text = note ? note.value.trim() : "";
    if (text) {
      const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
      const answer = await fetch(form.dataset.notes, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ text }),
      });
      if (!answer.ok) {
        const box = form.querySelector(".form-problem");
        let detail = "";
        try { detail = (await answer.json()).detail; } catch (e) { detail = ""; }
        box.textContent = typeof detail === "string" && detail ? detail : answer.status + " " + answer.statusText;
        box.hidden = false;
        return;
      }
    }
    location.reload();
  });
})();
