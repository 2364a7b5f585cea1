// The console's shell: hash routes (so StaticFiles serves one page and the API keeps
// every other path), the navigation, the token state, and one view at a time.

import { api, getToken, setToken } from "./api.js";
import { clear, h } from "./dom.js";
import { initTokenDialog, pageHeader } from "./ui.js";
import { overviewView } from "./views/overview.js";
import { scheduleView, schedulesView } from "./views/schedules.js";
import { submitView } from "./views/submit.js";
import { taskView } from "./views/task.js";
import { tasksView } from "./views/tasks.js";

const VIEWS = {
  overview: overviewView,
  submit: submitView,
  tasks: tasksView,
  task: taskView,
  schedules: schedulesView,
  schedule: scheduleView,
};
const TITLES = {
  overview: "Overview",
  submit: "Submit",
  tasks: "Tasks",
  task: "Task",
  schedules: "Schedules",
  schedule: "Schedule",
};
// Detail views, reached from a list: the list's nav entry stays current on them.
const SECTION = { task: "tasks", schedule: "schedules" };

function decode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part; // a stray "%": shown as typed, and the API answers 404 for it
  }
}

export function parseRoute(hash) {
  const raw = hash.replace(/^#/, "") || "/overview";
  const [path, search = ""] = raw.split("?");
  const params = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean);
  if (parts.length === 0) return { name: "overview", params };
  if (parts[0] === "tasks" && parts.length === 2)
    return { name: "task", id: decode(parts[1]), params };
  if (parts[0] === "schedules" && parts.length === 2)
    return { name: "schedule", id: decode(parts[1]), params };
  if (parts.length === 1 && parts[0] in VIEWS && !(parts[0] in SECTION)) return { name: parts[0], params };
  return { name: "missing", path, params };
}

let current = null; // {controller, name}

function render({ focus = true } = {}) {
  const main = document.getElementById("main");
  current?.controller.abort(); // stops the old view's polls and pending fetches
  const controller = new AbortController();
  const route = parseRoute(window.location.hash);
  const sameView = current?.name === route.name;
  const focusedId = sameView ? document.activeElement?.id : "";
  current = { controller, name: route.name };
  for (const link of document.querySelectorAll(".nav a")) {
    const section = SECTION[route.name] || route.name;
    if (link.dataset.route === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${TITLES[route.name] || "Not found"} · Conveyor`;
  const view = VIEWS[route.name];
  clear(main);
  if (!view) {
    main.append(
      pageHeader("Page not found"),
      h(
        "p",
        null,
        "There is no console page at this address. ",
        h("a", { href: "#/overview" }, "Go to the overview"),
        ".",
      ),
    );
  } else {
    view(main, route, { signal: controller.signal });
  }
  if (!focus) return;
  // A new view: focus its heading, so keyboard and screen-reader users land on it. The
  // same view with new parameters (a filter, a page): keep focus on the control used.
  const again = focusedId ? document.getElementById(focusedId) : null;
  if (again && !again.disabled) again.focus();
  else main.querySelector("h1")?.focus();
}

function updateSession() {
  document.getElementById("session").hidden = !getToken();
}

function start() {
  initTokenDialog(() => {
    updateSession();
    render();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    setToken("");
    // The stream cookie holds the token too: forgotten with it.
    api.closeSession().catch(() => {});
    render();
  });
  window.addEventListener("conveyor:token", updateSession);
  window.addEventListener("hashchange", () => render());
  updateSession();
  render({ focus: false });
}

start();
