// The timeline: one lane per process (grouped by node, nested by who spawned whom),
// call spans nested inside lanes, message arrows, lifecycle marks, drops and breaker
// trips; bins of activity when the server says the window is too full to show event
// by event. Plus the minimap of the whole recording.
import { api } from "./api.js";
import { focus, setFocus, onFocus } from "./focus.js";
import { fmtTime, fmtDuration, shortMfa } from "./format.js";

const LABEL_W = 210, AXIS_H = 22, LANE_H = 40, GROUP_H = 18, ROW_H = 9, MAX_ROWS = 3;
const state = {
  info: null, lanes: [], rows: [], laneTop: new Map(), totalH: 0, scrollY: 0,
  data: null, kinds: {}, matches: [], matchIndex: -1, hits: null, rate: null,
  pending: null, seq: 0, dpr: 1, painted: 0, requests: 0,
  findings: [], waits: null, waitsTimer: null,
};
let canvas, ctx, mini, mctx, tooltip, lodBadge;

export const timeline = {
  init, setInfo, setLanes, setMatches, setFindings, refetch, ensureVisible, scrollToLane, fit,
  waits: () => state.waits,
  itemsOnScreen: () => state.hits,
  hitAt: (px, py) => { const hit = hitTest(px, py); return hit && { type: hit.type, id: hit.id }; },
  stats: () => ({ painted: state.painted, mode: state.data && state.data.mode,
                  requests: state.requests, server_ms: state.data && state.data.server_ms,
                  t0: focus.t0, t1: focus.t1, window: state.data && [state.data.t0, state.data.t1] }),
  laneY: (pid) => laneScreenY(pid),
  plotX: (t) => x(t),
  canvas: () => canvas,
};

function init() {
  canvas = document.getElementById("timeline");
  ctx = canvas.getContext("2d");
  mini = document.getElementById("minimap");
  mctx = mini.getContext("2d");
  tooltip = document.getElementById("tooltip");
  lodBadge = document.getElementById("lod");
  new ResizeObserver(() => { resize(); refetch(); }).observe(canvas.parentElement);
  resize();
  bindMouse();
  bindMinimap();
  onFocus((changed) => {
    if (changed.t0 || changed.t1) refetch();
    if (changed.t) fetchWaits();
    draw();
  });
}

function setFindings(list) { state.findings = list; draw(); }

// Who waits on whom at the focus time (calls to other processes), drawn as arrows
// from the waiting lane to the called one at the cursor; a cycle is red.
function fetchWaits() {
  clearTimeout(state.waitsTimer);
  if (!state.info || state.info.live) { state.waits = null; return; }
  const t = focus.t;
  state.waitsTimer = setTimeout(async () => {
    try {
      const answer = await api("/api/waits", { t });
      if (answer.t === focus.t) { state.waits = answer; draw(); }
    } catch { state.waits = null; }
  }, 120);
}

function resize() {
  state.dpr = window.devicePixelRatio || 1;
  for (const c of [canvas, mini]) {
    const r = c.getBoundingClientRect();
    c.width = Math.max(1, Math.round(r.width * state.dpr));
    c.height = Math.max(1, Math.round(r.height * state.dpr));
  }
  draw();
}

const W = () => canvas.width / state.dpr;
const H = () => canvas.height / state.dpr;
const plotW = () => Math.max(10, W() - LABEL_W);
const x = (t) => LABEL_W + ((t - focus.t0) / (focus.t1 - focus.t0)) * plotW();
const tAt = (px) => focus.t0 + ((px - LABEL_W) / plotW()) * (focus.t1 - focus.t0);

function setInfo(info) {
  state.info = info;
  state.kinds = info.kinds;
  api("/api/rate", { bins: 1200 }).then((rate) => { state.rate = rate; drawMinimap(); })
    .catch(() => {});
  draw();
}

