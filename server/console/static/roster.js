// The roster page: a shift's fields and the escalation steps are gathered into the JSON
// the site API takes (a shift object, a list of steps) just before console.js sends
// the form (this listener runs first: capture phase).
"use strict";
(function () {
  const parts = (root, name) => Array.from(root.querySelectorAll('[data-part="' + name + '"]'));
  const value = (root, name) => (parts(root, name)[0] || {}).value;
  const checked = (root, name) => parts(root, name).filter((el) => el.checked).map((el) => el.value);

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.classList.contains("shift-form")) {
      form.elements.shift.value = JSON.stringify({
        staff: value(form, "staff"),
        days: checked(form, "days"),
        start: value(form, "start"),
        end: value(form, "end"),
      });
    } else if (form.id === "escalation") {
      const steps = [];
      for (const row of form.querySelectorAll("tr.step")) {
        const after = value(row, "after");
        if (after === "" || after === undefined) continue;
        steps.push({ after: Number(after), who: value(row, "who"), channels: checked(row, "channels") });
      }
      form.elements.steps.value = JSON.stringify(steps);
    }
  }, true);
})();
