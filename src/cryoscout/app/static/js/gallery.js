// The gallery: every square of one atlas (or of all), sorted and filtered, drawn from sprite
// sheets. Only the rows in view exist in the DOM, so 1,500+ squares scroll smoothly.

import { api, url } from "./api.js";
import { setNavigator } from "./detail.js";
import { isLabeled } from "./labels.js";
import { ATTRS, attrLabel, colorFor, fmt, setUncertaintyMax } from "./scores.js";
import { styleTile } from "./sprite.js";
import { atlasById, loadSquares, on, readyAtlases, select, state } from "./state.js";
import { $, fillSelect, h, oncePerFrame, toast } from "./ui.js";

const CELL_W = 116;
const CELL_H = 140;

const view = {
  atlas: null, // atlas id or "all"
  sort: "overall",
  desc: true,
  filter: "all",
  overlays: [],
  items: [], // squares in display order
  cols: 1,
  left: 4,
  visible: false,
};

function sortValue(sq, key) {
  if (key === "suggested") {
    const r = suggestionRank(sq);
    return r === null ? Infinity : r;
  }
  if (key === "uncertainty") return sq.uncertainty ?? -Infinity;
  if (key === "square_id") return sq.atlas_id * 1e7 + sq.square_id;
  return sq.scores ? sq.scores[key] ?? -Infinity : -Infinity;
}

function suggestionRank(sq) {
  if (state.suggestions) {
    const r = state.suggestions.rank.get(`${sq.atlas_id}:${sq.square_id}`);
    return r === undefined ? null : r;
  }
  return sq.suggested_rank ?? null;
}

function atlasIds() {
  if (view.atlas === "all") return readyAtlases().map((a) => a.id);
  return view.atlas ? [view.atlas] : [];
}

/** Rebuild the ordered list of squares from the loaded tables. */
function rebuild() {
  let items = [];
  for (const id of atlasIds()) {
    const data = state.squares.get(id);
    if (data) items = items.concat(data.squares);
  }
  if (view.filter === "full") items = items.filter((s) => s.full);
  else if (view.filter === "labeled") items = items.filter((s) => isLabeled(s) || Object.keys(s.pending).length);
  else if (view.filter === "unlabeled") items = items.filter((s) => !isLabeled(s));
  else if (view.filter === "suggested") items = items.filter((s) => suggestionRank(s) !== null);
  const key = view.sort;
  // "suggested" reads best-first ascending; scores read best-first descending by default.
  const sign = (key === "suggested" || key === "square_id" ? 1 : -1) * (view.desc ? 1 : -1);
  items.sort((a, b) => {
    const d = sortValue(a, key) - sortValue(b, key);
    if (d !== 0 && !Number.isNaN(d)) return sign * d;
    return a.atlas_id - b.atlas_id || a.square_id - b.square_id;
  });
  view.items = items;
  setUncertaintyMax(Math.max(0, ...items.map((s) => s.uncertainty || 0)));
  const total = atlasIds().reduce((n, id) => n + (state.squares.get(id)?.squares.length || 0), 0);
  $("#gallery-count").textContent = `${items.length} of ${total} squares`;
  layout();
}

function layout() {
  const g = $("#gallery");
  view.cols = Math.max(1, Math.floor((g.clientWidth - 8) / CELL_W));
  view.left = Math.max(4, Math.floor((g.clientWidth - view.cols * CELL_W) / 2));
  const rows = Math.ceil(view.items.length / view.cols);
  $("#gallery-inner").style.height = `${rows * CELL_H + 8}px`;
  draw();
}

const draw = oncePerFrame(drawNow);

function drawNow() {
  const g = $("#gallery");
  const inner = $("#gallery-inner");
  const first = Math.max(0, Math.floor(g.scrollTop / CELL_H) - 2);
  const last = Math.ceil((g.scrollTop + g.clientHeight) / CELL_H) + 2;
  const cells = [];
  const sel = state.selection;
  for (let r = first; r <= last; r++) {
    for (let c = 0; c < view.cols; c++) {
      const i = r * view.cols + c;
      if (i >= view.items.length) break;
      cells.push(cell(view.items[i], i, r, c, sel));
    }
  }
  inner.replaceChildren(...cells);
  if (cells.length && !view.marked) {
    // For benchmarks/app_first_paint.py: the first screen of squares is drawn.
    view.marked = true;
    performance.mark("cryoscout:gallery-painted");
  }
}

