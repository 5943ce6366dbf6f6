// The Tomograms workspace: the project's tomograms (add an MRC file or a copick project),
// the particle classes (number keys choose the one a click places), the slice viewer and the
// side panels; routes #/tomograms/ID and dispatches the workspace's keys.

import { api } from "./api.js";
import { saving, undoAnnotation } from "./annotate.js";
import { initExport } from "./tomoexport.js";
import { initPicker } from "./picker.js";
import { decide, initReview, nextPick } from "./review.js";
import { draw, handleSliceKey, initSlices, resetView, view } from "./slices.js";
import { emit, on } from "./state.js";
import {
  loadAnnotations, loadClasses, loadPickers, loadPicks, loadTomograms, openTomogram, radiusVox, select,
  setCurrentClass, tomo,
} from "./tomostate.js";
import { $, fillSelect, h, toast } from "./ui.js";

// Distinct colours for new classes (Sasha Trubetskoy's list, as napari and copick users know).
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4"];

function fmtSize(t) {
  return t.shape ? `${t.shape.x}×${t.shape.y}×${t.shape.z}` : "";
}

const total = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);

function renderTomograms() {
  const rows = tomo.tomograms.map((t) => h("tr", {
    class: `clickable${t.id === tomo.id ? " current" : ""}`, "data-tomogram": t.id,
    title: t.path, onclick: () => { location.hash = `#/tomograms/${t.id}`; },
  },
  h("td", { class: "left" }, t.name, t.source === "copick" ? h("span", { class: "muted" }, " · copick") : ""),
  h("td", {}, fmtSize(t)), h("td", {}, t.voxel_size_A ? t.voxel_size_A.toFixed(2) : "–"),
  h("td", { class: "n-ann" }, String(total(t.n_annotations))), h("td", {}, String(total(t.n_picks)))));
  $("#tomo-table tbody").replaceChildren(...rows);
  $("#tomo-empty").hidden = tomo.tomograms.length > 0;
  fillSelect($("#tomo-select"), tomo.tomograms.map((t) => [String(t.id), t.name]), tomo.id === null ? undefined : String(tomo.id));
}

function renderClasses() {
  const t = openTomogram();
  const items = tomo.classes.map((c, i) => {
    const r = radiusVox(c, t);
    const radius = c.radius_A ? `${Math.round(c.radius_A)} Å` : c.radius_vox ? `${c.radius_vox} vox` : "";
    return h("li", {
      class: c.name === tomo.currentClass ? "current" : "", "data-class": c.name,
      title: c.template ? `template ${c.template}` : "", onclick: (e) => {
        if (e.target.tagName !== "INPUT" && e.target.tagName !== "BUTTON") setCurrentClass(c.name);
      },
    },
    i < 9 ? h("kbd", {}, String(i + 1)) : h("span", { class: "nokey" }),
    h("input", { type: "color", value: c.colour, title: "Colour", onchange: (e) => patchClass(c, { colour: e.target.value }) }),
    h("span", { class: "name" }, c.name),
    h("span", { class: "muted", title: r ? `${r.toFixed(1)} voxels in this tomogram` : "" }, radius + (r && c.radius_A ? ` · ${r.toFixed(1)} vox` : "")),
    h("span", { class: "count", title: "annotations in the project" }, String(c.n_annotations ?? "")),
    h("button", { type: "button", class: "icon", title: "Delete the class (only while it has no annotations)", onclick: () => deleteClass(c) }, "✕"));
  });
  $("#class-list").replaceChildren(...items);
  $("#class-empty").hidden = tomo.classes.length > 0;
  const used = new Set(tomo.classes.map((c) => c.colour.toLowerCase()));
  const input = $("#add-class-colour");
  if (!input.dataset.touched) input.value = PALETTE.find((p) => !used.has(p)) || PALETTE[tomo.classes.length % PALETTE.length];
  $("#tomo-class-now").replaceChildren(...(tomo.currentClass
    ? [h("i", { class: "swatch", style: { background: tomo.classes.find((c) => c.name === tomo.currentClass)?.colour } }), tomo.currentClass]
    : ["no class"]));
}

async function patchClass(c, changes) {
  try {
    await api(`/api/particle-classes/${c.id}`, { method: "PATCH", body: changes });
    await loadClasses();
  } catch (err) {
    toast(`Class not changed: ${err.message}`, true);
    renderClasses();
  }
}

async function deleteClass(c) {
  try {
    await api(`/api/particle-classes/${c.id}`, { method: "DELETE" });
    await loadClasses();
  } catch (err) {
    toast(`Class not deleted: ${err.message}`, true);
  }
}

async function addClass(e) {
  e.preventDefault();
  const body = { name: $("#add-class-name").value.trim(), colour: $("#add-class-colour").value };
  const r = Number($("#add-class-radius").value);
  if (r > 0) body[$("#add-class-unit").value === "vox" ? "radius_vox" : "radius_A"] = r;
  const template = $("#add-class-template").value.trim();
  if (template) body.template = template;
  if (!body.name) {
    toast("A class needs a name (letters, digits, - and _).", true);
    return;
  }
  try {
    const row = await api("/api/particle-classes", { method: "POST", body });
    $("#add-class-name").value = "";
    $("#add-class-template").value = "";
    delete $("#add-class-colour").dataset.touched;
    await loadClasses();
    setCurrentClass(row.name);
  } catch (err) {
    toast(`Class not added: ${err.message}`, true);
  }
}

