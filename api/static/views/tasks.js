// Tasks: newest first, filtered by state and type, paged with the API's opaque cursor.
// Filters and the current cursor live in the URL (#/tasks?status=failed&cursor=...), so
// Back from a task's page returns to the same page of the list. The first page follows
// GET /v1/events: rows change state, and new tasks appear at the top, without polling.

import { api, eventStream } from "../api.js";
import { badge, clear, h, shortTime, STATUSES, statusLabel } from "../dom.js";
import { pageHeader, report, taskTypes, waitingPill } from "../ui.js";

const PAGE_SIZES = [10, 25, 50, 100];
const DEFAULT_SIZE = 25;

// The cursors of the pages before this one, for "Newer". Kept across views (a visit to a
// task and back) and keyed by the filters, which reset it.
let trail = { key: "", cursors: [] };

// The list page last shown (filters and cursor), for the task page's way back.
let lastList = "#/tasks";
export function listHref() {
  return lastList;
}

export function taskHref(id) {
  return `#/tasks/${encodeURIComponent(id)}`;
}

function filtersKey(status, type, limit) {
  return `${status}|${type}|${limit}`;
}

function hashFor({ status, type, limit, cursor }) {
  const q = new URLSearchParams();
  if (status) q.set("status", status);
  if (type) q.set("type", type);
  if (limit && limit !== DEFAULT_SIZE) q.set("limit", String(limit));
  if (cursor) q.set("cursor", cursor);
  const s = q.toString();
  return `#/tasks${s ? `?${s}` : ""}`;
}

