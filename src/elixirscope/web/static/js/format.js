// Times are seconds from the recording's start.
export function fmtTime(t, span = 1) {
  if (t === null || t === undefined) return "–";
  const digits = span < 0.00001 ? 7 : span < 0.001 ? 6 : span < 0.1 ? 4 : span < 10 ? 3 : 2;
  return `${t.toFixed(digits)} s`;
}

export function fmtDuration(d) {
  if (d === null || d === undefined) return "–";
  const a = Math.abs(d);
  if (a < 1e-6) return `${(d * 1e9).toFixed(0)} ns`;
  if (a < 1e-3) return `${(d * 1e6).toFixed(1)} µs`;
  if (a < 1) return `${(d * 1e3).toFixed(2)} ms`;
  return `${d.toFixed(3)} s`;
}

export function fmtCount(n) { return n === null || n === undefined ? "–" : n.toLocaleString("en"); }

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function shortMfa(mfa) {
  if (!mfa) return "";
  const parts = mfa.split(".");
  return parts.length > 2 ? parts.slice(-2).join(".") : mfa;
}
