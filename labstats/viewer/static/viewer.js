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

function liveRunsList(table) {
  setInterval(async () => {
    try {
      const { runs } = await fetchJSON(table.dataset.liveUrl);
      for (const run of runs) {
        const row = table.querySelector(`tr[data-key="${CSS.escape(run.source + "/" + run.id)}"]`);
        if (!row) continue;
        setStatus(row.querySelector("[data-field=status]"), run.status);
        const beat = row.querySelector("[data-field=heartbeat]");
        beat.dataset.time = run.heartbeat ?? "";
        showTimes(row);
      }
    } catch (err) { console.warn(err); }
  }, 5000);
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
      if (states.length && states.every((r) => r.status && r.status !== "running")) clearInterval(timer);
    } catch (err) { console.warn(err); }
  }, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  embedCharts();
  const table = document.getElementById("runs");
  if (table) liveRunsList(table);
  const live = document.getElementById("live-runs");
  if (live) livePage(live);
});
