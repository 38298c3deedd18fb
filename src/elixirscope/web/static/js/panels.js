// The processes list (lifecycle, activity, exit reasons) and the recording's facts.
import { focus, setFocus, onFocus } from "./focus.js";
import { el, fmtTime, fmtCount, fmtDuration } from "./format.js";
import { timeline } from "./timeline.js";
import { api } from "./api.js";

let rows, filter, lanes = [];

export function initPanels() {
  rows = document.getElementById("process-rows");
  filter = document.getElementById("process-filter");
  filter.addEventListener("input", renderProcesses);
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => {
      for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b === button);
      for (const body of document.querySelectorAll(".tab-body")) body.hidden = body.id !== button.dataset.tab;
    });
  }
  onFocus((changed) => { if (changed.pid) markSelected(); });
}

export function setProcesses(list) { lanes = list; renderProcesses(); }

function renderProcesses() {
  const needle = filter.value.trim().toLowerCase();
  const shown = lanes.filter((l) => !needle || `${l.name || ""} ${l.pid} ${l.initial_call || ""}`.toLowerCase().includes(needle));
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
    el("td", {}, el("div", {}, "\u00a0".repeat(Math.min(l.depth, 6) * 2), el("b", {}, l.name || l.pid)),
       l.name ? el("div", { class: "empty" }, l.pid) : l.initial_call ? el("div", { class: "empty" }, l.initial_call) : ""),
    el("td", { class: "num" }, fmtCount(l.events)),
    // Without a recorded exit the process may have ended all the same (its lifecycle
    // was not traced): say what the recording knows, never "alive".
    el("td", { class: l.crashed ? "crash" : "" }, l.crashed ? "crashed" : l.exited !== null ? "exited" : "no exit seen"))));
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
  api("/api/rate", { bins: 200 }).then((rate) => drawRate(canvas, rate)).catch(() => {});
}

function drawRate(canvas, rate) {
  const d = window.devicePixelRatio || 1;
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, r.width * d); canvas.height = Math.max(1, r.height * d);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(d, 0, 0, d, 0, 0);
  const w = r.width, h = r.height, max = Math.max(1, ...rate.n);
  const total = Math.max(rate.duration, 1e-9);
  for (let i = 0; i < rate.b.length; i++) {
    const x0 = (rate.b[i] * rate.bin / total) * w, bw = Math.max(1, (rate.bin / total) * w);
    const bh = (rate.n[i] / max) * (h - 14);
    ctx.fillStyle = rate.e[i] ? "#e0605a" : "#8d74d8";
    ctx.fillRect(x0, h - bh, bw, bh);
  }
  ctx.fillStyle = "#6b7380"; ctx.font = "10px system-ui";
  ctx.fillText(`peak ${fmtCount(Math.round(max / rate.bin))} events/s`, 2, 10);
}
