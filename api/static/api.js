// The console's only way to the API: same-origin fetches of documented /v1 endpoints,
// the bearer token from sessionStorage, and every failure turned into an ApiError whose
// message a person can read (RFC 9457 problem details when the API sent one).

const TOKEN_KEY = "conveyor.token";

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return ""; // storage disabled: the console still works against an open API
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: nothing to keep */
  }
  session = null; // the stream cookie follows the token
  window.dispatchEvent(new CustomEvent("conveyor:token"));
}

// EventSource cannot send an Authorization header: POST /v1/session keeps the token in
// an HttpOnly, SameSite=Strict cookie that only the event-stream routes accept, so no
// token ever lands in a stream's URL (where logs and history would keep it).
let session = null;
function ensureSession(fresh = false) {
  if (fresh) session = null;
  if (!session) {
    session = getToken() ? request("POST", "/v1/session").then(() => true) : Promise.resolve(false);
    session.catch(() => {
      session = null; // tried again next time
    });
  }
  return session;
}

// Follow server-sent events: on = {eventName: (data, id) => ...}. Reconnects are the
// browser's (it resends Last-Event-ID); when the server refuses the stream (an expired
// cookie, a restart), a new one resumes from the last id seen, after re-opening the
// session. onTrouble(message or null) reports a stream that stays down.
// resumable: the route takes the last id in its query too (GET /v1/events).
export function eventStream(path, { query, on, signal, onTrouble, resumable = false }) {
  let lastId = "";
  let failures = 0;
  let source = null;
  let timer = null;
  const open = async (fresh) => {
    if (signal.aborted) return;
    try {
      await ensureSession(fresh);
    } catch (err) {
      onTrouble?.(`live updates stopped: ${err.message}`);
    }
    if (signal.aborted) return;
    const url = new URL(`.${path}`, document.baseURI);
    const resume = resumable ? { last_event_id: lastId } : {};
    for (const [key, value] of Object.entries({ ...(query || {}), ...resume })) {
      if (value) url.searchParams.set(key, String(value));
    }
    source = new EventSource(url.href);
    source.onopen = () => {
      failures = 0;
      onTrouble?.(null);
    };
    for (const [name, handle] of Object.entries(on)) {
      source.addEventListener(name, (e) => {
        if (e.lastEventId) lastId = e.lastEventId;
        handle(JSON.parse(e.data), e.lastEventId);
      });
    }
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return; // the browser reconnects
      failures += 1;
      if (failures > 1) onTrouble?.("live updates are interrupted; reconnecting…");
      timer = window.setTimeout(() => open(true), Math.min(1000 * 2 ** failures, 30000));
    };
  };
  signal.addEventListener("abort", () => {
    if (timer !== null) window.clearTimeout(timer);
    source?.close();
  });
  open(false);
  return { close: () => source?.close() };
}

const STATUS_TEXT = {
  0: "Network error",
  400: "Malformed request",
  401: "Authentication required",
  403: "Forbidden",
  404: "Not found",
  409: "Conflict",
  413: "Content too large",
  415: "Unsupported media type",
  422: "Invalid input",
  429: "Too many requests",
  500: "Internal error",
  502: "Bad gateway",
  503: "Service unavailable",
  504: "Gateway timeout",
};

export class ApiError extends Error {
  constructor(status, problem, fallback) {
    const title = problem?.title || STATUS_TEXT[status] || `HTTP ${status}`;
    const detail = problem?.detail || fallback || "";
    super(detail ? `${title}: ${detail}` : title);
    this.name = "ApiError";
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.errors = Array.isArray(problem?.errors) ? problem.errors : [];
    this.retryAfter = null;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

function looksLikeProblem(data) {
  return data !== null && typeof data === "object" && ("title" in data || "detail" in data);
}

// request("GET", "/v1/tasks", {query: {status: "failed"}}) -> {status, data}
export async function request(method, path, { body, query, headers, signal } = {}) {
  // Relative to the page, so the console keeps working behind a path-prefix ingress.
  const url = new URL(`.${path}`, document.baseURI);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const sent = { Accept: "application/json, application/problem+json", ...(headers || {}) };
  const token = getToken();
  if (token) sent.Authorization = `Bearer ${token}`;
  const init = { method, headers: sent, signal, cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    sent["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url.href, init);
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    throw new ApiError(0, null, `cannot reach the API at ${url.origin} (${err?.message || err})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null; // a proxy's HTML error page: reported by status below
    }
  }
  if (!response.ok) {
    const error = new ApiError(
      response.status,
      looksLikeProblem(data) ? data : null,
      response.statusText ? `the API answered ${response.status} ${response.statusText}` : "",
    );
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return { status: response.status, data };
}

export const api = {
  closeSession: (opts) => request("DELETE", "/v1/session", opts),
  taskTypes: (opts) => request("GET", "/v1/task-types", opts),
  stats: (opts) => request("GET", "/v1/stats", opts),
  workers: (opts) => request("GET", "/v1/workers", opts),
  listTasks: (query, opts) => request("GET", "/v1/tasks", { ...opts, query }),
  getTask: (id, opts) => request("GET", `/v1/tasks/${encodeURIComponent(id)}`, opts),
  submit: (body, idempotencyKey, opts) =>
    request("POST", "/v1/tasks", {
      ...opts,
      body,
      headers: idempotencyKey ? { "Idempotency-Key": idempotencyKey } : undefined,
    }),
  cancel: (id, opts) => request("POST", `/v1/tasks/${encodeURIComponent(id)}/cancel`, opts),
  retry: (id, opts) => request("POST", `/v1/tasks/${encodeURIComponent(id)}/retry`, opts),
  schedules: (opts) => request("GET", "/v1/schedules", opts),
  getSchedule: (name, opts) => request("GET", `/v1/schedules/${encodeURIComponent(name)}`, opts),
  triggerSchedule: (name, opts) =>
    request("POST", `/v1/schedules/${encodeURIComponent(name)}/trigger`, opts),
};