function setLanes(lanes) {
  state.lanes = lanes;
  state.rows = [];
  state.laneTop = new Map();
  let y = 0, node = null;
  for (const lane of lanes) {
    if (lane.node !== node) {
      node = lane.node;
      state.rows.push({ type: "group", node, y });
      y += GROUP_H;
    }
    state.rows.push({ type: "lane", lane, y });
    state.laneTop.set(lane.pid_id, y);
    y += LANE_H;
  }
  state.totalH = y;
  clampScroll();
  draw();
}

function clampScroll() {
  const max = Math.max(0, state.totalH - (H() - AXIS_H) + 10);
  state.scrollY = Math.min(Math.max(0, state.scrollY), max);
}

function laneScreenY(pid) {
  const top = state.laneTop.get(pid);
  return top === undefined ? null : AXIS_H + top - state.scrollY;
}

function visibleLanes() {
  const out = [];
  for (const row of state.rows) {
    if (row.type !== "lane") continue;
    const y = AXIS_H + row.y - state.scrollY;
    if (y + LANE_H >= -LANE_H * 5 && y <= H() + LANE_H * 5) out.push(row.lane.pid_id);
  }
  return out;
}

// --- data -------------------------------------------------------------------------

let fetchTimer = null;
function refetch(delay = 40) {
  clearTimeout(fetchTimer);
  if (delay <= 0) load();  // now: the request leaves before whatever the caller does next
  else fetchTimer = setTimeout(load, delay);
}

async function load() {
  if (!state.info) return;
  if (state.pending) state.pending.abort();
  const controller = new AbortController();
  state.pending = controller;
  const seq = ++state.seq;
  const query = { t0: focus.t0, t1: focus.t1, px: Math.round(plotW()) };
  if (state.lanes.length > 300) query.lanes = visibleLanes().join(",");
  try {
    state.requests++;
    const data = await api("/api/timeline", query, { signal: controller.signal });
    if (seq !== state.seq) return;
    state.data = data;
    state.data.eventsBySeq = new Map(data.events.map((e) => [e[0], e]));
    lodBadge.textContent = `${data.mode === "bins" ? `bins of ${fmtDuration(data.bin)}` : "every event"} · ~${data.estimate.toLocaleString("en")} events · ${data.server_ms} ms`;
    draw();
  } catch (error) {
    if (error.name !== "AbortError") lodBadge.textContent = error.message;
  }
}

function setMatches(matches, index) {
  state.matches = matches;
  state.matchIndex = index;
  draw();
}

// --- view changes -----------------------------------------------------------------

function duration() { return state.info ? Math.max(state.info.duration, 1e-6) : 1; }

function setView(t0, t1, extra = {}) {
  const total = duration();
  let width = Math.min(Math.max(t1 - t0, 2e-7), total * 1.2);
  let a = t0, b = t0 + width;
  const pad = total * 0.1;
  if (a < -pad) { a = -pad; b = a + width; }
  if (b > total + pad) { b = total + pad; a = b - width; }
  setFocus({ t0: a, t1: b, ...extra });
}

export function zoom(factor, at = null) {
  const center = at ?? ((focus.t >= focus.t0 && focus.t <= focus.t1) ? focus.t : (focus.t0 + focus.t1) / 2);
  setView(center - (center - focus.t0) * factor, center + (focus.t1 - center) * factor);
}

export function pan(fraction) {
  const d = (focus.t1 - focus.t0) * fraction;
  setView(focus.t0 + d, focus.t1 + d);
}

function fit() { const d = duration(); setView(-d * 0.01, d * 1.01); }

function ensureVisible(t, pid = null, { width = null } = {}) {
  const span = focus.t1 - focus.t0;
  if (width !== null && span > width) {
    setView(t - width / 2, t + width / 2);
  } else if (t < focus.t0 + span * 0.05 || t > focus.t1 - span * 0.05) {
    setView(t - span / 2, t + span / 2);
  }
  if (pid !== null) scrollToLane(pid, false);
}

function scrollToLane(pid, force = true) {
  const top = state.laneTop.get(pid);
  if (top === undefined) return;
  const y = AXIS_H + top - state.scrollY;
  if (force || y < AXIS_H || y + LANE_H > H()) {
    state.scrollY = top - (H() - AXIS_H) / 3;
    clampScroll();
    if (state.lanes.length > 300) refetch();
    draw();
  }
}

