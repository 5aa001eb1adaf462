// labstats viewer: embed the Bokeh charts, show times in local time, keep pages live, and
// redraw the charts in place when a control changes (the view's state lives in the URL).
// No inline scripts anywhere: chart specs are JSON data blocks in the page or JSON answers.
"use strict";

function showTimes(root) {
  for (const cell of root.querySelectorAll("[data-time]")) {
    const t = parseFloat(cell.dataset.time);
    cell.textContent = Number.isFinite(t) ? new Date(t * 1000).toLocaleString() : "";
  }
}

async function fetchJSON(url, options = {}) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", ...options });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

function setStatus(badge, status) {
  if (!badge || badge.textContent === status) return;
  badge.textContent = status;
  badge.className = `badge ${status}`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ---- the charts of the page: embedded, and removed again when a view is redrawn ---------

const embedded = new Map(); // target id → {views, doc}

async function embedChart(spec) {
  const target = document.getElementById(spec.target_id);
  if (!target || !window.Bokeh) return;
  const views = await window.Bokeh.embed.embed_item(spec);
  const root = views.roots[0];
  embedded.set(spec.target_id, { views, doc: root ? root.model.document : null });
  target.dataset.rendered = "true";
}

function embedCharts(root) {
  for (const block of root.querySelectorAll("script.chart-spec")) {
    embedChart(JSON.parse(block.textContent)).catch((err) => console.warn(err));
  }
}

// Charts whose targets left the page: their views and documents go too (else the poll
// would still ask for their windows).
function forgetCharts() {
  for (const [target, { views, doc }] of embedded) {
    if (document.getElementById(target)) continue;
    for (const view of views.roots) view.remove();
    const documents = window.Bokeh.documents;
    const at = documents.indexOf(doc);
    if (at >= 0) documents.splice(at, 1);
    embedded.delete(target);
  }
}

function chartFigures() {
  const figures = [];
  for (const { doc } of embedded.values()) if (doc) for (const root of doc.roots()) if (root.renderers) figures.push(root);
  return figures;
}

// ---- chart controls: filter, smoothing, outlier clipping (here), axes and merged groups
// (a redraw from the server's JSON), all written into the URL ------------------------------

const chartControls = { weight: 0, clip: false };

// TensorBoard's smoothing: an exponential moving average, debiased at the start.
function ema(values, weight) {
  const out = new Array(values.length);
  let last = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) { out[i] = v; continue; }
    last = last * weight + (1 - weight) * v;
    n += 1;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
}

// Called when a chart's points arrive (a CustomJS of its data source) and when a control changes.
function labstatsRedraw(fig) {
  const byName = {};
  for (const r of fig.renderers) byName[r.name] = r;
  const all = [];
  for (let n = 0; byName[`raw-${n}`]; n++) {
    const raw = byName[`raw-${n}`], smooth = byName[`smooth-${n}`], dot = byName[`dot-${n}`];
    const { idx, values } = raw.data_source.data;
    dot.visible = idx.length === 1; // a line of one point draws nothing
    const smoothing = chartControls.weight > 0 && idx.length > 1;
    if (smoothing) smooth.data_source.data = { idx: Array.from(idx), values: ema(Array.from(values), chartControls.weight) };
    smooth.visible = smoothing;
    raw.glyph.line_alpha = smoothing ? 0.25 : 1; // the raw line stays, faint
    for (const v of values) if (Number.isFinite(v)) all.push(v);
  }
  // A margin around [low, high]; around a constant, one relative to it: Bokeh's own range
  // is ±1 around a constant, where a learning rate of 0.001 reads as 0.
  const pad = (low, high) => (high - low) * 0.05 || Math.abs(low) * 0.05 || 1;
  const ownRange = (fig.y_range.tags || []).some((t) => t.startsWith("labstats-"));
  const low = all.length ? all.reduce((a, b) => Math.min(a, b)) : NaN;
  const high = all.length ? all.reduce((a, b) => Math.max(a, b)) : NaN;
  if (chartControls.clip && all.length > 10) {
    all.sort((a, b) => a - b);
    const q1 = quantile(all, 0.01), q99 = quantile(all, 0.99);
    // As a user's zoom would: the automatic range then leaves it alone.
    fig.y_range.have_updated_interactively = true;
    fig.y_range.setv({ start: q1 - pad(q1, q99), end: q99 + pad(q1, q99) });
    fig.y_range.tags = ["labstats-clipped"];
  } else if (all.length && low === high) {
    fig.y_range.have_updated_interactively = true;
    fig.y_range.setv({ start: low - pad(low, high), end: high + pad(low, high) });
    fig.y_range.tags = ["labstats-constant"];
  } else if (ownRange && all.length) {
    fig.y_range.setv({ start: low - pad(low, high), end: high + pad(low, high) });
    fig.y_range.have_updated_interactively = false; // automatic again from the next points
    fig.y_range.tags = [];
  }
}
window.labstatsRedraw = labstatsRedraw;

