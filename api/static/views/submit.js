// Submit: pick a type, edit its JSON payload (prefilled from the schema's example), an
// optional delay, max attempts and Idempotency-Key; then follow the task live.

import { api } from "../api.js";
import { badge, clear, codeBlock, h, json, nextId, TERMINAL, timeEl } from "../dom.js";
import { errorBox, pageHeader, poll, report, taskTypes, typeLimits, typeState } from "../ui.js";
import { taskHref } from "./tasks.js";

const MAX_DELAY = 14 * 24 * 3600;

function example(tasktype) {
  const examples = tasktype?.payloadSchema?.examples;
  return json(Array.isArray(examples) && examples.length ? examples[0] : {});
}

function field(label, control, hint) {
  const hintId = hint ? nextId("hint") : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: control.id }, label),
    control,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
  );
}

export function submitView(main, route, { signal }) {
  const typeSelect = h("select", { id: "f-type", name: "type", required: true });
  const typeHint = h("p", { class: "hint", id: "f-type-hint", "aria-live": "polite" });
  typeSelect.setAttribute("aria-describedby", "f-type-hint");
  const payload = h("textarea", {
    id: "f-payload",
    name: "payload",
    rows: "9",
    spellcheck: "false",
    autocapitalize: "off",
    autocomplete: "off",
    class: "mono",
  });
  const resetButton = h("button", { type: "button", class: "link-button" }, "Reset to the example");
  const schemaBox = h("details", { class: "schema" });
  const delay = h("input", {
    id: "f-delay",
    name: "delay_seconds",
    type: "number",
    min: "0",
    max: String(MAX_DELAY),
    step: "any",
    inputmode: "decimal",
    placeholder: "0",
  });
  const attempts = h("input", {
    id: "f-attempts",
    name: "max_attempts",
    type: "number",
    min: "1",
    max: "100",
    step: "1",
    inputmode: "numeric",
  });
  const idemKey = h("input", {
    id: "f-idem",
    name: "idempotency_key",
    type: "text",
    maxlength: "255",
    autocomplete: "off",
    spellcheck: "false",
  });
  const errorSlot = h("div", { class: "problem-slot", tabindex: "-1" });
  const submitButton = h("button", { type: "submit", class: "primary" }, "Submit task");
  const form = h(
    "form",
    { class: "panel form", novalidate: true, "aria-labelledby": "submit-h" },
    h("h2", { id: "submit-h", class: "visually-hidden" }, "New task"),
    h("div", { class: "field" }, h("label", { for: "f-type" }, "Task type"), typeSelect, typeHint),
    h(
      "div",
      { class: "field" },
      h("div", { class: "label-row" }, h("label", { for: "f-payload" }, "Payload (JSON)"), resetButton),
      payload,
      h(
        "p",
        { class: "hint", id: "f-payload-hint" },
        "Any JSON value; checked against the type's payload schema.",
      ),
      schemaBox,
    ),
    h(
      "div",
      { class: "field-row" },
      field("Delay (seconds)", delay, "Optional; up to 14 days."),
      field("Max attempts", attempts, "Optional; the type's default otherwise."),
    ),
    field("Idempotency-Key", idemKey, "Optional; a repeat with the same key returns the same task."),
    errorSlot,
    h("div", { class: "actions" }, submitButton),
  );
  payload.setAttribute("aria-describedby", "f-payload-hint");
  const outcome = h(
    "section",
    { class: "panel outcome", "aria-labelledby": "outcome-h" },
    h("h2", { id: "outcome-h" }, "Submitted task"),
    h("p", { class: "muted" }, "Submit a task to follow its status here, live."),
  );
  main.append(pageHeader("Submit a task"), h("div", { class: "split" }, form, outcome));

  let types = [];
  let prefilled = "";

  function selected() {
    return types.find((t) => t.name === typeSelect.value);
  }

  function showType({ prefill }) {
    const t = selected();
    if (!t) return;
    const state = typeState(t);
    clear(
      typeHint,
      t.description || "No description.",
      state.tone === "ok" ? null : h("span", { class: `pill pill-${state.tone}` }, state.label),
      limitsHint(t),
    );
    attempts.placeholder = String(t.maxAttempts ?? "");
    // Replace the payload only if the user has not edited the previous example.
    if (prefill || payload.value.trim() === "" || payload.value === prefilled) {
      prefilled = example(t);
      payload.value = prefilled;
    }
    clear(schemaBox);
    if (t.payloadSchema)
      schemaBox.append(h("summary", null, "Payload schema"), codeBlock(t.payloadSchema, "Payload schema"));
    schemaBox.hidden = !t.payloadSchema;
  }

  typeSelect.addEventListener("change", () => showType({ prefill: false }));
  resetButton.addEventListener("click", () => {
    showType({ prefill: true });
    payload.focus();
  });

  function markInvalid(controls) {
    for (const c of [typeSelect, payload, delay, attempts, idemKey]) c.removeAttribute("aria-invalid");
    for (const c of controls) c.setAttribute("aria-invalid", "true");
  }

  function controlFor(pointer) {
    if (pointer.startsWith("/payload")) return payload;
    if (pointer === "/type") return typeSelect;
    if (pointer === "/delay_seconds" || pointer === "/run_at") return delay;
    if (pointer === "/max_attempts") return attempts;
    if (pointer.startsWith("/headers/Idempotency-Key")) return idemKey;
    return null;
  }

  function localError(control, message) {
    markInvalid([control]);
    clear(
      errorSlot,
      h(
        "div",
        { class: "alert alert-error", role: "alert" },
        h("p", { class: "alert-title" }, "Check the form"),
        h("p", { class: "alert-detail" }, message),
      ),
    );
    control.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(errorSlot);
    markInvalid([]);
    let body;
    try {
      body = { type: typeSelect.value, payload: JSON.parse(payload.value) };
    } catch (err) {
      localError(payload, `Payload is not valid JSON: ${err.message}`);
      return;
    }
    if (delay.validity.badInput) return localError(delay, "Delay must be a number of seconds.");
    if (delay.value !== "") body.delay_seconds = Number(delay.value);
    if (attempts.validity.badInput) return localError(attempts, "Max attempts must be a whole number.");
    if (attempts.value !== "") body.max_attempts = Number(attempts.value);
    const key = idemKey.value;
    submitButton.disabled = true;
    submitButton.textContent = "Submitting…";
    try {
      const response = await api.submit(body, key || undefined, { signal });
      follow(response.data, response.status === 200);
      outcome.scrollIntoView({ block: "nearest" }); // below the form on a phone
    } catch (err) {
      if (err?.name === "AbortError") return;
      markInvalid((err.errors || []).map((e) => controlFor(e.pointer)).filter(Boolean));
      clear(errorSlot, report(err, "submit the task"));
      errorSlot.focus();
    } finally {
      submitButton.disabled = false;
      submitButton.textContent = "Submit task";
    }
  });

  let following = null; // the AbortController of the task being followed

  function follow(task, repeated) {
    following?.abort();
    following = new AbortController();
    const stop = following;
    signal.addEventListener("abort", () => stop.abort());
    const status = h("div", { class: "outcome-status", "aria-live": "polite" });
    const details = h("div", { class: "outcome-details" });
    const problem = h("div", { class: "problem-slot" });
    clear(
      outcome,
      h("h2", { id: "outcome-h" }, "Submitted task"),
      repeated
        ? h(
            "p",
            { class: "alert alert-info" },
            "This Idempotency-Key was used before: the API returned the existing task.",
          )
        : null,
      h(
        "dl",
        { class: "facts" },
        h("dt", null, "Task id"),
        h(
          "dd",
          null,
          h(
            "a",
            { href: taskHref(task.id), class: "mono", "data-task-id": task.id },
            task.id,
          ),
        ),
        h("dt", null, "Type"),
        h("dd", null, task.type),
      ),
      status,
      details,
      problem,
    );
    let shown = "";
    const draw = (t) => {
      const key = `${t.status}|${t.attempts}|${t.updated_at}`;
      if (key === shown) return;
      shown = key;
      clear(
        status,
        badge(t.status),
        h("span", { class: "muted" }, ` attempt ${t.attempts} of ${t.max_attempts}`),
        t.cancel_requested && !TERMINAL.has(t.status)
          ? h("span", { class: "muted" }, " · cancel requested")
          : null,
      );
      const parts = [];
      if (t.status === "queued" && t.run_at && Date.parse(t.run_at) > Date.now()) {
        parts.push(h("p", null, "Runs no earlier than ", timeEl(t.run_at, { withRelative: true }), "."));
      }
      if (t.status === "succeeded") parts.push(h("h3", null, "Result"), codeBlock(t.result, "Result"));
      if (t.error) {
        parts.push(
          h("h3", null, t.status === "failed" ? "Error" : "Last error"),
          h("p", { class: "error-text" }, h("strong", null, t.error.type), `: ${t.error.message}`),
        );
      }
      clear(details, parts);
    };
    draw(task);
    if (TERMINAL.has(task.status)) return;
    poll(
      stop.signal,
      async () => {
        try {
          const { data } = await api.getTask(task.id, { signal: stop.signal });
          clear(problem);
          draw(data);
          if (TERMINAL.has(data.status)) return false;
          // A delayed task need not be asked about every second.
          return data.run_at && Date.parse(data.run_at) - Date.now() > 10000 ? 5000 : 1000;
        } catch (err) {
          if (err?.name === "AbortError") throw err;
          clear(problem, errorBox(err, "refresh the task"));
          return 3000;
        }
      },
      1000,
    );
  }

  (async () => {
    try {
      types = await taskTypes({ fresh: true, signal });
    } catch (err) {
      if (err?.name === "AbortError") return;
      clear(errorSlot, report(err, "load the task types"));
      submitButton.disabled = true;
      return;
    }
    if (!types.length) {
      clear(
        errorSlot,
        h("p", { class: "alert alert-info" }, "No task types are registered; apply a TaskType first."),
      );
      submitButton.disabled = true;
      return;
    }
    clear(
      typeSelect,
      types.map((t) => {
        const state = typeState(t);
        const runnable = t.enabled && t.ready;
        return h(
          "option",
          { value: t.name, disabled: !runnable },
          state.tone === "ok" ? t.name : `${t.name} (${state.label.toLowerCase()})`,
        );
      }),
    );
    const wanted = route.params.get("type");
    const firstRunnable = types.find((t) => t.enabled && t.ready);
    typeSelect.value = types.some((t) => t.name === wanted) ? wanted : firstRunnable?.name || types[0].name;
    showType({ prefill: true });
  })();
}

// What the type's priority and limits do to a submit (and its start), in one line.
function limitsHint(t) {
  const lines = typeLimits(t);
  if (!lines.length) return null;
  return h("span", { "data-field": "limits" }, ` ${lines.join(". ")}.`);
}
