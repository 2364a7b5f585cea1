// Schedules: every TaskSchedule with its cron, zone, readiness, last run and task, next
// run and a "Run now" button; one schedule's page adds its next five runs, shown in the
// reader's clock and in the schedule's own zone, and the state of its last task.

import { api } from "../api.js";
import { badge, clear, h, shortTime, statusLabel, timeEl } from "../dom.js";
import { errorBox, pageHeader, poll, report } from "../ui.js";
import { taskHref } from "./tasks.js";

export const REFRESH_MS = 10_000;

export function scheduleHref(name) {
  return `#/schedules/${encodeURIComponent(name)}`;
}

export function scheduleState(s) {
  if (!s.ready) return { label: "Not ready", tone: "bad" };
  if (s.suspended) return { label: "Suspended", tone: "warn" };
  return { label: "Ready", tone: "ok" };
}

function statePill(s) {
  const state = scheduleState(s);
  return h("span", { class: `pill pill-${state.tone}`, "data-state": state.label }, state.label);
}

// "Thu, 3 Dec, 02:00 CET" in the schedule's zone; null if this browser lacks the zone.
function zoneClock(iso, zone) {
  try {
    return new Intl.DateTimeFormat(undefined, {
      timeZone: zone,
      weekday: "short",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      timeZoneName: "short",
    }).format(new Date(iso));
  } catch {
    return null;
  }
}

function lastTaskLink(s) {
  return s.last_task_id
    ? h(
        "a",
        { href: taskHref(s.last_task_id), class: "mono wrap", "data-field": "last-task" },
        s.last_task_id,
      )
    : h("span", { class: "muted", "data-field": "last-task" }, "none yet");
}

// POST .../trigger, then say which task it made (linked) or why it could not, in words.
// `busy` holds the names being triggered, so a refresh that redraws the button keeps it
// disabled until the answer comes.
async function runNow(name, { busy, notice, signal, redraw, after }) {
  if (busy.has(name)) return;
  busy.add(name);
  redraw();
  try {
    const { data } = await api.triggerSchedule(name, { signal });
    const at = new Date().toLocaleTimeString();
    clear(
      notice,
      h(
        "p",
        { class: "alert alert-success", "data-task-id": data.id },
        `Ran “${name}” at ${at}: task `,
        h("a", { href: taskHref(data.id), class: "mono wrap" }, data.id),
        ` is ${statusLabel(data.status).toLowerCase()}.`,
      ),
    );
    await after();
  } catch (err) {
    if (err?.name === "AbortError") return;
    clear(notice, report(err, `run “${name}” now`));
  } finally {
    busy.delete(name);
    redraw();
  }
}

function runButton(s, busy, onclick) {
  return h(
    "button",
    {
      type: "button",
      class: "primary run-now",
      // The visible words first, so speech input ("click Run now") finds it too.
      "aria-label": `Run now: ${s.name}`,
      "data-schedule": s.name,
      disabled: busy.has(s.name) || !s.ready,
      title: s.ready ? null : `Not ready: ${s.reason || "see the schedule"}`,
      onclick,
    },
    busy.has(s.name) ? "Running…" : "Run now",
  );
}

// A redraw replaces the buttons: put focus back on the one that had it.
function keepFocus(container, draw) {
  const had = document.activeElement?.dataset?.schedule;
  draw();
  if (had === undefined) return;
  for (const el of container.querySelectorAll("button[data-schedule]")) {
    if (el.dataset.schedule === had) el.focus();
  }
}

export function schedulesView(main, _route, { signal }) {
  const updated = h("p", { class: "updated muted" }, "Loading…");
  const notice = h("div", { class: "problem-slot", "aria-live": "polite" });
  const problem = h("div", { class: "problem-slot" });
  const body = h("div", { class: "list-body" });
  main.append(pageHeader("Schedules", updated), notice, problem, body);

  const busy = new Set();
  let items = null;

  async function load() {
    try {
      const { data } = await api.schedules({ signal });
      items = data.items || [];
      clear(problem);
      keepFocus(body, draw);
      const at = new Date().toLocaleTimeString();
      updated.textContent = `Updated ${at} · refreshes every ${REFRESH_MS / 1000} s`;
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      clear(problem, report(err, "load the schedules")); // the last list stays on screen
      updated.textContent = "";
    }
  }

  function draw() {
    if (items === null) return;
    if (!items.length) {
      clear(
        body,
        h(
          "div",
          { class: "empty" },
          h("p", null, "No schedules yet."),
          h("p", null, "A TaskSchedule resource (kind: TaskSchedule) adds one; see docs/SCHEDULES.md."),
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
          { class: "table schedules-table" },
          h("caption", { class: "visually-hidden" }, "Schedules"),
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              ["Schedule", "Runs", "Type", "State", "Last run", "Last task", "Next run", "Action"].map((c) =>
                h("th", { scope: "col" }, c),
              ),
            ),
          ),
          h("tbody", null, items.map(row)),
        ),
      ),
    );
  }

  function row(s) {
    return h(
      "tr",
      { "data-schedule": s.name, "data-ready": String(s.ready) },
      h(
        "td",
        { "data-label": "Schedule" },
        h(
          "div",
          null,
          h("a", { href: scheduleHref(s.name), class: "mono wrap" }, s.name),
          h("span", { class: "cell-sub muted" }, s.namespace),
        ),
      ),
      h(
        "td",
        { "data-label": "Runs" },
        h(
          "div",
          null,
          h("code", { class: "wrap" }, s.schedule),
          h("span", { class: "cell-sub muted" }, s.time_zone),
        ),
      ),
      h("td", { "data-label": "Type" }, s.task_type),
      h(
        "td",
        { "data-label": "State" },
        h(
          "div",
          null,
          statePill(s),
          !s.ready && s.reason ? h("span", { class: "cell-sub reason" }, s.reason) : null,
        ),
      ),
      h("td", { "data-label": "Last run" }, shortTime(s.last_run_at)),
      h("td", { "data-label": "Last task" }, lastTaskLink(s)),
      h(
        "td",
        { "data-label": "Next run", "data-field": "next-run" },
        s.suspended || !s.ready ? h("span", { class: "muted" }, "—") : shortTime(s.next_run_at),
      ),
      h(
        "td",
        { "data-label": "Action" },
        runButton(s, busy, () =>
          runNow(s.name, { busy, notice, signal, redraw: () => keepFocus(body, draw), after: load }),
        ),
      ),
    );
  }

  poll(signal, load, REFRESH_MS);
}