export function tasksView(main, route, { signal }) {
  const p = route.params;
  const status = STATUSES.includes(p.get("status")) ? p.get("status") : "";
  const type = p.get("type") || "";
  const limit = PAGE_SIZES.includes(Number(p.get("limit"))) ? Number(p.get("limit")) : DEFAULT_SIZE;
  const cursor = p.get("cursor") || "";
  const key = filtersKey(status, type, limit);
  if (trail.key !== key) trail = { key, cursors: [] };
  if (!cursor) trail.cursors = [];
  lastList = hashFor({ status, type, limit, cursor });

  const statusSelect = h(
    "select",
    { id: "flt-status", name: "status" },
    h("option", { value: "" }, "All states"),
    STATUSES.map((s) => h("option", { value: s }, statusLabel(s))),
  );
  statusSelect.value = status;
  const typeSelect = h("select", { id: "flt-type", name: "type" }, h("option", { value: "" }, "All types"));
  if (type) typeSelect.append(h("option", { value: type }, type));
  typeSelect.value = type;
  const sizeSelect = h(
    "select",
    { id: "flt-limit", name: "limit" },
    PAGE_SIZES.map((n) => h("option", { value: String(n) }, String(n))),
  );
  sizeSelect.value = String(limit);
  const refreshButton = h("button", { type: "button" }, "Refresh");

  const go = (changes) => {
    const next = { status, type, limit, cursor: "", ...changes };
    window.location.hash = hashFor(next);
  };
  statusSelect.addEventListener("change", () => go({ status: statusSelect.value }));
  typeSelect.addEventListener("change", () => go({ type: typeSelect.value }));
  sizeSelect.addEventListener("change", () => go({ limit: Number(sizeSelect.value) }));

  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter tasks", onsubmit: (e) => e.preventDefault() },
    h("div", { class: "field" }, h("label", { for: "flt-status" }, "State"), statusSelect),
    h("div", { class: "field" }, h("label", { for: "flt-type" }, "Type"), typeSelect),
    h("div", { class: "field field-narrow" }, h("label", { for: "flt-limit" }, "Per page"), sizeSelect),
    h("div", { class: "field field-button" }, refreshButton),
  );
  const summary = h("p", { class: "muted", "aria-live": "polite" }, "Loading…");
  const problem = h("div", { class: "problem-slot" });
  const body = h("div", { class: "list-body" });
  const newer = h("button", { type: "button", id: "page-newer", disabled: !cursor }, "← Newer");
  const older = h("button", { type: "button", id: "page-older", disabled: true }, "Older →");
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    newer,
    h("span", { class: "muted" }, `Page ${trail.cursors.length + 1}`),
    older,
  );
  main.append(
    pageHeader("Tasks", h("a", { class: "button primary", href: "#/submit" }, "Submit a task")),
    filters,
    problem,
    summary,
    body,
    pager,
  );

  newer.addEventListener("click", () => {
    const previous = trail.cursors.pop();
    go({ cursor: previous || "" });
  });
  refreshButton.addEventListener("click", () => load());

  taskTypes({ signal })
    .then((types) => {
      for (const t of types) {
        if (t.name !== type) typeSelect.append(h("option", { value: t.name }, t.name));
      }
      typeSelect.value = type;
    })
    .catch(() => {}); // the list below reports the same failure in words

  let shown = null; // the page as last rendered: {items, next_cursor}
  let following = false;

  // A change from the event stream: the row updated, a new task on top, or a task that
  // no longer matches the state filter taken off the page.
  function changed(t) {
    if (!shown || cursor) return;
    const items = shown.items.slice();
    const at = items.findIndex((x) => x.id === t.id);
    const matches = !status || t.status === status;
    if (at >= 0) {
      if (matches) items[at] = t;
      else items.splice(at, 1);
    } else if (matches && (!items.length || t.id > items[0].id)) {
      items.unshift(t);
      if (items.length > limit) items.length = limit;
    } else {
      return; // an older task, off this page
    }
    render({ ...shown, items });
  }

  function follow() {
    if (following || cursor) return;
    following = true;
    eventStream("/v1/events", {
      query: { type },
      resumable: true,
      signal,
      onTrouble: (message) =>
        message ? clear(problem, h("p", { class: "alert alert-info" }, message)) : clear(problem),
      on: { state: changed, progress: changed, reset: () => load() },
    });
  }

  async function load() {
    try {
      const { data } = await api.listTasks({ status, type, limit, cursor }, { signal });
      clear(problem);
      render(data);
      follow();
    } catch (err) {
      if (err?.name === "AbortError") return;
      clear(problem, report(err, "load the tasks"));
      summary.textContent = "";
    }
  }

  function render(data) {
    shown = data;
    const items = data.items || [];
    const what = [status && statusLabel(status).toLowerCase(), type && `“${type}”`].filter(Boolean).join(" ");
    const first = trail.cursors.length * limit;
    summary.textContent = items.length
      ? `${what ? `Showing ${what} tasks` : "Showing tasks"} ${first + 1}–${first + items.length}, newest first.`
      : "";
    newer.disabled = !cursor;
    older.disabled = !data.next_cursor;
    older.onclick = () => {
      trail.cursors.push(cursor);
      go({ cursor: data.next_cursor });
    };
    if (!items.length) {
      clear(
        body,
        h(
          "div",
          { class: "empty" },
          h(
            "p",
            null,
            cursor ? "No older tasks." : status || type ? "No tasks match these filters." : "No tasks yet.",
          ),
          cursor || status || type ? null : h("a", { href: "#/submit" }, "Submit the first one"),
        ),
      );
      return;
    }
    clear(
      body,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "table tasks-table" },
          h("caption", { class: "visually-hidden" }, "Tasks, newest first"),
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              ["Task", "Type", "State", "Attempts", "Created", "Finished"].map((c) =>
                h("th", { scope: "col" }, c),
              ),
            ),
          ),
          h(
            "tbody",
            null,
            items.map((t) => {
              const href = taskHref(t.id);
              const row = h(
                "tr",
                { class: "row-link", "data-task-id": t.id, "data-status": t.status, "data-type": t.type },
                h("td", { "data-label": "Task" }, h("a", { href, class: "mono" }, t.id)),
                h("td", { "data-label": "Type" }, t.type),
                // One child: the narrow layout's cell is a two-column grid (label, value).
                h("td", { "data-label": "State" }, h("span", null, badge(t.status), waitingCell(t))),
                h("td", { "data-label": "Attempts" }, `${t.attempts} / ${t.max_attempts}`),
                h("td", { "data-label": "Created" }, shortTime(t.created_at)),
                h("td", { "data-label": "Finished" }, shortTime(t.finished_at)),
              );
              // The id link is the keyboard path; a click anywhere on the row is a shortcut.
              row.addEventListener("click", (e) => {
                if (e.target.closest("a") || window.getSelection()?.toString()) return;
                window.location.hash = href;
              });
              return row;
            }),
          ),
        ),
      ),
    );
  }

  load();
}

// Under a queued task's badge: what holds it back, and until about when.
function waitingCell(t) {
  const pill = waitingPill(t);
  if (!pill) return null;
  return h("span", { class: "cell-sub" }, pill, h("span", { class: "muted" }, " until ", shortTime(t.waiting.until)));
}
