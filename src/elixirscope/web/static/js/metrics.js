// The selected process's mailbox length and memory over the recording (the process
// metrics sampled while recording), with the focus time as a cursor.
import { api } from "./api.js";
import { focus, onFocus } from "./focus.js";
import { fmtCount, fmtTime } from "./format.js";

let canvas, note, series = null, asked = null;

export function initMetrics() {
  canvas = document.getElementById("metrics-chart");
  note = document.getElementById("metrics-note");
  onFocus((changed) => {
    if (changed.pid) load();
    else if (changed.t) draw();
  });
  new ResizeObserver(() => draw()).observe(canvas);
}

async function load() {
  const pid = focus.pid;
  asked = pid;
  series = null;
  if (pid === null) { say("Select a process (a lane) to see its mailbox and memory."); return; }
  try {
    const answer = await api(`/api/metrics/${pid}`);
    if (asked !== pid) return;
    series = answer.t.length ? answer : null;
    say(series ? "" : "No metrics were sampled for this process.");
  } catch (error) {
    say(error.message);
  }
}

function say(text) { note.textContent = text; note.hidden = !text; canvas.hidden = !!text; draw(); }

function draw() {
  if (!series || canvas.hidden) return;
  const d = window.devicePixelRatio || 1;
  const r = canvas.getBoundingClientRect();
  if (!r.width || !r.height) return;
  canvas.width = r.width * d; canvas.height = r.height * d;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(d, 0, 0, d, 0, 0);
  const w = r.width, h = r.height, top = 14, bottom = h - 4;
  const t0 = series.t[0], t1 = Math.max(series.t[series.t.length - 1], t0 + 1e-9);
  const px = (t) => ((t - t0) / (t1 - t0)) * (w - 2) + 1;
  const line = (values, colour) => {
    const max = Math.max(1, ...values);
    ctx.beginPath();
    values.forEach((v, i) => ctx[i ? "lineTo" : "moveTo"](px(series.t[i]), bottom - (v / max) * (bottom - top)));
    ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.stroke();
    return max;
  };
  const queueMax = line(series.queue, "#d23b3b");
  const memoryMax = line(series.memory, "#6d55c4");
  ctx.fillStyle = "#6b7380"; ctx.font = "10px system-ui";
  ctx.fillText(`mailbox ≤ ${fmtCount(queueMax)} · memory ≤ ${fmtCount(Math.round(memoryMax / 1024))} KB`, 2, 10);
  const at = series.t.findLastIndex((t) => t <= focus.t);
  ctx.strokeStyle = "#2f6fd6"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(px(focus.t), top); ctx.lineTo(px(focus.t), bottom); ctx.stroke();
  canvas.title = at < 0 ? "" : `at ${fmtTime(series.t[at])}: ${fmtCount(series.queue[at])} queued, ${fmtCount(Math.round(series.memory[at] / 1024))} KB`;
}