export function scheduleView(main, route, { signal }) {
  const name = route.id;
  const actions = h("div", { class: "actions" });
  const statusSlot = h("span", { class: "head-status" });
  const notice = h("div", { class: "problem-slot", "aria-live": "polite" });
  const liveProblem = h("div", { class: "problem-slot" });
  const content = h("div", { class: "detail" }, h("p", { class: "muted" }, "Loading…"));
  const head = pageHeader(
    h("span", null, "Schedule ", h("span", { class: "mono title-id" }, name)),
    statusSlot,
    actions,
  );
  head.classList.add("page-head-detail");
  main.append(
    h(
      "nav",
      { class: "crumbs", "aria-label": "Breadcrumb" },
      h("a", { href: "#/schedules", class: "back" }, "← Schedules"),
    ),
    head,
    notice,
    liveProblem,
    content,
  );

  const busy = new Set();
  let schedule = null;
  let lastTask = null; // the last task's record, when this token may read it

  function drawActions() {
    keepFocus(actions, () => {
      clear(actions);
      if (!schedule) return;
      actions.append(
        runButton(schedule, busy, () =>
          runNow(name, { busy, notice, signal, redraw: drawActions, after: load }),
        ),
      );
    });
  }

  function draw() {
    const s = schedule;
    clear(statusSlot, statePill(s));
    drawActions();
    const zoned = (iso) => zoneClock(iso, s.time_zone);
    const runs = s.next_runs || [];
    clear(
      content,
      !s.ready
        ? h(
            "div",
            { class: "alert alert-error", "data-field": "reason" },
            h("p", { class: "alert-title" }, "This schedule does not fire"),
            h("p", { class: "alert-detail" }, s.reason || "It is not ready."),
          )
        : null,
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          { class: "panel", "aria-labelledby": "next-h" },
          h("h2", { id: "next-h" }, "Next runs"),
          s.suspended
            ? h("p", { class: "muted" }, "Suspended: these slots are skipped until it is resumed.")
            : null,
          runs.length
            ? h(
                "ol",
                { class: "next-runs" },
                runs.map((iso) =>
                  h(
                    "li",
                    { "data-at": iso },
                    timeEl(iso, { withRelative: true }),
                    zoned(iso)
                      ? h("span", { class: "cell-sub muted" }, `${zoned(iso)} in ${s.time_zone}`)
                      : null,
                  ),
                ),
              )
            : h("p", { class: "muted" }, "No run ahead."),
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "sfacts-h" },
          h("h2", { id: "sfacts-h" }, "Details"),
          h(
            "dl",
            { class: "facts" },
            h("dt", null, "Task type"),
            h(
              "dd",
              null,
              h("a", { href: `#/tasks?type=${encodeURIComponent(s.task_type)}` }, s.task_type),
            ),
            h("dt", null, "Cron"),
            h("dd", null, h("code", { class: "wrap", "data-field": "cron" }, s.schedule)),
            h("dt", null, "Time zone"),
            h("dd", { "data-field": "time-zone" }, s.time_zone),
            h("dt", null, "Namespace"),
            h("dd", { class: "wrap" }, s.namespace),
            h("dt", null, "Last run"),
            h("dd", { "data-field": "last-run" }, timeEl(s.last_run_at, { withRelative: true })),
            h("dt", null, "Last task"),
            h(
              "dd",
              { class: "last-task" },
              lastTaskLink(s),
              lastTask && lastTask.id === s.last_task_id ? [" ", badge(lastTask.status)] : null,
            ),
          ),
        ),
      ),
    );
  }

  async function load() {
    let got;
    try {
      got = (await api.getSchedule(name, { signal })).data;
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      if (err.status === 404) {
        clear(content, errorBox(err, "load the schedule"));
        clear(actions);
        clear(statusSlot);
        schedule = null;
        return false; // gone, or never was: nothing to refresh
      }
      clear(liveProblem, report(err, "load the schedule"));
      if (!schedule) clear(content);
      return;
    }
    clear(liveProblem);
    lastTask = null;
    if (got.last_task_id) {
      // Its state beside the link; without it (no tasks:read, a purged record) the link stays.
      lastTask = await api
        .getTask(got.last_task_id, { signal })
        .then((r) => r.data)
        .catch((err) => {
          if (err?.name === "AbortError") throw err;
          return null;
        });
    }
    schedule = got;
    draw();
  }

  poll(signal, load, REFRESH_MS);
}
