// The slice viewer: one section of the open tomogram on a canvas (xy, xz or yz), particles
// drawn where their spheres cut it, zoom/pan, keyboard stepping, and annotating by mouse.
// Slices come as 8-bit PNGs from the server; a small cache keeps the decoded images, so an
// image already shown is never requested again, and the neighbours of the shown section are
// fetched ahead so that stepping shows them at once.

import { url } from "./api.js";
import { addAnnotation, deleteAnnotation, updateAnnotation } from "./annotate.js";
import { emit, on } from "./state.js";
import { classByName, openTomogram, radiusVox, select, selected, tomo } from "./tomostate.js";
import { $, canvasContext, fitView, oncePerFrame, toast, zoomView } from "./ui.js";

// Image columns and rows of each view (contract: axis=z rows y, columns x; y: z, x; x: z, y).
const PLANE = { z: ["x", "y"], y: ["x", "z"], x: ["y", "z"] };
const VIEW_NAME = { z: "xy", y: "xz", x: "yz" };
const CACHE_SIZE = 64;
const PARAMS_KEY = "cryoscout.sliceParams";
const PREFETCH = [1, 2, -1, 3, 4, -2, 10, -10]; // in the stepping direction first

export const view = {
  axis: "z",
  pos: { x: 0, y: 0, z: 0 }, // the section shown on each axis (voxels)
  bin: 1, lowpass: 0, lo: 1, hi: 99,
  zoom: 1, ox: 0, oy: 0, // screen = (voxel + 0.5) * zoom + offset
  img: null, imgKey: null, error: null,
  showAnn: true, showPicks: true,
  space: false, drag: null, hover: null,
  visible: false,
};

const cache = new Map(); // slice URL -> {promise, bitmap}

function canvas() {
  return $("#slice-canvas");
}

function dims() {
  const t = openTomogram();
  if (!t) return null;
  const [u, v] = PLANE[view.axis];
  return { u, v, W: t.shape[u], H: t.shape[v], N: t.shape[view.axis] };
}

export function index() {
  return view.pos[view.axis];
}

function slicePath(i) {
  // A binned image averages the sections [i // bin * bin, +bin): one address per image.
  const first = Math.floor(i / view.bin) * view.bin;
  return `/api/tomograms/${tomo.id}/slice.png?axis=${view.axis}&index=${first}&bin=${view.bin}` +
    `&lowpass=${view.lowpass}&lo=${view.lo}&hi=${view.hi}`;
}

async function fetchSlice(path) {
  const res = await fetch(url(path), { cache: "no-store" });
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try { detail = (await res.json()).detail || detail; } catch { /* not JSON */ }
    throw new Error(detail);
  }
  return createImageBitmap(await res.blob());
}

/** The decoded slice at `path`, from the cache or the server (least recently used dropped). */
function getSlice(path) {
  let entry = cache.get(path);
  if (entry) {
    cache.delete(path); // re-insert: most recently used last
    cache.set(path, entry);
    return entry.promise;
  }
  entry = { bitmap: null };
  entry.promise = fetchSlice(path).then((bmp) => {
    entry.bitmap = bmp;
    return bmp;
  }, (err) => {
    cache.delete(path); // a failure is not cached: asking again retries
    throw err;
  });
  cache.set(path, entry);
  while (cache.size > CACHE_SIZE) {
    const [oldest, old] = cache.entries().next().value;
    if (oldest === view.imgKey) break;
    cache.delete(oldest);
    if (old.bitmap) old.bitmap.close();
  }
  return entry.promise;
}

let prefetchToken = 0;
let lastStep = 1; // the direction the user steps in: prefetch ahead of it first
async function prefetch() {
  const d = dims();
  if (!d) return;
  const token = ++prefetchToken;
  const here = index();
  for (const k of PREFETCH) {
    const i = here + k * lastStep * view.bin;
    if (i < 0 || i >= d.N) continue;
    const path = slicePath(i);
    if (cache.has(path)) continue;
    try {
      await getSlice(path); // one at a time: the server has few cores to share
    } catch {
      return;
    }
    if (token !== prefetchToken) return; // the user moved on: prefetch around the new place
  }
}

let inflight = null; // the one section being fetched for display
/** Show the section at the current position (cached at once, else when it arrives). While
 * one section is on its way, steps only move the target: when it lands, the latest wanted
 * section is fetched next, so holding a key never queues every section in between. */