// --- drawing ----------------------------------------------------------------------

let frame = null;
function draw() {
  if (frame) return;
  frame = requestAnimationFrame(() => { frame = null; paint(); drawMinimap(); });
}

const hueCache = new Map();
function hue(name) {
  if (!hueCache.has(name)) {
    let h = 0;
    for (const c of name || "") h = (h * 31 + c.charCodeAt(0)) >>> 0;
    hueCache.set(name, h % 360);
  }
  return hueCache.get(name);
}

function paint() {
  const d = state.dpr;
  ctx.setTransform(d, 0, 0, d, 0, 0);
  ctx.clearRect(0, 0, W(), H());
  const hits = { spans: [], marks: [], arrows: [], lanes: [] };
  state.hits = hits;
  if (!state.info) return;
  const w = W(), h = H(), span = focus.t1 - focus.t0;
  // lane backgrounds and labels
  ctx.font = "11px system-ui, sans-serif";
  for (const row of state.rows) {
    const y = AXIS_H + row.y - state.scrollY;
    if (y > h || y + LANE_H < AXIS_H) continue;
    if (row.type === "group") {
      ctx.fillStyle = "#ece8f6"; ctx.fillRect(0, y, w, GROUP_H);
      ctx.fillStyle = "#4b3a7a"; ctx.fillText(`node ${row.node}`, 6, y + 13);
      continue;
    }
    const lane = row.lane;
    const selected = lane.pid_id === focus.pid;
    ctx.fillStyle = selected ? "#efe8ff" : (row.y / LANE_H) % 2 < 1 ? "#fff" : "#fafbfc";
    ctx.fillRect(0, y, w, LANE_H);
    ctx.strokeStyle = "#eceef2"; ctx.beginPath(); ctx.moveTo(0, y + LANE_H - 0.5);
    ctx.lineTo(w, y + LANE_H - 0.5); ctx.stroke();
    const indent = 6 + Math.min(lane.depth, 6) * 10;
    ctx.fillStyle = lane.crashed ? "#d23b3b" : "#1d232b";
    ctx.font = selected ? "bold 11px system-ui, sans-serif" : "11px system-ui, sans-serif";
    const title = lane.name || lane.pid;
    ctx.fillText(clip(title, LABEL_W - indent - 6), indent, y + 15);
    ctx.fillStyle = "#8a909a"; ctx.font = "10px system-ui, sans-serif";
    const sub = lane.name ? lane.pid : (lane.initial_call || "");
    ctx.fillText(clip(sub + (lane.crashed ? "  ✖ crashed" : lane.exited !== null ? "  exited" : ""),
                      LABEL_W - indent - 6), indent, y + 29);
    hits.lanes.push({ pid: lane.pid_id, y, h: LANE_H });
  }
  ctx.save();
  ctx.beginPath(); ctx.rect(LABEL_W, AXIS_H, w - LABEL_W, h - AXIS_H); ctx.clip();
  const data = state.data;
  if (data) {
    if (data.mode === "bins") paintBins(data);
    paintSpans(data, hits);
    if (data.mode === "detail") paintEvents(data, hits);
    paintMarks(data, hits);
    if (data.mode === "detail") paintArrows(data, hits);
  }
  paintMatches();
  paintWaits();
  paintLosses(h);
  // the focus cursor
  const cx = x(focus.t);
  ctx.strokeStyle = "#2f6fd6"; ctx.lineWidth = 1.5;
  ctx.beginPath(); ctx.moveTo(cx, AXIS_H); ctx.lineTo(cx, h); ctx.stroke(); ctx.lineWidth = 1;
  ctx.restore();
  // the label column's edge and the axis
  ctx.strokeStyle = "#d5d9e0"; ctx.beginPath(); ctx.moveTo(LABEL_W - 0.5, 0);
  ctx.lineTo(LABEL_W - 0.5, h); ctx.stroke();
  paintAxis(w, span);
  state.painted++;
  window.__es && (window.__es.painted = state.painted);
}

