// labstats viewer: media panels (images, FITS, point clouds, files) of a run, and the media of
// compared runs side by side. Loaded after viewer.js, whose helpers (fetchJSON) it uses.
"use strict";

// A media step is the logger's idx; the run's _epoch series says the epoch it falls in.
function stepLabel(step, epoch) {
  if (step === null || step === undefined) return "";
  return epoch === null || epoch === undefined ? `step ${step}` : `epoch ${epoch} · step ${step}`;
}

// The URL of a media route for ``name`` from a template holding __NAME__ (names may hold /).
function mediaURL(template, name) {
  return template.replace("__NAME__", name.split("/").map(encodeURIComponent).join("/"));
}

// three.js is loaded once, when a point cloud is first drawn (a live run may log its first
// cloud after the page loaded).
let threeLoading = null;
function loadThree(url) {
  if (window.THREE) return Promise.resolve(true);
  if (!url) return Promise.resolve(false);
  threeLoading ??= new Promise((resolve) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = () => resolve(Boolean(window.THREE));
    script.onerror = () => resolve(false);
    document.head.append(script);
  });
  return threeLoading;
}

// ---- one record's figure ----------------------------------------------------------------

function mediaFigure(panel, record) {
  const kind = panel.dataset.kind;
  const query = `step=${record.step}&item=${record.item ?? 0}`;
  const figure = document.createElement("figure");
  // A point cloud has its 3-D view instead of a picture; a file only a link (unless a picture).
  if (kind === "image" || kind === "fits" || (kind === "file" && record.picture)) {
    const img = document.createElement("img");
    img.alt = `${kind} at step ${record.step}`;
    img.src = `${kind === "fits" ? panel.dataset.fits : panel.dataset.thumb}?${query}`;
    img.className = kind === "fits" ? "fits-preview" : "thumb";
    figure.append(img);
  }
  const caption = document.createElement("figcaption");
  const text = [record.caption, record.file, record.shape ? record.shape.join("×") : ""].filter(Boolean);
  caption.textContent = text.join(" · ");
  const link = document.createElement("a");
  link.href = `${panel.dataset.file}?${query}&download=1`;
  link.textContent = ` original (${Math.max(1, Math.round((record.bytes || 0) / 1024))} KiB)`;
  link.className = "download";
  caption.append(link);
  if (kind === "points") {
    const obj = document.createElement("a");
    obj.href = `${panel.dataset.file}?${query}&format=obj`;
    obj.textContent = " as OBJ";
    obj.className = "download";
    caption.append(obj);
  }
  figure.append(caption);
  return figure;
}

async function fitsHeader(panel, step) {
  const table = panel.querySelector(".fits-header table");
  if (!table) return;
  const { header } = await fetchJSON(`${panel.dataset.header}?step=${step}`);
  table.replaceChildren(...header.map(([key, value, comment]) => {
    const row = document.createElement("tr");
    for (const cell of [key, value, comment]) {
      const td = document.createElement("td");
      td.textContent = cell;
      row.append(td);
    }
    return row;
  }));
}

// ---- the 3-D view of a point cloud: turn, zoom, axes with their ranges, full screen --------

function short(value) {
  return Math.abs(value) >= 1e4 || (Math.abs(value) < 1e-2 && value !== 0) ? value.toExponential(1) : value.toFixed(2);
}

class PointsView {
  constructor(view) {
    this.view = view;
    this.stage = view.querySelector(".points-stage");
    this.ranges = view.querySelector(".points-ranges");
    this.button = view.querySelector(".points-full");
    this.renderer = null;
    this.button.addEventListener("click", () => this.toggleFull());
    // Leaving full screen (Escape, or the button) ends the class too; either way the view
    // takes its new size once the browser has changed it.
    document.addEventListener("fullscreenchange", () => {
      if (!document.fullscreenElement && this.view.classList.contains("is-full")) this.setFull(false);
      else this.resize();
    });
    window.addEventListener("resize", () => this.resize());
  }

  toggleFull() { this.setFull(!this.view.classList.contains("is-full")); }

  setFull(on) {
    this.view.classList.toggle("is-full", on);
    this.button.textContent = on ? "exit full screen" : "full screen";
    if (on && this.view.requestFullscreen && !document.fullscreenElement) {
      this.view.requestFullscreen().catch(() => {}); // the class alone fills the window
    } else if (!on && document.fullscreenElement === this.view) {
      document.exitFullscreen().catch(() => {});
    }
    requestAnimationFrame(() => this.resize());
  }

