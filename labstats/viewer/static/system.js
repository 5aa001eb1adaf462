// The run page's System group (its sys/ series on the wall-clock axis): while the run is
// live, add what the group lacks (a section, a chart of a series that started since, the
// samplers' newest status texts) and keep its counts and latest values. The charts' points
// come with the page's one-a-second poll (viewer.js), which refreshes every embedded live
// chart, these included.
"use strict";

const SYSTEM_POLL_MS = 5000;

function systemNode(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// The group's charts are drawn once it is open: a closed group's would be polled every
// second for nothing (viewer.js keeps every drawn live chart fresh).
function drawSystemCharts(group) {
  if (!group.open || typeof embedChart !== "function") return;
  for (const block of group.querySelectorAll("script.system-spec:not([data-drawn])")) {
    block.dataset.drawn = "true";
    embedChart(JSON.parse(block.textContent)).catch((err) => console.warn(err));
  }
}

// A chart's figure links as the server's chart heads have them (_chart_links.html): on the
// wall-clock axis, downloaded under the run's and series' name. A chart added while the run
// went on had only its CSV link. The run page's own address is the run's (/runs/SOURCE/RUN_ID).
function systemFigureLinks(name) {
  const run = window.location.pathname.replace(/\/+$/, "");
  const file = `${decodeURIComponent(run.split("/").pop())}-${name.replaceAll("/", "-")}`;
  const links = [];
  for (const fmt of ["svg", "png"]) {
    const href = `${run}/figure.${fmt}?series=${encodeURIComponent(name)}&x=wall-idx`;
    links.push(" · ", systemNode("a", { class: "figure-link", href, download: `${file}.${fmt}`,
      title: `this chart as a ${fmt.toUpperCase()} figure for a paper`, text: fmt.toUpperCase() }));
  }
  return links;
}

function systemChart(plot) {
  const head = systemNode("div", { class: "chart-head", title: plot.description || "" }, `${plot.name} `,
    systemNode("span", { class: "muted" },
      systemNode("span", { class: "points", "data-count": plot.count ?? "", text: plot.count ?? "" }),
      " points · latest ", systemNode("span", { class: "latest", text: plot.latest ?? "" })),
    " · ", systemNode("a", { href: plot.csv, text: "raw CSV" }), ...systemFigureLinks(plot.name));
  const spec = systemNode("script", { type: "application/json", class: "system-spec", text: JSON.stringify(plot.spec) });
  return systemNode("div", { class: "chart", "data-name": plot.name, "data-target": plot.target },
    head, systemNode("div", { id: plot.target, class: "bk-target" }), spec);
}

function systemSection(group, title) {
  for (const section of group.querySelectorAll(".system-section")) if (section.dataset.section === title) return section;
  const section = systemNode("section", { class: "system-section", "data-section": title },
    systemNode("h3", { text: title }), systemNode("div", { class: "chart-grid" }));
  group.querySelector(".system-sections").append(section);
  return section;
}

// The answer's sections in its order: a chart the page lacks is put before the first one
// after it there (the server's order), and embedded (viewer.js keeps it live from then on).
function applySystem(group, answer) {
  let added = false;
  for (const { title, plots } of answer.sections) {
    const section = systemSection(group, title);
    const grid = section.querySelector(".chart-grid");
    const names = plots.map((p) => p.name);
    for (const [k, plot] of plots.entries()) {
      const have = [...grid.children].find((c) => c.dataset.name === plot.name);
      if (have) {
        const points = have.querySelector(".points");
        points.dataset.count = plot.count ?? "";
        points.textContent = plot.count ?? "";
        have.querySelector(".latest").textContent = plot.latest ?? "";
        continue;
      }
      const later = new Set(names.slice(k + 1));
      const next = [...grid.children].find((c) => later.has(c.dataset.name));
      if (!plot.spec) continue; // asked for without specs: the next answer brings it
      grid.insertBefore(systemChart(plot), next || null);
      added = true;
    }
  }
  // The sections in the answer's order (a GPU's section after the box's).
  const order = answer.sections.map((s) => s.title);
  const holder = group.querySelector(".system-sections");
  for (const title of order) holder.append(systemSection(group, title));
  const statuses = group.querySelector(".system-statuses");
  statuses.replaceChildren(...answer.statuses.map((s) => systemNode("p", { class: "system-status", "data-name": s.name },
    systemNode("span", { class: "muted", text: s.name }), " ", systemNode("span", { class: "status-text", text: s.text }))));
  group.querySelector(".group-count").textContent = String(group.querySelectorAll(".chart-grid > .chart").length);
  if (answer.sections.length || answer.statuses.length) group.hidden = false;
  if (added) drawSystemCharts(group);
  if (added && typeof applyFilter === "function") applyFilter();
}

// No poll of its own: the page's poll (viewer.js, POST /api/live once a second) is watched
// instead (the requests it makes, as the browser's resource timing lists them). When it asks
// for the charts of new series and some are sys/ ones, the group is asked for at once; while
// it polls and the group has charts, at most every SYSTEM_POLL_MS for their counts and values.
// A run without system metrics thus costs no request at all.
function followSystem(group) {
  const chartsPath = new URL(document.getElementById("run-charts")?.dataset.url || "/", window.location.href).pathname;
  let last = 0, asking = false, done = false;
  const get = async (specs) => {
    const response = await fetch(`${group.dataset.url}?specs=${specs}`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`${group.dataset.url}: ${response.status}`);
    return response.json();
  };
  // The counts and values first (no specs: 60 charts' are ~1 MB); the specs only when the
  // group lacks a chart.
  const ask = async () => {
    if (asking || done) return;
    asking = true;
    last = Date.now();
    try {
      let answer = await get(0);
      const have = new Set([...group.querySelectorAll(".chart[data-name]")].map((c) => c.dataset.name));
      if (answer.sections.some((s) => s.plots.some((p) => !have.has(p.name)))) answer = await get(1);
      applySystem(group, answer);
      if (!answer.live) done = true;
    } catch (err) { console.warn(err); } finally { asking = false; }
  };
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const url = new URL(entry.name, window.location.href);
      if (url.pathname === chartsPath && url.searchParams.getAll("name").some((n) => n.startsWith("sys/"))) ask();
      else if (url.pathname.endsWith("/api/live") && group.querySelector(".chart") && Date.now() - last > SYSTEM_POLL_MS) ask();
    }
    if (done) observer.disconnect();
  });
  observer.observe({ type: "resource" });
}

document.addEventListener("DOMContentLoaded", () => {
  const group = document.getElementById("run-system");
  if (!group) return;
  group.addEventListener("toggle", () => drawSystemCharts(group));
  drawSystemCharts(group);
  if (group.dataset.live === "true") followSystem(group);
});
