// The one focus every view shares: a moment (t), a process (pid), a selection (sel)
// and the visible window (t0..t1). The address's hash carries it, so a moment can
// be shared as a link.
export const focus = { t: 0, pid: null, sel: null, t0: 0, t1: 1 };
const listeners = new Set();

export function onFocus(listener) { listeners.add(listener); }

export function setFocus(changes, { from = null, history = false } = {}) {
  const changed = {};
  for (const [key, value] of Object.entries(changes)) {
    const same = key === "sel"
      ? JSON.stringify(focus.sel) === JSON.stringify(value) : focus[key] === value;
    if (!same) { focus[key] = value; changed[key] = true; }
  }
  if (!Object.keys(changed).length) return;
  writeHash(history);
  for (const listener of listeners) listener(changed, from);
}

let hashTimer = null;
function writeHash(push) {
  clearTimeout(hashTimer);
  const write = () => {
    const parts = [`t=${focus.t.toFixed(9)}`, `view=${focus.t0.toFixed(9)},${focus.t1.toFixed(9)}`];
    if (focus.pid !== null) parts.push(`pid=${focus.pid}`);
    if (focus.sel) parts.push(`sel=${focus.sel.type}:${focus.sel.id}`);
    const hash = "#" + parts.join("&");
    if (hash === location.hash) return;
    if (push) history.pushState(null, "", hash); else history.replaceState(null, "", hash);
  };
  if (push) write(); else hashTimer = setTimeout(write, 150);
}

export function readHash() {
  const out = {};
  const params = new URLSearchParams(location.hash.slice(1));
  const t = parseFloat(params.get("t"));
  if (Number.isFinite(t)) out.t = t;
  const view = (params.get("view") || "").split(",").map(parseFloat);
  if (view.length === 2 && view.every(Number.isFinite) && view[1] > view[0]) {
    out.t0 = view[0]; out.t1 = view[1];
  }
  const pid = parseInt(params.get("pid"), 10);
  if (Number.isFinite(pid)) out.pid = pid;
  const sel = (params.get("sel") || "").match(/^(event|span|message):(-?\d+)$/);
  if (sel) out.sel = { type: sel[1], id: parseInt(sel[2], 10) };
  return out;
}