  size() {
    if (this.view.classList.contains("is-full")) {
      return [window.innerWidth, window.innerHeight - this.button.offsetHeight - this.ranges.offsetHeight - 8];
    }
    const width = this.stage.clientWidth || 640;
    return [width, Math.round(Math.min(width * 0.62, 560))];
  }

  resize() {
    if (!this.renderer) return;
    const [width, height] = this.size();
    this.renderer.setSize(width, height);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  setup() {
    try {
      this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    } catch (err) {
      return false;
    }
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0xffffff);
    this.group = new THREE.Group(); // the cloud and its axes turn together
    this.scene.add(this.group);
    this.camera = new THREE.PerspectiveCamera(50, 4 / 3, 0.01, 100);
    this.labels = document.createElement("div");
    this.labels.className = "points-axis-labels";
    this.stage.replaceChildren(this.renderer.domElement, this.labels);
    const canvas = this.renderer.domElement;
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; });
    window.addEventListener("pointerup", () => { drag = null; });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      this.group.rotation.y += (e.clientX - drag[0]) * 0.01;
      this.group.rotation.x += (e.clientY - drag[1]) * 0.01;
      drag = [e.clientX, e.clientY];
      this.render();
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.camera.position.z *= e.deltaY > 0 ? 1.1 : 1 / 1.1;
      this.render();
    }, { passive: false });
    return true;
  }

  async load(url, threeURL) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    const buffer = await response.arrayBuffer();
    const n = Number(response.headers.get("X-Points"));
    this.view.dataset.points = n;
    this.view.dataset.total = response.headers.get("X-Points-Total");
    if (!(await loadThree(threeURL))) { this.stage.textContent = "three.js is not available on this box"; return; }
    if (!this.renderer && !this.setup()) {
      this.stage.textContent = "This browser cannot draw WebGL; download the PLY file instead.";
      this.view.dataset.rendered = "no-webgl";
      return;
    }
    this.draw(new Float32Array(buffer, 0, n * 3), new Uint8Array(buffer, n * 12, n * 3));
  }

  draw(positions, colors) {
    for (const child of this.group.children.slice()) { // the step shown before
      this.group.remove(child);
      child.geometry.dispose();
      child.material.dispose();
    }
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute("position", new THREE.BufferAttribute(positions, 3));
    geometry.setAttribute("color", new THREE.BufferAttribute(colors, 3, true));
    geometry.computeBoundingBox();
    const box = geometry.boundingBox;
    const center = box.getCenter(new THREE.Vector3());
    const extent = box.getSize(new THREE.Vector3());
    const size = Math.max(extent.x, extent.y, extent.z, 1e-9) / 2;
    geometry.translate(-center.x, -center.y, -center.z);
    const vertexColors = THREE.VertexColors !== undefined ? THREE.VertexColors : true;
    this.group.add(new THREE.Points(geometry, new THREE.PointsMaterial({ size: size / 80, vertexColors })));
    // Axes along the cloud's box from its lowest corner, in the data's own units: x red, y
    // green, z blue, each labelled with its range.
    const low = box.min.clone().sub(center);
    const ends = [[box.max.x - center.x, low.y, low.z], [low.x, box.max.y - center.y, low.z],
      [low.x, low.y, box.max.z - center.z]];
    const axisColors = [[0.85, 0.1, 0.1], [0.1, 0.6, 0.1], [0.1, 0.2, 0.9]];
    const linePositions = [], lineColors = [];
    ends.forEach((end, k) => {
      linePositions.push(low.x, low.y, low.z, ...end);
      lineColors.push(...axisColors[k], ...axisColors[k]);
    });
    const lines = new THREE.BufferGeometry();
    lines.setAttribute("position", new THREE.BufferAttribute(new Float32Array(linePositions), 3));
    lines.setAttribute("color", new THREE.BufferAttribute(new Float32Array(lineColors), 3));
    this.group.add(new THREE.LineSegments(lines, new THREE.LineBasicMaterial({ vertexColors })));
    this.axisEnds = ends.map((end) => new THREE.Vector3(...end));
    const names = ["x", "y", "z"];
    const lows = [box.min.x, box.min.y, box.min.z], highs = [box.max.x, box.max.y, box.max.z];
    this.labels.replaceChildren(...names.map((axis, k) => {
      const label = document.createElement("span");
      label.className = `axis-label axis-${axis}`;
      label.textContent = axis;
      return label;
    }));
    this.ranges.replaceChildren(...names.map((axis, k) => {
      const range = document.createElement("span");
      range.className = `axis-range axis-${axis}`;
      range.textContent = `${axis} ${short(lows[k])} … ${short(highs[k])}`;
      return range;
    }));
    if (!this.framed) { // the first cloud: seen from above and aside, the whole box in view
      const radius = Math.max(extent.length() / 2, 1e-9);
      this.camera.near = radius / 100;
      this.camera.far = radius * 100;
      this.camera.position.set(0, 0, 1.15 * radius / Math.tan((this.camera.fov / 2) * Math.PI / 180));
      this.group.rotation.set(0.45, -0.6, 0);
      this.framed = true; // later steps keep the user's turn and zoom
    }
    this.resize();
    this.view.dataset.rendered = "three";
    this.view.dataset.axes = names.join("");
  }

  render() {
    this.renderer.render(this.scene, this.camera);
    // Each axis' name at its end, where the camera sees it now.
    const canvas = this.renderer.domElement;
    this.group.updateMatrixWorld();
    (this.axisEnds || []).forEach((end, k) => {
      const at = end.clone().applyMatrix4(this.group.matrixWorld).project(this.camera);
      const label = this.labels.children[k];
      if (!label) return;
      label.style.left = `${((at.x + 1) / 2) * canvas.clientWidth}px`;
      label.style.top = `${((1 - at.y) / 2) * canvas.clientHeight}px`;
    });
  }
}

