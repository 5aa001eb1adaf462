// labstats runs table: sorting, filtering and grouping are the server's, over every run (each
// header is a link). Here: the group and metric choices apply at once, columns can be hidden
// (kept in the URL, so in saved views too), and the rows' status and last update stay live.
"use strict";

const STATUS_POLL_MS = 5000;

// The hidden columns travel in the URL (?hide=host&hide=config:seed): a reload, a link, a
// header's sort and a saved view keep them.
function withHidden(href, hidden) {
  const url = new URL(href, window.location.href);
  url.searchParams.delete("hide");
  for (const col of hidden) url.searchParams.append("hide", col);
  return url;
}

function columnChooser(table) {
  const chooser = document.getElementById("column-chooser");
  if (!chooser) return;
  let hidden = new Set();
  try { hidden = new Set(JSON.parse(table.dataset.hidden || "[]")); } catch { /* none hidden */ }
  const show = (col, visible) => {
    for (const cell of table.querySelectorAll(`[data-col="${CSS.escape(col)}"]`)) cell.hidden = !visible;
  };
  const remember = () => {
    const here = withHidden(window.location.href, hidden);
    history.replaceState(null, "", here);
    for (const link of table.tHead.querySelectorAll("a[href]")) {
      const url = withHidden(link.href, hidden);
      link.setAttribute("href", url.pathname + url.search);
    }
    const query = document.getElementById("view-query");
    if (query) {
      const kept = new URLSearchParams(query.value);
      kept.delete("hide");
      for (const col of hidden) kept.append("hide", col);
      query.value = kept.toString();
    }
  };
  for (const th of table.tHead.rows[0].cells) {
    const col = th.dataset.col;
    if (!col) continue;
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !hidden.has(col);
    box.dataset.col = col;
    show(col, box.checked);
    box.addEventListener("change", () => {
      show(col, box.checked);
      if (box.checked) hidden.delete(col); else hidden.add(col);
      remember();
    });
    label.append(box, ` ${th.textContent.trim()}`);
    chooser.append(label);
  }
}

function submitOnChange(form) {
  for (const id of ["group-by", "metric"]) {
    const select = document.getElementById(id);
    if (select) select.addEventListener("change", () => form.requestSubmit());
  }
}

function liveStatuses(table) {
  const keys = [...table.tBodies[0].rows].map((r) => r.dataset.key).filter(Boolean);
  const live = keys.filter((key) => {
    const badge = table.querySelector(`tr[data-key="${CSS.escape(key)}"] [data-field=status]`);
    return badge && ["running", "stalled"].includes(badge.textContent);
  });
  if (!live.length || !table.dataset.pollUrl) return;
  const timer = setInterval(async () => {
    try {
      const response = await fetch(table.dataset.pollUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ runs: live, series: [] }),
      });
      if (!response.ok) throw new Error(`runs table: ${response.status}`);
      const answer = await response.json();
      let going = 0;
      for (const [key, run] of Object.entries(answer.runs)) {
        const row = table.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
        if (!row || !run.status) continue;
        const badge = row.querySelector("[data-field=status]");
        if (badge && badge.textContent !== run.status) { badge.textContent = run.status; badge.className = `badge ${run.status}`; }
        const beat = row.querySelector("[data-field=heartbeat]");
        if (beat && run.heartbeat) {
          beat.dataset.time = run.heartbeat;
          beat.textContent = new Date(run.heartbeat * 1000).toLocaleString();
        }
        if (["running", "stalled"].includes(run.status)) going += 1;
      }
      if (!going) clearInterval(timer);
    } catch (err) { console.warn(err); }
  }, STATUS_POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("runs-table");
  if (!table) return;
  columnChooser(table);
  liveStatuses(table);
  const form = document.getElementById("table-form");
  if (form) submitOnChange(form);
});
