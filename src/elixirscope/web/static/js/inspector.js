// The inspector: the selected event, span or message, printed Elixir-style, with links
// to its caller, its sender or receiver, its span and its causal chain.
import { api } from "./api.js";
import { focus, setFocus, onFocus } from "./focus.js";
import { el, fmtTime, fmtDuration } from "./format.js";
import { timeline } from "./timeline.js";

let body;
let shown = null;

export function initInspector() {
  body = document.getElementById("inspector-body");
  onFocus((changed) => { if (changed.sel) show(); });
  show();
}

export function select(type, id, { t = null, pid = null } = {}) {
  const changes = { sel: { type, id } };
  if (t !== null) changes.t = t;
  if (pid !== null) changes.pid = pid;
  setFocus(changes, { history: true });
  if (t !== null) timeline.ensureVisible(t, pid);
}

async function show() {
  const sel = focus.sel;
  const key = sel ? `${sel.type}:${sel.id}` : null;
  if (key === shown) return;
  shown = key;
  if (!sel) { body.className = "empty"; body.textContent = "Click a span, an event or a message arrow."; return; }
  body.className = "";
  body.textContent = "loading …";
  try {
    if (sel.type === "event") render(event(await api(`/api/events/${sel.id}`)));
    else if (sel.type === "span") render(span(await api(`/api/spans/${sel.id}`)));
    else if (sel.type === "message") render(message(await api(`/api/messages/${sel.id}`)));
  } catch (error) {
    if (shown === key) { body.className = "empty"; body.textContent = error.message; }
  }
}

function render(nodes) { body.replaceChildren(...nodes); body.dataset.kind = focus.sel.type; }

function link(text, type, id, t, pid) {
  if (id === null || id === undefined) return null;
  return el("button", { class: "link", "data-link": type,
                        onclick: () => select(type, id, { t, pid }) }, text);
}

function kv(rows) {
  return el("table", { class: "kv" }, rows.filter((r) => r && r[1] !== null && r[1] !== undefined && r[1] !== "")
    .map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
}

function event(e) {
  const title = el("div", {}, el("span", { class: `pill ${e.kind}` }, e.kind), " ",
                   el("b", {}, e.mfa || e.pid_label || e.pid), " ",
                   el("span", { class: "empty" }, `#${e.seq}`));
  const what = { call: "arguments", return: "return value", exception: "{class, reason}",
                 send: "message", receive: "message", exit: "exit reason",
                 register: "name", spawn: "spawned", spawned: "spawned by" }[e.kind] || "payload";
  const links = el("div", { class: "links" },
    link("its span", "span", e.span_id, e.time, e.pid_id),
    link("parent span", "span", e.parent_span_id, null, e.pid_id),
    e.message && link("message", "message", e.message.message_id, e.time, e.pid_id),
    e.message && e.kind === "receive" && link(`sent by ${e.message.sender || "?"}`, "event", e.message.send_seq, e.message.sent, e.message.sender_pid_id),
    e.message && e.kind === "send" && link(`received by ${e.message.receiver || "?"}`, "event", e.message.receive_seq, e.message.received, e.message.receiver_pid_id),
    e.message && link("handler span", "span", e.message.handler_span_id, e.message.handled, e.message.receiver_pid_id));
  const causes = e.causes.length ? [el("h3", {}, "Causal chain (nearest first)"),
    el("ol", { class: "causes" }, e.causes.map((c) => el("li", {},
      el("button", { class: "link", "data-link": "cause", onclick: () => select("event", c.seq, { t: c.time, pid: c.pid_id }) },
         `${c.kind} ${c.mfa || ""}`), ` — ${c.relation}`)))] : [];
  const stack = e.stack && e.stack.length ? [el("h3", {}, "Raised in (innermost first)"),
    el("ol", { class: "causes", "data-testid": "inspector-stack" }, e.stack.map((f) => el("li", {},
      el("button", { class: "link", "data-link": "frame", onclick: () => select("span", f.span_id, { t: f.time, pid: e.pid_id }) },
         f.call))))] : [];
  return [title,
    kv([["process", e.pid_label === e.pid ? e.pid : `${e.pid} (${e.pid_label})`],
        ["time", fmtTime(e.time, 1e-6)], ["node", e.node], ["caller", e.caller],
        ["other", e.other_label && e.other_label !== e.other_pid ? `${e.other_pid} (${e.other_label})` : e.other_pid],
        ["target", e.target], ["truncated", e.truncated ? `yes (${e.original_size} bytes)` : null]]),
    el("h3", {}, what), el("pre", { "data-testid": "inspector-text" }, e.text), ...stack, links, ...causes];
}

function span(s) {
  const title = el("div", {}, el("span", { class: `pill ${s.outcome === "return" ? "call" : "exception"}` }, "span"),
                   " ", el("b", {}, s.mfa), " ", el("span", { class: "empty" }, `#${s.span_id}`));
  return [title,
    kv([["process", s.pid_label], ["start", fmtTime(s.start, 1e-6)],
        ["duration", fmtDuration(s.duration)], ["outcome", s.outcome], ["depth", String(s.depth)],
        ["calls inside", String(s.children)]]),
    el("h3", {}, "arguments"), el("pre", { "data-testid": "inspector-text" }, s.args),
    el("h3", {}, s.outcome === "return" ? "result" : s.outcome === "exception" ? "{class, reason}" : "exit / result"),
    el("pre", {}, s.result ?? "(none recorded)"),
    el("div", { class: "links" },
      link("call event", "event", s.call_seq, s.start, s.pid_id),
      link("end event", "event", s.end_seq, s.end, s.pid_id),
      link("parent span", "span", s.parent_span_id, null, s.pid_id),
      s.trigger && link(`triggered by a message from ${s.trigger.sender || "?"}`, "message", s.trigger.message_id, s.trigger.sent, s.trigger.sender_pid_id))];
}

function message(m) {
  const title = el("div", {}, el("span", { class: "pill send" }, "message"), " ",
                   el("b", {}, `${m.sender || "?"} → ${m.receiver || m.target || "?"}`));
  return [title,
    kv([["sent", fmtTime(m.sent, 1e-6)], ["received", fmtTime(m.received, 1e-6)],
        ["handled", m.handled === null ? null : fmtTime(m.handled, 1e-6)],
        ["queue time", m.queue_time === null ? null : fmtDuration(m.queue_time)],
        ["to", m.target], ["to dead", m.to_dead ? "yes: the receiver was not alive" : null]]),
    el("h3", {}, "message"), el("pre", { "data-testid": "inspector-text" }, m.text),
    el("div", { class: "links" },
      link("send event", "event", m.send_seq, m.sent, m.sender_pid_id),
      link("receive event", "event", m.receive_seq, m.received, m.receiver_pid_id),
      link("sending span", "span", m.send_span_id, m.sent, m.sender_pid_id),
      link("handler span", "span", m.handler_span_id, m.handled, m.receiver_pid_id))];
}
