// The tomogram workspace's shared state (docs/app-api-tomograms.md): tomograms, particle
// classes, the open tomogram's annotations and picks, pickers, the selection and the
// current class. Views listen through state.js's bus: "tomograms", "classes",
// "annotations", "picks", "pickers", "tomo-selection", "current-class".

import { api } from "./api.js";
import { emit } from "./state.js";

export const tomo = {
  tomograms: [], // rows of GET /api/tomograms
  classes: [], // rows of GET /api/particle-classes
  pickers: [], // rows of GET /api/pickers
  id: null, // the open tomogram
  annotations: [], // of the open tomogram; each may carry .pending / .error
  picks: [], // of the open tomogram: {id, class, x, y, z, score, status, annotation_id}
  picker: null, // picker whose picks are shown (null: the server's default, the latest)
  pickerShown: null, // the picker id the server answered with
  threshold: 0.5,
  selection: null, // {kind: "annotation" | "pick", id}
  currentClass: null, // class name
};

export function openTomogram() {
  return tomo.tomograms.find((t) => t.id === tomo.id) || null;
}

export function classByName(name) {
  return tomo.classes.find((c) => c.name === name) || null;
}

/** A class's particle radius in voxels of a tomogram (the contract's rule), or null. */
export function radiusVox(cls, tomogram) {
  if (!cls) return null;
  if (cls.radius_vox) return cls.radius_vox;
  if (cls.radius_A && tomogram && tomogram.voxel_size_A) return cls.radius_A / tomogram.voxel_size_A;
  return null;
}

export async function loadTomograms() {
  tomo.tomograms = await api("/api/tomograms");
  emit("tomograms", tomo.tomograms);
  return tomo.tomograms;
}

export async function loadClasses() {
  tomo.classes = await api("/api/particle-classes");
  if (!tomo.currentClass || !classByName(tomo.currentClass)) tomo.currentClass = tomo.classes[0]?.name ?? null;
  emit("classes", tomo.classes);
  return tomo.classes;
}

export async function loadPickers() {
  try {
    tomo.pickers = await api("/api/pickers");
  } catch (err) {
    if (err.status !== 404) throw err;
    tomo.pickers = []; // a server without the picker endpoints yet
  }
  emit("pickers", tomo.pickers);
  return tomo.pickers;
}

export async function loadAnnotations() {
  const id = tomo.id;
  if (id === null) return [];
  const rows = await api(`/api/tomograms/${id}/annotations`);
  if (id !== tomo.id) return rows; // another tomogram was opened meanwhile
  // Keep edits still on their way to the server (they are applied over the server's rows).
  const inflight = tomo.annotations.filter((a) => a.pending);
  const byId = new Map(inflight.filter((a) => a.id > 0).map((a) => [a.id, a]));
  tomo.annotations = rows.map((r) => byId.get(r.id) || r).concat(inflight.filter((a) => !(a.id > 0)));
  emit("annotations", tomo.annotations);
  return tomo.annotations;
}

export async function loadPicks() {
  const id = tomo.id;
  if (id === null) return [];
  let data;
  try {
    data = await api(`/api/tomograms/${id}/picks${tomo.picker ? `?picker=${tomo.picker}` : ""}`);
  } catch (err) {
    if (err.status !== 404) throw err;
    data = { picker: null, picks: [] };
  }
  if (id !== tomo.id) return data.picks;
  tomo.picks = data.picks || [];
  tomo.pickerShown = data.picker ?? null;
  if (tomo.selection?.kind === "pick" && !tomo.picks.some((p) => p.id === tomo.selection.id)) tomo.selection = null;
  emit("picks", tomo.picks);
  return tomo.picks;
}

export function select(kind, id) {
  tomo.selection = kind ? { kind, id } : null;
  emit("tomo-selection", tomo.selection);
}

export function selected() {
  const s = tomo.selection;
  if (!s) return null;
  const list = s.kind === "pick" ? tomo.picks : tomo.annotations;
  return list.find((x) => x.id === s.id) || null;
}

export function setCurrentClass(name) {
  tomo.currentClass = name;
  emit("current-class", name);
}
