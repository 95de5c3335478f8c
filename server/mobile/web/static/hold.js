// Press and hold: the alarm goes when a press has lasted HOLD_MS (a fill rises while it
// lasts); a shorter one only says to hold. Touch, mouse and pen (pointer events), and
// the keyboard (holding Space or Enter). A screen reader's activation is a click with no
// hold: it gets the hint too (VoiceOver and TalkBack pass a "double-tap and hold" on).
export const HOLD_MS = 2000;

/**
 * Make `button` a hold-to-act button: `held()` after HOLD_MS of holding, `short()` when
 * let go sooner.
 */
export function holdButton(button, { held, short }) {
  let timer = null;
  let done = false;

  function start(event) {
    if (timer !== null) return;
    if (event.cancelable) event.preventDefault();
    done = false;
    button.classList.remove("held");
    // Restart the fill from empty (a reflow between the two states).
    void button.offsetWidth;
    button.classList.add("holding");
    timer = setTimeout(() => {
      timer = null;
      done = true;
      button.classList.remove("holding");
      button.classList.add("held");
      held();
    }, HOLD_MS);
  }

  function stop(event) {
    if (event && event.cancelable) event.preventDefault();
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
      button.classList.remove("holding");
      short();
    } else if (done) {
      done = false;
      setTimeout(() => button.classList.remove("held"), 600);
    }
  }

  button.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    // Keep receiving the pointer's events even when the finger slides off a little.
    if (button.setPointerCapture) button.setPointerCapture(event.pointerId);
    start(event);
  });
  button.addEventListener("pointerup", stop);
  button.addEventListener("pointercancel", stop);
  button.addEventListener("contextmenu", (event) => event.preventDefault());
  button.addEventListener("keydown", (event) => {
    if (event.key !== " " && event.key !== "Enter") return;
    event.preventDefault();
    if (!event.repeat) start(event);
  });
  button.addEventListener("keyup", (event) => {
    if (event.key === " " || event.key === "Enter") stop(event);
  });
  button.addEventListener("blur", () => timer !== null && stop());
  // A click with no press before it: a screen reader's activation (or a stray tap).
  button.addEventListener("click", (event) => {
    event.preventDefault();
    if (event.detail === 0 && timer === null && !done) short();
  });
}
