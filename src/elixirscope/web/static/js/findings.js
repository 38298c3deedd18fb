// The findings (elixirscope diagnose): a list in the left panel and markers on the
// timeline's axis; a click on one focuses the timeline on its evidence.
import { api } from "./api.js";
import { setFocus } from "./focus.js";
import { el, fmtTime } from "./format.js";
import { timeline } from "./timeline.js";

export async function loadFindings() {
  const body = document.getElementById("findings");
  let answer;
  try {
    answer = await api("/api/findings");
  } catch (error) {
    body.replaceChildren(el("div", { class: "empty" }, error.message));
    return [];
  }
  const list = answer.findings;
  document.getElementById("findings-count").textContent = list.length ? ` (${list.length})` : "";
  body.replaceChildren(...(list.length ? list.map(render) : [el("div", { class: "empty" },
    answer.live ? "Findings come when the recording is finished."
      : "No findings: no deadlock, crash, overload, lost update, N+1 or outlier in what was recorded.")]));
  timeline.setFindings(list);
  return list;
}

function render(finding) {
  return el("div", { class: `finding ${finding.severity}`, "data-testid": "finding",
                     "data-kind": finding.kind, title: "Show it on the timeline",
                     onclick: () => showFinding(finding) },
    el("div", { class: "finding-head" }, el("span", { class: `severity ${finding.severity}` }, finding.severity),
       ` ${finding.kind} · ${fmtTime(finding.start ?? 0)}`),
    el("div", { class: "finding-title" }, finding.title),
    ...finding.details.slice(0, 4).map((line) => el("div", { class: "finding-detail" }, `· ${line}`)),
    ...finding.next_commands.slice(0, 2).map((line) => el("div", { class: "finding-next" }, `→ ${line}`)));
}

export function showFinding(finding) {
  const pid = finding.pid_ids.length ? finding.pid_ids[0] : null;
  setFocus({ ...finding.focus, ...(pid !== null ? { pid } : {}) }, { history: true });
  if (pid !== null) timeline.scrollToLane(pid);
}