function redrawAll() {
  for (const fig of chartFigures()) labstatsRedraw(fig);
}

function applyFilter() {
  const filter = document.getElementById("series-filter");
  if (!filter) return;
  let pattern = null;
  try { pattern = new RegExp(filter.value); filter.classList.remove("invalid"); }
  catch (err) { filter.classList.add("invalid"); } // an unfinished pattern hides nothing
  for (const chart of document.querySelectorAll(".chart-grid .chart")) {
    chart.hidden = pattern !== null && !pattern.test(chart.dataset.name);
  }
  for (const group of document.querySelectorAll(".chart-group")) {
    group.hidden = [...group.querySelectorAll(".chart")].every((c) => c.hidden);
  }
}

// The page's view (x axis, y scale, merged groups, filter, smoothing, clipping) as the URL
// says it: what a bookmark or a reload opens again.
function viewURL() { return new URL(window.location.href); }

function rememberView(changes) {
  const url = viewURL();
  for (const [key, value] of Object.entries(changes)) {
    url.searchParams.delete(key);
    for (const v of Array.isArray(value) ? value : [value]) if (v !== null && v !== "") url.searchParams.append(key, v);
  }
  history.replaceState(history.state, "", url);
}

// Where the page's charts come from as JSON (the same query as the page), and how they are drawn.
function chartsView() {
  const run = document.getElementById("run-charts");
  if (run) return { kind: "run", url: run.dataset.url, root: run };
  const grid = document.querySelector("main > .chart-grid");
  if (grid && window.location.pathname.endsWith("/compare")) {
    return { kind: "compare", url: `${window.location.pathname}/charts`, root: grid };
  }
  return null;
}

let viewSeq = 0;

// The charts again for the URL's view, drawn in place of the old ones (no navigation).
async function redrawView() {
  const view = chartsView();
  if (!view) return;
  const seq = ++viewSeq;
  document.body.dataset.view = "loading";
  try {
    const answer = await fetchJSON(`${view.url}?${viewURL().searchParams}`);
    if (seq !== viewSeq) return; // a later change asks for its own
    if (view.kind === "run") drawRunCharts(view.root, answer);
    else drawCompareCharts(view.root, answer);
    forgetCharts();
    applyFilter();
    document.body.dataset.view = "ready";
  } catch (err) {
    console.warn(err);
    if (seq === viewSeq) document.body.dataset.view = "failed";
  }
}

function chartBox(plot, csvLink = true) {
  const head = element("div", { class: "chart-head" }, `${plot.name} `,
    element("span", { class: "muted" }, element("span", { class: "points", dataset: { count: plot.count ?? "" }, text: plot.count ?? "" }), " points"));
  if (csvLink && plot.csv) head.append(" · ", element("a", { href: plot.csv, text: "raw CSV" }));
  // The chart as a paper figure, as the page's own chart heads link it (_chart_links.html).
  for (const [fmt, href] of Object.entries(plot.figures || {})) {
    head.append(" · ", element("a", { class: "figure-link", href, text: fmt.toUpperCase() }));
  }
  const box = element("div", { class: "chart", dataset: { name: plot.name } }, head, element("div", { id: plot.target, class: "bk-target" }));
  if (plot.members) box.dataset.members = JSON.stringify(plot.members);
  return box;
}

function compareBox(plot) {
  return element("div", { class: "chart", dataset: { name: plot.name } }, element("div", { id: plot.target, class: "bk-target" }));
}

