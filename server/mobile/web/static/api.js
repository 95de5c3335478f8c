// The phone's requests to the server, each signed with its own key (the server's
// rule, server/mobile/signing.py): ECDSA P-256 with SHA-256 over
// "METHOD\npath\nmillis\nsha256-hex(body)", r||s (64 bytes) in base64url.
import * as store from "./store.js";

export const b64url = (bytes) =>
  btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
const encoder = new TextEncoder();

/** A new key pair; its private half cannot be read out of the browser (extractable: false). */
export async function newKey() {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const spki = await crypto.subtle.exportKey("spki", pair.publicKey);
  return { privateKey: pair.privateKey, publicKey: b64url(spki) };
}

/** 32 lowercase hex digits, for an alert id or a check-in's id. */
export function randomId() {
  return hex(crypto.getRandomValues(new Uint8Array(16)));
}

/**
 * An answer: `{status, body}`, or `{status: 0}` when the request did not reach the
 * server (no connection). `body` is the parsed JSON, or null.
 */
async function send(method, path, body, headers) {
  const init = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = "application/json";
  }
  let answer;
  try {
    answer = await fetch(path, init);
  } catch (err) {
    return { status: 0, body: null };
  }
  let parsed = null;
  try {
    parsed = answer.status === 204 ? null : await answer.json();
  } catch (err) {
    parsed = null;
  }
  return { status: answer.status, body: parsed, retryAfter: Number(answer.headers.get("Retry-After")) || 0 };
}

/** An unsigned request (enrolment: the link's token is the proof). */
export function plain(method, path, payload) {
  return send(method, path, payload === undefined ? undefined : JSON.stringify(payload), {});
}

/** A request signed with this phone's key. */
export async function signed(method, path, payload) {
  const [phone, key] = await Promise.all([store.get("phone"), store.get("key")]);
  if (!phone || !key) return { status: 401, body: { detail: "this phone is not set up" } };
  const body = payload === undefined ? "" : JSON.stringify(payload);
  const bytes = encoder.encode(body);
  const millis = String(Date.now());
  const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
  const message = encoder.encode(`${method}\n${path}\n${millis}\n${digest}`);
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, message);
  const headers = { "X-Phone": phone.phone_id, "X-Phone-Time": millis, "X-Phone-Signature": b64url(signature) };
  return send(method, path, payload === undefined ? undefined : body, headers);
}

/** The server's words in an error answer (a string, or FastAPI's list of problems). */
export function detail(answer) {
  const d = answer && answer.body && answer.body.detail;
  if (!d) return "";
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((p) => (p.loc || []).slice(1).join(".") + ": " + p.msg).join("; ");
  return String(d);
}

/** Whether a 401 says this phone can no longer be used here (removed, or unknown). */
export function refusedForGood(answer) {
  return answer.status === 401 && !/clock/i.test(detail(answer));
}
