// labstats explorer: the controls change the view in place (the server aggregates and
// answers Bokeh charts as JSON, /explorer/view) and the view is kept in the URL
// (history.replaceState), so a reload or a bookmark opens the same view. Names shown
// here are the runs' own text: written with textContent and option values only.
"use strict";

const REDRAW_DELAY_MS = 250;

const explorer = { managers: [], asked: 0, timer: null };

function explorerForm() { return document.getElementById("explorer-form"); }

// The form as a query: an empty "over" says "aggregate over nothing" (none at all would
// mean the default, the seed-like keys).
function viewQuery(form) {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(form)) if (value !== "" || key === "filter") params.append(key, value);
  if (!params.has("over")) params.append("over", "");
  if (params.get("filter") === "") params.delete("filter");
  if (params.get("smooth") === "0") params.delete("smooth");
  return params;
}

function checkboxes(holder, name, values, checked) {
  holder.replaceChildren();
  for (const value of values) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = name;
    box.value = value;
    box.checked = checked.includes(value);
    label.append(box, ` ${value} `);
    holder.append(label);
  }
}

function options(select, values, chosen) {
  const first = select.options[0]; // "nothing" / "each line"
  select.replaceChildren(first);
  for (const value of values) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = value;
    option.selected = value === chosen;
    select.append(option);
  }
  if (chosen && !values.includes(chosen)) select.value = "";
}

function clearCharts() {
  for (const manager of explorer.managers) {
    for (const view of [...manager.roots]) {
      const doc = view.model.document;
      view.remove();
      const at = window.Bokeh.documents.indexOf(doc);
      if (at >= 0) window.Bokeh.documents.splice(at, 1);
    }
  }
  explorer.managers = [];
  document.getElementById("explorer-charts").replaceChildren();
}

function render(answer) {
  const state = answer.state;
  checkboxes(document.getElementById("explorer-metrics"), "metric", answer.metrics, state.metric);
  options(document.getElementById("explorer-split"), answer.keys, state.split);
  options(document.getElementById("explorer-color"), answer.keys, state.color);
  checkboxes(document.getElementById("explorer-over"), "over", answer.keys, state.over);
  document.getElementById("explorer-count").textContent = `${answer.runs} run${answer.runs === 1 ? "" : "s"}`;
  const notes = document.getElementById("explorer-notes");
  notes.replaceChildren(...answer.notes.map((text) => { const li = document.createElement("li"); li.textContent = text; return li; }));
  clearCharts();
  const grid = document.getElementById("explorer-charts");
  if (!answer.charts.length) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = answer.runs ? "These runs have no numeric series to draw." : "No run matches.";
    grid.append(none);
  }
  for (const chart of answer.charts) {
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.title = chart.title;
    const counts = document.createElement("div");
    counts.className = "explorer-lines muted";
    for (const line of chart.lines) {
      const item = document.createElement("span");
      item.className = "explorer-line";
      item.dataset.n = line.n;
      item.style.setProperty("--swatch", line.color);
      item.textContent = line.label;
      counts.append(item);
    }
    const target = document.createElement("div");
    target.id = chart.target;
    target.className = "bk-target";
    box.append(counts, target); // the title is the chart's own
    grid.append(box);
    window.Bokeh.embed.embed_item(chart.spec).then((manager) => {
      explorer.managers.push(manager);
      target.dataset.rendered = "true";
    });
  }
  document.getElementById("explorer-smooth-value").textContent = String(state.smooth);
}

function showError(message) {
  const error = document.getElementById("explorer-error");
  error.textContent = message || "";
  error.hidden = !message;
  const filter = document.getElementById("explorer-filter");
  if (filter) filter.classList.toggle("invalid", Boolean(message && message.startsWith("filter")));
}

async function redraw() {
  const form = explorerForm();
  const query = viewQuery(form);
  const asked = ++explorer.asked;
  form.dataset.busy = "true";
  try {
    const response = await fetch(`${form.dataset.viewUrl}?${query}`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const answer = await response.json();
    if (asked !== explorer.asked) return; // a later change is on its way
    if (!response.ok) { showError(answer.error || `error ${response.status}`); return; }
    showError("");
    render(answer);
    history.replaceState(null, "", `${window.location.pathname}?${answer.query}`);
  } catch (err) {
    if (asked === explorer.asked) showError(`the view could not be read (${err.message})`);
  } finally {
    if (asked === explorer.asked) delete form.dataset.busy;
  }
}

function later() {
  clearTimeout(explorer.timer);
  explorer.timer = setTimeout(redraw, REDRAW_DELAY_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = explorerForm();
  if (!form) return;
  form.addEventListener("submit", (e) => { e.preventDefault(); redraw(); });
  form.addEventListener("change", (e) => { if (e.target.id !== "explorer-filter") redraw(); });
  const filter = document.getElementById("explorer-filter");
  if (filter) {
    // A filter is applied on Enter or when it is left: half an expression does not parse.
    filter.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); redraw(); } });
    filter.addEventListener("change", redraw);
  }
  const smooth = document.getElementById("explorer-smooth");
  smooth.addEventListener("input", () => { document.getElementById("explorer-smooth-value").textContent = smooth.value; later(); });
  const block = document.getElementById("explorer-view");
  if (!block) return; // a bad view: its error is on the page, the controls kept
  const answer = JSON.parse(block.textContent);
  const start = () => { render(answer); history.replaceState(null, "", `${window.location.pathname}?${answer.query}`); };
  if (window.Bokeh) start(); else window.addEventListener("load", start);
});
