// The atlas view: the stitched overview on a canvas, every square outlined in the colour of
// the chosen score; wheel/drag or keys zoom and pan, hover shows the scores, click opens.

import { api, url } from "./api.js";
import { setNavigator } from "./detail.js";
import { isLabeled, labelState } from "./labels.js";
import { ATTRS, attrLabel, colorFor, fmt, legendRange, rampCss, setUncertaintyMax } from "./scores.js";
import { loadSquares, on, readyAtlases, select, state } from "./state.js";
import { $, canvasContext, fillSelect, fitView, h, oncePerFrame, toast, zoomView } from "./ui.js";

const view = {
  atlasId: null,
  meta: null, // GET /api/atlases/{id}
  img: null,
  colour: "overall",
  // screen = (image px) * zoom + offset
  zoom: 1, ox: 0, oy: 0,
  hover: null,
  visible: false,
  drag: null,
};

function canvas() {
  return $("#overview");
}

function squaresOf() {
  const data = state.squares.get(view.atlasId);
  return data ? data.squares : [];
}

function fit() {
  const c = canvas();
  if (!view.meta) return;
  const { width, height } = view.meta.overview;
  fitView(view, c.clientWidth, c.clientHeight, width, height);
  draw();
}

function zoomAt(factor, sx, sy) {
  zoomView(view, factor, sx, sy, 40);
  draw();
}

const draw = oncePerFrame(drawNow);

function drawNow() {
  const c = canvas();
  const { ctx, w, h: hgt } = canvasContext(c, 0, 0, "#15181e");
  if (!view.meta || !view.img) return;
  ctx.imageSmoothingEnabled = view.zoom < 2;
  ctx.drawImage(view.img, view.ox, view.oy, view.meta.overview.width * view.zoom,
    view.meta.overview.height * view.zoom);
  view.painted = true;
  const s = view.meta.overview.scale;
  const side = outlinePx() * s * view.zoom;
  const angle = ((view.meta.lattice_angle_deg || 0) * Math.PI) / 180;
  const lw = Math.max(1.5, Math.min(4, side / 18));
  const sel = state.selection;
  ctx.font = `${Math.max(9, Math.min(13, side / 5))}px system-ui, sans-serif`;
  for (const sq of squaresOf()) {
    const x = sq.x_px * s * view.zoom + view.ox;
    const y = sq.y_px * s * view.zoom + view.oy;
    if (x < -side || y < -side || x > w + side || y > hgt + side) continue;
    const v = view.colour === "uncertainty" ? sq.uncertainty : sq.scores?.[view.colour];
    const half = side / 2 - lw / 2;
    // Outlines follow the lattice: drawn in the square's own rotated frame.
    ctx.save();
    ctx.translate(x, y);
    ctx.rotate(angle);
    ctx.strokeStyle = colorFor(view.colour, v);
    ctx.lineWidth = lw;
    ctx.setLineDash(sq.full ? [] : [4, 3]);
    ctx.strokeRect(-half, -half, 2 * half, 2 * half);
    ctx.setLineDash([]);
    if (sq.target) {
      ctx.fillStyle = "rgba(36, 86, 166, .95)";
      ctx.beginPath();
      ctx.arc(-half + 7, -half + 7, Math.max(3, lw * 1.4), 0, 2 * Math.PI);
      ctx.fill();
    }
    if (isLabeled(sq)) {
      ctx.fillStyle = "rgba(31, 180, 90, .95)";
      ctx.fillRect(half - 10, -half + 3, 7, 7);
    }
    if (sel && sel.atlasId === sq.atlas_id && sel.squareId === sq.square_id) {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 2;
      ctx.strokeRect(-half - lw - 2, -half - lw - 2, 2 * half + 2 * lw + 4, 2 * half + 2 * lw + 4);
    }
    ctx.restore();
    if (side > 46) {
      // Upright numbers, inside the square whatever the lattice angle.
      ctx.fillStyle = "rgba(255,255,255,.92)";
      ctx.textAlign = "center";
      ctx.fillText(String(sq.square_id), x, y + side * 0.3);
      ctx.textAlign = "start";
    }
  }
  ctx.setLineDash([]);
  if (view.painted && !view.marked) {
    // For benchmarks/app_first_paint.py: the overview and its outlines are on screen.
    view.marked = true;
    performance.mark("cryoscout:overview-painted");
  }
}

/** Side of a drawn outline in montage pixels: the open square when known, else most of a pitch. */
function outlinePx() {
  return view.meta.opening_px || view.meta.square_px * 0.9;
}