function clip(text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let s = text;
  while (s.length > 1 && ctx.measureText(s + "…").width > width) s = s.slice(0, -1);
  return s + "…";
}

function paintAxis(w, span) {
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, AXIS_H);
  ctx.strokeStyle = "#d5d9e0"; ctx.beginPath(); ctx.moveTo(0, AXIS_H - 0.5);
  ctx.lineTo(w, AXIS_H - 0.5); ctx.stroke();
  const step = niceStep(span / Math.max(plotW() / 110, 1));
  ctx.fillStyle = "#6b7380"; ctx.font = "10px system-ui, sans-serif";
  const first = Math.ceil(focus.t0 / step) * step;
  for (let t = first; t <= focus.t1; t += step) {
    const px = x(t);
    if (px < LABEL_W) continue;
    ctx.fillRect(px, AXIS_H - 5, 1, 5);
    ctx.fillText(fmtTime(t, span), px + 3, 14);
  }
  ctx.fillStyle = "#2f6fd6";
  ctx.fillText(`▼ ${fmtTime(focus.t, span)}`, Math.max(LABEL_W + 2, x(focus.t) - 6), 9);
  ctx.fillStyle = "#1d232b"; ctx.font = "bold 11px system-ui, sans-serif";
  ctx.fillText(`${fmtDuration(span)} shown`, 8, 15);
  paintFindingMarks();
}

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function paintBins(data) {
  const bw = data.bin;
  let max = 1;
  for (const lane of Object.values(data.bins)) for (const n of lane.n) if (n > max) max = n;
  const logMax = Math.log1p(max);
  for (const [pid, lane] of Object.entries(data.bins)) {
    const y = laneScreenY(+pid);
    if (y === null || y > H() || y + LANE_H < AXIS_H) continue;
    for (let i = 0; i < lane.b.length; i++) {
      const t = lane.b[i] * bw;
      const x0 = x(t), x1 = x(t + bw);
      if (x1 < LABEL_W || x0 > W()) continue;
      const a = 0.15 + 0.85 * Math.log1p(lane.n[i]) / logMax;
      ctx.fillStyle = lane.e[i] ? `rgba(210,59,59,${a})` : `rgba(106,63,209,${a})`;
      ctx.fillRect(x0, y + 29, Math.max(1, x1 - x0), 8);
    }
  }
}

function spanColor(name, outcome) {
  if (outcome === "exception" || outcome === "exit") return "#e0605a";
  return `hsl(${hue(name)}, 55%, ${outcome === "open" ? 80 : 68}%)`;
}

function paintSpans(data, hits) {
  const fns = data.functions;
  ctx.font = "8px system-ui, sans-serif";
  for (const s of data.spans) {
    const [id, pid, depth, start, end, outcome, mfa] = s;
    const y0 = laneScreenY(pid);
    if (y0 === null || y0 > H() || y0 + LANE_H < AXIS_H) continue;
    const x0 = Math.max(x(start), LABEL_W - 2), x1 = Math.min(x(end), W() + 2);
    if (x1 < LABEL_W || x0 > W()) continue;
    const row = Math.min(depth, MAX_ROWS) - 1;
    const y = y0 + 2 + row * ROW_H;
    const name = fns[mfa] || "?";
    const selected = focus.sel && focus.sel.type === "span" && focus.sel.id === id;
    ctx.fillStyle = spanColor(name.split(".").slice(0, -1).join("."), outcome);
    const width = Math.max(1, x1 - x0);
    ctx.fillRect(x0, y, width, ROW_H - 1);
    if (selected) { ctx.strokeStyle = "#e08a1e"; ctx.lineWidth = 2; ctx.strokeRect(x0, y, width, ROW_H - 1); ctx.lineWidth = 1; }
    if (width > 40) {
      ctx.fillStyle = "#1d232b";
      ctx.fillText(clip(shortMfa(name), width - 4), x0 + 2, y + 7);
    }
    hits.spans.push({ id, pid, x: x0, y, w: width, h: ROW_H - 1, name, start, end, outcome });
  }
}

