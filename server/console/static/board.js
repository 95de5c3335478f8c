// The live board: Server-Sent Events replace the board at each change. While an alarm
// is unanswered the page flashes, sounds (once the browser allows it: after the first
// click or key) and the title and icon change. A lost connection is said plainly, and
// the board reconnects by itself.
"use strict";
(function () {
  const state = document.getElementById("live-state");
  const boardBox = document.getElementById("board");
  const hint = document.getElementById("sound-hint");
  const icon = document.getElementById("icon");
  const baseTitle = document.title;
  let audio = null;
  let beeping = null;
  let source = null;
  let failures = 0;

  function unlockAudio() {
    if (audio) return;
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    audio = new Context();
    if (hint) hint.hidden = true;
    update();
  }
  document.addEventListener("click", unlockAudio);
  document.addEventListener("keydown", unlockAudio);

  function beep() {
    if (!audio) return;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = 880;
    gain.gain.value = 0.2;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.35);
  }

  function update() {
    const board = boardBox.querySelector(".board");
    const open = board ? Number(board.dataset.unanswered || "0") : 0;
    document.body.classList.toggle("alarm", open > 0);
    document.body.dataset.unanswered = String(open);
    document.title = open > 0 ? "(" + open + ") ALARM · " + baseTitle : baseTitle;
    icon.href = open > 0 ? "/console/static/icon-alarm.svg" : "/console/static/icon.svg";
    if (open > 0 && !beeping) {
      beep();
      beeping = setInterval(beep, 1000);
    } else if (open === 0 && beeping) {
      clearInterval(beeping);
      beeping = null;
    }
    if (hint) hint.hidden = !(open > 0 && !audio);
  }

  function live(on) {
    state.textContent = on ? state.dataset.live : state.dataset.lost;
    state.classList.toggle("lost", !on);
    document.body.dataset.live = on ? "yes" : "no";
  }

  function connect() {
    source = new EventSource(state.dataset.events);
    source.addEventListener("open", () => { failures = 0; live(true); });
    source.addEventListener("board", (event) => {
      const doc = new DOMParser().parseFromString(event.data, "text/html");
      boardBox.replaceChildren(...doc.body.childNodes);
      live(true);
      update();
    });
    source.addEventListener("signed-out", (event) => {
      source.close();
      location.assign(event.data || "/sign-in");
    });
    source.addEventListener("error", () => {
      live(false);
      if (source.readyState === EventSource.CLOSED) {
        // Refused (signed out, server restarting): try again, then ask the page itself.
        failures += 1;
        setTimeout(async () => {
          try {
            const answer = await fetch(location.pathname, { redirect: "manual", credentials: "same-origin" });
            if (answer.type === "opaqueredirect" || answer.status === 303) { location.assign("/sign-in"); return; }
          } catch (e) { /* the server is away: keep trying */ }
          connect();
        }, Math.min(1000 * failures, 5000));
      }
    });
  }

  update();
  connect();
})();
