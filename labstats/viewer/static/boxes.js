// The Boxes page: ask GET /boxes/state every few seconds and put its cards in place of the
// page's (the server draws them, escaped, from the boxes' bounded state). A box's card keeps
// its place; a failed request leaves the cards as they were and says so.
"use strict";

function replaceBoxes(root, html) {
  // Parsed inert (no script in it runs), then moved in.
  const parsed = new DOMParser().parseFromString(`<div>${html}</div>`, "text/html");
  root.replaceChildren(...parsed.body.firstElementChild.children);
  if (typeof showTimes === "function") showTimes(root);
  root.dataset.updated = String(Date.now());
}

function followBoxes(root) {
  const every = Math.max(1, Number(root.dataset.poll) || 5) * 1000;
  let busy = false;
  setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(root.dataset.url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(`${root.dataset.url}: ${response.status}`);
      const answer = await response.json();
      replaceBoxes(root, answer.html);
      delete root.dataset.failed;
    } catch (err) {
      console.warn(err);
      root.dataset.failed = "true";
    } finally {
      busy = false;
    }
  }, every);
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("boxes");
  if (root) followBoxes(root);
});
