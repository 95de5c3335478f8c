// What the page keeps on the phone, in IndexedDB (it survives a reload, a locked
// screen and a restart): the phone's key (a WebCrypto key that cannot be read out),
// who it is for, its open alarm and its check-in. One store of named values.
const DB = "panicbutton-phone";
const STORE = "kept";

let opened = null;

function open() {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opened;
}

async function run(mode, act) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = act(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/** The value kept under `name`, or undefined. */
export const get = (name) => run("readonly", (s) => s.get(name));
/** Keep `value` under `name` (durably, before the promise resolves). */
export const put = (name, value) => run("readwrite", (s) => s.put(value, name));
/** Forget what is kept under `name`. */
export const forget = (name) => run("readwrite", (s) => s.delete(name));