const KIND_STYLE = {
  send: ["#2e9e5b", "▲"], receive: ["#2f6fd6", "▼"], exception: ["#e08a1e", "◆"],
  spawn: ["#2e9e5b", "+"], spawned: ["#2e9e5b", "●"], exit: ["#6b7380", "■"],
  register: ["#8a4fd6", "●"], unregister: ["#8a4fd6", "○"], link: ["#999", "–"],
  send_to_dead: ["#d23b3b", "▲"], getting_linked: ["#999", "–"],
};

function paintEvents(data, hits) {
  ctx.font = "9px system-ui, sans-serif";
  const kinds = state.kinds;
  for (const e of data.events) {
    const [seq, pid, kindCode, t] = e;
    const kind = kinds[kindCode];
    const style = KIND_STYLE[kind];
    if (!style) continue; // calls and returns are the spans
    const y0 = laneScreenY(pid);
    if (y0 === null || y0 > H() || y0 + LANE_H < AXIS_H) continue;
    const px = x(t);
    if (px < LABEL_W || px > W()) continue;
    ctx.fillStyle = style[0];
    ctx.fillText(style[1], px - 3, y0 + 37);
    const selected = focus.sel && focus.sel.type === "event" && focus.sel.id === seq;
    if (selected) { ctx.strokeStyle = "#e08a1e"; ctx.lineWidth = 2; ctx.strokeRect(px - 5, y0 + 28, 10, 11); ctx.lineWidth = 1; }
    hits.marks.push({ seq, pid, kind, t, x: px, y: y0 + 33 });
  }
}

function paintMarks(data, hits) {
  for (const [seq, pid, kind, t, crash] of data.marks || []) {
    const y0 = laneScreenY(pid);
    if (y0 === null || y0 > H() || y0 + LANE_H < AXIS_H) continue;
    const px = x(t);
    if (px < LABEL_W - 5 || px > W() + 5) continue;
    if (crash) {
      ctx.strokeStyle = "#d23b3b"; ctx.lineWidth = 2.5;
      ctx.beginPath(); ctx.moveTo(px - 6, y0 + 6); ctx.lineTo(px + 6, y0 + LANE_H - 6);
      ctx.moveTo(px + 6, y0 + 6); ctx.lineTo(px - 6, y0 + LANE_H - 6); ctx.stroke();
      ctx.lineWidth = 1;
      hits.marks.push({ seq, pid, kind: "crash", t, x: px, y: y0 + LANE_H / 2 });
    } else if (data.mode === "bins") {
      ctx.fillStyle = kind === "exit" ? "#6b7380" : "#2e9e5b";
      ctx.fillRect(px - 1, y0 + 26, 2, 12);
      hits.marks.push({ seq, pid, kind, t, x: px, y: y0 + 32 });
    }
  }
}

function paintArrows(data, hits) {
  for (const m of data.messages) {
    const [id, sender, receiver, sent, received, sendSeq, receiveSeq, dead] = m;
    if (sent === null || received === null || sender === null || receiver === null) continue;
    const ya = laneScreenY(sender), yb = laneScreenY(receiver);
    if (ya === null || yb === null) continue;
    const x0 = x(sent), x1 = x(received);
    const y0 = ya + LANE_H - 8, y1 = yb + LANE_H - 10;
    if ((x0 < LABEL_W && x1 < LABEL_W) || (x0 > W() && x1 > W())) continue;
    if ((y0 < AXIS_H && y1 < AXIS_H) || (y0 > H() && y1 > H())) continue;
    const selected = focus.sel && focus.sel.type === "message" && focus.sel.id === id;
    ctx.strokeStyle = selected ? "#e08a1e" : dead ? "#d23b3b" : "rgba(47,111,214,0.55)";
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = selected ? 2.5 : 1.2;
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
    const angle = Math.atan2(y1 - y0, x1 - x0);
    ctx.beginPath(); ctx.moveTo(x1, y1);
    ctx.lineTo(x1 - 7 * Math.cos(angle - 0.4), y1 - 7 * Math.sin(angle - 0.4));
    ctx.lineTo(x1 - 7 * Math.cos(angle + 0.4), y1 - 7 * Math.sin(angle + 0.4));
    ctx.closePath(); ctx.fill();
    ctx.lineWidth = 1;
    hits.arrows.push({ id, sender, receiver, sendSeq, receiveSeq, x0, y0, x1, y1 });
  }
}

