// Pieces every view shares: error boxes that say what went wrong in words, the token
// prompt, polling that stops with its view, and the task-type list.

import { api, ApiError, getToken, setToken } from "./api.js";
import { h } from "./dom.js";

// -- the token prompt ----------------------------------------------------------------------

let onTokenSaved = () => {};
// Set when the user closes the prompt without a token: polling views then stop reopening
// it every few seconds; their error box keeps a button to open it again.
let declined = false;

export function initTokenDialog(rerender) {
  onTokenSaved = rerender;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  let saved = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    input.value = "";
    saved = true;
    setToken(token);
    dialog.close();
    onTokenSaved();
  });
  dialog.addEventListener("close", () => {
    declined = !saved; // closed by Cancel or Escape
    saved = false;
  });
  document.getElementById("token-cancel").addEventListener("click", () => dialog.close());
  window.addEventListener("conveyor:token", () => {
    declined = false;
  });
}

export function askForToken(error, { automatic = false } = {}) {
  const dialog = document.getElementById("token-dialog");
  if (dialog.open || (automatic && declined)) return;
  const why = document.getElementById("token-why");
  if (error?.status === 403) {
    why.textContent = `The current token is not allowed to do this (${error.detail || "forbidden"}). Enter another token.`;
  } else if (getToken()) {
    why.textContent = `The API rejected the token${error?.detail ? `: ${error.detail}` : ""}. Enter a valid token.`;
  } else {
    why.textContent = `This Conveyor API requires a bearer token${error?.detail ? ` (${error.detail})` : ""}.`;
  }
  dialog.showModal();
  document.getElementById("token-input").focus();
}

// -- errors --------------------------------------------------------------------------------

const FIELD_NAMES = {
  "/type": "Task type",
  "/payload": "Payload",
  "/delay_seconds": "Delay",
  "/run_at": "Run at",
  "/max_attempts": "Max attempts",
  "/headers/Idempotency-Key": "Idempotency-Key",
  "/query/status": "Status filter",
  "/query/type": "Type filter",
  "/query/limit": "Page size",
  "/query/cursor": "Page cursor",
};

// "/payload/items/0" -> "Payload › items › 0"
export function fieldName(pointer) {
  if (!pointer || pointer === "/") return "Request";
  for (const [prefix, name] of Object.entries(FIELD_NAMES)) {
    if (pointer === prefix) return name;
    if (pointer.startsWith(`${prefix}/`)) {
      const rest = pointer
        .slice(prefix.length + 1)
        .split("/")
        .map(unescapePointer);
      return [name, ...rest].join(" › ");
    }
  }
  return pointer.split("/").filter(Boolean).map(unescapePointer).join(" › ");
}

function unescapePointer(part) {
  return part.replace(/~1/g, "/").replace(/~0/g, "~");
}

function explain(error) {
  if (!(error instanceof ApiError)) return `Unexpected error in the console: ${error?.message || error}`;
  switch (error.status) {
    case 0:
      return `The API could not be reached: ${error.detail}. Check the connection and try again.`;
    case 401:
      return getToken()
        ? `The API rejected the access token${error.detail ? ` (${error.detail})` : ""}.`
        : `This API requires an access token${error.detail ? ` (${error.detail})` : ""}.`;
    case 403:
      return `The access token is not allowed to do this${error.detail ? `: ${error.detail}` : "."}`;
    case 429:
    case 503:
      return `${error.detail || error.title}${error.retryAfter ? ` Try again in ${error.retryAfter} s.` : ""}`;
    default:
      return error.detail || error.title;
  }
}

// A readable box for a failed call: what we tried, why it failed, each field at fault,
// and for 401/403 a way to enter a token. Never an empty view.
export function errorBox(error, doing) {
  const status = error instanceof ApiError ? error.status : null;
  const heading = doing ? `Could not ${doing}` : "Something went wrong";
  const box = h(
    "div",
    { class: "alert alert-error", role: "alert", "data-status": status ?? "" },
    h(
      "p",
      { class: "alert-title" },
      heading,
      status ? h("span", { class: "muted" }, ` (${statusText(error)})`) : null,
    ),
    h("p", { class: "alert-detail" }, explain(error)),
  );
  if (error instanceof ApiError && error.errors.length) {
    box.append(
      h(
        "ul",
        { class: "alert-fields" },
        error.errors.map((e) => h("li", null, h("strong", null, fieldName(e.pointer)), `: ${e.message}`)),
      ),
    );
  }
  if (error instanceof ApiError && error.isAuth) {
    box.append(
      h(
        "p",
        null,
        h(
          "button",
          { type: "button", class: "primary", onclick: () => askForToken(error) },
          getToken() ? "Use another token" : "Enter access token",
        ),
      ),
    );
  }
  return box;
}

