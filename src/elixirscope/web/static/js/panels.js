// The processes list (lifecycle, activity, exit reasons) and the recording's facts.
import { focus, setFocus, onFocus } from "./focus.js";
import { el, fmtTime, fmtCount, fmtDuration } from "./format.js";
import { timeline } from "./timeline.js";
import { api } from "./api.js";

let rows, filter, lanes = [], showEmpty = false;
// The rate chart is drawn once its tab is shown: a hidden canvas has no width, and a
// chart drawn at 1 pixel and stretched is a solid block.
let rateCanvas = null, rateData = null;

// What matters first: processes that crashed, then those with a name, then the
// busiest; processes with no events fold into one row at the end.
function byWhatMatters(a, b) {
  return (b.crashed - a.crashed) || ((b.name ? 1 : 0) - (a.name ? 1 : 0)) || (b.events - a.events)
    || (a.pid_id - b.pid_id);
}

export function initPanels() {
  rows = document.getElementById("process-rows");
  filter = document.getElementById("process-filter");
  filter.addEventListener("input", renderProcesses);
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => {
      for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b === button);
      for (const body of document.querySelectorAll(".tab-body")) body.hidden = body.id !== button.dataset.tab;
      if (rateCanvas && rateData) drawRate(rateCanvas, rateData);
    });
  }
  onFocus((changed) => { if (changed.pid) markSelected(); });
}

export function setProcesses(list) { lanes = list; renderProcesses(); }

function renderProcesses() {
  const needle = filter.value.trim().toLowerCase();
  const matching = lanes.filter((l) => !needle || `${l.name || ""} ${l.pid} ${l.initial_call || ""}`.toLowerCase().includes(needle))
    .sort(byWhatMatters);
  const folded = needle || showEmpty ? [] : matching.filter((l) => !l.events);
  const shown = folded.length ? matching.filter((l) => l.events) : matching;
  const more = folded.length ? [el("tr", { class: "empty", "data-testid": "folded-processes",
    onclick: () => { showEmpty = true; renderProcesses(); } },
    el("td", { colspan: 3 }, `+ ${folded.length} processes with no events (show)`))] : [];
  rows.replaceChildren(...shown.map((l) => el("tr", {
    "data-pid": l.pid_id, class: l.pid_id === focus.pid ? "selected" : "",
    title: [l.initial_call && `initial call ${l.initial_call}`, l.spawned !== null && `spawned ${fmtTime(l.spawned)}`,
            l.exited !== null && `exited ${fmtTime(l.exited)}`, l.exit_reason && `reason ${l.exit_reason}`].filter(Boolean).join("\n"),
    onclick: () => {
      setFocus({ pid: l.pid_id }, { history: true });
      timeline.scrollToLane(l.pid_id);
      if (l.first !== null && (focus.t < l.first || (l.last !== null && focus.t > l.last))) {
        setFocus({ t: l.first }); timeline.ensureVisible(l.first, l.pid_id);
      }
    } },
    el("td", {}, el("div", {}, el("b", {}, l.name || l.pid)),
       l.name ? el("div", { class: "empty" }, l.pid) : l.initial_call ? el("div", { class: "empty" }, l.initial_call) : ""),
    el("td", { class: "num" }, fmtCount(l.events)),
    // Without a recorded exit the process may have ended all the same (its lifecycle
    // was not traced): say what the recording knows, never "alive".
    el("td", { class: l.crashed ? "crash" : "" }, l.crashed ? "crashed" : l.exited !== null ? "exited" : "no exit seen"))),
    ...more);
}

function markSelected() {
  for (const tr of rows.children) tr.classList.toggle("selected", +tr.dataset.pid === focus.pid);
  const tr = rows.querySelector("tr.selected");
  if (tr) tr.scrollIntoView({ block: "nearest" });
}