function cell(sq, i, r, c, sel) {
  const data = state.squares.get(sq.atlas_id);
  const tile = h("div", { class: "sprite" });
  styleTile(tile, data.sprites, data.sprites.crop, sq.index);
  for (const kind of view.overlays) {
    if (!data.sprites[kind]) continue; // a model without attention maps
    const ov = h("div", { class: "ov" });
    styleTile(ov, data.sprites, data.sprites[kind], sq.index);
    tile.append(ov);
  }
  const shown = ATTRS.includes(view.sort) ? view.sort : "overall";
  const v = sq.scores ? sq.scores[shown] : null;
  const selected = sel && sel.atlasId === sq.atlas_id && sel.squareId === sq.square_id;
  const pending = Object.keys(sq.pending).length > 0;
  const rank = suggestionRank(sq);
  const atlas = view.atlas === "all" ? atlasById(sq.atlas_id) : null;
  return h("div", {
    class: `cell${selected ? " selected" : ""}${sq.full ? "" : " partial"}`,
    style: { left: `${view.left + c * CELL_W}px`, top: `${4 + r * CELL_H}px` },
    "data-atlas": sq.atlas_id, "data-square": sq.square_id, "data-index": i,
    title: `${atlas ? `${atlas.name} · ` : ""}square ${sq.square_id}${sq.full ? "" : " (partial)"}\n` +
      ATTRS.map((a) => `${attrLabel(a)} ${fmt(sq.scores?.[a])}`).join(" · ") +
      `\nuncertainty ${fmt(sq.uncertainty, 2)}`,
    onclick: () => {
      select(sq.atlas_id, sq.square_id);
      $("#gallery").focus({ preventScroll: true });
    },
  },
  tile,
  sq.target ? h("span", { class: "badge target", title: "in the targets" }, "✓") : null,
  pending ? h("span", { class: "badge pending", title: "label being saved" }, "saving…")
    : isLabeled(sq) ? h("span", { class: "badge labeled", title: "labeled attributes (saved)" }, `${nLabels(sq)}/5 ✓`) : null,
  rank !== null && view.sort === "suggested" ? h("span", { class: "badge suggest", title: "suggested rank" }, `#${rank}`) : null,
  h("div", { class: "cap" },
    h("span", { class: "id" }, atlas ? `${atlas.name} ${sq.square_id}` : `#${sq.square_id}`),
    view.sort === "uncertainty"
      ? h("span", { class: "chip", style: { background: colorFor("uncertainty", sq.uncertainty) } }, fmt(sq.uncertainty, 2))
      : h("span", { class: "chip", style: { background: colorFor(shown, v) }, title: attrLabel(shown) }, fmt(v))));
}

function nLabels(sq) {
  return Object.values(sq.labels || {}).filter((v) => v !== null && v !== undefined).length;
}

function moveBy(step) {
  if (!view.items.length) return;
  const sel = state.selection;
  let i = sel ? view.items.findIndex((s) => s.atlas_id === sel.atlasId && s.square_id === sel.squareId) : -1;
  i = i < 0 ? 0 : Math.max(0, Math.min(view.items.length - 1, i + step));
  const sq = view.items[i];
  select(sq.atlas_id, sq.square_id);
  scrollToIndex(i);
}

function scrollToIndex(i) {
  const g = $("#gallery");
  const top = Math.floor(i / view.cols) * CELL_H;
  if (top < g.scrollTop) g.scrollTop = top;
  else if (top + CELL_H > g.scrollTop + g.clientHeight) g.scrollTop = top + CELL_H - g.clientHeight + 8;
}

export async function showGallery(atlasParam) {
  view.visible = true;
  fillAtlasSelect();
  if (atlasParam !== undefined && atlasParam !== null && atlasParam !== "") {
    view.atlas = atlasParam === "all" ? "all" : Number(atlasParam);
  }
  if (view.atlas === null) {
    if (state.selection) view.atlas = state.selection.atlasId;
    else if (readyAtlases().length) view.atlas = readyAtlases()[0].id;
  }
  $("#gallery-atlas").value = String(view.atlas ?? "");
  if (!readyAtlases().length) toast("No screened atlas yet: add one in the Cassette view.");
  setNavigator(moveBy);
  await loadAll();
  rebuild();
  const sel = state.selection;
  if (!sel || !view.items.some((s) => s.atlas_id === sel.atlasId && s.square_id === sel.squareId)) {
    if (view.items.length) select(view.items[0].atlas_id, view.items[0].square_id);
  } else {
    scrollToIndex(view.items.findIndex((s) => s.atlas_id === sel.atlasId && s.square_id === sel.squareId));
  }
  $("#gallery").focus({ preventScroll: true });
}

export function hideGallery() {
  view.visible = false;
}

async function loadAll() {
  try {
    const tables = await Promise.all(atlasIds().map((id) => loadSquares(id)));
    // Draw once the crop sheets are decoded, so the first paint shows squares, not blanks.
    await Promise.race([
      Promise.all(tables.map((t) => preload(url(t.sprites.crop)))),
      new Promise((resolve) => { setTimeout(resolve, 3000); }),
    ]);
  } catch (err) {
    toast(`Squares not loaded: ${err.message}`, true);
  }
}