async function addTomogram(e) {
  e.preventDefault();
  const path = $("#add-tomo-path").value.trim();
  if (!path) return;
  const body = { path };
  const name = $("#add-tomo-name").value.trim();
  if (name) body.name = name;
  if (/\.json$/i.test(path)) {
    const spacing = Number($("#add-tomo-spacing").value);
    const type = $("#add-tomo-type").value.trim();
    if (spacing > 0) body.voxel_size_A = spacing;
    if (type) body.tomo_type = type;
  }
  const btn = $("#add-tomo-form button[type=submit]");
  btn.disabled = true;
  try {
    const reply = await api("/api/tomograms", { method: "POST", body });
    $("#add-tomo-path").value = "";
    $("#add-tomo-name").value = "";
    await Promise.all([loadTomograms(), loadClasses()]); // a copick project brings its particle types
    const added = reply.tomograms || [];
    toast(`Added ${added.map((t) => t.name).join(", ") || "the tomogram"}.`);
    if (added.length) location.hash = `#/tomograms/${added[0].id}`;
  } catch (err) {
    toast(`Not added: ${err.message}`, true);
  } finally {
    btn.disabled = false;
  }
}

function renderSave() {
  const el = $("#tomo-save");
  if (saving.pending) {
    el.className = "save-state pending";
    el.textContent = `saving ${saving.pending}…`;
  } else if (saving.error) {
    el.className = "save-state error";
    el.textContent = `not saved: ${saving.error}`;
  } else {
    el.className = "save-state saved";
    el.textContent = saving.saved ? "all saved ✓" : "";
  }
  const n = tomo.annotations.length;
  $("#tomo-ann-count").textContent = tomo.id === null ? "" : `${n} particle${n === 1 ? "" : "s"} annotated`;
}

async function open(id) {
  if (id === tomo.id && openTomogram()) return;
  tomo.id = id;
  tomo.annotations = [];
  tomo.picks = [];
  tomo.pickerShown = null;
  select(null);
  renderTomograms();
  renderClasses();
  resetView();
  emit("tomo-open", id);
  try {
    await Promise.all([loadAnnotations(), loadPicks()]);
  } catch (err) {
    toast(`Annotations not loaded: ${err.message}`, true);
  }
}

export async function showTomograms(arg) {
  view.visible = true;
  try {
    await Promise.all([loadTomograms(), loadClasses(), loadPickers()]);
  } catch (err) {
    toast(`Tomograms not loaded: ${err.message}`, true);
    return;
  }
  const id = arg ? Number(arg) : tomo.id ?? tomo.tomograms[0]?.id ?? null;
  if (id !== null && !tomo.tomograms.some((t) => t.id === id)) {
    toast(`No tomogram ${arg} in this project.`, true);
    return;
  }
  if (id === null) {
    draw();
    return;
  }
  await open(id);
  draw();
  $("#slice-wrap").focus({ preventScroll: true });
}

export function hideTomograms() {
  view.visible = false;
}

/** Keys of the workspace; true when handled. */
export function handleTomoKey(e) {
  if ((e.ctrlKey || e.metaKey) && !e.altKey && e.key.toLowerCase() === "z" && !e.shiftKey) {
    undoAnnotation();
    return true;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return false;
  if (/^[1-9]$/.test(e.key)) {
    const c = tomo.classes[Number(e.key) - 1];
    if (c) setCurrentClass(c.name);
    return true;
  }
  switch (e.key) {
    case "?":
      toast("Keys: ↑/↓ or PageUp/PageDown step sections (shift ×10), 1-9 class, click place, Delete remove, "
        + "Ctrl+Z undo, n/p next/previous pick, a/r accept/reject, f fit, +/− zoom, space+drag pan.");
      return true;
    case "a": decide("accepted"); return true;
    case "r": decide("rejected"); return true;
    case "n": nextPick(1); return true;
    case "p": nextPick(-1); return true;
    default: return handleSliceKey(e);
  }
}

export function initTomograms() {
  initSlices();
  initReview();
  initPicker();
  initExport();
  $("#add-tomo-form").addEventListener("submit", addTomogram);
  $("#add-class-form").addEventListener("submit", addClass);
  $("#add-tomo-path").addEventListener("input", (e) => {
    $("#add-tomo-copick").hidden = !/\.json$/i.test(e.target.value.trim());
  });
  $("#add-class-colour").addEventListener("input", (e) => { e.target.dataset.touched = "1"; });
  $("#tomo-select").addEventListener("change", (e) => { location.hash = `#/tomograms/${e.target.value}`; });
  // A slider or choice let go hands the keys back to the viewer (n, a, r, arrows...).
  $("#view-tomograms").addEventListener("change", (e) => {
    if (e.target.type === "range" || e.target.tagName === "SELECT") e.target.blur();
  });
  on("tomograms", renderTomograms);
  on("classes", () => { renderClasses(); draw(); });
  on("current-class", renderClasses);
  on("tomo-save", renderSave);
  on("annotations", renderSave);
  on("annotations", () => {
    // The list's counts follow the edits, fetched lazily.
    clearTimeout(initTomograms.timer);
    initTomograms.timer = setTimeout(() => { loadTomograms().catch(() => null); loadClasses().catch(() => null); }, 1500);
  });
}
