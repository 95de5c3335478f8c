// The console's forms: a form marked data-api is sent to the HTTP API as JSON with the
// session's CSRF token; its answer's "detail" is shown when it fails. A form marked
// data-download fetches a file (with the reason header where asked) and saves it. The
// reason is data-reason, or the value of the form's field named by data-reason-field; a
// button's formaction sends the form elsewhere.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf"]') || {}).content || "";

  function problem(form, text) {
    const box = form.querySelector(".form-problem") || document.getElementById("problem");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  function detail(body) {
    if (!body || body.detail === undefined) return "";
    if (typeof body.detail === "string") return body.detail;
    return body.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ");
  }

  // Fields to JSON: data-type="number" | "bool" | "list" (comma-separated) | "json";
  // an empty optional field (data-optional) is left out.
  function body(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.name === "csrf") continue;
      if ((el.type === "checkbox" || el.type === "radio") && !el.checked && el.dataset.type !== "bool") continue;
      let value = el.value;
      const type = el.dataset.type;
      if (value === "" && el.dataset.optional !== undefined) continue;
      if (type === "number") value = Number(value);
      else if (type === "bool") value = el.type === "checkbox" ? el.checked : value === "true";
      else if (type === "list") value = value.split(",").map((s) => s.trim()).filter(Boolean);
      else if (type === "json") value = JSON.parse(value || "null");
      if (el.dataset.append !== undefined) (out[el.name] = out[el.name] || []).push(value);
      else out[el.name] = value;
    }
    return out;
  }

  async function send(form, submitter) {
    const method = (form.dataset.method || form.getAttribute("method") || "post").toUpperCase();
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    const field = form.dataset.reasonField;
    const why = field !== undefined ? (form.elements[field] || {}).value : form.dataset.reason;
    // A header carries Latin-1 only: other text goes as RFC 8187's utf-8''<percent-encoded>.
    if (why !== undefined) {
      headers["X-Panicbutton-Justification"] = /^[\x20-\x7e]*$/.test(why) ? why : "utf-8''" + encodeURIComponent(why);
    }
    const init = { method, headers, credentials: "same-origin" };
    if (method !== "GET" && method !== "DELETE") {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body(form));
    }
    if (submitter) submitter.disabled = true;
    try {
      const action = (submitter && submitter.getAttribute("formaction")) || form.getAttribute("action");
      const answer = await fetch(action, init);
      if (form.dataset.download !== undefined && answer.ok) {
        const blob = await answer.blob();
        const name = (answer.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
        const link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = name ? name[1] : form.dataset.download || action.split("?")[0].split("/").pop();
        document.body.appendChild(link);
        link.click();
        link.remove();
        problem(form, "");
        return;
      }
      let parsed = null;
      try { parsed = await answer.json(); } catch (e) { parsed = null; }
      if (!answer.ok) {
        problem(form, detail(parsed) || answer.status + " " + answer.statusText);
        return;
      }
      problem(form, "");
      form.dispatchEvent(new CustomEvent("api-done", { detail: parsed, bubbles: true }));
      const then = form.dataset.then;
      if (then === "stay") return;
      if (then) location.assign(then);
      else location.reload();
    } catch (e) {
      problem(form, String(e));
    } finally {
      if (submitter) submitter.disabled = false;
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.dataset.api === undefined && form.dataset.download === undefined) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    send(form, event.submitter);
  });
})();
