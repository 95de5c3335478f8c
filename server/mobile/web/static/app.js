// The phone button's app: set up from a manager's one-time link (/phone/enrol#<token>),
// then one large button to hold, the state of the alarm as a room unit's light shows
// it, the SMS and the call when the data connection fails, and the check-in timer.
import * as api from "./api.js";
import * as store from "./store.js";
import * as alarm from "./alarm.js";
import * as checkin from "./checkin.js";
import { holdButton } from "./hold.js";
import { t, apply, setLanguage } from "./texts.js";

const $ = (id) => document.getElementById(id);
const SCREENS = ["welcome", "enrol", "install", "alarm", "removed"];
/** Chrome's install prompt, kept for the install button (Android). */
let installPrompt = null;
let phone = null;

window.addEventListener("beforeinstallprompt", (event) => {
  event.preventDefault();
  installPrompt = event;
  $("install-prompt").hidden = false;
});

function screen(name) {
  $("loading").hidden = true;
  for (const id of SCREENS) $(id).hidden = id !== name;
  const heading = $(name).querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

async function boot() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/phone/sw.js", { scope: "/phone" }).catch(() => {});
  }
  phone = (await store.get("phone")) || null;
  setLanguage(phone ? phone.language : null);
  apply(document);
  const token = location.hash.length > 1 ? decodeURIComponent(location.hash.slice(1)) : "";
  const removed = await store.get("removed");
  if (token && (!phone || removed)) return enrolScreen(token);
  if (token) history.replaceState(null, "", "/phone");
  if (removed) return removedScreen(removed);
  if (!phone) return screen("welcome");
  await alarmScreen(Boolean(token));
}

// -- enrolment ----------------------------------------------------------------------

function enrolScreen(token) {
  screen("enrol");
  const form = $("enrol-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const problem = check();
    if (problem) return enrolProblem(problem);
    $("enrol-submit").disabled = true;
    try {
      await enrol(token);
    } finally {
      $("enrol-submit").disabled = false;
    }
  });
}

/** What is wrong with the form, in words, or "". */
function check() {
  const number = $("number").value.replace(/[\s.\-()]/g, "");
  $("number").value = number;
  if (!/^\+[1-9][0-9]{6,14}$/.test(number)) return t("enrol.bad_number");
  const pin = $("pin").value;
  const duress = $("duress").value;
  if (!/^[0-9]{4,8}$/.test(pin) || !/^[0-9]{4,8}$/.test(duress)) return t("enrol.bad_pin");
  if (pin === duress) return t("enrol.same_pins");
  return "";
}

function enrolProblem(text) {
  $("enrol-problem").textContent = text;
  $("enrol-problem").hidden = !text;
}

async function enrol(token) {
  enrolProblem("");
  const key = await api.newKey();
  const answer = await api.plain("POST", "/api/v1/phone/enrol", {
    token,
    public_key: key.publicKey,
    pin: $("pin").value,
    duress_pin: $("duress").value,
    number: $("number").value,
    label: /iPhone|iPad/.test(navigator.userAgent) ? "iPhone" : /Android/.test(navigator.userAgent) ? "Android" : "",
  });
  if (answer.status === 201) {
    const b = answer.body;
    phone = { phone_id: b.phone_id, name: b.name, fallback: b.fallback, language: b.language || null };
    // The key first: a phone kept without its key could sign nothing.
    await store.put("key", key.privateKey);
    await store.put("phone", phone);
    await Promise.all([store.forget("removed"), store.forget("alarm"), store.forget("checkin")]);
    // Ask the browser to keep the key even when space runs low (granted to installed apps).
    if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
    $("pin").value = $("duress").value = "";
    history.replaceState(null, "", "/phone");
    setLanguage(phone.language);
    apply(document);
    return installScreen();
  }
  if (answer.status === 0) return enrolProblem(t("enrol.offline"));
  const said = api.detail(answer);
  if (answer.status === 410) return enrolProblem(t("enrol.used") + (said ? " (" + said + ")" : ""));
  enrolProblem(said || t("enrol.failed", { n: answer.status }));
}

function installScreen() {
  const standalone = matchMedia("(display-mode: standalone)").matches || navigator.standalone === true;
  if (standalone) return alarmScreen(false);
  screen("install");
  const ios = /iPhone|iPad|iPod/.test(navigator.userAgent);
  $("install-ios").hidden = !ios;
  $("install-android").hidden = ios;
  $("install-prompt").hidden = installPrompt === null;
  $("install-prompt").onclick = async () => {
    if (!installPrompt) return;
    installPrompt.prompt();
    await installPrompt.userChoice;
    installPrompt = null;
    $("install-prompt").hidden = true;
  };
  $("install-done").onclick = () => alarmScreen(false);
}