function drawCompareCharts(grid, answer) {
  grid.replaceChildren(...answer.plots.map(compareBox));
  for (const plot of answer.plots) embedChart(plot.spec).catch((err) => console.warn(err));
}

function groupBox(group, groups) {
  const link = groups[group];
  const summary = element("summary", {}, `${group ? `${group}/` : "top level"} `,
    element("span", { class: "muted" }, element("span", { class: "group-count", text: "0" }), " charts"));
  if (link) summary.append(" · ", element("a", { href: link.link, class: "merge", text: link.merged ? "separate charts" : "one chart" }));
  return element("details", { class: "chart-group", open: "", dataset: { group } }, summary, element("div", { class: "chart-grid" }));
}

function countGroup(details) {
  details.querySelector(".group-count").textContent = String(details.querySelectorAll(".chart-grid > .chart").length);
}

// The run's line charts and histograms in their groups (a view's whole answer).
function drawRunCharts(root, answer) {
  for (const old of root.querySelectorAll(".chart-group")) old.remove();
  const groups = new Map();
  for (const plot of answer.plots) {
    if (!groups.has(plot.group)) groups.set(plot.group, groupBox(plot.group, answer.groups));
    if (!plot.hidden) groups.get(plot.group).querySelector(".chart-grid").append(chartBox(plot));
  }
  root.append(...groups.values());
  for (const details of groups.values()) countGroup(details);
  for (const plot of answer.plots) if (!plot.hidden && plot.spec) embedChart(plot.spec).catch((err) => console.warn(err));
  latestRows(answer.plots);
}

// New series of a running run, each where it belongs: a chart in its group (a new group in
// its place), a row of the latest values, a text table, a tensor.
function addRunSeries(root, answer) {
  for (const plot of answer.plots) {
    if (plot.hidden || document.querySelector(`.chart[data-name="${CSS.escape(plot.name)}"]`)) continue;
    let details = root.querySelector(`.chart-group[data-group="${CSS.escape(plot.group)}"]`);
    if (!details) {
      details = groupBox(plot.group, answer.groups);
      const after = [...root.querySelectorAll(".chart-group")].find((g) => g.dataset.group > plot.group);
      root.insertBefore(details, after || null);
    }
    const grid = details.querySelector(".chart-grid");
    const next = [...grid.children].find((c) => c.dataset.name > plot.name);
    grid.insertBefore(chartBox(plot), next || null);
    countGroup(details);
    embedChart(plot.spec).catch((err) => console.warn(err));
  }
  latestRows(answer.plots);
  const texts = document.getElementById("run-texts");
  for (const text of answer.texts) {
    if (!texts || texts.querySelector(`.text-series[data-name="${CSS.escape(text.name)}"]`)) continue;
    const head = element("div", { class: "chart-head" }, `${text.name} `,
      element("span", { class: "muted" }, element("span", { class: "points", text: text.count }), " values, newest first"),
      " · ", element("a", { href: text.csv, text: "raw CSV" }));
    const box = element("div", { class: "chart text-series", dataset: { name: text.name, count: text.count, page: "0" } },
      head, element("table", { class: "text" }));
    if (text.error) box.append(element("p", { class: "error", text: text.error }));
    texts.append(box);
    textRows(box, text.rows);
  }
  const tensors = document.getElementById("run-tensors");
  for (const t of answer.tensors) {
    if (!tensors || document.getElementById(t.target)) continue;
    const head = element("div", { class: "chart-head" }, `${t.name} `, t.shape ? element("span", { class: "muted", text: `${t.dtype} [${t.shape.join(", ")}]` }) : null);
    const box = element("div", { class: "chart", dataset: { name: t.name } }, head);
    if (t.error) box.append(element("p", { class: "error", text: t.error }));
    if (t.spec) box.append(element("div", { id: t.target, class: "bk-target" }));
    tensors.append(box);
    if (t.spec) embedChart(t.spec).catch((err) => console.warn(err));
  }
  const none = document.getElementById("no-series");
  if (none && (answer.plots.length || answer.texts.length || answer.tensors.length)) none.remove();
  applyFilter();
}

