// Writing labels: each label is PUT the moment it is given and shown as saved only once the
// server confirmed it. Requests go one after another so the server stores them in the order
// they were given (two quick keystrokes on one attribute must not land swapped).

import { api } from "./api.js";
import { emit, getSquare, state } from "./state.js";
import { toast } from "./ui.js";

const LABELER_KEY = "cryoscout.labeler";
let queue = Promise.resolve();
let pendingCount = 0;

export function labeler() {
  const el = document.getElementById("labeler");
  return (el && el.value.trim()) || localStorage.getItem(LABELER_KEY) || "";
}

export function initLabeler(defaultName) {
  const el = document.getElementById("labeler");
  el.value = localStorage.getItem(LABELER_KEY) || defaultName || "";
  el.addEventListener("change", () => {
    localStorage.setItem(LABELER_KEY, el.value.trim());
  });
  el.addEventListener("keydown", (e) => {
    if (e.key === "Enter") el.blur();
    e.stopPropagation(); // typing a name is not labeling
  });
}

export function pendingLabels() {
  return pendingCount;
}

function applySaved(saved) {
  const sq = getSquare(saved.atlas_id, saved.square_id);
  if (!sq) return;
  if (saved.labels) sq.labels = { ...saved.labels };
  emit("labels", { atlasId: saved.atlas_id, squareId: saved.square_id });
}

/** Set (value 0-4) or clear (null) one attribute of one square. */
export function setLabel(atlasId, squareId, attribute, value) {
  const sq = getSquare(atlasId, squareId);
  if (!sq) return Promise.resolve();
  const name = labeler();
  if (!name) {
    toast("Enter your name in the Labeler field (top right) first: every label records who gave it.", true);
    document.getElementById("labeler").focus();
    return Promise.resolve();
  }
  const token = {};
  sq.pending[attribute] = { value, token };
  delete sq.errors[attribute];
  pendingCount++;
  emit("labels", { atlasId, squareId });
  const body = { atlas_id: atlasId, square_id: squareId, attribute, value, labeler: name };
  const p = queue.then(async () => {
    try {
      const saved = await api("/api/labels", { method: "PUT", body });
      // Only the newest request of this attribute decides what is pending.
      if (sq.pending[attribute] && sq.pending[attribute].token === token) delete sq.pending[attribute];
      applySaved(saved);
    } catch (err) {
      if (sq.pending[attribute] && sq.pending[attribute].token === token) delete sq.pending[attribute];
      sq.errors[attribute] = err.message;
      toast(`Label not saved: ${err.message}`, true);
      emit("labels", { atlasId, squareId });
    } finally {
      pendingCount--;
    }
  });
  queue = p;
  return p;
}

/** Undo this labeler's most recent label (server side, so it works after a reload too). */
export function undo() {
  const name = labeler();
  if (!name) return Promise.resolve();
  pendingCount++;
  const p = queue.then(async () => {
    try {
      const saved = await api("/api/labels/undo", { method: "POST", body: { labeler: name } });
      applySaved(saved);
      const { attribute, value } = saved;
      const atlas = state.atlases.find((a) => a.id === saved.atlas_id);
      toast(`Undone: ${atlas ? atlas.name : saved.atlas_id} square ${saved.square_id} ${attribute} is ` +
        `${value === null ? "unlabeled" : value} again`);
      emit("undo", saved);
    } catch (err) {
      toast(err.status === 404 ? "Nothing to undo." : `Undo failed: ${err.message}`, err.status !== 404);
    } finally {
      pendingCount--;
    }
  });
  queue = p;
  return p;
}

/** The value shown for an attribute and whether it is saved, pending or failed. */
export function labelState(sq, attribute) {
  if (sq.pending && sq.pending[attribute]) return { value: sq.pending[attribute].value, state: "pending" };
  if (sq.errors && sq.errors[attribute]) {
    const v = sq.labels ? sq.labels[attribute] : undefined;
    return { value: v === undefined ? null : v, state: "error" };
  }
  const v = sq.labels ? sq.labels[attribute] : undefined;
  return { value: v === undefined ? null : v, state: v === undefined || v === null ? "none" : "saved" };
}

export function isLabeled(sq) {
  return sq.labels && Object.values(sq.labels).some((v) => v !== null && v !== undefined);
}

window.addEventListener("beforeunload", (e) => {
  if (pendingCount > 0) {
    e.preventDefault();
    e.returnValue = "Labels are still being saved.";
  }
});
