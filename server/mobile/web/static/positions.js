// Where the phone is, only while its alarm is open: asked after the press, sent at most
// every 15 s, stopped when the alarm is resolved (or the server answers 409). Never
// asked outside an alarm. A server that does not take positions (404) is let be.
import * as api from "./api.js";

const EVERY_MS = 15000;

let watch = null;
let alertId = null;
let known = false;
let latest = null;
let lastSent = 0;
let timer = null;
let onStopped = () => {};

/** Follow the phone's position for the open alarm `id` (asks for it the first time). */
export function follow(id, stopped) {
  onStopped = stopped;
  if (alertId !== id) {
    stop();
    alertId = id;
  }
  if (watch !== null || !("geolocation" in navigator)) return;
  watch = navigator.geolocation.watchPosition(
    (position) => {
      latest = {
        latitude: position.coords.latitude,
        longitude: position.coords.longitude,
        accuracy: position.coords.accuracy,
        taken_at: new Date(position.timestamp).toISOString(),
      };
      soon();
    },
    () => {},
    { enableHighAccuracy: true, maximumAge: 5000, timeout: 60000 }
  );
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
  watch = timer = alertId = latest = null;
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
  } else if (answer.status === 0 && latest === null) {
    // Not sent (no connection): keep it for the next try.
    latest = fix;
    soon();
  }
}
