// The status page: polls /status.json every 1.5 s and updates the DOM in place.
// Plain JavaScript, no library, no build step. Everything the server sends is put in the page
// as text (textContent), never as HTML.
"use strict";

const POLL_MS = 1500;
const TOKEN_KEY = "repoman-token";
const REASON_LABELS = {
  bad_input: "bad input", unknown_output: "unknown output", too_large: "too large",
  body_timeout: "body timed out", unauthorized: "unauthorized", queue_full: "queue full",
  timeout: "timed out in queue", unavailable: "version went away", backend: "backend failed",
};

const LOAD_CAUSES = { eager: "eager", lazy: "on a request", explicit: "repository API" };
const EVICTION_REASONS = { memory_budget: "memory budget", idle: "idle" };

let previous = new Map();   // "model/version" -> {time, stats}: the last poll's counters
let shapes = new Map();     // model -> what its section was built from (all but the counters)
let timer = null;

// ---- small helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers() {
  const given = token();
  return given ? { Authorization: "Bearer " + given } : {};
}

function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value === Infinity) return "> 10 s";
  if (value < 0.001) return (value * 1e6).toFixed(0) + " µs";
  if (value < 1) return (value * 1e3).toFixed(1) + " ms";
  return value.toFixed(2) + " s";
}

// Bytes as the server's logs and reasons write them (repoman.memory.format_size).
function bytes(value) {
  if (value === null || value === undefined) return "–";
  for (const [unit, scale] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]]) {
    if (Math.abs(value) >= scale) return (value / scale).toFixed(1) + " " + unit;
  }
  return Math.trunc(value) + " B";
}

function number(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return value.toFixed(digits);
}

// A quantile of a histogram's per-bucket counts, interpolated within its bucket.
function quantile(hist, q) {
  const total = hist.counts.reduce((a, b) => a + b, 0);
  if (!total) return null;
  let seen = 0;
  for (let i = 0; i < hist.counts.length; i++) {
    const count = hist.counts[i];
    if (seen + count >= q * total && count > 0) {
      if (i >= hist.bounds.length) return Infinity;
      const low = i === 0 ? 0 : hist.bounds[i - 1];
      return low + (hist.bounds[i] - low) * ((q * total - seen) / count);
    }
    seen += count;
  }
  return null;
}

function minus(now, before) {
  if (!before) return now;
  return { bounds: now.bounds, counts: now.counts.map((c, i) => c - (before.counts[i] || 0)),
           sum: now.sum - before.sum };
}

// ---- the model sections --------------------------------------------------------------------

function issuesList(issues) {
  if (!issues || !issues.length) return null;
  return h("ul", {}, issues.map((issue) =>
    h("li", {}, h("code", {}, issue.file + ":" + issue.line + (issue.column ? ":" + issue.column : "")),
      " " + issue.severity + ": " + issue.message)));
}

function errorBox(text, issues) {
  // The located issues as a list (file:line first, as `repoman validate` prints them); any
  // other line of the message as text.
  const located = new Set((issues || []).map((i) => i.file + ":" + i.line));
  const rest = text.split("\n").filter((line) => ![...located].some((where) => line.includes(where + ":") || line.startsWith(where + " ")));
  return h("div", { class: "error", role: "note" },
    rest.length ? h("p", { style: "margin:0" }, rest.join("\n")) : null, issuesList(issues));
}

function shortSeconds(value) {
  if (value < 0.001) return Math.round(value * 1e6) + "µ";
  if (value < 1) return +(value * 1e3).toFixed(1) + "m";
  return +value.toFixed(1) + "s";
}