// ---- a media panel: the slider stops only at logged steps, labelled by epoch and step ------

function inPlace(panel, link, className) {
  // The GIF or the montage shown in the panel itself, under the slider; the link toggles it.
  link.addEventListener("click", (event) => {
    event.preventDefault();
    const box = panel.querySelector(".media-extra");
    const shown = box.querySelector(`img.${className}`);
    if (shown) { shown.closest("figure").remove(); return; }
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.className = className;
    img.alt = `${link.textContent} of ${panel.dataset.name}`;
    img.src = `${link.getAttribute("href")}?v=${panel.mediaSteps.length}`; // new steps: a new picture
    const caption = document.createElement("figcaption");
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "close";
    close.addEventListener("click", () => figure.remove());
    const save = document.createElement("a");
    save.href = img.src;
    save.download = "";
    save.textContent = "save";
    caption.append(close, " ", save);
    figure.append(img, caption);
    box.append(figure);
  });
}

function mediaPanel(panel) {
  const steps = JSON.parse(panel.dataset.steps);
  const epochs = JSON.parse(panel.dataset.epochs || "[]");
  panel.mediaSteps = steps;
  panel.epochOf = new Map(steps.map((s, k) => [s, epochs[k] ?? null]));
  const items = panel.querySelector(".media-items");
  const slider = panel.querySelector(".media-slider");
  const label = panel.querySelector(".media-step-value");
  const view = panel.querySelector(".points-view");
  const grid = panel.closest(".media-grid");
  const points = view ? new PointsView(view) : null;
  let wanted = null;
  async function show(step) {
    wanted = step;
    label.textContent = stepLabel(step, panel.epochOf.get(step));
    try {
      const answer = await fetchJSON(`${panel.dataset.records}?step=${step}`);
      if (wanted !== step) return; // the slider moved on meanwhile
      (answer.steps || []).forEach((s, k) => panel.epochOf.set(s, (answer.epochs || [])[k] ?? null));
      label.textContent = stepLabel(step, panel.epochOf.get(step));
      items.replaceChildren(...answer.records.map((r) => mediaFigure(panel, r)));
      items.dataset.step = step;
      if (panel.dataset.kind === "fits") await fitsHeader(panel, step);
      if (points) await points.load(`${panel.dataset.points}?step=${step}`, grid && grid.dataset.three);
    } catch (err) { console.warn(err); }
  }
  panel.showStep = show;
  if (slider) slider.addEventListener("input", () => show(panel.mediaSteps[Number(slider.value)]));
  for (const [selector, className] of [["a.animation", "animation-view"], ["a.montage", "montage-view"]]) {
    const link = panel.querySelector(selector);
    if (link) inPlace(panel, link, className);
  }
  if (steps.length) show(steps[steps.length - 1]);
}