function squareAt(sx, sy) {
  if (!view.meta) return null;
  const s = view.meta.overview.scale;
  const ix = (sx - view.ox) / view.zoom / s;
  const iy = (sy - view.oy) / view.zoom / s;
  const half = view.meta.square_px / 2; // a whole pitch: every point belongs to a square
  const t = ((view.meta.lattice_angle_deg || 0) * Math.PI) / 180;
  const c = Math.cos(t);
  const sn = Math.sin(t);
  let best = null;
  let bestD = Infinity;
  for (const sq of squaresOf()) {
    // The point in the square's lattice frame.
    const ex = ix - sq.x_px;
    const ey = iy - sq.y_px;
    const dx = Math.abs(ex * c + ey * sn);
    const dy = Math.abs(-ex * sn + ey * c);
    if (dx <= half && dy <= half && dx + dy < bestD) {
      best = sq;
      bestD = dx + dy;
    }
  }
  return best;
}

function showHover(sq, sx, sy) {
  const card = $("#hover-card");
  if (!sq) {
    card.hidden = true;
    return;
  }
  const rows = ATTRS.map((a) => {
    const ls = labelState(sq, a);
    return h("tr", {}, h("td", {}, attrLabel(a)),
      h("td", { class: "v", style: { color: colorFor(a, sq.scores?.[a]) } }, fmt(sq.scores?.[a])),
      h("td", { class: "muted" }, ls.value !== null ? `label ${ls.value}` : ""));
  });
  rows.push(h("tr", {}, h("td", {}, "Uncertainty"), h("td", { class: "v" }, fmt(sq.uncertainty, 2)), h("td")));
  card.replaceChildren(
    h("b", {}, `Square ${sq.square_id}`), h("span", { class: "muted" }, sq.full ? " · full" : " · partial"),
    sq.target ? h("span", { class: "muted" }, " · target") : "",
    h("table", {}, h("tbody", {}, rows)));
  card.hidden = false;
  const wrap = $("#overview-wrap");
  const cw = card.offsetWidth;
  const ch = card.offsetHeight;
  card.style.left = `${sx + 18 + cw > wrap.clientWidth ? sx - cw - 14 : sx + 18}px`;
  card.style.top = `${Math.min(Math.max(4, sy - 20), wrap.clientHeight - ch - 4)}px`;
}

function legend() {
  const [lo, hi] = legendRange(view.colour);
  $("#atlas-legend").replaceChildren(h("span", {}, lo), h("span", { class: "ramp", style: { background: rampCss(view.colour) } }), h("span", {}, hi));
}

function moveBy(step) {
  // Next/previous in the order of the chosen score, best first.
  const key = view.colour;
  const list = squaresOf().slice().sort((a, b) => {
    const va = key === "uncertainty" ? a.uncertainty : a.scores?.[key];
    const vb = key === "uncertainty" ? b.uncertainty : b.scores?.[key];
    return (vb ?? -Infinity) - (va ?? -Infinity) || a.square_id - b.square_id;
  });
  if (!list.length) return;
  const sel = state.selection;
  let i = sel ? list.findIndex((s) => s.atlas_id === sel.atlasId && s.square_id === sel.squareId) : -1;
  i = i < 0 ? 0 : Math.max(0, Math.min(list.length - 1, i + step));
  select(list[i].atlas_id, list[i].square_id);
  ensureVisible(list[i]);
}

function ensureVisible(sq) {
  const c = canvas();
  const s = view.meta.overview.scale;
  const x = sq.x_px * s * view.zoom + view.ox;
  const y = sq.y_px * s * view.zoom + view.oy;
  const m = 40;
  if (x < m || y < m || x > c.clientWidth - m || y > c.clientHeight - m) {
    view.ox += c.clientWidth / 2 - x;
    view.oy += c.clientHeight / 2 - y;
  }
  draw();
}

