// Small DOM and formatting helpers. Everything from the API goes in as text nodes,
// never as HTML, so a payload cannot inject markup into the console.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const STATUS_LABEL = {
  queued: "Queued",
  running: "Running",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
};

export function statusLabel(status) {
  return STATUS_LABEL[status] || status;
}

export function badge(status, extra) {
  return h("span", { class: `badge badge-${status}`, "data-status": status }, statusLabel(status), extra);
}

const clock = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function relativeTime(iso, at = Date.now()) {
  const seconds = (Date.parse(iso) - at) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return relative.format(Math.round(seconds), "second");
  if (abs < 45 * 60) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 36 * 3600) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

// A <time> with the local clock time, and the relative time beside it when asked.
export function timeEl(iso, { withRelative = false } = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const when = new Date(iso);
  return h(
    "time",
    { datetime: iso, title: iso },
    clock.format(when),
    withRelative ? h("span", { class: "muted rel" }, ` (${relativeTime(iso)})`) : null,
  );
}

export function shortTime(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: `${clock.format(new Date(iso))} (${iso})` }, relativeTime(iso));
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function codeBlock(value, label) {
  // Focusable so a long document can be scrolled by keyboard.
  return h(
    "pre",
    { class: "code", tabindex: "0", "aria-label": `${label} (JSON)` },
    h("code", null, json(value)),
  );
}

export function formatSeconds(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "0 s";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

const numbers = new Intl.NumberFormat();
export function formatCount(n) {
  return typeof n === "number" ? numbers.format(n) : "—";
}
