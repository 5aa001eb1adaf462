// labstats viewer: media panels (images, FITS, point clouds, files) of a run or comparison.
// Loaded after viewer.js, whose helpers (fetchJSON) it uses.

// ---- media: a panel per name; the slider stops only at logged steps --------------------

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

async function drawPoints(view, url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  const buffer = await response.arrayBuffer();
  const n = Number(response.headers.get("X-Points"));
  view.dataset.points = n;
  view.dataset.total = response.headers.get("X-Points-Total");
  if (!window.THREE) { view.textContent = "three.js is not available on this box"; return; }
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  } catch (err) {
    view.textContent = "This browser cannot draw WebGL; download the PLY file instead.";
    view.dataset.rendered = "no-webgl";
    return;
  }
  const width = view.clientWidth || 480, height = Math.round(width * 0.75);
  renderer.setSize(width, height);
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(buffer, 0, n * 3), 3));
  geometry.setAttribute("color", new THREE.BufferAttribute(new Uint8Array(buffer, n * 12, n * 3), 3, true));
  geometry.computeBoundingSphere();
  const { center, radius } = geometry.boundingSphere;
  geometry.translate(-center.x, -center.y, -center.z);
  const size = Math.max(radius, 1e-9);
  const material = new THREE.PointsMaterial({
    size: size / 80, vertexColors: THREE.VertexColors !== undefined ? THREE.VertexColors : true,
  });
  const cloud = new THREE.Points(geometry, material);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xffffff);
  scene.add(cloud);
  const camera = new THREE.PerspectiveCamera(50, width / height, size / 100, size * 100);
  camera.position.set(0, 0, size * 2.6);
  const render = () => renderer.render(scene, camera);
  let drag = null;
  renderer.domElement.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; });
  window.addEventListener("pointerup", () => { drag = null; });
  renderer.domElement.addEventListener("pointermove", (e) => {
    if (!drag) return;
    cloud.rotation.y += (e.clientX - drag[0]) * 0.01;
    cloud.rotation.x += (e.clientY - drag[1]) * 0.01;
    drag = [e.clientX, e.clientY];
    render();
  });
  renderer.domElement.addEventListener("wheel", (e) => {
    e.preventDefault();
    camera.position.z *= e.deltaY > 0 ? 1.1 : 1 / 1.1;
    render();
  }, { passive: false });
  view.replaceChildren(renderer.domElement);
  render();
  view.dataset.rendered = "three";
}

function mediaPanel(panel) {
  const steps = JSON.parse(panel.dataset.steps);
  const items = panel.querySelector(".media-items");
  const slider = panel.querySelector(".media-slider");
  const label = panel.querySelector(".media-step-value");
  const view = panel.querySelector(".points-view");
  let wanted = null;
  async function show(step) {
    wanted = step;
    label.textContent = step;
    try {
      const { records } = await fetchJSON(`${panel.dataset.records}?step=${step}`);
      if (wanted !== step) return; // the slider moved on meanwhile
      items.replaceChildren(...records.map((r) => mediaFigure(panel, r)));
      items.dataset.step = step;
      if (panel.dataset.kind === "fits") await fitsHeader(panel, step);
      if (view) await drawPoints(view, `${panel.dataset.points}?step=${step}`);
    } catch (err) { console.warn(err); }
  }
  if (slider) slider.addEventListener("input", () => show(steps[Number(slider.value)]));
  if (steps.length) show(steps[steps.length - 1]);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const panel of document.querySelectorAll(".media-panel")) mediaPanel(panel);
});
