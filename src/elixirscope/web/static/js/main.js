// Starts the page: facts, lanes, the focus from the address, then every view.
import { api, stream, token } from "./api.js";
import { focus, setFocus, readHash } from "./focus.js";
import { timeline } from "./timeline.js";
import { initInspector } from "./inspector.js";
import { initState, setDuration } from "./statepanel.js";
import { initSearch, suggestSearches } from "./search.js";
import { initPanels, setProcesses, renderFacts } from "./panels.js";
import { initShortcuts } from "./shortcuts.js";
import { loadFindings } from "./findings.js";
import { initMetrics } from "./metrics.js";
import { initRequests, loadRequests } from "./requests.js";

window.__es = { painted: 0, ready: false, timeline, focus };

async function loadAll(first) {
  // Both at once; then the timeline's window is asked for before the panels render.
  const [info, { lanes }] = await Promise.all([api("/api/info"), api("/api/lanes")]);
  document.getElementById("rec-name").textContent = info.name;
  document.title = `ElixirScope — ${info.name}`;
  const badge = document.getElementById("live-badge");
  badge.hidden = !info.live && !window.__es.wasLive;
  badge.textContent = info.live ? "LIVE" : "FINISHED";
  badge.classList.toggle("done", !info.live);
  if (info.live) window.__es.wasLive = true;
  timeline.setInfo(info);
  timeline.setLanes(lanes);
  if (first) {
    const wanted = readHash();
    const d = Math.max(info.duration, 1e-6);
    setFocus({ t0: -d * 0.01, t1: d * 1.01, t: 0, ...wanted });
    if (wanted.pid !== undefined) timeline.scrollToLane(wanted.pid);
  }
  timeline.refetch(0);
  setProcesses(lanes);
  if (first && focus.pid !== null) {
    document.querySelector("#process-rows tr.selected")?.scrollIntoView({ block: "nearest" });
  }
  renderFacts(info);
  loadFindings().then((found) => {
    // The tab says there is something wrong, in its severity's colour.
    const tab = document.querySelector("[data-tab=findings]");
    tab.classList.toggle("alert", found.some((f) => f.severity === "critical" || f.severity === "error"));
    window.__es.findings = found;
  });
  loadRequests().then((found) => { window.__es.requests = found; });
  suggestSearches(info, lanes);
  setDuration(info.duration);
  window.__es.info = info;
  return info;
}

async function start() {
  timeline.init();
  initInspector();
  initState();
  initSearch();
  initPanels();
  initShortcuts();
  initMetrics();
  initRequests();
  document.getElementById("copy-link").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(location.href); } catch { /* no clipboard: the address bar has it */ }
  });
  window.addEventListener("popstate", () => setFocus(readHash()));
  let info;
  try {
    info = await loadAll(true);
  } catch (error) {
    document.getElementById("rec-name").textContent = error.message;
    document.getElementById("lod").textContent = token ? error.message : "this page needs the address with ?token=… that the server printed";
    return;
  }
  window.__es.ready = true;
  let lanesAt = 0;
  stream({
    update: async (u) => {
      setDuration(u.duration);
      const following = focus.t1 >= (window.__es.info.duration || 0) * 0.98;
      window.__es.info.duration = u.duration;
      timeline.setInfo(window.__es.info);
      if (following) {
        const span = focus.t1 - focus.t0;
        setFocus({ t1: u.duration * 1.01, t0: u.duration * 1.01 - span });
      }
      timeline.refetch(100);
      if (performance.now() - lanesAt > 2000) {
        lanesAt = performance.now();
        const { lanes } = await api("/api/lanes");
        timeline.setLanes(lanes); setProcesses(lanes);
      }
    },
    finished: async () => { await loadAll(false); },
  });
  void info;
}

start();