// New steps of a panel (a live run): the slider reaches them; a user at the latest step follows
// the newest, one who chose an earlier step stays there. The poll may announce only a name's
// last steps: the panel keeps the earlier ones it knew.
function extendPanel(panel, announced) {
  const old = panel.mediaSteps;
  const steps = old.filter((s) => announced.length && s < announced[0]).concat(announced);
  if (steps.length === old.length && steps[steps.length - 1] === old[old.length - 1]) return;
  const slider = panel.querySelector(".media-slider");
  const atLatest = !old.length || Number(slider.value) >= old.length - 1;
  const current = old[Number(slider.value)];
  panel.mediaSteps = steps;
  panel.dataset.steps = JSON.stringify(steps);
  slider.max = Math.max(steps.length - 1, 0);
  slider.hidden = steps.length < 2;
  panel.querySelector(".media-count").textContent = `${steps.length} step${steps.length === 1 ? "" : "s"}`;
  for (const link of panel.querySelectorAll(".media-links")) link.hidden = steps.length < 2;
  if (atLatest || !steps.includes(current)) {
    slider.value = steps.length - 1;
    if (steps.length) panel.showStep(steps[steps.length - 1]);
  } else {
    slider.value = steps.indexOf(current);
  }
}

function buildPanel(grid, entry) {
  const t = (key) => mediaURL(grid.dataset[key], entry.name);
  const panel = document.createElement("section");
  panel.className = "media-panel";
  Object.assign(panel.dataset, {
    name: entry.name, kind: entry.kind, steps: "[]", epochs: "[]", records: t("records"), thumb: t("thumb"),
    file: t("file"), fits: t("fits"), header: t("header"), points: t("points"),
  });
  const head = document.createElement("div");
  head.className = "chart-head";
  const count = document.createElement("span");
  count.className = "muted";
  const countValue = Object.assign(document.createElement("span"), { className: "media-count",
    textContent: "0 steps" });
  count.append(`${entry.kind} · `, countValue);
  head.append(`${entry.name} `, count);
  if (entry.kind === "image") {
    const links = document.createElement("span");
    links.className = "media-links";
    links.hidden = true;
    const gif = Object.assign(document.createElement("a"), { href: t("animation"), className: "animation",
      textContent: "animation (GIF)" });
    const montage = Object.assign(document.createElement("a"), { href: t("montage"), className: "montage",
      textContent: "montage" });
    links.append(" · ", gif, " · ", montage);
    head.append(links);
  }
  const step = document.createElement("label");
  step.className = "media-step";
  const slider = Object.assign(document.createElement("input"), { type: "range", className: "media-slider",
    min: 0, max: 0, value: 0, step: 1, hidden: true });
  const output = Object.assign(document.createElement("output"), { className: "media-step-value" });
  step.append(slider, " ", output);
  const items = Object.assign(document.createElement("div"), { className: "media-items" });
  const extra = Object.assign(document.createElement("div"), { className: "media-extra" });
  panel.append(head, step, items, extra);
  if (entry.kind === "points") panel.append(pointsViewElement());
  if (entry.kind === "fits") {
    const details = Object.assign(document.createElement("details"), { className: "fits-header" });
    const summary = Object.assign(document.createElement("summary"), { textContent: "FITS header" });
    details.append(summary, document.createElement("table"));
    panel.append(details);
  }
  grid.append(panel);
  mediaPanel(panel);
  extendPanel(panel, entry.steps);
  return panel;
}

function pointsViewElement() {
  const view = Object.assign(document.createElement("div"), { className: "points-view", tabIndex: 0,
    title: "drag to turn, wheel to zoom" });
  const button = Object.assign(document.createElement("button"), { type: "button", className: "points-full",
    textContent: "full screen" });
  const stage = Object.assign(document.createElement("div"), { className: "points-stage" });
  const ranges = Object.assign(document.createElement("div"), { className: "points-ranges muted" });
  view.append(button, stage, ranges);
  return view;
}

