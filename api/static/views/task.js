// One task: timeline, attempts, worker, payload, result or error, with Cancel and Retry
// where its state allows them. Followed live (server-sent events, no polling) until the
// task is finished, with a progress bar while it runs.

import { api, eventStream } from "../api.js";
import { badge, clear, codeBlock, h, TERMINAL, timeEl } from "../dom.js";
import { durationText, errorBox, pageHeader, report, waitingOf, waitingPill, waitReasonText } from "../ui.js";
import { listHref } from "./tasks.js";

// A token without tasks:read is shown tasks without payload and result: say so, rather
// than print a missing value.
function shownBlock(t, key, label) {
  if ((t.redacted || []).includes(key)) {
    return h(
      "p",
      { class: "muted", "data-field": `${key}-redacted` },
      `${label} hidden: this token may not read payloads and results (tasks:read).`,
    );
  }
  return codeBlock(t[key], label);
}

// The handler's last report (ctx.progress) while the task runs; nothing otherwise.
function progressPanel(p, status) {
  if (status !== "running" || !p) return null;
  const percent = Math.round(p.fraction * 100);
  return h(
    "section",
    { class: "panel progress-panel", "aria-labelledby": "pr-h" },
    h("h2", { id: "pr-h" }, "Progress"),
    h("progress", {
      max: "100",
      value: String(percent),
      "aria-labelledby": "pr-h",
      "data-fraction": String(p.fraction),
    }),
    h(
      "p",
      { class: "progress-text", "data-field": "progress" },
      h("strong", null, `${percent}%`),
      p.message ? h("span", { "data-field": "progress-message" }, ` ${p.message}`) : null,
    ),
  );
}

// Why a due task has not started, and when it looks again (its type's fleet-wide limits).
function waitingFacts(t) {
  const w = waitingOf(t);
  if (!w) return null;
  const why =
    w.reason === "rate"
      ? "its type's rate limit: this is its turn, it starts then"
      : "its type's concurrency limit: it looks again then";
  return [
    h("dt", null, "Waiting"),
    h(
      "dd",
      { "data-field": "waiting-detail" },
      h("strong", null, waitReasonText(w)),
      " until ",
      timeEl(w.until, { withRelative: true }),
      h("span", { class: "cell-sub muted" }, `Held back by ${why}.`),
    ),
  ];
}

function canCancel(t) {
  return t.status === "queued" || (t.status === "running" && !t.cancel_requested);
}

function canRetry(t) {
  return t.status === "failed" || t.status === "cancelled";
}

