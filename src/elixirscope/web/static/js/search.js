// Search and filter: matches highlighted on the timeline and the minimap, next/previous.
import { api } from "./api.js";
import { focus, setFocus } from "./focus.js";
import { el, fmtTime } from "./format.js";
import { timeline } from "./timeline.js";

let input, count, list, matches = [], index = -1;

export function initSearch() {
  input = document.getElementById("search");
  count = document.getElementById("search-count");
  list = document.getElementById("search-results");
  document.getElementById("search-form").addEventListener("submit", (event) => {
    event.preventDefault(); run();
  });
  document.getElementById("search-next").addEventListener("click", () => go(1));
  document.getElementById("search-prev").addEventListener("click", () => go(-1));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { list.hidden = true; input.blur(); }
  });
  input.addEventListener("focus", () => { if (matches.length) list.hidden = false; });
  document.addEventListener("mousedown", (event) => {
    if (!event.target.closest("#search-form")) list.hidden = true;
  });
}

export function focusSearch() { input.focus(); input.select(); }

// The examples in the search box come from the recording: what it traced, a process
// it names, and a kind it holds.
export function suggestSearches(info, lanes) {
  const traced = ((info.meta && info.meta.traces) || []).map((t) => t.target).find(Boolean);
  const named = lanes.find((l) => l.name);
  const process = named ? named.name : lanes[0] ? lanes[0].pid : null;
  const kind = lanes.some((l) => l.crashed) ? "kind:exit" : "kind:call";
  const examples = [traced, process, kind, "text…"].filter(Boolean);
  input.placeholder = `Search: ${examples.join(", ")}  ( / )`;
}

async function run() {
  const q = input.value.trim();
  if (!q) { matches = []; index = -1; count.textContent = ""; list.hidden = true; timeline.setMatches([], -1); return; }
  count.textContent = "…";
  try {
    const found = await api("/api/search", { q, limit: 500 });
    matches = found.matches;
    count.textContent = matches.length ? `${matches.length}${found.more ? "+" : ""} found` : "no match";
    const after = matches.findIndex((m) => m.time >= focus.t - 1e-9);
    list.replaceChildren(...matches.slice(0, 200).map((m, i) => el("li", {
      "data-index": i, onmousedown: (event) => { event.preventDefault(); jump(i); list.hidden = true; } },
      el("span", { class: "t" }, fmtTime(m.time, 1e-3)), el("span", { class: `pill ${m.kind}` }, m.kind), " ",
      el("b", {}, m.mfa || m.label || ""), " ", m.label && m.mfa ? `on ${m.label} ` : "", m.text)));
    list.hidden = !matches.length;
    timeline.setMatches(matches, -1);
    if (matches.length) jump(after >= 0 ? after : 0);
  } catch (error) {
    matches = []; count.textContent = error.message; list.hidden = true;
    timeline.setMatches([], -1);
  }
}

export function go(delta) {
  if (!matches.length) return;
  jump((index + delta + matches.length) % matches.length);
}

function jump(i) {
  index = i;
  const m = matches[i];
  count.textContent = `${i + 1} / ${matches.length}`;
  for (const li of list.children) li.classList.toggle("current", +li.dataset.index === i);
  timeline.setMatches(matches, i);
  setFocus({ t: m.time, pid: m.pid_id, sel: { type: "event", id: m.seq } }, { history: true });
  timeline.ensureVisible(m.time, m.pid_id, { width: 0.004 });
}
