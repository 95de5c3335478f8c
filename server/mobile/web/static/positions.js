// Where the phone is, only while its alarm is open: asked after the press, sent every
// 15 s at most (asked again after each, so that a worker standing still is still
// shown as sharing), stopped when the alarm is resolved (or the server answers 409).
// Never asked outside an alarm. A server that does not take positions (404) is let be.
import * as api from "./api.js";

const EVERY_MS = 15000;

let watch = null;
let alertId = null;
let known = false;
let latest = null;
let lastSent = 0;
let timer = null;
let again = null;
let onStopped = () => {};

/** Follow the phone's position for the open alarm `id` (asks for it the first time). */
export function follow(id, stopped) {
  onStopped = stopped;
  if (alertId !== id) {
    stop();
    alertId = id;
  }
  if (watch !== null || !("geolocation" in navigator)) return;
  watchNow();
}

function watchNow() {
  watch = navigator.geolocation.watchPosition(took, () => {}, {
    enableHighAccuracy: true,
    maximumAge: 5000,
    timeout: 60000,
  });
}

function took(position) {
  if (watch === null) return;
  latest = {
    latitude: position.coords.latitude,
    longitude: position.coords.longitude,
    accuracy: position.coords.accuracy,
    taken_at: new Date(position.timestamp).toISOString(),
  };
  soon();
}

/** The server has the alarm `id`: its positions can go now. */
export function confirmed(id) {
  if (id !== alertId) return;
  known = true;
  soon();
}

/** Stop following: the alarm is over. */
export function stop() {
  if (watch !== null) navigator.geolocation.clearWatch(watch);
  clearTimeout(timer);
  clearTimeout(again);
  watch = timer = again = alertId = latest = null;
  known = false;
  lastSent = 0;
}

function soon() {
  if (!known || latest === null || timer !== null) return;
  timer = setTimeout(send, Math.max(0, lastSent + EVERY_MS - Date.now()));
}

async function send() {
  timer = null;
  const id = alertId;
  const fix = latest;
  if (fix === null || id === null) return;
  latest = null;
  lastSent = Date.now();
  const answer = await api.signed("POST", `/api/v1/phone/alarms/${id}/positions`, fix);
  if (id !== alertId) return;
  if (answer.status === 409) {
    stop();
    onStopped();
    return;
  }
  if (answer.status === 0 && latest === null) {
    // Not sent (no connection): keep it for the next try.
    latest = fix;
    soon();
  }
  // A fix for the next turn even if the phone has not moved (a watch tells only of
  // moves): watching again gives the current position at once.
  clearTimeout(again);
  again = setTimeout(() => {
    again = null;
    if (watch === null) return;
    navigator.geolocation.clearWatch(watch);
    watchNow();
  }, EVERY_MS);
}