function configView(config, filled) {
  // Pretty JSON with what auto-complete filled in wrapped in <mark>.
  const marked = new Set(filled);
  const pre = h("pre", { class: "config", tabindex: "0" });
  const write = (value, path, indent, out) => {
    const pad = "  ".repeat(indent);
    if (Array.isArray(value)) {
      if (!value.length) { out.append("[]"); return; }
      out.append("[\n");
      value.forEach((item, i) => {
        const named = item && typeof item === "object" && "name" in item && /^(input|output)$/.test(path);
        const itemPath = named ? path + "." + item.name : path;
        const target = named && marked.has(itemPath) ? mark(out) : out;
        target.append(pad + "  ");
        write(item, itemPath, indent + 1, target);
        out.append(i < value.length - 1 ? ",\n" : "\n");
      });
      out.append(pad + "]");
    } else if (value && typeof value === "object") {
      const keys = Object.keys(value);
      if (!keys.length) { out.append("{}"); return; }
      out.append("{\n");
      keys.forEach((key, i) => {
        const keyPath = path ? path + "." + key : key;
        const target = marked.has(keyPath) ? mark(out) : out;
        target.append(pad + "  " + JSON.stringify(key) + ": ");
        write(value[key], keyPath, indent + 1, target);
        out.append(i < keys.length - 1 ? ",\n" : "\n");
      });
      out.append(pad + "}");
    } else {
      out.append(JSON.stringify(value));
    }
  };
  const mark = (out) => {
    const node = h("mark", { title: "filled in by auto-complete from the model file" });
    out.append(node);
    return node;
  };
  write(config, "", 0, pre);
  return pre;
}

function chart(id, caption, bounds, label) {
  const columns = bounds.length + 1;
  const bars = h("div", { class: "bars", "aria-hidden": "true", "data-bars": id });
  const axis = h("div", { class: "axis", "aria-hidden": "true" });
  for (let i = 0; i < columns; i++) {
    bars.append(h("span", { style: "height:0%" }));
    axis.append(h("span", {}, i < bounds.length ? label(bounds[i]) : "more"));
  }
  return h("figure", { role: "img", "aria-label": caption, "data-chart": id },
    h("figcaption", {}, caption), bars, axis);
}