function textRows(box, rows) {
  box.querySelector("table.text").replaceChildren(...rows.map(([idx, text]) => element("tr", {}, element("th", { text: idx }), element("td", { text }))));
}

// The latest-values table: a row per line chart's series that has a value (merged ones too).
function latestRows(plots) {
  const table = document.querySelector(".latest-values");
  if (!table) return;
  const body = table.querySelector("tbody");
  for (const plot of plots) {
    if (!plot.latest || body.querySelector(`tr[data-name="${CSS.escape(plot.name)}"]`)) continue;
    const row = element("tr", { dataset: { name: plot.name, count: plot.count } }, element("th", { text: plot.name }),
      element("td", { text: plot.latest[0] }), element("td", { text: plot.latest[1] }));
    const next = [...body.children].find((r) => r.dataset.name > plot.name);
    body.insertBefore(row, next || null);
  }
  table.hidden = body.children.length === 0;
  table.querySelector(".latest-count").textContent = String(body.children.length);
}

function chartControlsForm(form) {
  const filter = document.getElementById("series-filter");
  const smoothing = document.getElementById("smoothing");
  const clip = document.getElementById("clip-outliers");
  const applySmoothing = () => {
    const weight = Number(smoothing.value);
    chartControls.weight = Number.isFinite(weight) ? Math.min(0.99, Math.max(0, weight)) : 0;
    document.getElementById("smoothing-value").textContent = String(chartControls.weight);
  };
  // Nothing submits the form while scripts run: every control acts in place.
  form.addEventListener("submit", (e) => e.preventDefault());
  filter.addEventListener("input", () => { applyFilter(); rememberView({ filter: filter.value }); });
  filter.addEventListener("keydown", (e) => { if (e.key === "Enter") e.preventDefault(); });
  smoothing.addEventListener("input", () => {
    applySmoothing();
    rememberView({ smooth: chartControls.weight ? String(chartControls.weight) : "" });
    redrawAll();
  });
  clip.addEventListener("change", () => { chartControls.clip = clip.checked; rememberView({ clip: clip.checked ? "1" : "" }); redrawAll(); });
  // The axes are part of the charts themselves: the charts are asked for again and replaced.
  const yScale = document.getElementById("y-scale"), xAxis = document.getElementById("x-axis");
  yScale.addEventListener("change", () => { rememberView({ y: yScale.value === "linear" ? "" : yScale.value }); redrawView(); });
  xAxis.addEventListener("change", () => { rememberView({ x: xAxis.value === "idx" ? "" : xAxis.value }); redrawView(); });
  // A group drawn as one chart, or as separate ones again: in place too.
  document.addEventListener("click", (e) => {
    const link = e.target.closest && e.target.closest("a.merge");
    if (!link || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    const merge = new URL(link.href, window.location.href).searchParams.getAll("merge");
    rememberView({ merge });
    for (const input of form.querySelectorAll('input[type=hidden][name="merge"]')) input.remove();
    for (const group of merge) form.append(element("input", { type: "hidden", name: "merge", value: group }));
    redrawView();
  });
  // The run page's own links and forms that load it again (older text values, a tensor's
  // step) keep the view as the URL has it now.
  document.addEventListener("click", (e) => {
    const link = e.target.closest && e.target.closest("#run-texts .pager a");
    if (!link || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    const url = viewURL();
    url.searchParams.set("text_page", new URL(link.href).searchParams.get("text_page") || "0");
    window.location.assign(url);
  });
  document.addEventListener("submit", (e) => {
    const step = e.target.closest && e.target.closest("#run-tensors form");
    if (!step) return;
    e.preventDefault();
    const url = viewURL();
    url.searchParams.set("step", step.querySelector("select[name=step]").value);
    window.location.assign(url);
  });
  // The state the page was opened with (charts drawn later read chartControls).
  applyFilter();
  applySmoothing();
  chartControls.clip = clip.checked;
}

// ---- live pages: one request per second for everything -----------------------------------
// The status of the page's runs, the current window (zoom included) of every live chart, and
// what changed in each run since the last poll: new series (drawn as new charts), point
// counts and latest values, text rows, the media list (announced to media.js).
const POLL_MS = 1000;
const MAX_NEW_PER_REQUEST = 50; // new series whose charts one request asks for

function liveSources() {
  const sources = [];
  for (const { doc } of embedded.values()) {
    if (!doc) continue;
    for (const m of doc.all_models) if ("data_url" in m && (m.tags || []).includes("labstats-live")) sources.push(m);
  }
  return sources;
}

// What a run page knows, sent with each poll so that the answer holds only what changed.
function runWatch(block) {
  const counts = {}, texts = {};
  for (const row of document.querySelectorAll(".latest-values tr[data-name]")) counts[row.dataset.name] = Number(row.dataset.count);
  for (const chart of document.querySelectorAll("#run-charts .chart[data-name]")) {
    const points = chart.querySelector(".points");
    if (points && !chart.dataset.members && points.dataset.count !== "") counts[chart.dataset.name] = Number(points.dataset.count);
  }
  for (const text of document.querySelectorAll(".text-series[data-page='0']")) texts[text.dataset.name] = Number(text.dataset.count);
  return {
    source: block.dataset.source,
    runId: block.dataset.runId,
    series: Number(block.dataset.series),
    media: block.dataset.media,
    names: new Set(JSON.parse(document.getElementById("run-series")?.textContent || "[]")),
    counts,
    texts,
    adding: false,
  };
}

function groupOf(name) { return name.includes("/") ? name.split("/", 1)[0] : ""; }

async function addNewSeries(watch, answer) {
  const fresh = answer.names.map((n) => n.name).filter((n) => !watch.names.has(n));
  if (!fresh.length) { watch.series = answer.series; return; }
  const merged = viewURL().searchParams.getAll("merge");
  const view = chartsView();
  if (fresh.some((n) => merged.includes(groupOf(n)))) {
    await redrawView(); // a merged chart gains a line: the view drawn again
  } else {
    for (let k = 0; k < fresh.length; k += MAX_NEW_PER_REQUEST) {
      const query = viewURL().searchParams;
      for (const name of fresh.slice(k, k + MAX_NEW_PER_REQUEST)) query.append("name", name);
      const found = await fetchJSON(`${view.url}?${query}`);
      addRunSeries(view.root, found);
      for (const plot of found.plots) if (plot.count !== null && plot.count !== undefined) watch.counts[plot.name] = plot.count;
      for (const text of found.texts) watch.texts[text.name] = text.count;
    }
  }
  for (const name of fresh) watch.names.add(name);
  watch.series = answer.series;
}

function updateCounts(changed) {
  for (const [name, { count, latest }] of Object.entries(changed)) {
    const row = document.querySelector(`.latest-values tr[data-name="${CSS.escape(name)}"]`);
    if (row) {
      row.dataset.count = count;
      if (latest) { row.children[1].textContent = latest[0]; row.children[2].textContent = latest[1]; }
    }
    const chart = document.querySelector(`#run-charts .chart[data-name="${CSS.escape(name)}"] .points`);
    if (chart) { chart.dataset.count = count; chart.textContent = count; }
  }
  // A merged chart counts the points of its lines.
  for (const chart of document.querySelectorAll("#run-charts .chart[data-members]")) {
    let total = 0;
    for (const name of JSON.parse(chart.dataset.members)) {
      const row = document.querySelector(`.latest-values tr[data-name="${CSS.escape(name)}"]`);
      total += row ? Number(row.dataset.count) || 0 : 0;
    }
    chart.querySelector(".points").textContent = total;
  }
}

function updateTexts(changed) {
  for (const [name, { count, rows }] of Object.entries(changed)) {
    const box = document.querySelector(`.text-series[data-name="${CSS.escape(name)}"]`);
    if (!box) continue;
    box.dataset.count = count;
    box.querySelector(".points").textContent = count;
    textRows(box, rows);
  }
}

function announceMedia(watch, media) {
  watch.media = media.fingerprint;
  document.dispatchEvent(new CustomEvent("labstats:media", {
    detail: { source: watch.source, run_id: watch.runId, media: media.list },
  }));
}

function applyRunChanges(watch, answer) {
  if (answer.error) return;
  if (answer.counts) {
    updateCounts(answer.counts);
    for (const [name, { count }] of Object.entries(answer.counts)) watch.counts[name] = count;
  }
  if (answer.texts) {
    updateTexts(answer.texts);
    for (const [name, { count }] of Object.entries(answer.texts)) watch.texts[name] = count;
  }
  if (answer.media) announceMedia(watch, answer.media);
  if (answer.names && !watch.adding) {
    watch.adding = true;
    addNewSeries(watch, answer).catch((err) => console.warn(err)).finally(() => { watch.adding = false; });
  }
}

// The compare page: a run that starts a series gains its chart (unless the page charts
// only the series it names).
function compareWatch(refs) {
  return { counts: Object.fromEntries(refs.map((r) => [r, null])), adding: false };
}

async function addCompareCharts(view) {
  const answer = await fetchJSON(`${view.url}?${viewURL().searchParams}`);
  const have = new Set([...view.root.querySelectorAll(".chart[data-name]")].map((c) => c.dataset.name));
  const fresh = answer.plots.filter((p) => !have.has(p.name));
  if (!fresh.length) return;
  view.root.querySelector(":scope > p.muted")?.remove();
  for (const plot of fresh) {
    const next = [...view.root.children].find((c) => c.dataset.name > plot.name);
    view.root.insertBefore(compareBox(plot), next || null);
    embedChart(plot.spec).catch((err) => console.warn(err));
  }
  applyFilter();
}

function applyCompareChanges(watch, answers) {
  let changed = false;
  for (const answer of answers) {
    if (answer.error || !answer.run) continue;
    if (watch.counts[answer.run] !== answer.series) changed = true;
    watch.counts[answer.run] = answer.series;
  }
  const view = chartsView();
  if (!changed || watch.adding || !view || viewURL().searchParams.getAll("series").length) return;
  watch.adding = true;
  addCompareCharts(view).catch((err) => console.warn(err)).finally(() => { watch.adding = false; });
}

function compareBadges(runs) {
  for (const [ref, state] of Object.entries(runs)) {
    if (!state.status) continue;
    const [source, ...rest] = ref.split("/");
    const path = `/runs/${encodeURIComponent(source)}/${encodeURIComponent(rest.join("/"))}`;
    for (const link of document.querySelectorAll("main a[href]")) {
      if (!link.getAttribute("href").endsWith(path)) continue;
      const badge = link.nextElementSibling;
      if (badge && badge.classList.contains("badge")) setStatus(badge, state.status);
    }
  }
}

function livePage(block) {
  const runs = JSON.parse(block.textContent);
  const onRunPage = Boolean(document.getElementById("run-charts"));
  const watch = onRunPage ? runWatch(block) : compareWatch(runs);
  const timer = setInterval(async () => {
    const sources = liveSources();
    const watched = onRunPage
      ? [{ run: runs[0], counts: watch.counts, texts: watch.texts, media: watch.media, ...(watch.adding ? {} : { series: watch.series }) }]
      : runs.map((run) => (watch.counts[run] === null ? { run } : { run, series: watch.counts[run] }));
    try {
      const answer = await fetchJSON(block.dataset.url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ runs, series: sources.map((s) => s.data_url), watch: watched }),
      });
      answer.series.forEach((data, k) => {
        if (data && data.idx && sources[k]) sources[k].data = { idx: data.idx, values: data.values };
      });
      if (onRunPage) applyRunChanges(watch, answer.watch[0]);
      else applyCompareChanges(watch, answer.watch);
      const states = Object.values(answer.runs);
      const badge = document.getElementById("status");
      if (onRunPage && states.length === 1 && states[0].status) {
        setStatus(badge, states[0].status);
        for (const [id, time] of [["heartbeat", states[0].heartbeat], ["ended", states[0].ended]]) {
          const cell = document.getElementById(id);
          if (cell) { cell.dataset.time = time ?? ""; showTimes(cell.parentElement); }
        }
      } else compareBadges(answer.runs);
      // A stalled run may go on: its page keeps asking.
      if (states.length && states.every((r) => r.status && !["running", "stalled"].includes(r.status))) clearInterval(timer);
    } catch (err) { console.warn(err); }
  }, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  embedCharts(document);
  const live = document.getElementById("live-runs");
  if (live) livePage(live);
  const controls = document.getElementById("chart-controls");
  if (controls) chartControlsForm(controls);
});