// -- the button -----------------------------------------------------------------------

async function alarmScreen(already) {
  screen("alarm");
  $("already").hidden = !already;
  $("who-name").textContent = phone.name;
  fallbackLinks();
  holdButton($("sos"), {
    held: () => {
      $("hold-hint").textContent = "";
      alarm.press();
    },
    short: () => {
      $("hold-hint").textContent = t("sos.hold");
    },
  });
  await alarm.start({ view, vibrate, refused });
  await checkin.start(refused);
  const me = await api.signed("GET", "/api/v1/phone/me");
  if (me.status === 200) {
    if (me.body.language && me.body.language !== phone.language) {
      phone.language = me.body.language;
      await store.put("phone", phone);
      setLanguage(phone.language);
      apply(document);
      alarm.redraw();
    }
    await alarm.known(me.body.alarms);
    await checkin.known(me.body);
  } else if (api.refusedForGood(me)) refused(me);
  else if (me.status) {
    // The server's words as they are (a phone whose clock is far off is told to set it).
    $("notice").textContent = api.detail(me) || t("enrol.failed", { n: me.status });
    $("notice").hidden = false;
  }
}

/** The SMS and the call to the site's number, prepared in advance (iPhones want
 * "sms:<number>&body=", others "sms:<number>?body="). */
function fallbackLinks(alertId) {
  const f = phone.fallback;
  const ios = /iPhone|iPad|iPod/.test(navigator.userAgent);
  const body = encodeURIComponent(alertId ? `${f.sms_body} ${alertId}` : f.sms_body);
  const sms = `sms:${f.number}${ios ? "&" : "?"}body=${body}`;
  // Android dials the digits after the pauses (",,"); elsewhere they are typed by hand.
  const call = `tel:${f.number},,${encodeURIComponent(f.call_digits)}`;
  $("fallback-sms").href = $("always-sms").href = sms;
  $("fallback-call").href = $("always-call").href = call;
  $("fallback-digits").textContent = f.call_digits;
}

/** Draw the alarm's state (from alarm.js). */
function view({ alarm: a, open, unsent, failing, problem }) {
  let kind = "idle";
  let text = t("state.idle");
  if (a && open && a.sent === 0) {
    kind = failing ? "failed" : "sending";
    text = failing ? t("state.not_reached") : t("state.sending");
  } else if (a && (open || a.state === "resolved")) {
    kind = a.state;
    if (a.state === "received") text = t("state.received");
    else if (a.state === "acknowledged") text = a.going ? t("state.coming", { name: a.going }) : t("state.coming_anonymous");
    else if (a.state === "resolved") text = t("state.resolved");
  }
  $("state").className = "state state-" + kind;
  if ($("state-text").textContent !== text) $("state-text").textContent = text;
  const more = open && unsent && a.sent > 0 ? t("state.sending_press") : "";
  if ($("state-more").textContent !== more) $("state-more").textContent = more;
  $("sos").setAttribute("aria-label", open ? t("sos.again") : t("sos.label_long"));
  fallbackLinks(a && open ? a.alert_id : null);
  $("fallback").hidden = !failing;
  $("fallback-detail").textContent = problem || "";
  $("fallback-detail").hidden = !problem;
}

function vibrate(pattern) {
  if (navigator.vibrate) navigator.vibrate(pattern);
}

// -- a phone refused for good ------------------------------------------------------------

async function refused(answer) {
  const removed = { detail: api.detail(answer), gone: /removed/i.test(api.detail(answer)) };
  await store.put("removed", removed);
  removedScreen(removed);
}

function removedScreen(removed) {
  $("removed-title").textContent = removed.gone ? t("removed.title") : t("removed.unknown_title");
  $("removed-text").textContent = removed.gone ? t("removed.text") : t("removed.unknown_text");
  $("removed-detail").textContent = removed.detail;
  $("removed-detail").hidden = !removed.detail;
  screen("removed");
}

// A new link opened in this same page (only its fragment changed): start again with it.
window.addEventListener("hashchange", () => location.reload());
boot().catch((err) => {
  // No IndexedDB or WebCrypto here (a private window, an old browser): say so.
  $("loading").textContent = t("broken") + " (" + err + ")";
  $("loading").className = "problem";
});
