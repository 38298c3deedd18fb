// Keyboard shortcuts (listed on ?).
import { focus, setFocus } from "./focus.js";
import { zoom, pan, timeline } from "./timeline.js";
import { togglePlay, step, changeSpeed } from "./statepanel.js";
import { focusSearch, go } from "./search.js";

export const SHORTCUTS = [
  ["W / S", "zoom in / out (around the focus)", () => zoom(0.6), () => zoom(1 / 0.6)],
  ["A / D", "pan left / right", () => pan(-0.2), () => pan(0.2)],
  ["F", "fit the whole recording", () => timeline.fit()],
  ["Z", "zoom to the focus (10 ms around it)", () => timeline.ensureVisible(focus.t, focus.pid, { width: 0.01 })],
  ["/", "search", () => focusSearch()],
  ["n / N", "next / previous search match", () => go(1), () => go(-1)],
  ["Space", "play / pause", () => togglePlay()],
  [". / ,", "next / previous event (of the focused process)", () => step("event", "next"), () => step("event", "prev")],
  ["m / M", "next / previous message", () => step("message", "next"), () => step("message", "prev")],
  ["c / C", "next / previous state change", () => step("state", "next"), () => step("state", "prev")],
  ["] / [", "faster / slower playback", () => changeSpeed(true), () => changeSpeed(false)],
  ["Esc", "clear the selection, close this", () => { setFocus({ sel: null }); hideHelp(); }],
  ["?", "show these shortcuts", () => toggleHelp()],
];

// key -> [shortcut row, which of its actions]
const KEYS = {
  w: [0, 2], W: [0, 2], s: [0, 3], S: [0, 3], a: [1, 2], A: [1, 2], d: [1, 3], D: [1, 3],
  f: [2, 2], F: [2, 2], z: [3, 2], Z: [3, 2], "/": [4, 2], n: [5, 2], N: [5, 3],
  " ": [6, 2], ".": [7, 2], ",": [7, 3], m: [8, 2], M: [8, 3], c: [9, 2], C: [9, 3],
  "]": [10, 2], "[": [10, 3], Escape: [11, 2], "?": [12, 2],
};

export function initShortcuts() {
  const table = document.getElementById("help-table");
  for (const [keys, text] of SHORTCUTS) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td></td><td></td>`;
    tr.children[0].textContent = keys;
    tr.children[1].textContent = text;
    table.append(tr);
  }
  document.getElementById("help-button").addEventListener("click", toggleHelp);
  document.getElementById("help-close").addEventListener("click", hideHelp);
  window.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type !== "range" || target instanceof HTMLSelectElement) {
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = KEYS[event.key];
    if (key === undefined) return;
    event.preventDefault();
    SHORTCUTS[key[0]][key[1]]();
  });
}

function toggleHelp() { const help = document.getElementById("help"); help.hidden = !help.hidden; }
function hideHelp() { document.getElementById("help").hidden = true; }