function paintMatches() {
  for (let i = 0; i < state.matches.length; i++) {
    const m = state.matches[i];
    const y0 = laneScreenY(m.pid_id);
    if (y0 === null) continue;
    const px = x(m.time);
    if (px < LABEL_W || px > W()) continue;
    ctx.fillStyle = i === state.matchIndex ? "rgba(255,170,0,0.9)" : "rgba(255,200,0,0.55)";
    ctx.fillRect(px - 1.5, y0 + 1, 3, LANE_H - 2);
  }
}

function paintWaits() {
  const waits = state.waits;
  if (!waits || !waits.edges.length) return;
  const cx = x(focus.t);
  ctx.font = "10px system-ui, sans-serif";
  for (const edge of waits.edges) {
    const from = laneScreenY(edge.from), to = edge.to === null ? null : laneScreenY(edge.to);
    if (from === null) continue;
    const y0 = from + LANE_H / 2;
    const y1 = to === null ? y0 - LANE_H / 2 : to + LANE_H / 2;
    ctx.strokeStyle = edge.in_cycle ? "#d23b3b" : "#8d74d8"; ctx.lineWidth = edge.in_cycle ? 2 : 1.2;
    ctx.setLineDash([5, 3]);
    ctx.beginPath(); ctx.moveTo(cx, y0);
    ctx.bezierCurveTo(cx + 40, y0, cx + 40, y1, cx + 4, y1); ctx.stroke();
    ctx.setLineDash([]); ctx.lineWidth = 1;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath(); ctx.moveTo(cx + 4, y1); ctx.lineTo(cx + 11, y1 - 4); ctx.lineTo(cx + 11, y1 + 4); ctx.fill();
    ctx.fillText(`waits: ${edge.request}`, cx + 14, y0 - 3);
  }
}

const SEVERITY_COLOURS = { critical: "#d23b3b", error: "#e0605a", warning: "#e08a1e", info: "#2f6fd6" };

// A finding's start as a triangle on the axis (its severity's colour).
function paintFindingMarks() {
  for (const finding of state.findings) {
    if (finding.start === null) continue;
    const px = x(finding.start);
    if (px < LABEL_W || px > W()) continue;
    ctx.fillStyle = SEVERITY_COLOURS[finding.severity] || "#2f6fd6";
    ctx.beginPath(); ctx.moveTo(px - 5, AXIS_H - 9); ctx.lineTo(px + 5, AXIS_H - 9);
    ctx.lineTo(px, AXIS_H - 1); ctx.fill();
  }
}

function paintLosses(h) {
  const info = state.info;
  ctx.font = "10px system-ui, sans-serif";
  for (const loss of info.losses) {
    if (loss.time === null) continue;
    const px = x(loss.time);
    if (px < LABEL_W || px > W()) continue;
    ctx.strokeStyle = "#e08a1e"; ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(px, AXIS_H); ctx.lineTo(px, h); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = "#e08a1e";
    ctx.fillText(`dropped ${loss.events ?? "?"} (${loss.source})`, px + 3, AXIS_H + 10);
  }
  for (const ev of info.session_events) {
    const px = x(ev.time);
    if (px < LABEL_W || px > W()) continue;
    ctx.strokeStyle = "#d23b3b"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(px, AXIS_H); ctx.lineTo(px, h); ctx.stroke(); ctx.lineWidth = 1;
    ctx.fillStyle = "#d23b3b";
    ctx.fillText(ev.what === "breaker_trip" ? "limit tripped: tracing stopped" : ev.what, px + 3, AXIS_H + 22);
  }
}

