// The state panel (the focused process's state at the focus time, the diff against
// the transition before, the history) and the playback bar (scrubber, play/pause,
// steps to the next event, message or state change, speed).
import { api, ApiError } from "./api.js";
import { focus, setFocus, onFocus } from "./focus.js";
import { el, fmtTime } from "./format.js";
import { timeline } from "./timeline.js";

let body, title, scrubber, clock, playButton, speedSelect;
let duration = 1, history = null, historyPid = null, historyPromise = null, timer = null, playing = null;
let stateSeq = 0;

export function initState() {
  body = document.getElementById("state-body");
  title = document.getElementById("state-title");
  scrubber = document.getElementById("scrubber");
  clock = document.getElementById("clock");
  playButton = document.getElementById("pb-play");
  speedSelect = document.getElementById("pb-speed");
  scrubber.addEventListener("input", () => {
    const t = parseFloat(scrubber.value);
    setFocus({ t });
    timeline.ensureVisible(t);
  });
  playButton.addEventListener("click", togglePlay);
  document.getElementById("pb-next").addEventListener("click", () => step("event", "next"));
  document.getElementById("pb-prev").addEventListener("click", () => step("event", "prev"));
  document.getElementById("pb-next-msg").addEventListener("click", () => step("message", "next"));
  document.getElementById("pb-next-state").addEventListener("click", () => step("state", "next"));
  document.getElementById("pb-prev-state").addEventListener("click", () => step("state", "prev"));
  onFocus((changed) => {
    if (changed.t) syncClock();
    if (changed.pid || changed.t) schedule();
  });
}

export function setDuration(d) {
  duration = Math.max(d, 1e-6);
  scrubber.max = String(duration);
  syncClock();
}

function syncClock() {
  scrubber.value = String(focus.t);
  clock.textContent = fmtTime(focus.t, Math.max(focus.t1 - focus.t0, 1e-6) / 100);
}

export function changeSpeed(up) {
  const i = speedSelect.selectedIndex + (up ? 1 : -1);
  speedSelect.selectedIndex = Math.max(0, Math.min(speedSelect.options.length - 1, i));
}

export function togglePlay() {
  if (playing) { cancelAnimationFrame(playing.frame); playing = null; playButton.textContent = "▶"; return; }
  playButton.textContent = "⏸";
  let last = performance.now();
  const tick = (now) => {
    const speed = parseFloat(speedSelect.value);
    const t = focus.t + ((now - last) / 1000) * speed;
    last = now;
    if (t >= duration) { setFocus({ t: duration }); togglePlay(); return; }
    setFocus({ t });
    const span = focus.t1 - focus.t0;
    if (t > focus.t1 - span * 0.1) setFocus({ t0: t - span * 0.5, t1: t + span * 0.5 });
    playing.frame = requestAnimationFrame(tick);
  };
  playing = { frame: requestAnimationFrame(tick) };
}

export async function step(what, dir) {
  try {
    const found = await api("/api/step", { t: focus.t, pid: focus.pid, what, dir });
    if (!found.found) { flash(`no ${what} ${dir === "next" ? "after" : "before"} this moment`); return; }
    const changes = { t: found.time };
    if (found.seq !== undefined && found.seq !== null) changes.sel = { type: "event", id: found.seq };
    setFocus(changes, { history: true });
    timeline.ensureVisible(found.time, found.pid_id ?? focus.pid);
  } catch (error) { flash(error.message); }
}

function flash(text) { clock.textContent = text; setTimeout(syncClock, 1800); }

function schedule() { clearTimeout(timer); timer = setTimeout(load, 60); }

async function load() {
  const pid = focus.pid;
  const seq = ++stateSeq;
  if (pid === null) { body.className = "empty"; body.textContent = "Select a process (a lane) to see its state."; title.textContent = ""; return; }
  try {
    if (historyPid !== pid) {
      historyPid = pid;
      historyPromise = api(`/api/state/${pid}/history`);
      historyPromise.catch(() => { if (historyPid === pid) historyPid = null; });
    }
    history = await historyPromise;
    if (seq !== stateSeq) return;
    const t = focus.t;
    const at = await api(`/api/state/${pid}/at`, { t });
    if (seq !== stateSeq) return;
    render(at);
    body.dataset.shownT = String(t);  // which moment the panel shows (tests wait on it)
  } catch (error) {
    if (seq !== stateSeq) return;
    if (error instanceof ApiError && error.status >= 500) historyPid = null;
    body.className = "empty";
    body.textContent = error.status === 501 || error.status === 409 ? error.message
      : `no state for this process: ${error.message}`;
    title.textContent = "";
  }
}

function render(at) {
  title.textContent = history ? `— ${history.label}` : "";
  body.className = "";
  const items = history ? history.transitions : [];
  if (!items.length) { body.className = "empty"; body.textContent = "This process has no recorded state (not a GenServer, gen_statem, Agent or LiveView, or its state was not traced)."; return; }
  const current = at.index;
  const header = current === null
    ? el("div", { class: "empty" }, `Before its first recorded state (${items.length} transitions).`)
    : el("div", {}, el("b", { "data-testid": "state-index" }, `state ${current + 1} of ${items.length}`), " · ",
         at.transition.callback, " at ", fmtTime(at.transition.time, 1e-6),
         at.transition.trigger ? [" · ", el("button", { class: "link", "data-link": "trigger",
           onclick: () => setFocus({ sel: { type: "event", id: at.transition.trigger.seq } }, { history: true }) },
           `${at.transition.trigger.kind} ${at.transition.trigger.mfa || ""}`)] : "");
  const list = el("ul", { class: "history", "data-testid": "state-history" }, items.map((h) =>
    el("li", { class: h.index === current ? "current" : "", onclick: () => {
      setFocus({ t: h.time, sel: { type: "event", id: h.seq } }, { history: true });
      timeline.ensureVisible(h.time, focus.pid);
    } }, el("span", { class: "t" }, fmtTime(h.time, 1e-3)), el("span", {}, h.callback),
      el("span", { class: "d" }, h.delta))));
  body.replaceChildren(header,
    current === null ? "" : el("h3", {}, "what changed"),
    current === null ? "" : el("div", { class: "diff", "data-testid": "state-diff" }, at.transition.delta || "(no change)"),
    current === null ? "" : el("h3", {}, "state"),
    current === null ? "" : el("pre", { "data-testid": "state-text" }, at.state),
    el("h3", {}, "history"), list);
  const row = list.querySelector("li.current");
  if (row) row.scrollIntoView({ block: "nearest" });
}