// The live poll (viewer.js) says a run's whole media list when it changed: new names get a
// panel, known ones their new steps.
function liveMedia(grid, detail) {
  if (!detail || detail.source !== grid.dataset.source || detail.run_id !== grid.dataset.runId) return;
  const panels = new Map([...grid.querySelectorAll(".media-panel")].map((p) => [p.dataset.name, p]));
  for (const entry of detail.media || []) {
    if (!entry || typeof entry.name !== "string" || !Array.isArray(entry.steps)) continue;
    const panel = panels.get(entry.name);
    if (panel) extendPanel(panel, entry.steps);
    else buildPanel(grid, entry);
  }
  const heading = document.querySelector(".media-heading");
  if (heading && grid.querySelector(".media-panel")) heading.hidden = false;
}

// ---- compare: one row per media name, one column per run, at a chosen step ---------------

function comparedAt(entry, chosen) {
  // The run's latest step of this name at or before the chosen one (runs log at their own steps).
  let found = null;
  entry.steps.forEach((s, k) => { if (s <= chosen) found = k; });
  return found;
}

function compareCell(entry, chosen) {
  const cell = document.createElement("td");
  if (!entry) { cell.textContent = "—"; cell.className = "muted"; return cell; }
  const k = comparedAt(entry, chosen);
  if (k === null) { cell.textContent = "not logged yet"; cell.className = "muted"; return cell; }
  const step = entry.steps[k];
  const figure = document.createElement("figure");
  const query = `step=${step}&item=0`;
  // Every kind has a thumbnail (a point cloud's is seen from an oblique angle); a file
  // without a picture has only its link.
  const img = document.createElement("img");
  img.className = "compare-thumb";
  img.alt = `${entry.name} at step ${step}`;
  img.src = `${entry.urls.thumb}?${query}`;
  img.addEventListener("error", () => img.remove());
  figure.append(img);
  const caption = document.createElement("figcaption");
  caption.className = "compare-step-label";
  caption.textContent = stepLabel(step, entry.epochs[k]);
  const link = Object.assign(document.createElement("a"), { href: `${entry.urls.file}?${query}&download=1`,
    textContent: " original", className: "download" });
  caption.append(link);
  figure.append(caption);
  cell.dataset.step = step;
  cell.append(figure);
  return cell;
}

async function compareMedia(section) {
  const table = section.querySelector("table.media-compare");
  const slider = section.querySelector(".compare-step");
  const output = section.querySelector(".compare-step-value");
  let answer;
  try {
    answer = await fetchJSON(section.dataset.url);
  } catch (err) { section.querySelector(".compare-note").textContent = `media: ${err.message}`; return; }
  const { runs, names } = answer;
  if (!names.length) { section.querySelector(".compare-note").textContent = "These runs have no media."; return; }
  const byRun = runs.map((run) => new Map(run.media.map((m) => [m.name, m])));
  const epochOf = new Map();
  for (const run of runs) for (const m of run.media) m.steps.forEach((s, k) => { if (!epochOf.has(s)) epochOf.set(s, m.epochs[k]); });
  const steps = [...epochOf.keys()].sort((a, b) => a - b);
  slider.max = steps.length - 1;
  slider.value = steps.length - 1;
  section.querySelector(".compare-controls").hidden = false;
  const head = table.querySelector("thead tr");
  head.replaceChildren(document.createElement("th"), ...runs.map((run) => {
    const th = document.createElement("th");
    th.textContent = run.name;
    return th;
  }));
  function show() {
    const chosen = steps[Number(slider.value)];
    output.textContent = stepLabel(chosen, epochOf.get(chosen));
    table.dataset.step = chosen;
    table.querySelector("tbody").replaceChildren(...names.map(({ name }) => {
      const row = document.createElement("tr");
      row.dataset.name = name;
      const th = document.createElement("th");
      th.textContent = name;
      row.append(th, ...byRun.map((media) => compareCell(media.get(name), chosen)));
      return row;
    }));
  }
  slider.addEventListener("input", show);
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  const grid = document.querySelector(".media-grid");
  for (const panel of document.querySelectorAll(".media-panel")) mediaPanel(panel);
  if (grid) document.addEventListener("labstats:media", (event) => liveMedia(grid, event.detail));
  const compared = document.getElementById("compare-media");
  if (compared) compareMedia(compared);
});
