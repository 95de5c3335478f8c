// The check-in timer: before a job outside, the worker starts a session with its end
// time (and a note shared only if they do not check out); the page counts down, and
// extends by 30 minutes or checks out with the PIN typed on a pad (else whoever holds
// the phone could put the end off for ever). The check-out PIN and the duress PIN get
// the same answer from the server, and this page shows the same for both: nothing
// here may tell them apart.
import * as api from "./api.js";
import * as store from "./store.js";
import { t, clock } from "./texts.js";

const EXTEND_MS = 30 * 60 * 1000;
const $ = (id) => document.getElementById(id);

/** The running session as the server last said: {client_id, ends_at, note, state}. */
let running = null;
/** Server time minus this phone's time, ms (the countdown follows the server's clock). */
let offset = 0;
let pin = "";
/** What the PIN pad is open for: "checkout" or "extend". */
let purpose = "checkout";
let ticker = null;
let refused = () => {};
/** The id of the session the form starts: the same on each try, so a retry after a lost
 * answer finds the session it started (the server takes it once). */
let startId = null;
/** A request of this timer is on its way (a second touch waits for it). */
let busy = false;

const serverNow = () => Date.now() + offset;

/** Start with what the phone kept; `onRefused` takes a phone refused for good. */
export async function start(onRefused) {
  refused = onRefused;
  running = (await store.get("checkin")) || null;
  $("checkin-open").addEventListener("click", openForm);
  $("checkin-cancel").addEventListener("click", () => show("idle"));
  $("checkin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    once(begin);
  });
  $("checkin-end-time").addEventListener("input", () => {
    document.querySelector('input[name="length"][value="until"]').checked = true;
  });
  $("checkin-extend").addEventListener("click", () => askPin("extend"));
  $("checkin-checkout").addEventListener("click", () => askPin("checkout"));
  document.querySelectorAll("#pinpad [data-digit]").forEach((key) => key.addEventListener("click", () => digit(key.dataset.digit)));
  $("pin-back").addEventListener("click", () => {
    pin = pin.slice(0, -1);
    drawPin();
  });
  $("pin-ok").addEventListener("click", () => once(withPin));
  $("pin-cancel").addEventListener("click", () => show("running"));
  $("pinpad").addEventListener("keydown", (event) => {
    if (/^[0-9]$/.test(event.key)) digit(event.key);
    else if (event.key === "Backspace") $("pin-back").click();
    else if (event.key === "Enter" && event.target.tagName !== "BUTTON") once(withPin);
    else return;
    event.preventDefault();
  });
  $("checkin-done-ok").addEventListener("click", () => show("idle"));
  show(running ? "running" : "idle");
}

/** What /phone/me says: the running session (or none), and the server's clock. */
export async function known(me) {
  offset = Date.parse(me.now) - Date.now();
  if (!("checkin" in me)) return;
  running = me.checkin && me.checkin.state === "running" ? me.checkin : null;
  await keep();
  if (!$("pinpad").hidden || !$("checkin-done").hidden || !$("checkin-form").hidden) return;
  show(running ? "running" : "idle");
}

async function keep() {
  if (running) await store.put("checkin", running);
  else await store.forget("checkin");
}

/** Run `act` unless another request of the timer is on its way. */
async function once(act) {
  if (busy) return;
  busy = true;
  try {
    await act();
  } finally {
    busy = false;
  }
}

function openForm() {
  startId = api.randomId();
  const end = new Date(serverNow() + 60 * 60 * 1000);
  $("checkin-end-time").value = `${String(end.getHours()).padStart(2, "0")}:${String(end.getMinutes()).padStart(2, "0")}`;
  show("form");
  document.querySelector('input[name="length"]:checked').focus();
}

/** The end the form asks for, as a time, or null with the problem said. */
function chosenEnd() {
  const length = document.querySelector('input[name="length"]:checked').value;
  if (length !== "until") return serverNow() + Number(length) * 60 * 1000;
  const [h, m] = ($("checkin-end-time").value || "").split(":").map(Number);
  if (Number.isNaN(h) || Number.isNaN(m)) return null;
  const end = new Date(serverNow());
  end.setHours(h, m, 0, 0);
  // A time earlier than now is tomorrow's.
  if (end.getTime() <= serverNow()) end.setDate(end.getDate() + 1);
  return end.getTime();
}

