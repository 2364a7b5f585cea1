// Overview: totals per state, queue and DLQ depth, live workers and the task types,
// refreshed every few seconds (the API caches /v1/stats for about as long).

import { api } from "../api.js";
import { clear, formatCount, formatSeconds, h, shortTime, STATUSES, statusLabel } from "../dom.js";
import { pageHeader, poll, report, taskTypes, typeLimits, typeState } from "../ui.js";

export const REFRESH_MS = 5000;

const QUEUE_STATS = [
  ["visible", "Visible", "waiting for a worker"],
  ["in_flight", "In flight", "received by a worker"],
  ["delayed", "Delayed", "waiting out a delay"],
];

function stat(key, label, hint, value, href) {
  const body = [
    h("span", { class: "stat-label" }, label),
    h("span", { class: "stat-value", "data-stat": key }, value),
    hint ? h("span", { class: "stat-hint" }, hint) : null,
  ];
  return href
    ? h("a", { class: `stat stat-link stat-${key}`, href }, body)
    : h("div", { class: `stat stat-${key}` }, body);
}

function section(id, title, ...children) {
  return h("section", { class: "section", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

export function overviewView(main, _route, { signal }) {
  const updated = h("p", { class: "updated muted" }, "Loading…");
  const tasksGrid = h("div", { class: "stats stats-5" });
  const queueGrid = h("div", { class: "stats stats-5" });
  const workersBody = h("div");
  const typesBody = h("div");
  main.append(
    pageHeader("Overview", updated),
    section("ov-tasks", "Tasks by state", tasksGrid),
    section("ov-queue", "Queue", queueGrid),
    h(
      "div",
      { class: "columns" },
      section("ov-workers", "Workers", workersBody),
      section("ov-types", "Task types", typesBody),
    ),
  );

  const statsProblem = h("div", { class: "problem-slot" });
  const workersProblem = h("div", { class: "problem-slot" });
  const typesProblem = h("div", { class: "problem-slot" });
  tasksGrid.before(statsProblem);
  workersBody.before(workersProblem);
  typesBody.before(typesProblem);

  // Each part loads on its own: a token that may read task types but not stats (scopes)
  // still gets those, and each refusal is said where it applies.
  const part = async (load, slot, doing, render) => {
    try {
      render(await load());
      clear(slot);
      return true;
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      clear(slot, report(err, doing)); // the last figures stay on screen
      return false;
    }
  };

  const refresh = async () => {
    const results = await Promise.all([
      part(() => api.stats({ signal }).then((r) => r.data), statsProblem, "load the totals", renderStats),
      part(
        () => api.workers({ signal }).then((r) => r.data.items),
        workersProblem,
        "load the workers",
        renderWorkers,
      ),
      part(() => taskTypes({ fresh: true, signal }), typesProblem, "load the task types", renderTypes),
    ]);
    const at = new Date().toLocaleTimeString();
    updated.textContent = results.every(Boolean)
      ? `Updated ${at} · refreshes every ${REFRESH_MS / 1000} s`
      : `Partly updated ${at} · retrying every ${REFRESH_MS / 1000} s`;
  };

  // s is null before the first answer: the cards show "—", never a made-up zero.
  function renderStats(s) {
    const count = (n) => (s ? formatCount(n ?? 0) : "—");
    clear(
      tasksGrid,
      STATUSES.map((st) => stat(st, statusLabel(st), null, count(s?.tasks?.[st]), `#/tasks?status=${st}`)),
    );
    const q = s?.queue || {};
    clear(
      queueGrid,
      QUEUE_STATS.map(([key, label, hint]) => stat(key, label, hint, count(q[key]))),
      stat("dlq", "Dead letters", "messages in the DLQ", count(s?.dlq_depth)),
      stat(
        "oldest",
        "Oldest queued",
        "age of the oldest waiting task",
        s ? formatSeconds(s.oldest_queued_age_seconds) : "—",
      ),
    );
  }

  function renderWorkers(items) {
    const summary = h(
      "p",
      { class: "section-lead" },
      h("strong", { "data-stat": "workers" }, formatCount(items.length)),
      items.length === 1 ? " live worker" : " live workers",
    );
    if (!items.length) {
      clear(workersBody, summary, h("p", { class: "muted" }, "No worker has sent a heartbeat recently."));
      return;
    }
    clear(
      workersBody,
      summary,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "table" },
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              ["Worker", "Busy", "Heartbeat", "Version"].map((c) => h("th", { scope: "col" }, c)),
            ),
          ),
          h(
            "tbody",
            null,
            items.map((w) =>
              h(
                "tr",
                null,
                h(
                  "td",
                  { "data-label": "Worker" },
                  h(
                    "div",
                    null,
                    h("span", { class: "mono wrap" }, w.id),
                    h("span", { class: "cell-sub muted" }, `${w.host} · pid ${w.pid}`),
                  ),
                ),
                h("td", { "data-label": "Busy" }, `${w.in_flight} / ${w.concurrency}`),
                h("td", { "data-label": "Heartbeat" }, shortTime(w.last_heartbeat)),
                h("td", { "data-label": "Version" }, w.version),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function renderTypes(types) {
    if (!types.length) {
      clear(typesBody, h("p", { class: "muted" }, "No task types are registered."));
      return;
    }
    clear(
      typesBody,
      h(
        "ul",
        { class: "type-list" },
        types.map((t) => {
          const state = typeState(t);
          return h(
            "li",
            null,
            h(
              "div",
              { class: "type-head" },
              h("a", { href: `#/submit?type=${encodeURIComponent(t.name)}`, class: "mono" }, t.name),
              h("span", { class: `pill pill-${state.tone}` }, state.label),
            ),
            t.description ? h("p", { class: "muted" }, t.description) : null,
            limitsList(t),
          );
        }),
      ),
    );
  }

  renderStats(null);
  poll(signal, refresh, REFRESH_MS);
}

// Priority and flow-control limits under a type, when it has any.
function limitsList(t) {
  const lines = typeLimits(t);
  if (!lines.length) return null;
  return h(
    "ul",
    { class: "type-limits", "data-field": "limits", "aria-label": `Limits of ${t.name}` },
    lines.map((line) => h("li", null, line)),
  );
}