const preloaded = new Map();
function preload(src) {
  if (!preloaded.has(src)) {
    const img = new Image();
    img.src = src;
    preloaded.set(src, img.decode().catch(() => null).then(() => img));
  }
  return preloaded.get(src);
}

function fillAtlasSelect() {
  const opts = readyAtlases().map((a) => [a.id, a.name]);
  if (opts.length > 1) opts.push(["all", "all atlases"]);
  fillSelect($("#gallery-atlas"), opts, view.atlas ?? undefined);
}

/** Ask the server which squares to label next (active learning) and show them first. */
export async function suggestNext() {
  const btn = $("#suggest-btn");
  btn.disabled = true;
  try {
    // Project-wide: the squares that teach the model most may be on any grid.
    const reply = await api("/api/suggestions?n=30");
    state.suggestions = {
      ...reply,
      rank: new Map(reply.squares.map((s) => [`${s.atlas_id}:${s.square_id}`, s.rank])),
    };
    if (!reply.squares.length) {
      toast("No unlabeled full squares left to suggest.");
      return;
    }
    const atlases = new Set(reply.squares.map((s) => s.atlas_id));
    view.atlas = atlases.size > 1 ? "all" : [...atlases][0];
    view.sort = "suggested";
    view.desc = true;
    view.filter = "suggested";
    $("#gallery-sort").value = "suggested";
    $("#gallery-filter").value = "suggested";
    $("#gallery-order").textContent = "↓";
    if (location.hash !== `#/squares/${view.atlas}`) location.hash = `#/squares/${view.atlas}`;
    fillAtlasSelect();
    $("#gallery-atlas").value = String(view.atlas);
    await loadAll();
    rebuild();
    const first = reply.squares[0];
    select(first.atlas_id, first.square_id);
    $("#gallery").scrollTop = 0;
    toast(`${reply.squares.length} squares suggested (${reply.method}); label them top to bottom.`);
  } catch (err) {
    toast(`No suggestions: ${err.message}`, true);
  } finally {
    btn.disabled = false;
  }
}

export function initGallery() {
  const sortSel = $("#gallery-sort");
  fillSelect(sortSel, [["suggested", "suggested next"], ...ATTRS.map((a) => [a, attrLabel(a)]),
    ["uncertainty", "uncertainty"], ["square_id", "square id"]], "overall");
  const filterSel = $("#gallery-filter");
  filterSel.append(h("option", { value: "suggested" }, "suggested"));
  sortSel.addEventListener("change", () => {
    view.sort = sortSel.value;
    view.desc = true;
    $("#gallery-order").textContent = "↓";
    rebuild();
    $("#gallery").focus({ preventScroll: true });
  });
  $("#gallery-order").addEventListener("click", () => {
    view.desc = !view.desc;
    $("#gallery-order").textContent = view.desc ? "↓" : "↑";
    rebuild();
  });
  filterSel.addEventListener("change", () => {
    view.filter = filterSel.value;
    rebuild();
    $("#gallery").focus({ preventScroll: true });
  });
  $("#gallery-atlas").addEventListener("change", (e) => {
    location.hash = `#/squares/${e.target.value}`;
  });
  for (const kind of ["cracking", "contamination"]) {
    $(`#ov-${kind}`).addEventListener("change", (e) => {
      view.overlays = view.overlays.filter((k) => k !== kind);
      if (e.target.checked) view.overlays.push(kind);
      draw();
    });
  }
  $("#suggest-btn").addEventListener("click", suggestNext);
  $("#gallery").addEventListener("scroll", draw, { passive: true });
  window.addEventListener("resize", () => { if (view.visible) layout(); });
  $("#gallery").addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") { moveBy(view.cols); e.preventDefault(); }
    else if (e.key === "ArrowUp") { moveBy(-view.cols); e.preventDefault(); }
  });
  on("selection", () => { if (view.visible) draw(); });
  on("labels", () => { if (view.visible) draw(); });
  on("targets-changed", () => { if (view.visible) draw(); });
  on("squares", () => { if (view.visible) rebuild(); });
  on("atlases", () => { if (view.visible) fillAtlasSelect(); });
}

/** Key v: both attention overlays on, or off when any is on. */
export function toggleOverlays() {
  const on = view.overlays.length === 0;
  for (const kind of ["cracking", "contamination"]) $(`#ov-${kind}`).checked = on;
  view.overlays = on ? ["cracking", "contamination"] : [];
  draw();
}

export function galleryVisible() {
  return view.visible;
}