export function renderFacts(info) {
  const box = document.getElementById("facts");
  const meta = info.meta || {};
  const agent = meta.agent_stats || {};
  const drops = meta.drops || {};
  const section = (name, ...content) => [el("h3", {}, name), ...content];
  const table = (pairs) => el("table", { class: "kv" }, pairs.filter((p) => p[1] !== undefined && p[1] !== null)
    .map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v)))));
  const canvas = el("canvas", { class: "rate", "data-testid": "rate-chart" });
  box.replaceChildren(
    ...section("Recording", table([["file", info.path], ["state", info.live ? "live: being recorded" : info.recovered ? "recovered after an unfinished recording" : "finished"],
      ["duration", fmtDuration(info.duration)], ["events", fmtCount(info.counts.events)],
      ["spans", fmtCount(info.counts.spans)], ["messages", fmtCount(info.counts.messages)],
      ["processes", fmtCount(info.counts.processes)], ["recorder", meta.recorder_version]])),
    ...section("Event rate", canvas),
    ...section("Nodes", table(info.nodes.map((n) => [n.name, `OTP ${n.otp_release ?? "?"} · erts ${n.erts_version ?? "?"} · Elixir ${n.elixir_version ?? "–"}`]))),
    ...section("Traced", el("ul", {}, (meta.traces || []).map((t) => el("li", {},
      `${t.kind} ${t.target} — ${t.status}, captured ${fmtCount(t.captured)}, dropped ${fmtCount(t.dropped)}, sampled out ${fmtCount(t.sampled_out)}`)))),
    ...section("Limits", table(Object.entries(meta.limits || {}))),
    ...section("Sampling and drops", table([["agent received", agent.received], ["agent kept", agent.kept],
      ["sampled out", agent.sampled_out], ["adaptive rate", agent.adaptive_rate],
      ...Object.entries(drops)])),
    ...section("Losses", info.losses.length ? el("ul", {}, info.losses.map((l) => el("li", { class: "warn" },
      `${fmtCount(l.events)} events (${l.source}) before event #${l.before_seq}${l.time !== null ? ` at ${fmtTime(l.time)}` : ""}`))) : el("div", { class: "empty" }, "nothing was lost")),
    ...section("Breaker trips and session events", info.session_events.length ? el("ul", {}, info.session_events.map((s) =>
      el("li", { class: "warn" }, `${fmtTime(s.time)} ${s.what}: ${s.detail ?? ""}`))) : el("div", { class: "empty" }, "none")),
  );
  // About one bin per 4 pixels of the panel (220 px wide): finer bins of a bursty
  // recording draw as a comb.
  rateCanvas = canvas;
  api("/api/rate", { bins: 56 }).then((rate) => { rateData = rate; drawRate(canvas, rate); })
    .catch(() => {});
}

// The rate as a line over time (events per second in each bin), with the peak and
// the mean on the axis and errors as red ticks along the bottom: a steady recording
// reads as a steady line, not as a filled block.
function drawRate(canvas, rate) {
  const d = window.devicePixelRatio || 1;
  const r = canvas.getBoundingClientRect();
  if (!r.width || !r.height) return;  // hidden: drawn when its tab is shown
  canvas.width = r.width * d; canvas.height = r.height * d;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(d, 0, 0, d, 0, 0);
  const w = r.width, h = r.height, top = 14, bottom = h - 14, max = Math.max(1, ...rate.n);
  const total = Math.max(rate.duration, 1e-9);
  const x = (i) => ((rate.b[i] + 0.5) * rate.bin / total) * w;
  const y = (n) => bottom - (n / max) * (bottom - top);
  // A moving mean over three bins keeps the shape and drops the jitter.
  const smooth = rate.n.map((_, i) => {
    const near = rate.n.slice(Math.max(0, i - 1), i + 2);
    return near.reduce((a, b) => a + b, 0) / near.length;
  });
  const mean = rate.n.reduce((a, b) => a + b, 0) / Math.max(1, total / rate.bin);
  ctx.strokeStyle = "#e3e0f3"; ctx.beginPath();
  ctx.moveTo(0, y(mean)); ctx.lineTo(w, y(mean)); ctx.stroke();
  if (rate.b.length) {
    ctx.beginPath(); ctx.moveTo(x(0), bottom);
    for (let i = 0; i < rate.b.length; i++) ctx.lineTo(x(i), y(smooth[i]));
    ctx.lineTo(x(rate.b.length - 1), bottom); ctx.closePath();
    ctx.fillStyle = "rgba(141, 116, 216, 0.18)"; ctx.fill();
    ctx.beginPath();
    for (let i = 0; i < rate.b.length; i++) ctx[i ? "lineTo" : "moveTo"](x(i), y(smooth[i]));
    ctx.strokeStyle = "#6d55c4"; ctx.lineWidth = 1.5; ctx.stroke();
  }
  ctx.fillStyle = "#e0605a";
  for (let i = 0; i < rate.b.length; i++) if (rate.e[i]) ctx.fillRect(x(i) - 1, bottom + 2, 2, 5);
  ctx.fillStyle = "#6b7380"; ctx.font = "10px system-ui";
  ctx.fillText(`peak ${fmtCount(Math.round(max / rate.bin))}/s · mean ${fmtCount(Math.round(mean / rate.bin))}/s`, 2, 10);
  ctx.fillText("0 s", 2, h - 2);
  const end = fmtTime(total);
  ctx.fillText(end, w - ctx.measureText(end).width - 2, h - 2);
}
