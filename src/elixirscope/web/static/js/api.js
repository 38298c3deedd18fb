// The JSON API, with the session's token (from the page's address) on every request.
const params = new URLSearchParams(location.search);
export const token = params.get("token");

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

export async function api(path, query = {}, { signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = token ? { "X-ElixirScope-Token": token } : {};
  const response = await fetch(url, { headers, signal, cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    throw new ApiError(body && body.error ? body.error : `${response.status} ${response.statusText}`,
                       response.status);
  }
  return body;
}

// Server-sent events: a live recording's growth, and its end.
export function stream(handlers) {
  const url = new URL("/api/stream", location.origin);
  if (token) url.searchParams.set("token", token);
  const source = new EventSource(url);
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
  }
  return source;
}
