// The alarm: kept on the phone first, then sent (signed) until the server answers,
// then followed (every 2 s) until it is resolved, as a room unit's light follows it:
// sending -> received -> acknowledged (help is coming, with who) -> resolved.
// If the server has not confirmed it 10 s after the press (or the phone knows it has
// no connection), the page offers the SMS and the call; it keeps trying meanwhile.
import * as api from "./api.js";
import * as store from "./store.js";
import * as positions from "./positions.js";

/** Seconds between tries while the server has not answered: 1, 2, then every 3. */
const RETRY_MS = [1000, 2000];
const RETRY_LAST_MS = 3000;
const POLL_MS = 2000;
const FALLBACK_MS = 10000;

let ui = null;
/** The alarm shown: {alert_id, pressed_at, presses, sent, state, going, kind, last_press}. */
let current = null;
let sending = false;
let tries = 0;
let retryTimer = null;
let pollTimer = null;
let fallbackTimer = null;
let problem = "";

const open = () => current !== null && current.state !== "resolved";
const confirmed = () => current !== null && current.sent >= current.presses;

/** Start with what the phone kept: `view` draws, `refused` takes a phone refused for good. */
export async function start(hooks) {
  ui = hooks;
  current = (await store.get("alarm")) || null;
  show();
  if (open()) {
    if (!confirmed()) send();
    else poll();
    positions.follow(current.alert_id, stopped);
  }
  for (const name of ["online", "focus"]) window.addEventListener(name, refresh);
  document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && refresh());
  window.addEventListener("offline", show);
}

/** The server's open alarms (from /phone/me): one the phone did not know (it raised it by
 * SMS, or lost what it kept) becomes the one shown. */
export async function known(alarms) {
  const mine = current && alarms.find((a) => a.alert_id === current.alert_id);
  if (mine) return adopt(mine);
  if (current && current.sent > 0 && current.state !== "resolved") return poll();
  const newest = alarms[alarms.length - 1];
  if (newest && !open()) {
    current = { alert_id: newest.alert_id, pressed_at: null, presses: newest.presses, sent: newest.presses,
      state: "sending", going: null, kind: newest.kind, last_press: Date.now() };
    await adopt(newest);
    positions.follow(current.alert_id, stopped);
    poll();
  }
}

/** A hold of the button: a new alarm, or a new press of the open one (same id, one more press). */
export async function press() {
  if (open()) {
    current.presses += 1;
  } else {
    current = { alert_id: api.randomId(), pressed_at: new Date().toISOString(), presses: 1, sent: 0,
      state: "sending", going: null, kind: "panic" };
  }
  current.last_press = Date.now();
  // NOTE: kept before it is sent: a reload or a dead battery mid-send must not lose it.
  await store.put("alarm", current);
  ui.vibrate([300]);
  tries = 0;
  problem = "";
  show();
  send();
  positions.follow(current.alert_id, stopped);
}

async function send() {
  if (sending || !open() || confirmed()) return;
  clearTimeout(retryTimer);
  sending = true;
  const alarm = current;
  const presses = alarm.presses;
  const pressed_at = alarm.pressed_at || new Date().toISOString();
  const answer = await api.signed("POST", "/api/v1/phone/alarms", { alert_id: alarm.alert_id, pressed_at, presses });
  sending = false;
  if (alarm !== current) return;
  if (answer.status === 200) {
    tries = 0;
    problem = "";
    alarm.sent = Math.max(alarm.sent, presses);
    await adopt(answer.body);
    if (!confirmed()) send();
    else poll();
    return;
  }
  if (api.refusedForGood(answer)) return refused(answer);
  if (answer.status === 409) {
    // The id is not this phone's (another device's alarm has it): the same alarm under
    // a new id, at once (then as any refusal, should it come again).
    alarm.alert_id = api.randomId();
    alarm.sent = 0;
    await store.put("alarm", alarm);
    positions.follow(alarm.alert_id, stopped);
    if (tries === 0) {
      tries = 1;
      return send();
    }
  }
  // 429 (too many open alarms) and any other refusal: said, and tried again.
  problem = answer.status ? api.detail(answer) : "";
  tries += 1;
  const wait = answer.retryAfter ? answer.retryAfter * 1000 : RETRY_MS[tries - 1] || RETRY_LAST_MS;
  retryTimer = setTimeout(send, wait);
  show();
}

/** Ask the server where the alarm stands, now and then every 2 s while it is open. */
async function poll() {
  clearTimeout(pollTimer);
  if (!open() || !confirmed()) return;
  const alarm = current;
  const answer = await api.signed("GET", `/api/v1/phone/alarms/${alarm.alert_id}`);
  if (alarm !== current) return;
  if (answer.status === 200) await adopt(answer.body);
  else if (api.refusedForGood(answer)) return refused(answer);
  else if (answer.status === 404) {
    // The server does not know it (its database was restored?): send it again.
    alarm.sent = 0;
    await store.put("alarm", alarm);
    return send();
  }
  clearTimeout(pollTimer);
  if (open()) pollTimer = setTimeout(poll, POLL_MS);
}

/** Take the server's view of the alarm; vibrate when its state changes. */
async function adopt(view) {
  const before = current.state + "|" + (current.going || "");
  current.state = view.state;
  current.going = view.going;
  current.kind = view.kind;
  current.presses = Math.max(current.presses, view.presses);
  await store.put("alarm", current);
  if (before !== current.state + "|" + (current.going || "")) {
    ui.vibrate(current.state === "acknowledged" ? [200, 100, 200, 100, 600] : [200, 100, 200]);
  }
  // The server has the alarm: its positions can go (until it is resolved).
  if (current.state === "resolved") positions.stop();
  else positions.confirmed(current.alert_id);
  show();
}

/** The phone is refused for good (removed): nothing more goes out. */
function refused(answer) {
  positions.stop();
  ui.refused(answer);
}

/** The connection came back, or the app came to the front: try now. */
function refresh() {
  if (!open()) return;
  if (!confirmed()) {
    tries = 0;
    send();
  } else poll();
}

/** The server stopped the sharing of positions (the alarm is resolved): look again. */
function stopped() {
  poll();
}

/** Draw the alarm again (the language changed). */
export function redraw() {
  show();
}

function show() {
  clearTimeout(fallbackTimer);
  let failing = false;
  if (open() && !confirmed()) {
    const waited = Date.now() - (current.last_press || 0);
    failing = waited >= FALLBACK_MS || navigator.onLine === false;
    if (!failing) fallbackTimer = setTimeout(show, FALLBACK_MS - waited);
  }
  ui.view({ alarm: current, open: open(), unsent: open() && !confirmed(), failing, problem });
}