// --- the minimap ------------------------------------------------------------------

function drawMinimap() {
  if (!mctx) return;
  const d = state.dpr, w = mini.width / d, h = mini.height / d;
  mctx.setTransform(d, 0, 0, d, 0, 0);
  mctx.clearRect(0, 0, w, h);
  if (!state.info) return;
  const total = duration();
  const mx = (t) => LABEL_W + (t / total) * (w - LABEL_W - 4);
  mctx.fillStyle = "#6b7380"; mctx.font = "10px system-ui, sans-serif";
  mctx.fillText("whole recording", 8, 14);
  mctx.fillText(fmtDuration(total), 8, 28);
  const rate = state.rate;
  if (rate && rate.n.length) {
    const max = Math.max(...rate.n);
    for (let i = 0; i < rate.b.length; i++) {
      const t = rate.b[i] * rate.bin;
      const bh = Math.max(1, (rate.n[i] / max) * (h - 8));
      mctx.fillStyle = rate.e[i] ? "#e0605a" : "#b7a5e6";
      mctx.fillRect(mx(t), h - 2 - bh, Math.max(1, mx(t + rate.bin) - mx(t)), bh);
    }
    for (const [, , , t] of rate.marks) {
      mctx.fillStyle = "#d23b3b"; mctx.fillRect(mx(t) - 1, 0, 2, h);
    }
  }
  for (const m of state.matches) { mctx.fillStyle = "rgba(255,170,0,0.8)"; mctx.fillRect(mx(m.time), 0, 1, 8); }
  for (const loss of state.info.losses) {
    if (loss.time !== null) { mctx.fillStyle = "#e08a1e"; mctx.fillRect(mx(loss.time), 0, 1, h); }
  }
  const a = mx(Math.max(focus.t0, 0)), b = mx(Math.min(focus.t1, total));
  mctx.fillStyle = "rgba(47,111,214,0.12)"; mctx.fillRect(a, 1, Math.max(2, b - a), h - 2);
  mctx.strokeStyle = "#2f6fd6"; mctx.strokeRect(a, 1, Math.max(2, b - a), h - 2);
  mctx.fillStyle = "#2f6fd6"; mctx.fillRect(mx(focus.t) - 0.5, 0, 1.5, h);
}

function bindMinimap() {
  const at = (event) => {
    const r = mini.getBoundingClientRect();
    const total = duration();
    return ((event.clientX - r.left - LABEL_W) / (r.width - LABEL_W - 4)) * total;
  };
  let dragging = false;
  const move = (event) => {
    const t = at(event), span = focus.t1 - focus.t0;
    setView(t - span / 2, t + span / 2);
  };
  mini.addEventListener("mousedown", (event) => { dragging = true; move(event); });
  window.addEventListener("mousemove", (event) => { if (dragging) move(event); });
  window.addEventListener("mouseup", () => { dragging = false; });
}

// --- the mouse ----------------------------------------------------------------------

function hitTest(px, py) {
  const hits = state.hits;
  if (!hits) return null;
  if (px < LABEL_W) {
    const lane = hits.lanes.find((l) => py >= l.y && py < l.y + l.h);
    return lane ? { type: "lane", pid: lane.pid } : null;
  }
  let best = null, bestD = 7;
  for (const m of hits.marks) {
    const d = Math.hypot(m.x - px, m.y - py);
    if (d < bestD) { bestD = d; best = { type: "event", id: m.seq, pid: m.pid, t: m.t, label: `${m.kind}` }; }
  }
  if (best) return best;
  bestD = 5;
  for (const a of hits.arrows) {
    const d = segmentDistance(px, py, a.x0, a.y0, a.x1, a.y1);
    if (d < bestD) { bestD = d; best = { type: "message", id: a.id, pid: a.receiver, arrow: a }; }
  }
  if (best) return best;
  for (let i = hits.spans.length - 1; i >= 0; i--) {
    const s = hits.spans[i];
    if (px >= s.x - 1 && px <= s.x + s.w + 1 && py >= s.y && py <= s.y + s.h + 1) {
      return { type: "span", id: s.id, pid: s.pid, t: s.start, span: s };
    }
  }
  const lane = hits.lanes.find((l) => py >= l.y && py < l.y + l.h);
  return lane ? { type: "lane", pid: lane.pid } : null;
}

