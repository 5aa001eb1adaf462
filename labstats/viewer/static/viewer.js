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

function liveRun(badge) {
  setInterval(async () => {
    try {
      const run = await fetchJSON(badge.dataset.liveUrl);
      setStatus(badge, run.status);
      const beat = document.getElementById("heartbeat");
      beat.dataset.time = run.heartbeat ?? "";
      showTimes(beat.parentElement);
    } catch (err) { console.warn(err); }
  }, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  embedCharts();
  const table = document.getElementById("runs");
  if (table) liveRunsList(table);
  const badge = document.getElementById("status");
  if (badge && badge.dataset.liveUrl) liveRun(badge);
});
