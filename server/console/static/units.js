// The units page: asks before a plain form marked data-confirm is sent (retiring a
// unit), and saves the new unit's files (config, enrol.txt, CA) from the page (they are
// shown once and never kept on the server, so there is nothing to fetch again).
"use strict";
(function () {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.dataset.api !== undefined) return;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-save]");
    if (!button) return;
    const source = document.getElementById(button.dataset.save);
    const blob = new Blob([source.textContent], { type: button.dataset.type || "application/toml" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = button.dataset.name || "device.toml";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  });
})();