export async function show() {
  const d = dims();
  const wrap = $("#slice-wrap");
  if (!d) {
    view.img = null;
    draw();
    return;
  }
  const path = slicePath(index());
  const entry = cache.get(path);
  if (entry && entry.bitmap) {
    getSlice(path);
    setImage(path, entry.bitmap);
    prefetch();
    return;
  }
  wrap.classList.add("loading");
  draw(); // the overlay moves to the new section at once; the image follows
  if (inflight) return; // show() runs again when it lands
  prefetchToken++; // the wanted section goes first
  inflight = path;
  let failure = null;
  let bmp = null;
  try {
    bmp = await getSlice(path);
  } catch (err) {
    failure = err;
  } finally {
    inflight = null;
  }
  if (path !== slicePath(index())) {
    show(); // stepped on meanwhile: the latest wanted section now
    return;
  }
  if (failure) {
    view.error = failure.message;
    wrap.classList.remove("loading");
    draw();
    toast(`Slice not shown: ${failure.message}`, true);
    return;
  }
  setImage(path, bmp);
  prefetch();
}

function setImage(path, bmp) {
  view.img = bmp;
  view.imgKey = path;
  view.error = null;
  const wrap = $("#slice-wrap");
  wrap.classList.remove("loading");
  wrap.dataset.shown = `${view.axis}:${index()}`;
  draw();
}

export function fit() {
  const d = dims();
  const c = canvas();
  if (!d || !c.clientWidth) return;
  fitView(view, c.clientWidth, c.clientHeight, d.W, d.H);
  draw();
}

function zoomAt(factor, sx, sy) {
  zoomView(view, factor, sx, sy, 64);
  draw();
}

const toScreen = (u, v) => [(u + 0.5) * view.zoom + view.ox, (v + 0.5) * view.zoom + view.oy];
const toVoxel = (sx, sy) => [(sx - view.ox) / view.zoom - 0.5, (sy - view.oy) / view.zoom - 0.5];

/** Picks drawn over the slices: above the threshold, rejected ones hidden unless selected. */
export function visiblePicks() {
  if (!view.showPicks) return [];
  const sel = tomo.selection;
  return tomo.picks.filter((p) => (sel && sel.kind === "pick" && sel.id === p.id)
    || (p.score >= tomo.threshold && p.status !== "rejected" && !(p.status === "accepted" && view.showAnn)));
}

/** Everything whose sphere cuts the shown section: [{kind, obj, u, v, r (voxels), centre}]. */
function onSection() {
  const d = dims();
  const t = openTomogram();
  if (!d) return [];
  const here = index();
  const out = [];
  const add = (kind, obj) => {
    const cls = classByName(obj.class);
    const r = radiusVox(cls, t) || 4;
    const dz = obj[view.axis] - here;
    if (Math.abs(dz) >= r) return;
    out.push({ kind, obj, cls, u: obj[d.u], v: obj[d.v], r: Math.sqrt(r * r - dz * dz), centre: Math.round(obj[view.axis]) === here });
  };
  for (const p of visiblePicks()) add("pick", p);
  if (view.showAnn) for (const a of tomo.annotations) add("annotation", a);
  return out;
}

export const draw = oncePerFrame(drawNow);