export async function showAtlas(atlasParam) {
  view.visible = true;
  fillSelect($("#atlas-select"), readyAtlases().map((a) => [a.id, a.name]));
  let id = atlasParam ? Number(atlasParam) : view.atlasId || state.selection?.atlasId || readyAtlases()[0]?.id;
  if (!id) {
    view.meta = null;
    draw();
    toast("No screened atlas yet: add one in the Cassette view.");
    return;
  }
  $("#atlas-select").value = String(id);
  setNavigator(moveBy);
  if (id !== view.atlasId || !view.meta) {
    view.atlasId = id;
    try {
      // The overview image starts loading as soon as its address is known.
      const squares = loadSquares(id);
      squares.catch(() => null); // reported below, not as an unhandled rejection
      const meta = await api(`/api/atlases/${id}`);
      if (!meta.overview) throw new Error(`${meta.name} is not screened yet (${meta.status})`);
      const [img] = await Promise.all([loadImage(url(meta.overview.url)), squares]);
      view.meta = meta;
      view.img = img;
      view.marked = false;
    } catch (err) {
      toast(`Atlas not loaded: ${err.message}`, true);
      return;
    }
    setUncertaintyMax(Math.max(0, ...squaresOf().map((s) => s.uncertainty || 0)));
    legend();
    fit();
  } else {
    draw();
  }
  if (!state.selection || state.selection.atlasId !== id) {
    const best = squaresOf().slice().sort((a, b) => (b.scores?.overall ?? 0) - (a.scores?.overall ?? 0))[0];
    if (best) select(id, best.square_id);
  }
  $("#overview-wrap").focus({ preventScroll: true });
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the overview image did not load"));
    img.src = src;
  });
}

export function hideAtlas() {
  view.visible = false;
  $("#hover-card").hidden = true;
}

/** Keys of the overview: zoom, pan and fit (labeling keys are handled by detail.js). */
export function handleAtlasKey(e) {
  const c = canvas();
  const step = 60;
  switch (e.key) {
    case "+": case "=": zoomAt(1.25, c.clientWidth / 2, c.clientHeight / 2); return true;
    case "-": case "_": zoomAt(0.8, c.clientWidth / 2, c.clientHeight / 2); return true;
    case "f": fit(); return true;
    case "ArrowLeft": view.ox += step; draw(); return true;
    case "ArrowRight": view.ox -= step; draw(); return true;
    case "ArrowUp": view.oy += step; draw(); return true;
    case "ArrowDown": view.oy -= step; draw(); return true;
    default: return false;
  }
}

export function initAtlas() {
  const colourSel = $("#atlas-colour");
  fillSelect(colourSel, [...ATTRS.map((a) => [a, attrLabel(a)]), ["uncertainty", "Uncertainty"]], "overall");
  colourSel.addEventListener("change", () => {
    view.colour = colourSel.value;
    legend();
    draw();
    colourSel.blur();
  });
  $("#atlas-select").addEventListener("change", (e) => { location.hash = `#/atlas/${e.target.value}`; });
  $("#atlas-fit").addEventListener("click", fit);
  $("#atlas-zoom-in").addEventListener("click", () => zoomAt(1.25, canvas().clientWidth / 2, canvas().clientHeight / 2));
  $("#atlas-zoom-out").addEventListener("click", () => zoomAt(0.8, canvas().clientWidth / 2, canvas().clientHeight / 2));
  const wrap = $("#overview-wrap");
  wrap.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas().getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  wrap.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    view.drag = { x: e.clientX, y: e.clientY, ox: view.ox, oy: view.oy, moved: false };
    wrap.setPointerCapture(e.pointerId);
    wrap.focus({ preventScroll: true });
  });
  wrap.addEventListener("pointermove", (e) => {
    const r = canvas().getBoundingClientRect();
    if (view.drag) {
      const dx = e.clientX - view.drag.x;
      const dy = e.clientY - view.drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) {
        view.drag.moved = true;
        wrap.classList.add("dragging");
      }
      if (view.drag.moved) {
        view.ox = view.drag.ox + dx;
        view.oy = view.drag.oy + dy;
        showHover(null);
        draw();
        return;
      }
    }
    const sx = e.clientX - r.left;
    const sy = e.clientY - r.top;
    const sq = squareAt(sx, sy);
    view.hover = sq;
    showHover(sq, sx, sy);
    wrap.style.cursor = sq ? "pointer" : "";
  });
  wrap.addEventListener("pointerup", (e) => {
    const d = view.drag;
    view.drag = null;
    wrap.classList.remove("dragging");
    if (d && !d.moved) {
      const r = canvas().getBoundingClientRect();
      const sq = squareAt(e.clientX - r.left, e.clientY - r.top);
      if (sq) select(sq.atlas_id, sq.square_id);
    }
  });
  wrap.addEventListener("pointerleave", () => showHover(null));
  wrap.addEventListener("dblclick", (e) => {
    const r = canvas().getBoundingClientRect();
    const sq = squareAt(e.clientX - r.left, e.clientY - r.top);
    if (sq) location.hash = `#/squares/${sq.atlas_id}`;
  });
  window.addEventListener("resize", () => { if (view.visible) draw(); });
  on("selection", () => { if (view.visible) draw(); });
  on("labels", () => { if (view.visible) draw(); });
  on("targets-changed", () => { if (view.visible) draw(); });
  on("squares", (id) => { if (view.visible && id === view.atlasId) draw(); });
}