async function begin() {
  const end = chosenEnd();
  if (end === null) return say(t("checkin.no_time"));
  const note = $("checkin-note").value.trim();
  const payload = { client_id: startId, ends_at: new Date(end).toISOString() };
  if (note) payload.note = note;
  const answer = await api.signed("POST", "/api/v1/phone/checkins", payload);
  if (answer.status === 200 || answer.status === 201) {
    running = answer.body;
    $("checkin-note").value = "";
    await keep();
    return show("running");
  }
  failed(answer);
}

/** Open the PIN pad to check out or to extend (its title says which). */
function askPin(wanted) {
  purpose = wanted;
  const title = $("pinpad-title");
  title.dataset.t = purpose === "extend" ? "pin.title_extend" : "pin.title";
  title.textContent = t(title.dataset.t);
  pin = "";
  drawPin();
  say("");
  show("pin");
  document.querySelector('#pinpad [data-digit="1"]').focus();
}

/** The PIN typed: extend or check out with it, as the pad was opened for. */
async function withPin() {
  if (pin.length < 4) return say(t("pin.short"));
  const typed = pin;
  pin = "";
  drawPin();
  return purpose === "extend" ? extend(typed) : checkout(typed);
}

async function extend(typed) {
  const end = Math.max(Date.parse(running.ends_at), serverNow()) + EXTEND_MS;
  const answer = await api.signed("POST", `/api/v1/phone/checkins/${running.client_id}/extend`, {
    ends_at: new Date(end).toISOString(),
    pin: typed,
  });
  if (answer.status === 200) {
    running = answer.body;
    await keep();
    say("");
    return show("running");
  }
  if (answer.status === 403) return say(t("pin.wrong"));
  failed(answer);
}

function digit(d) {
  if (pin.length < 8) pin += d;
  drawPin();
}

function drawPin() {
  $("pin-dots").textContent = "•".repeat(pin.length);
  $("pin-dots").setAttribute("aria-label", t("pin.count", { n: pin.length }));
}

async function checkout(typed) {
  const answer = await api.signed("POST", `/api/v1/phone/checkins/${running.client_id}/checkout`, { pin: typed });
  if (answer.status === 200) {
    running = null;
    await keep();
    say("");
    return show("done");
  }
  if (answer.status === 403) return say(t("pin.wrong"));
  failed(answer);
}

function failed(answer) {
  if (api.refusedForGood(answer)) return refused(answer);
  if (answer.status === 0) return say(t("checkin.offline"));
  if (answer.status === 429) {
    if (!answer.retryAfter) return say(api.detail(answer));
    return say(t("pin.wait", { n: Math.max(1, Math.ceil(answer.retryAfter / 60)) }));
  }
  say(api.detail(answer) || t("checkin.failed", { n: answer.status }));
}

function say(text) {
  $("checkin-problem").textContent = text;
  $("checkin-problem").hidden = !text;
}

/** Show one part of the check-in: idle, form, running, pin or done. */
function show(part) {
  $("checkin-idle").hidden = part !== "idle";
  $("checkin-form").hidden = part !== "form";
  $("checkin-running").hidden = part !== "running" || !running;
  $("pinpad").hidden = part !== "pin";
  $("checkin-done").hidden = part !== "done";
  if (part !== "pin" && part !== "running") say("");
  clearInterval(ticker);
  if (running && (part === "running" || part === "pin")) {
    $("checkin-ends").textContent = clock(new Date(Date.parse(running.ends_at)));
    tick();
    ticker = setInterval(tick, 1000);
  }
}

function tick() {
  if (!running) return;
  const left = Math.round((Date.parse(running.ends_at) - serverNow()) / 1000);
  const el = $("checkin-left");
  el.classList.toggle("late", left <= 0);
  if (left <= 0) {
    el.textContent = t("checkin.over");
    return;
  }
  const h = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = left % 60;
  el.textContent = (h ? `${h}:${String(m).padStart(2, "0")}` : String(m)) + ":" + String(s).padStart(2, "0");
}
