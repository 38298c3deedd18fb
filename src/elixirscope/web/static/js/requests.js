// The HTTP requests of a framework trace (record --phoenix): a list in the left panel;
// a click on one shows its waterfall (dispatch, plug pipeline, queries ...) under the
// list and focuses the timeline on it. A click on a waterfall row selects that span.
import { api } from "./api.js";
import { setFocus } from "./focus.js";
import { el, fmtTime } from "./format.js";
import { timeline } from "./timeline.js";

// The Requests tab widens the left panel: a waterfall needs room for its labels.
export function initRequests() {
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => {
      document.querySelector("main").classList.toggle("wide-left", button.dataset.tab === "requests");
    });
  }
}

export async function loadRequests() {
  const tab = document.querySelector("[data-tab=requests]");
  const list = document.getElementById("request-rows");
  let answer;
  try {
    answer = await api("/api/requests");
  } catch (error) {
    list.replaceChildren(el("div", { class: "empty" }, error.message));
    return [];
  }
  const requests = answer.requests;
  // A recording without a framework trace has no requests: no tab either.
  tab.hidden = !requests.length;
  document.getElementById("requests-count").textContent = requests.length ? ` (${requests.length})` : "";
  list.replaceChildren(...requests.map((r) => el("div", {
    class: `request${r.status >= 500 || r.exception ? " failed" : ""}`, "data-testid": "request",
    "data-span": r.span_id, title: r.exception ? `raised ${r.exception}${r.raised_in ? ` in ${r.raised_in}` : ""}` : r.action || "",
    onclick: () => showRequest(r) },
    el("span", { class: "status" }, r.status ?? "–"),
    el("span", { class: "what" }, `${r.method} ${r.route || r.path}`),
    el("span", { class: "num" }, r.duration_ms === null ? "open" : `${r.duration_ms.toFixed(1)} ms`),
    el("span", { class: "num empty" }, r.queries ? `${r.queries} q` : ""))));
  return requests;
}

export async function showRequest(request) {
  for (const row of document.querySelectorAll("#request-rows .request")) {
    row.classList.toggle("selected", Number(row.dataset.span) === request.span_id);
  }
  const end = request.start + (request.duration_ms ?? 0) / 1000;
  const pad = Math.max((end - request.start) * 0.1, 0.0005);
  setFocus({ t0: request.start - pad, t1: end + pad, t: request.start, pid: request.pid_id,
             sel: { type: "span", id: request.span_id } }, { history: true });
  timeline.scrollToLane(request.pid_id);
  const body = document.getElementById("waterfall");
  body.hidden = false;
  let answer;
  try {
    answer = await api(`/api/requests/${request.span_id}/waterfall`);
  } catch (error) {
    body.replaceChildren(el("div", { class: "empty" }, error.message));
    return;
  }
  const total = Math.max(request.duration_ms ?? 0, ...answer.rows.map((w) => w.offset_ms + (w.duration_ms ?? 0)), 1e-6);
  body.replaceChildren(
    el("div", { class: "waterfall-head" }, `${request.method} ${request.path} · ${request.status ?? "–"} · `
       + `${(request.duration_ms ?? 0).toFixed(1)} ms · ${fmtTime(request.start)}`),
    ...answer.rows.map((row) => el("div", {
      class: `wf-row ${row.kind}${row.outcome === "exception" ? " failed" : ""}`, "data-testid": "waterfall-row",
      "data-kind": row.kind, title: `${row.label}\n+${row.offset_ms.toFixed(2)} ms, ${row.duration_ms === null ? "open" : row.duration_ms.toFixed(2) + " ms"}`,
      onclick: () => {
        const t = request.start + row.offset_ms / 1000;
        setFocus({ t, pid: row.pid_id, sel: { type: "span", id: row.span_id } }, { history: true });
      } },
      el("div", { class: "wf-label", style: `padding-left:${row.depth * 8}px` }, row.label),
      el("div", { class: "wf-track" }, el("div", {
        class: "wf-bar",
        style: `left:${(100 * row.offset_ms / total).toFixed(3)}%;width:${Math.max(0.5, 100 * (row.duration_ms ?? (total - row.offset_ms)) / total).toFixed(3)}%` })),
      el("div", { class: "wf-ms num" }, row.duration_ms === null ? "open" : row.duration_ms.toFixed(1)))));
}
