// Saving annotation edits: each click, move and delete is sent at once, one request after
// another (a move must not overtake the add it moves), and shown saved only on the server's
// word. A failed request undoes the edit on screen and says why; nothing is dropped silently.

import { api } from "./api.js";
import { labeler } from "./labels.js";
import { emit, state } from "./state.js";
import { classByName, loadAnnotations, loadPicks, select, tomo } from "./tomostate.js";
import { toast } from "./ui.js";

let queue = Promise.resolve();
let nextTemp = -1;
export const saving = { pending: 0, error: null, saved: 0 };

function who() {
  return labeler() || state.project?.labeler || "";
}

function report() {
  emit("tomo-save", saving);
}

/** Run `fn` after every edit sent before it; keeps the save state up to date. */
function enqueue(obj, fn, onError) {
  saving.pending++;
  if (obj) obj.pending = (obj.pending || 0) + 1;
  report();
  const p = queue.then(async () => {
    try {
      await fn();
      saving.error = null;
      saving.saved++;
    } catch (err) {
      saving.error = err.message;
      onError(err);
    } finally {
      saving.pending--;
      if (obj) obj.pending--;
      report();
      emit("annotations", tomo.annotations);
    }
  });
  queue = p;
  return p;
}

const round1 = (v) => Math.round(v * 10) / 10;

/** Place a particle centre of class `name` at voxel (x, y, z) of the open tomogram. */
export function addAnnotation(name, x, y, z) {
  const cls = classByName(name);
  if (!cls) {
    toast("Add a particle class first (Particle classes, on the right).", true);
    return null;
  }
  const tomogramId = tomo.id;
  const obj = { id: nextTemp--, class: cls.name, class_id: cls.id, x: round1(x), y: round1(y), z: round1(z), source: "click" };
  tomo.annotations.push(obj);
  select("annotation", obj.id);
  emit("annotations", tomo.annotations);
  enqueue(obj, async () => {
    const body = { class: obj.class, x: obj.x, y: obj.y, z: obj.z, labeler: who() };
    const row = await api(`/api/tomograms/${tomogramId}/annotations`, { method: "POST", body });
    const wasSelected = tomo.selection?.kind === "annotation" && tomo.selection.id === obj.id;
    // Later edits of this particle (queued behind this request) use the server's id.
    Object.assign(obj, row, { x: obj.x, y: obj.y, z: obj.z });
    if (wasSelected) tomo.selection = { kind: "annotation", id: obj.id };
  }, (err) => {
    obj.failed = true;
    tomo.annotations = tomo.annotations.filter((a) => a !== obj);
    if (tomo.selection?.id === obj.id) select(null);
    toast(`Particle not saved: ${err.message}`, true);
  });
  return obj;
}

/** Move (drag) or reclass a saved or still-saving annotation. */
export function updateAnnotation(obj, changes) {
  const before = Object.fromEntries(Object.keys(changes).map((k) => [k, obj[k]]));
  for (const k of ["x", "y", "z"]) if (k in changes) changes[k] = round1(changes[k]);
  Object.assign(obj, changes);
  emit("annotations", tomo.annotations);
  return enqueue(obj, async () => {
    if (obj.failed) return;
    const body = { ...changes, labeler: who() };
    const row = await api(`/api/annotations/${obj.id}`, { method: "PATCH", body });
    Object.assign(obj, row, changes);
  }, (err) => {
    Object.assign(obj, before);
    toast(`Move not saved: ${err.message}`, true);
  });
}

export function deleteAnnotation(obj) {
  const i = tomo.annotations.indexOf(obj);
  if (i < 0) return Promise.resolve();
  tomo.annotations.splice(i, 1);
  if (tomo.selection?.kind === "annotation" && tomo.selection.id === obj.id) select(null);
  emit("annotations", tomo.annotations);
  return enqueue(null, async () => {
    if (obj.failed) return;
    await api(`/api/annotations/${obj.id}?labeler=${encodeURIComponent(who())}`, { method: "DELETE" });
    if (obj.pick_id !== null && obj.pick_id !== undefined) await loadPicks(); // that pick is pending again
  }, (err) => {
    if (obj.tomogram_id === undefined || obj.tomogram_id === tomo.id) tomo.annotations.push(obj);
    toast(`Delete not saved: ${err.message}`, true);
  });
}

/** Undo this labeler's latest add, move or delete (on the server: it holds after a reload). */
export function undoAnnotation() {
  return enqueue(null, async () => {
    let reply;
    try {
      reply = await api("/api/annotations/undo", { method: "POST", body: { labeler: who() } });
    } catch (err) {
      if (err.status === 409 || err.status === 404) {
        toast("Nothing to undo.");
        return;
      }
      throw err;
    }
    // Undoing an accepted pick's add or delete changes that pick's status too.
    await Promise.all([loadAnnotations(), loadPicks()]);
    const ev = reply.undone || {};
    const a = reply.annotation;
    if (a && tomo.annotations.some((x) => x.id === a.id)) select("annotation", a.id);
    else if (tomo.selection?.kind === "annotation" && !tomo.annotations.some((x) => x.id === tomo.selection.id)) select(null);
    const other = ev.tomogram_id !== undefined && ev.tomogram_id !== tomo.id
      ? tomo.tomograms.find((t) => t.id === ev.tomogram_id) : null;
    const what = { add: "the particle placed last", move: "the last move", delete: "the last delete" }[ev.action] || "the last edit";
    toast(`Undone: ${what}${other ? ` (in ${other.name})` : ""}`);
  }, (err) => toast(`Undo failed: ${err.message}`, true));
}

/** Wait for every edit sent so far (tests, tomogram switches). */
export function settled() {
  return queue;
}

window.addEventListener("beforeunload", (e) => {
  if (saving.pending > 0) {
    e.preventDefault();
    e.returnValue = "Annotations are still being saved.";
  }
});
