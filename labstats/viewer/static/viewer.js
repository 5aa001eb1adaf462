// labstats viewer: embed the Bokeh charts, show times in local time, keep statuses live.
// No inline scripts anywhere: chart specs are JSON data blocks in the page.
"use strict";

function showTimes(root) {
  for (const cell of root.querySelectorAll("[data-time]")) {
    const t = parseFloat(cell.dataset.time);
    cell.textContent = Number.isFinite(t) ? new Date(t * 1000).toLocaleString() : "";
  }
}

function embedCharts() {
  for (const block of document.querySelectorAll("script.chart-spec")) {
    const spec = JSON.parse(block.textContent);
    window.Bokeh.embed.embed_item(spec).then(() => {
      document.getElementById(spec.target_id).dataset.rendered = "true";
    });
  }
}

async function fetchJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

function setStatus(badge, status) {
  if (!badge || badge.textContent === status) return;
  badge.textContent = status;
  badge.className = `badge ${status}`;
}

// One request per second for the whole page: the status of its live runs and the current
// window (zoom included) of every live chart, however many charts the page has.
const POLL_MS = 1000;

function liveSources() {
  if (!window.Bokeh) return [];
  return Bokeh.documents.flatMap((d) => [...d.all_models])
    .filter((m) => "data_url" in m && (m.tags || []).includes("labstats-live"));
}

function livePage(block) {
  const runs = JSON.parse(block.textContent);
  const timer = setInterval(async () => {
    const sources = liveSources();
    try {
      const response = await fetch(block.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ runs, series: sources.map((s) => s.data_url) }),
      });
      if (!response.ok) throw new Error(`live update: ${response.status}`);
      const answer = await response.json();
      answer.series.forEach((data, k) => {
        if (data && data.idx && sources[k]) sources[k].data = { idx: data.idx, values: data.values };
      });
      const states = Object.values(answer.runs);
      const badge = document.getElementById("status");
      const beat = document.getElementById("heartbeat");
      if (badge && states.length === 1 && states[0].status) {
        setStatus(badge, states[0].status);
        if (beat) { beat.dataset.time = states[0].heartbeat ?? ""; showTimes(beat.parentElement); }
      }
      // A stalled run may go on: its page keeps asking.
      if (states.length && states.every((r) => r.status && !["running", "stalled"].includes(r.status))) clearInterval(timer);
    } catch (err) { console.warn(err); }
  }, POLL_MS);
}

// ---- chart controls of the run page: filter, smoothing, outlier clipping, y scale ---------

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
  if (!window.Bokeh) return;
  for (const doc of Bokeh.documents) for (const root of doc.roots()) if (root.renderers) labstatsRedraw(root);
}

function chartControlsForm(form) {
  const filter = document.getElementById("series-filter");
  const smoothing = document.getElementById("smoothing");
  const clip = document.getElementById("clip-outliers");
  // The state lives in the URL (each control has a name): a reload, a bookmark or an axis
  // change (which asks the server again, submitting the form) keeps it.
  const remember = () => {
    const url = new URL(window.location.href);
    const put = (key, value, none) => (value === none ? url.searchParams.delete(key) : url.searchParams.set(key, value));
    put("filter", filter.value, "");
    put("smooth", smoothing.value, "0");
    put("clip", clip.checked ? "1" : "", "");
    history.replaceState(null, "", url);
  };
  const applyFilter = () => {
    let pattern = null;
    try { pattern = new RegExp(filter.value); filter.classList.remove("invalid"); }
    catch (err) { filter.classList.add("invalid"); } // an unfinished pattern hides nothing
    for (const chart of document.querySelectorAll(".chart-grid .chart")) {
      chart.hidden = pattern !== null && !pattern.test(chart.dataset.name);
    }
    for (const group of document.querySelectorAll(".chart-group")) {
      group.hidden = [...group.querySelectorAll(".chart")].every((c) => c.hidden);
    }
  };
  const applySmoothing = () => {
    const weight = Number(smoothing.value);
    chartControls.weight = Number.isFinite(weight) ? Math.min(0.99, Math.max(0, weight)) : 0;
    document.getElementById("smoothing-value").textContent = String(chartControls.weight);
  };
  filter.addEventListener("input", () => { applyFilter(); remember(); });
  // Enter in the filter would submit the form (a reload for nothing): the filter is live.
  filter.addEventListener("keydown", (e) => { if (e.key === "Enter") e.preventDefault(); });
  smoothing.addEventListener("input", () => { applySmoothing(); remember(); redrawAll(); });
  clip.addEventListener("change", () => { chartControls.clip = clip.checked; remember(); redrawAll(); });
  // The axes are part of the charts themselves: the page asks the server again, where it was.
  const reload = () => { sessionStorage.setItem("labstats-scroll", String(window.scrollY)); form.submit(); };
  document.getElementById("y-scale").addEventListener("change", reload);
  document.getElementById("x-axis").addEventListener("change", reload);
  // The state the page was opened with (charts drawn later read chartControls).
  applyFilter();
  applySmoothing();
  chartControls.clip = clip.checked;
  const scroll = sessionStorage.getItem("labstats-scroll");
  if (scroll !== null) { sessionStorage.removeItem("labstats-scroll"); window.scrollTo(0, Number(scroll) || 0); }
}

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  embedCharts();
  const live = document.getElementById("live-runs");
  if (live) livePage(live);
  const controls = document.getElementById("chart-controls");
  if (controls) chartControlsForm(controls);
});