function reasonsTable(version) {
  return h("table", {},
    h("caption", {}, "Errors by reason"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Reason"), h("th", { scope: "col", class: "num" }, "Count"))),
    h("tbody", {}, Object.keys(REASON_LABELS).map((reason) =>
      h("tr", {}, h("th", { scope: "row" }, REASON_LABELS[reason]),
        h("td", { class: "num", "data-field": "failures." + reason }, "0")))));
}

function splitTable() {
  const parts = [["queue_seconds", "Queue"], ["batch_wait_seconds", "Batch wait"],
                 ["compute_seconds", "Compute"], ["encode_seconds", "Encode"],
                 ["latency_seconds", "End to end"]];
  return h("table", {},
    h("caption", {}, "Time per request (mean since load)"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Part"), h("th", { scope: "col", class: "num" }, "Mean"))),
    h("tbody", {}, parts.map(([field, name]) =>
      h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num", "data-field": "mean." + field }, "–")))));
}

function versionDetails(model, version) {
  const id = "details-" + model.name + "-" + version.version;
  const stats = version.stats;
  return h("details", { id, "data-version": version.version },
    h("summary", {}, "Version " + version.version + ": counters, histograms, config"),
    version.steps.length ? h("div", {}, h("h4", {}, "Steps"), h("ol", {}, version.steps.map((step) =>
      h("li", {}, h("code", {}, step.model), step.version > 0 ? " version " + step.version : " (newest ready)",
        ": reads " + Object.entries(step.inputs).map(([k, v]) => v + "→" + k).join(", "),
        "; writes " + Object.entries(step.outputs).map(([k, v]) => k + "→" + v).join(", "))))) : null,
    h("div", { class: "charts" },
      chart("batch_sizes", "Batch sizes (executions per size)", stats.batch_sizes.bounds, (b) => "≤" + b),
      chart("queue_seconds", "Queue time (requests; µ = µs, m = ms)", stats.queue_seconds.bounds, shortSeconds),
      h("div", { class: "scroll" }, reasonsTable(version)),
      h("div", { class: "scroll" }, splitTable())),
    h("h4", {}, "Config ", h("span", { class: "muted" },
      version.auto_completed.length ? "(highlighted: filled in by auto-complete)" : "(nothing auto-completed)")),
    configView(version.config, version.auto_completed),
    version.warnings.length ? h("ul", { class: "muted" }, version.warnings.map((w) => h("li", {}, w))) : null);
}

function memoryCell(model, version) {
  // What the version holds, measured at its load; "≈": predicted from its files (it has not
  // loaded yet). An ensemble holds nothing of its own.
  if (model.ensemble) return h("td", { class: "num", "data-field": "memory" }, "–");
  const how = version.memory_measured ? "measured" : "predicted";
  return h("td", { class: "num", "data-field": "memory", "data-memory": how,
                   title: version.memory_measured ? "measured when it loaded" : "predicted from its files" },
    (version.memory_measured ? "" : "≈") + bytes(version.memory_bytes));
}

function modelSection(model, control) {
  const rows = [];
  for (const version of model.versions) {
    const serving = model.serving === version.version;
    rows.push(h("tr", { "data-version": version.version },
      h("th", { scope: "row" }, String(version.version)),
      h("td", { class: "state state-" + version.state, "data-field": "state" },
        version.state + (serving ? " · serving" : "")),
      h("td", { class: "num" }, version.state === "READY" || version.load_seconds ? seconds(version.load_seconds) : "–"),
      memoryCell(model, version),
      h("td", { class: "num", "data-field": "rate" }, "–"),
      h("td", { class: "num", "data-field": "p50" }, "–"),
      h("td", { class: "num", "data-field": "p99" }, "–"),
      h("td", { class: "num", "data-field": "queued" }, "0"),
      h("td", { class: "num", "data-field": "batch" }, "–"),
      h("td", { class: "num", "data-field": "errors" }, "0")));
    if (version.reason) {
      rows.push(h("tr", { class: "reason", "data-reason-of": version.version },
        h("td", { colspan: "10" }, version.state === "AVAILABLE"
          ? h("p", { class: "note" }, version.reason) : errorBox(version.reason, version.issues))));
    }
  }
  const routing = model.serving !== null
    ? ["Requests without a version go to version ", h("strong", { "data-field": "serving" }, String(model.serving)), "."]
    : ["No version serves requests without a version", model.versions.length || !model.error ? ": " + model.not_serving : " (see below)."];
  const actions = control ? h("div", { class: "actions" },
    h("button", { type: "button", onclick: () => act(model.name, "load") }, "Load " + model.name),
    h("button", { type: "button", onclick: () => act(model.name, "unload") }, "Unload " + model.name)) : null;
  const headingId = "model-" + model.name;
  return h("section", { class: "model", "data-model": model.name, "aria-labelledby": headingId },
    h("h3", { id: headingId }, model.name, model.ensemble ? [" ", h("span", { class: "badge" }, "ensemble")] : null),
    h("p", {}, routing),
    model.error && !model.versions.length ? errorBox(model.error, model.issues) : null,
    model.error && model.versions.length ? errorBox("The model's config now fails; the versions above keep what they loaded:\n" + model.error, model.issues) : null,
    actions,
    model.versions.length ? h("div", { class: "scroll" }, h("table", { class: "versions" },
      h("caption", { class: "sr-only" }, "Versions of " + model.name),
      h("thead", {}, h("tr", {}, ["Version", "State", "Load time", "Memory", "Requests/s", "p50", "p99", "Queued", "Mean batch", "Errors"]
        .map((name, i) => h("th", { scope: "col", class: i >= 2 ? "num" : null }, name)))),
      h("tbody", {}, rows))) : null,
    model.versions.map((version) => versionDetails(model, version)));
}

// ---- live numbers --------------------------------------------------------------------------

function setText(root, field, text) {
  const node = root.querySelector('[data-field="' + field + '"]');
  if (node && node.textContent !== text) node.textContent = text;
}

function setBars(figure, hist) {
  const total = Math.max(1, ...hist.counts);
  figure.querySelectorAll(".bars span").forEach((bar, i) => {
    bar.style.height = ((hist.counts[i] || 0) / total * 100).toFixed(1) + "%";
  });
  figure.setAttribute("aria-label", figure.querySelector("figcaption").textContent + ": " +
    hist.counts.map((c, i) => (i < hist.bounds.length ? "up to " + hist.bounds[i] : "more") + ": " + c).join(", "));
}

function updateLive(model, version, now) {
  const key = model.name + "/" + version.version;
  const stats = version.stats;
  const before = previous.get(key);
  previous.set(key, { time: now, stats });
  const section = document.querySelector('section[data-model="' + CSS.escape(model.name) + '"]');
  if (!section) return;
  const row = section.querySelector('tr[data-version="' + version.version + '"]');
  const details = section.querySelector('details[data-version="' + version.version + '"]');
  if (!row || !details) return;
  const answered = stats.success + stats.fail;
  if (before) {
    const dt = Math.max(0.001, now - before.time);
    const done = answered - (before.stats.success + before.stats.fail);
    setText(row, "rate", number(Math.max(0, done) / dt, 1));
    const window = minus(stats.latency_seconds, before.stats.latency_seconds);
    setText(row, "p50", seconds(quantile(window, 0.5)));
    setText(row, "p99", seconds(quantile(window, 0.99)));
    const rows = stats.inferences - before.stats.inferences;
    const runs = stats.executions - before.stats.executions;
    setText(row, "batch", runs > 0 ? number(rows / runs, 2) : stats.executions ? number(stats.inferences / stats.executions, 2) : "–");
  }
  setText(row, "queued", String(stats.queued));
  setText(row, "errors", String(stats.fail));
  for (const [reason, count] of Object.entries(stats.failures)) setText(details, "failures." + reason, String(count));
  for (const field of ["queue_seconds", "batch_wait_seconds", "compute_seconds", "encode_seconds", "latency_seconds"]) {
    const hist = stats[field];
    const count = hist.counts.reduce((a, b) => a + b, 0);
    setText(details, "mean." + field, count ? seconds(hist.sum / count) : "–");
  }
  for (const id of ["batch_sizes", "queue_seconds"]) {
    const figure = details.querySelector('[data-chart="' + id + '"]');
    if (figure) setBars(figure, stats[id]);
  }
}

// ---- memory --------------------------------------------------------------------------------

function memoryCounts() {
  // One row: the columns keep their place while the counts change.
  const columns = [...Object.entries(LOAD_CAUSES).map(([cause, label]) => ["loads." + cause, label]),
                   ...Object.entries(EVICTION_REASONS).map(([reason, label]) => ["evictions." + reason, label])];
  const loads = Object.keys(LOAD_CAUSES).length;
  return h("table", {},
    h("caption", {}, "Loads and evictions since the server started"),
    h("thead", {},
      h("tr", {}, h("th", { scope: "colgroup", colspan: String(loads) }, "Loads"),
        h("th", { scope: "colgroup", colspan: String(columns.length - loads) }, "Evictions")),
      h("tr", {}, columns.map(([, label]) => h("th", { scope: "col", class: "num" }, label)))),
    h("tbody", {}, h("tr", {}, columns.map(([field]) => h("td", { class: "num", "data-field": field }, "0")))));
}

function memoryView(memory, models) {
  const section = document.getElementById("memory");
  if (!memory) return;
  const counts = document.getElementById("memory-counts");
  if (!counts.firstChild) counts.append(memoryCounts());
  const versions = models.flatMap((m) => m.ensemble ? [] : m.versions);
  const held = versions.filter((v) => ["READY", "LOADING", "UNLOADING"].includes(v.state)).length;
  const parked = versions.filter((v) => v.state === "AVAILABLE").length;
  const where = held + " version" + (held === 1 ? "" : "s") + " in memory, " + parked + " available (loaded on a request).";
  const meter = document.getElementById("memory-meter");
  let summary;
  if (memory.budget_bytes) {
    const share = Math.min(100, memory.used_bytes / memory.budget_bytes * 100);
    summary = "Loaded versions hold " + bytes(memory.used_bytes) + " of the " + bytes(memory.budget_bytes) +
      " budget (" + share.toFixed(0) + "%); " + where;
    meter.hidden = false;
    meter.setAttribute("aria-valuenow", share.toFixed(0));
    meter.classList.toggle("full", share >= 90);
    meter.querySelector("span").style.width = share.toFixed(1) + "%";
  } else {
    summary = "Loaded versions hold " + bytes(memory.used_bytes) + " (no memory budget: --memory-budget sets one); " + where;
    meter.hidden = true;
  }
  setText(section, "summary", summary);
  for (const [cause] of Object.entries(LOAD_CAUSES)) setText(section, "loads." + cause, String(memory.loads[cause] || 0));
  for (const [reason] of Object.entries(EVICTION_REASONS)) setText(section, "evictions." + reason, String(memory.evictions[reason] || 0));
}

// ---- the repository ------------------------------------------------------------------------

function repositoryView(report, doc) {
  const body = document.getElementById("repository-body");
  const shape = JSON.stringify(report);
  if (body.dataset.shape === shape) return;
  body.dataset.shape = shape;
  body.replaceChildren();
  if (!report) {
    body.append(h("p", { class: "muted" }, "What the watcher saw is shown with the control token (as the repository API)."));
    return;
  }
  const how = report.mode === "poll"
    ? "Watching for changes (and rescanning every " + report.poll_seconds + " s); a version counts once its files have been still for " + report.quiet_seconds + " s."
    : report.mode === "explicit" ? "Explicit mode: models load and unload only through the repository API."
    : "Read once at start-up (control mode none).";
  body.append(h("p", {}, how));
  if (!report.scanned_at) return;
  const at = new Date(report.scanned_at * 1000);
  body.append(h("p", {}, "Last pass: ", h("time", { datetime: at.toISOString(), "data-field": "scanned" }, at.toLocaleTimeString()),
    report.failed ? " — the repository could not be listed" : ""));
  const models = Object.entries(report.models || {});
  body.append(h("div", { class: "scroll" }, h("table", {},
    h("caption", {}, "Model folders seen"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Folder"), h("th", { scope: "col" }, "Versions on disk"), h("th", { scope: "col" }, "Settling (being copied)"))),
    h("tbody", {}, models.map(([name, folder]) => h("tr", { "data-folder": name },
      h("th", { scope: "row" }, name),
      h("td", {}, folder.versions.join(", ") || "none"),
      h("td", { "data-field": "settling" }, [folder.settling.length ? "versions " + folder.settling.join(", ") : "",
        folder.config_settling_seconds > 0 ? " config file still changing" : ""].join("").trim() || "–")))))));
  body.append(h("h3", {}, "Ignored"));
  const ignored = [...(report.ignored || []), ...(report.unreadable || []).map((p) => p + ": could not be read")];
  body.append(ignored.length ? h("ul", { id: "ignored" }, ignored.map((line) => h("li", {}, line))) : h("p", { class: "muted" }, "Nothing."));
}

// ---- polling -------------------------------------------------------------------------------

async function act(name, what) {
  const status = document.getElementById("connection");
  status.textContent = (what === "load" ? "Loading " : "Unloading ") + name + "…";
  const response = await fetch("/v2/repository/models/" + encodeURIComponent(name) + "/" + what,
    { method: "POST", headers: headers() });
  const answer = await response.json().catch(() => ({}));
  status.textContent = response.ok ? name + ": " + what + " done" : name + ": " + (answer.error || response.status);
  poll();
}

function render(doc) {
  document.getElementById("server-version").textContent = doc.server.version + (doc.server.ready ? "" : " (starting)");
  const container = document.getElementById("models");
  const seen = new Set();
  for (const model of doc.models) {
    seen.add(model.name);
    const shape = JSON.stringify([model, doc.control], (key, value) => (key === "stats" ? undefined : value));
    let section = container.querySelector('section[data-model="' + CSS.escape(model.name) + '"]');
    if (!section || shapes.get(model.name) !== shape) {
      const open = section ? [...section.querySelectorAll("details[open]")].map((d) => d.id) : [];
      const fresh = modelSection(model, doc.control);
      for (const id of open) { const d = fresh.querySelector("#" + CSS.escape(id)); if (d) d.open = true; }
      if (section) section.replaceWith(fresh); else container.append(fresh);
      shapes.set(model.name, shape);
      section = fresh;
    }
  }
  for (const section of [...container.querySelectorAll("section[data-model]")]) {
    if (!seen.has(section.dataset.model)) { section.remove(); shapes.delete(section.dataset.model); }
  }
  if (!doc.models.length) {
    if (!container.querySelector(".empty")) container.replaceChildren(h("p", { class: "empty muted" }, "The repository holds no model."));
  } else {
    container.querySelector(".empty")?.remove();
  }
  for (const model of doc.models) for (const version of model.versions) updateLive(model, version, doc.time);
  memoryView(doc.memory, doc.models);
  repositoryView(doc.repository, doc);
}

async function poll() {
  clearTimeout(timer);
  const status = document.getElementById("connection");
  try {
    const response = await fetch("/status.json", { headers: headers(), cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      status.textContent = response.status === 401
        ? "This server needs a token to show its models: type it above."
        : "The token was refused.";
    } else if (!response.ok) {
      status.textContent = "The server answered " + response.status + ".";
    } else {
      const doc = await response.json();
      render(doc);
      status.textContent = "Live · updated " + new Date(doc.time * 1000).toLocaleTimeString();
      document.body.dataset.updated = String(doc.time);
    }
  } catch (error) {
    status.textContent = "The server cannot be reached (" + error.message + "); retrying.";
  }
  timer = setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token").value = token();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    shapes = new Map();
    poll();
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token").value = "";
    shapes = new Map();
    poll();
  });
  poll();
});