function statusText(error) {
  return error.status === 0 ? "network error" : `HTTP ${error.status} ${error.title}`;
}

// Route a failure: auth failures also open the token prompt, the rest only render.
export function report(error, doing) {
  if (error instanceof ApiError && error.status === 401) askForToken(error, { automatic: true });
  return errorBox(error, doing);
}

// -- polling -------------------------------------------------------------------------------

// Run `fn` now and then every `interval` ms (or what `fn` returns) until `signal` aborts.
// Paused while the tab is hidden: a console left open in the background costs nothing.
export function poll(signal, fn, interval) {
  let timer = null;
  let running = false;
  const tick = async () => {
    timer = null;
    if (signal.aborted || running) return;
    if (document.hidden) return; // resumed by visibilitychange
    running = true;
    let next = interval;
    try {
      const wanted = await fn();
      if (wanted === false) return; // done: stop polling
      if (typeof wanted === "number") next = wanted;
    } catch (err) {
      if (err?.name === "AbortError") return;
      console.error(err);
    } finally {
      running = false;
    }
    if (!signal.aborted) timer = window.setTimeout(tick, next);
  };
  const onVisible = () => {
    if (!document.hidden && timer === null && !running) tick();
  };
  document.addEventListener("visibilitychange", onVisible);
  signal.addEventListener("abort", () => {
    if (timer !== null) window.clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  });
  tick();
}

// -- task types ----------------------------------------------------------------------------

let typesCache = null;

// The registry changes rarely (kubectl apply); refetched when a view asks for fresh.
export async function taskTypes({ fresh = false, signal } = {}) {
  if (!typesCache || fresh) {
    const pending = api.taskTypes({ signal }).then((r) => r.data.items);
    typesCache = pending;
    pending.catch(() => {
      if (typesCache === pending) typesCache = null;
    });
  }
  return typesCache;
}

export function typeState(t) {
  if (!t.enabled) return { label: "Disabled", tone: "off" };
  if (!t.ready) return { label: `Not ready${t.reason ? `: ${t.reason}` : ""}`, tone: "bad" };
  if (t.paused) return { label: "Paused", tone: "warn" };
  return { label: "Ready", tone: "ok" };
}

export function pageHeader(title, ...rest) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, title), ...rest);
}

export function durationText(fromIso, toIso) {
  const ms = Date.parse(toIso) - Date.parse(fromIso);
  if (!Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

// -- flow control --------------------------------------------------------------------------

const WAIT_REASON = { concurrency: "concurrency limit", rate: "rate limit" };

// What holds a due task back (its type's fleet-wide limit), or null: only a queued task waits.
export function waitingOf(t) {
  return t.status === "queued" && t.waiting ? t.waiting : null;
}

export function waitReasonText(w) {
  return WAIT_REASON[w.reason] || w.reason;
}

// A small pill for lists and the task's header: "Waiting: rate limit".
export function waitingPill(t) {
  const w = waitingOf(t);
  if (!w) return null;
  return h(
    "span",
    { class: "pill pill-warn", "data-field": "waiting", "data-reason": w.reason, title: `until ${w.until}` },
    `Waiting: ${waitReasonText(w)}`,
  );
}

function seconds(n) {
  return n === 1 ? "1 s" : `${n} s`;
}

// A type's priority and limits in words, one item each ([] for a normal type without limits).
export function typeLimits(t) {
  const lines = [];
  if (t.priority && t.priority !== "normal") lines.push(`Priority ${t.priority}`);
  const c = t.concurrency || {};
  if (c.max) lines.push(`At most ${c.max} running at once${c.key ? ` per ${c.key}` : ""}, fleet-wide`);
  if (c.perWorker) lines.push(`At most ${c.perWorker} per worker`);
  const r = t.rateLimit;
  if (r) {
    const burst = r.burst ? `, bursts of ${r.burst}` : "";
    lines.push(`At most ${r.limit} starts per ${seconds(r.period)}${burst}${r.key ? ` per ${r.key}` : ""}`);
  }
  const u = t.uniqueness;
  if (u) {
    const onDuplicate = { "return-existing": "returns the existing one", reject: "is refused", replace: "replaces it" };
    lines.push(
      `One ${u.while === "queued-or-running" ? "queued or running" : "queued"} task per ${u.key || "unique_key"}; ` +
        `a duplicate ${onDuplicate[u.onDuplicate] || u.onDuplicate}`,
    );
  }
  return lines;
}
