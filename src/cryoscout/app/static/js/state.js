// The page's shared state: project, atlases, squares per atlas, the selected square, and a
// tiny event bus so views redraw when something they show changed.

import { api } from "./api.js";

const listeners = new Map();

export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, new Set());
  listeners.get(event).add(fn);
}

export function emit(event, payload) {
  for (const fn of listeners.get(event) || []) fn(payload);
}

export const state = {
  project: null,
  atlases: [], // cassette rows
  squares: new Map(), // atlas_id -> {sprites, squares, byId: Map, model_id}
  selection: null, // {atlasId, squareId}
  suggestions: null, // {model_id, method, squares: [...]} from /api/suggestions
  models: [],
  jobs: [],
};

export function atlasById(id) {
  return state.atlases.find((a) => a.id === id) || null;
}

export function squareKey(atlasId, squareId) {
  return `${atlasId}:${squareId}`;
}

export async function loadProject() {
  state.project = await api("/api/project");
  emit("project", state.project);
  return state.project;
}

export async function loadAtlases() {
  state.atlases = await api("/api/atlases");
  emit("atlases", state.atlases);
  return state.atlases;
}

export async function loadModels() {
  state.models = await api("/api/models");
  emit("models", state.models);
  return state.models;
}

const inflight = new Map();

/** Squares of one atlas (cached; `force` reloads after rescoring). */
export async function loadSquares(atlasId, { force = false } = {}) {
  if (!force && state.squares.has(atlasId)) return state.squares.get(atlasId);
  if (!force && inflight.has(atlasId)) return inflight.get(atlasId);
  const p = api(`/api/atlases/${atlasId}/squares`).then((data) => {
    const old = state.squares.get(atlasId);
    data.byId = new Map(data.squares.map((s) => [s.square_id, s]));
    for (const s of data.squares) {
      s.atlas_id = atlasId;
      s.pending = {}; // attribute -> value awaiting the server's confirmation
      s.errors = {};
      // Keep labels in flight across a reload of the table.
      const prev = old && old.byId.get(s.square_id);
      if (prev && Object.keys(prev.pending).length) s.pending = prev.pending;
    }
    state.squares.set(atlasId, data);
    inflight.delete(atlasId);
    emit("squares", atlasId);
    return data;
  }, (err) => {
    inflight.delete(atlasId);
    throw err;
  });
  inflight.set(atlasId, p);
  return p;
}

export function getSquare(atlasId, squareId) {
  const data = state.squares.get(atlasId);
  return data ? data.byId.get(squareId) || null : null;
}

export function readyAtlases() {
  return state.atlases.filter((a) => a.status === "ready");
}

export function select(atlasId, squareId) {
  state.selection = atlasId === null ? null : { atlasId, squareId };
  emit("selection", state.selection);
}

export function selectedSquare() {
  const s = state.selection;
  return s ? getSquare(s.atlasId, s.squareId) : null;
}