function segmentDistance(px, py, x0, y0, x1, y1) {
  const dx = x1 - x0, dy = y1 - y0;
  const len = dx * dx + dy * dy;
  const t = len ? Math.max(0, Math.min(1, ((px - x0) * dx + (py - y0) * dy) / len)) : 0;
  return Math.hypot(px - (x0 + t * dx), py - (y0 + t * dy));
}

function bindMouse() {
  let drag = null;
  const local = (event) => {
    const r = canvas.getBoundingClientRect();
    return [event.clientX - r.left, event.clientY - r.top];
  };
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [px] = local(event);
    if (event.shiftKey && !event.deltaX) {
      state.scrollY += event.deltaY; clampScroll(); draw();
      if (state.lanes.length > 300) refetch(120);
      return;
    }
    if (Math.abs(event.deltaX) > Math.abs(event.deltaY)) {
      pan(event.deltaX / plotW());
      return;
    }
    const factor = Math.pow(1.0018, event.deltaY * (event.deltaMode === 1 ? 30 : 1));
    zoom(factor, px > LABEL_W ? tAt(px) : null);
  }, { passive: false });
  canvas.addEventListener("mousedown", (event) => {
    const [px, py] = local(event);
    drag = { px, py, t0: focus.t0, t1: focus.t1, scrollY: state.scrollY, moved: false };
    canvas.classList.add("dragging");
  });
  window.addEventListener("mousemove", (event) => {
    const [px, py] = local(event);
    if (drag) {
      const dx = px - drag.px, dy = py - drag.py;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) {
        const dt = (dx / plotW()) * (drag.t1 - drag.t0);
        state.scrollY = drag.scrollY - dy; clampScroll();
        setView(drag.t0 - dt, drag.t1 - dt);
        draw();
      }
      return;
    }
    if (event.target !== canvas) { tooltip.hidden = true; return; }
    const hit = hitTest(px, py);
    showTooltip(hit, px, py);
  });
  window.addEventListener("mouseup", (event) => {
    if (!drag) return;
    canvas.classList.remove("dragging");
    const was = drag;
    drag = null;
    if (was.moved) return;
    const [px, py] = local(event);
    click(hitTest(px, py), px);
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });
}

function click(hit, px) {
  const t = px > LABEL_W ? tAt(px) : focus.t;
  if (!hit) { setFocus({ t }); return; }
  if (hit.type === "lane") { setFocus({ pid: hit.pid, ...(px > LABEL_W ? { t } : {}) }); return; }
  if (hit.type === "message") {
    const a = hit.arrow;
    setFocus({ sel: { type: "message", id: hit.id }, pid: a.receiver, t: tAt(a.x1) }, { history: true });
    return;
  }
  setFocus({ sel: { type: hit.type, id: hit.id }, pid: hit.pid, t: hit.t ?? t }, { history: true });
}

function showTooltip(hit, px, py) {
  if (!hit || hit.type === "lane") { tooltip.hidden = true; return; }
  let text = "";
  if (hit.type === "span") {
    const s = hit.span;
    text = `${s.name}\n${fmtDuration(s.end - s.start)} · ${s.outcome}`;
  } else if (hit.type === "message") {
    const lanes = new Map(state.lanes.map((l) => [l.pid_id, l]));
    const name = (pid) => { const l = lanes.get(pid); return l ? (l.name || l.pid) : pid; };
    text = `message ${name(hit.arrow.sender)} → ${name(hit.arrow.receiver)}`;
  } else {
    text = `${hit.label} at ${fmtTime(hit.t, focus.t1 - focus.t0)}`;
  }
  tooltip.textContent = text;
  tooltip.style.left = `${Math.min(px + 12, W() - 200)}px`;
  tooltip.style.top = `${py + 14}px`;
  tooltip.hidden = false;
}