function drawNow() {
  const c = canvas();
  const wrap = $("#slice-wrap");
  if (!c.clientWidth) return;
  const { ctx, w, h: ht } = canvasContext(c, 0, 0, "#15181e");
  const d = dims();
  if (!d) return;
  if (view.img) {
    ctx.imageSmoothingEnabled = view.zoom * view.bin < 2;
    ctx.drawImage(view.img, view.ox, view.oy, view.img.width * view.bin * view.zoom, view.img.height * view.bin * view.zoom);
  }
  if (view.error) {
    ctx.fillStyle = "#ffb4ab";
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(`slice not shown: ${view.error}`, 12, 22);
  }
  const items = onSection();
  const sel = tomo.selection;
  let nAnn = 0;
  let nPick = 0;
  for (const it of items) {
    const [x, y] = toScreen(it.u, it.v);
    const cut = Math.max(1.5, it.r * view.zoom); // the sphere's cut of this section
    // Picks ring just outside the particle, so a pick and an annotation of it both show.
    const rr = it.kind === "pick" ? cut + 3 : cut;
    if (x < -rr || y < -rr || x > w + rr || y > ht + rr) continue;
    const colour = it.cls?.colour || "#f2c94c";
    const isSel = sel && sel.kind === it.kind && sel.id === it.obj.id;
    const score = it.kind === "pick" ? Math.max(0, Math.min(1, it.obj.score)) : 1;
    ctx.save();
    ctx.fillStyle = colour;
    if (it.kind === "annotation") {
      nAnn++;
      ctx.globalAlpha = it.centre ? 1 : 0.8;
      ctx.lineWidth = it.centre ? 2 : 1.25;
      ctx.setLineDash(it.obj.pending ? [2, 2] : it.centre ? [] : [4, 3]);
    } else {
      nPick++;
      // Confidence shows as opacity and ring width; pending picks are dashed, accepted solid.
      ctx.globalAlpha = 0.35 + 0.65 * score;
      ctx.lineWidth = it.centre ? 1.25 + 2 * score : 1.25;
      ctx.setLineDash(it.obj.status === "accepted" ? [] : [6, 3]);
    }
    // A light halo under the coloured ring keeps it visible on dark (protein) density.
    const lw = ctx.lineWidth;
    ctx.strokeStyle = "rgba(255, 255, 255, .5)";
    ctx.lineWidth = lw + 2;
    ctx.beginPath();
    ctx.arc(x, y, rr, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.strokeStyle = colour;
    ctx.lineWidth = lw;
    ctx.stroke();
    if (it.centre) {
      ctx.setLineDash([]);
      ctx.beginPath();
      if (it.kind === "annotation") ctx.arc(x, y, 2.2, 0, 2 * Math.PI);
      else ctx.rect(x - 2, y - 2, 4, 4);
      ctx.fill();
      if (it.kind === "pick" && rr > 10) {
        ctx.font = "600 11px system-ui, sans-serif";
        ctx.lineWidth = 3;
        ctx.strokeStyle = "rgba(255, 255, 255, .8)";
        ctx.strokeText(it.obj.score.toFixed(2), x + rr * 0.72, y - rr * 0.72);
        ctx.fillText(it.obj.score.toFixed(2), x + rr * 0.72, y - rr * 0.72);
      }
    }
    if (isSel) {
      ctx.globalAlpha = 1;
      ctx.setLineDash([]);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.arc(x, y, rr + 4, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.restore();
  }
  wrap.dataset.drawnAnnotations = String(nAnn);
  wrap.dataset.drawnPicks = String(nPick);
  drawScaleBar(ctx, w, ht);
}

function drawScaleBar(ctx, w, ht) {
  const t = openTomogram();
  if (!t || !t.voxel_size_A) return;
  // A round length in nm near 100 screen pixels.
  const nmPerPx = (t.voxel_size_A / 10) / view.zoom;
  const target = nmPerPx * 100;
  const p = 10 ** Math.floor(Math.log10(target));
  const nm = [1, 2, 5, 10].map((m) => m * p).find((v) => v >= target * 0.6) || p;
  const len = nm / nmPerPx;
  ctx.fillStyle = "rgba(255,255,255,.9)";
  ctx.fillRect(w - 20 - len, ht - 18, len, 3);
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText(`${nm} nm`, w - 20, ht - 24);
  ctx.textAlign = "start";
}

function hitTest(sx, sy) {
  const [u, v] = toVoxel(sx, sy);
  let best = null;
  let bestD = Infinity;
  for (const it of onSection()) {
    const dist = Math.hypot(it.u - u, it.v - v);
    // Small circles stay clickable: at least 6 screen pixels around the centre.
    if (dist <= Math.max(it.r, 6 / view.zoom) && dist < bestD) {
      best = it;
      bestD = dist;
    }
  }
  return best;
}

function statusLine(sx, sy) {
  const d = dims();
  const el = $("#tomo-pos");
  if (!d) {
    el.textContent = "";
    return;
  }
  let text = `${VIEW_NAME[view.axis]} · ${view.axis} ${index()} / ${d.N - 1}`;
  if (sx !== undefined) {
    const [u, v] = toVoxel(sx, sy);
    if (u >= -0.5 && v >= -0.5 && u <= d.W - 0.5 && v <= d.H - 0.5) {
      text += ` · ${d.u} ${Math.round(u)}, ${d.v} ${Math.round(v)}`;
    }
  }
  text += ` · zoom ${view.zoom >= 1 ? view.zoom.toFixed(1) : view.zoom.toFixed(2)}×`;
  el.textContent = text;
}

/** Go to section `i` of the current axis (clamped). */
export function goTo(i) {
  const d = dims();
  if (!d) return;
  const j = Math.max(0, Math.min(d.N - 1, Math.round(i)));
  view.pos[view.axis] = j;
  $("#tomo-index").value = String(j);
  $("#tomo-index-num").value = String(j);
  statusLine();
  emit("tomo-index", j);
  show();
}

export function step(n) {
  lastStep = n < 0 ? -1 : 1;
  goTo(index() + n * view.bin);
}

export function setAxis(axis) {
  view.axis = axis;
  for (const b of document.querySelectorAll("#tomo-axis button")) b.classList.toggle("on", b.dataset.axis === axis);
  const d = dims();
  if (!d) return;
  $("#tomo-axis-name").textContent = axis;
  $("#tomo-index").max = String(d.N - 1);
  $("#tomo-index-num").max = String(d.N - 1);
  $("#tomo-index-max").textContent = `/ ${d.N - 1}`;
  view.img = null;
  fit();
  goTo(index());
}

/** Centre the view on a particle and show the section through its centre. */
export function jumpTo(obj) {
  const d = dims();
  if (!d) return;
  for (const k of ["x", "y", "z"]) view.pos[k] = Math.round(obj[k]);
  const [x, y] = toScreen(obj[d.u], obj[d.v]);
  const c = canvas();
  const m = 60;
  if (x < m || y < m || x > c.clientWidth - m || y > c.clientHeight - m) {
    view.ox += c.clientWidth / 2 - x;
    view.oy += c.clientHeight / 2 - y;
  }
  goTo(view.pos[view.axis]);
}

/** Open the current tomogram: middle sections, fitted. */
export function resetView() {
  const t = openTomogram();
  view.img = null;
  view.imgKey = null;
  view.error = null;
  if (!t) {
    draw();
    return;
  }
  for (const k of ["x", "y", "z"]) view.pos[k] = Math.floor(t.shape[k] / 2);
  setAxis(view.axis);
}

function onParams() {
  let lo = Number($("#tomo-lo").value);
  let hi = Number($("#tomo-hi").value);
  if (lo >= hi) [lo, hi] = [Math.min(lo, hi - 0.5), Math.max(hi, lo + 0.5)];
  view.lo = lo;
  view.hi = hi;
  $("#tomo-lo-v").textContent = `${lo}`;
  $("#tomo-hi-v").textContent = `${hi}`;
  view.bin = Number($("#tomo-bin").value) || 1;
  view.lowpass = Math.max(0, Number($("#tomo-lowpass").value) || 0);
  localStorage.setItem(PARAMS_KEY, JSON.stringify({ lo, hi, bin: view.bin, lowpass: view.lowpass }));
  show();
}

/** The display settings of the last session (contrast, bin, low-pass). */
function restoreParams() {
  let p = null;
  try { p = JSON.parse(localStorage.getItem(PARAMS_KEY) || "null"); } catch { /* ignore */ }
  if (!p) return;
  $("#tomo-lo").value = String(p.lo ?? view.lo);
  $("#tomo-hi").value = String(p.hi ?? view.hi);
  $("#tomo-bin").value = String(p.bin ?? view.bin);
  $("#tomo-lowpass").value = String(p.lowpass ?? view.lowpass);
  view.lo = Number($("#tomo-lo").value);
  view.hi = Number($("#tomo-hi").value);
  view.bin = Number($("#tomo-bin").value) || 1;
  view.lowpass = Math.max(0, Number($("#tomo-lowpass").value) || 0);
  $("#tomo-lo-v").textContent = `${view.lo}`;
  $("#tomo-hi-v").textContent = `${view.hi}`;
}

/** Keys of the viewer; true when handled. */
export function handleSliceKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return false;
  const big = e.shiftKey ? 10 : 1;
  switch (e.key) {
    case "ArrowUp": case "ArrowRight": step(big); return true;
    case "ArrowDown": case "ArrowLeft": step(-big); return true;
    case "PageUp": step(10); return true;
    case "PageDown": step(-10); return true;
    case "Home": goTo(0); return true;
    case "End": goTo(Infinity); return true;
    case "f": fit(); return true;
    case "+": case "=": zoomAt(1.25, canvas().clientWidth / 2, canvas().clientHeight / 2); return true;
    case "-": case "_": zoomAt(0.8, canvas().clientWidth / 2, canvas().clientHeight / 2); return true;
    case "Delete": case "Backspace": {
      const s = tomo.selection;
      const obj = selected();
      if (s?.kind === "annotation" && obj) deleteAnnotation(obj);
      return true;
    }
    case "Escape": select(null); return true;
    default: return false;
  }
}

function initMouse() {
  const wrap = $("#slice-wrap");
  const c = canvas();
  const local = (e) => {
    const r = c.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  c.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [sx, sy] = local(e);
    zoomAt(Math.exp(-e.deltaY * 0.0015), sx, sy);
    statusLine(sx, sy);
  }, { passive: false });
  c.addEventListener("mousedown", (e) => {
    wrap.focus({ preventScroll: true });
    const [sx, sy] = local(e);
    if (e.button === 1 || (e.button === 0 && view.space)) {
      e.preventDefault();
      view.drag = { mode: "pan", sx, sy, ox: view.ox, oy: view.oy, moved: true };
      wrap.classList.add("dragging");
      return;
    }
    if (e.button !== 0) return;
    const hit = hitTest(sx, sy);
    if (hit) {
      select(hit.kind, hit.obj.id);
      view.drag = hit.kind === "annotation"
        ? { mode: "move", obj: hit.obj, sx, sy, orig: { x: hit.obj.x, y: hit.obj.y, z: hit.obj.z }, moved: false }
        : { mode: "none", sx, sy, moved: false };
    } else {
      // A click places a particle; a drag from empty space pans.
      view.drag = { mode: "place", sx, sy, ox: view.ox, oy: view.oy, moved: false };
    }
  });
  window.addEventListener("mousemove", (e) => {
    if (!view.visible) return;
    const [sx, sy] = local(e);
    const dr = view.drag;
    if (!dr) {
      if (e.target === c) {
        statusLine(sx, sy);
        wrap.classList.toggle("over", !!hitTest(sx, sy)); // a particle under the cursor: select/drag
      }
      return;
    }
    if (!dr.moved && Math.hypot(sx - dr.sx, sy - dr.sy) < 4) return;
    dr.moved = true;
    if (dr.mode === "pan" || dr.mode === "place") {
      view.ox = dr.ox + sx - dr.sx;
      view.oy = dr.oy + sy - dr.sy;
      wrap.classList.add("dragging");
      draw();
    } else if (dr.mode === "move") {
      const d = dims();
      const [u, v] = toVoxel(sx, sy);
      dr.obj[d.u] = Math.max(0, Math.min(d.W - 1, u));
      dr.obj[d.v] = Math.max(0, Math.min(d.H - 1, v));
      draw();
    }
    statusLine(sx, sy);
  });
  window.addEventListener("mouseup", (e) => {
    const dr = view.drag;
    if (!dr) return;
    view.drag = null;
    wrap.classList.remove("dragging");
    if (dr.mode === "place" && !dr.moved && e.button === 0) {
      const d = dims();
      const [sx, sy] = local(e);
      const [u, v] = toVoxel(sx, sy);
      if (u < -0.5 || v < -0.5 || u > d.W - 0.5 || v > d.H - 0.5) return;
      if (!view.showAnn) {
        toast("Annotations are hidden: show them to place particles.", true);
        return;
      }
      const p = { [d.u]: Math.max(0, Math.min(d.W - 1, u)), [d.v]: Math.max(0, Math.min(d.H - 1, v)), [view.axis]: index() };
      addAnnotation(tomo.currentClass, p.x, p.y, p.z);
    } else if (dr.mode === "move" && dr.moved) {
      const d = dims();
      const moved = { [d.u]: dr.obj[d.u], [d.v]: dr.obj[d.v] };
      Object.assign(dr.obj, dr.orig); // updateAnnotation restores this if the server refuses
      updateAnnotation(dr.obj, moved);
    }
  });
  c.addEventListener("mouseleave", () => statusLine());
  c.addEventListener("auxclick", (e) => e.preventDefault());
  window.addEventListener("keydown", (e) => {
    if (e.key === " " && view.visible && !/INPUT|TEXTAREA|SELECT|BUTTON/.test(e.target.tagName)) {
      view.space = true;
      wrap.classList.add("panning");
      e.preventDefault();
    }
  });
  window.addEventListener("keyup", (e) => {
    if (e.key === " ") {
      view.space = false;
      wrap.classList.remove("panning");
    }
  });
}

export function initSlices() {
  restoreParams();
  initMouse();
  for (const b of document.querySelectorAll("#tomo-axis button")) b.addEventListener("click", () => setAxis(b.dataset.axis));
  $("#tomo-index").addEventListener("input", (e) => goTo(Number(e.target.value)));
  $("#tomo-index-num").addEventListener("change", (e) => goTo(Number(e.target.value)));
  let timer = null;
  for (const id of ["#tomo-lo", "#tomo-hi"]) {
    $(id).addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(onParams, 120);
    });
  }
  $("#tomo-bin").addEventListener("change", onParams);
  $("#tomo-lowpass").addEventListener("change", onParams);
  $("#tomo-show-ann").addEventListener("change", (e) => { view.showAnn = e.target.checked; draw(); });
  $("#tomo-show-picks").addEventListener("change", (e) => { view.showPicks = e.target.checked; draw(); });
  $("#tomo-fit").addEventListener("click", fit);
  for (const ev of ["annotations", "picks", "classes", "tomo-selection", "tomo-threshold"]) on(ev, draw);
  window.addEventListener("resize", () => { if (view.visible) draw(); });
}