function timeline(t) {
  const over = TERMINAL.has(t.status);
  // [label, time, state]; state "done" | "pending" | "skipped" (a step that will not happen)
  const steps = [
    ["Created", t.created_at, "done"],
    ["Started", t.started_at, t.started_at ? "done" : over ? "skipped" : "pending"],
  ];
  if (t.status === "queued" && t.run_at) {
    const future = Date.parse(t.run_at) > Date.now();
    steps.push([t.attempts ? "Next attempt" : "Runs at", t.run_at, future ? "pending" : "done"]);
  }
  const finishLabel =
    { succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled" }[t.status] || "Finished";
  steps.push([finishLabel, t.finished_at, t.finished_at ? `done outcome-${t.status}` : "pending"]);
  const missing = { pending: "not yet", skipped: "did not run" };
  return h(
    "ol",
    { class: "timeline" },
    steps.map(([label, iso, state]) =>
      h(
        "li",
        { class: state, "data-step": label.toLowerCase().replace(/ /g, "-") },
        h("span", { class: "step-label" }, label),
        iso ? timeEl(iso, { withRelative: true }) : h("span", { class: "muted" }, missing[state] || "—"),
      ),
    ),
  );
}

export function taskView(main, route, { signal }) {
  const id = route.id;
  const back = h("a", { href: listHref(), class: "back" }, "← Tasks");
  const actions = h("div", { class: "actions" });
  const notice = h("div", { class: "problem-slot", "aria-live": "polite" });
  const liveProblem = h("div", { class: "problem-slot" });
  const progressSlot = h("div", { class: "progress-slot", "aria-live": "polite" });
  const content = h("div", { class: "detail" }, h("p", { class: "muted" }, "Loading…"));
  const statusSlot = h("span", { class: "head-status" });
  const head = pageHeader(
    h("span", null, "Task ", h("span", { class: "mono title-id" }, id)),
    statusSlot,
    actions,
  );
  head.classList.add("page-head-detail");
  main.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, back),
    head,
    notice,
    liveProblem,
    progressSlot,
    content,
  );

  let task = null;
  let busy = false;

  const act = async (kind) => {
    if (busy) return;
    busy = true;
    drawActions();
    try {
      const { data } = kind === "cancel" ? await api.cancel(id, { signal }) : await api.retry(id, { signal });
      const said =
        kind === "retry"
          ? "queued again with its attempts reset."
          : data.status === "cancelled"
            ? "cancelled before it ran."
            : "cancel requested: the handler is stopped at its next cancellation check.";
      // Timed, because the task moves on while the note stays.
      const at = new Date().toLocaleTimeString();
      const verb = kind === "retry" ? "Retried" : "Cancelled";
      clear(notice, h("p", { class: "alert alert-success" }, `${verb} at ${at}: ${said}`));
      draw(data);
      if (!TERMINAL.has(data.status)) startLive();
    } catch (err) {
      if (err?.name === "AbortError") return;
      clear(notice, report(err, kind === "cancel" ? "cancel the task" : "retry the task"));
    } finally {
      busy = false;
      drawActions();
    }
  };

  function drawActions() {
    clear(actions);
    if (!task) return;
    if (canCancel(task)) {
      actions.append(
        h(
          "button",
          { type: "button", class: "danger", disabled: busy, onclick: () => act("cancel") },
          "Cancel task",
        ),
      );
    }
    if (canRetry(task)) {
      actions.append(
        h(
          "button",
          { type: "button", class: "primary", disabled: busy, onclick: () => act("retry") },
          "Retry task",
        ),
      );
    }
  }

  function draw(t) {
    task = t;
    clear(progressSlot, progressPanel(t.progress, t.status));
    clear(
      statusSlot,
      badge(t.status),
      t.cancel_requested && !TERMINAL.has(t.status)
        ? h("span", { class: "pill pill-warn" }, "cancel requested")
        : null,
      waitingPill(t),
    );
    drawActions();
    const outcome = [];
    if (t.status === "succeeded") {
      outcome.push(
        h(
          "section",
          { class: "panel", "aria-labelledby": "res-h" },
          h("h2", { id: "res-h" }, "Result"),
          shownBlock(t, "result", "Result"),
        ),
      );
    }
    if (t.error) {
      outcome.push(
        h(
          "section",
          { class: "panel panel-error", "aria-labelledby": "err-h" },
          h("h2", { id: "err-h" }, t.status === "failed" ? "Error" : "Last error"),
          h("p", { class: "error-type" }, t.error.type),
          h(
            "pre",
            { class: "code error-message", tabindex: "0", "aria-label": "Error message" },
            t.error.message,
          ),
        ),
      );
    }
    clear(
      content,
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          { class: "panel", "aria-labelledby": "tl-h" },
          h("h2", { id: "tl-h" }, "Timeline"),
          timeline(t),
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "facts-h" },
          h("h2", { id: "facts-h" }, "Details"),
          h(
            "dl",
            { class: "facts" },
            h("dt", null, "Type"),
            h("dd", null, h("a", { href: `#/tasks?type=${encodeURIComponent(t.type)}` }, t.type)),
            h("dt", null, "Priority"),
            h("dd", { "data-field": "priority" }, t.priority || "normal"),
            waitingFacts(t),
            h("dt", null, "Attempts"),
            h("dd", { "data-field": "attempts" }, `${t.attempts} of ${t.max_attempts}`),
            h("dt", null, "Worker"),
            h("dd", { class: "mono wrap", "data-field": "worker" }, t.worker || "—"),
            h("dt", null, "Updated"),
            h("dd", null, timeEl(t.updated_at, { withRelative: true })),
            t.started_at && t.finished_at
              ? [h("dt", null, "Last run took"), h("dd", null, durationText(t.started_at, t.finished_at))]
              : null,
          ),
        ),
      ),
      outcome,
      h(
        "section",
        { class: "panel", "aria-labelledby": "pl-h" },
        h("h2", { id: "pl-h" }, "Payload"),
        shownBlock(t, "payload", "Payload"),
      ),
    );
  }

  let live = null;
  function startLive() {
    if (live && !live.signal.aborted) return;
    const mine = new AbortController();
    live = mine;
    signal.addEventListener("abort", () => mine.abort());
    eventStream(`/v1/tasks/${encodeURIComponent(id)}/events`, {
      signal: mine.signal,
      onTrouble: (message) =>
        message ? clear(liveProblem, h("p", { class: "alert alert-info" }, message)) : clear(liveProblem),
      on: {
        state: (t) => {
          draw(t);
          if (TERMINAL.has(t.status)) mine.abort(); // the stream ends here
        },
        progress: ({ status, ...p }) => {
          if (!task) return;
          task.progress = p;
          clear(progressSlot, progressPanel(p, status));
        },
      },
    });
  }

  async function load() {
    try {
      const { data } = await api.getTask(id, { signal });
      draw(data);
      if (!TERMINAL.has(data.status)) startLive();
    } catch (err) {
      if (err?.name === "AbortError") return;
      clear(content, errorBox(err, "load the task"));
      clear(actions);
    }
  }

  load();
}
