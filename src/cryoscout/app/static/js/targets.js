// Targets: top-k by the chosen model, squares added or removed by hand, and the downloads
// (targets.nav for SerialEM, targets.csv, labels.csv, report.html).

import { api, url } from "./api.js";
import { colorFor, fmt } from "./scores.js";
import { spriteTile } from "./sprite.js";
import { atlasById, emit, loadSquares, on, readyAtlases, select, state } from "./state.js";
import { $, fillSelect, h, toast } from "./ui.js";

let current = null; // the last targets reply of the shown atlas
let modelChosen = false; // the user picked a model in this view

function applyTargets(atlasId, reply) {
  const data = state.squares.get(atlasId);
  if (data) {
    const ids = new Set(reply.targets.map((t) => t.square_id));
    for (const s of data.squares) s.target = ids.has(s.square_id);
  }
  emit("targets-changed", atlasId);
}

/** Add a square to its atlas's targets or remove it (by hand). */
export async function toggleTarget(sq) {
  // Keep the atlas's stored top-k: a POST without it would reset it.
  let topK = current && current.atlasId === sq.atlas_id ? current.top_k : null;
  if (topK === null) {
    try {
      topK = (await api(`/api/atlases/${sq.atlas_id}/targets`)).top_k;
    } catch (err) {
      toast(`Targets not changed: ${err.message}`, true);
      return;
    }
  }
  const body = { atlas_id: sq.atlas_id, top_k: topK };
  if (sq.target) body.remove = [sq.square_id];
  else body.add = [sq.square_id];
  const model = $("#targets-model").value;
  if (model) body.model_id = Number(model);
  try {
    const reply = await api("/api/targets", { method: "POST", body });
    applyTargets(sq.atlas_id, reply);
    if (current && Number($("#targets-atlas").value) === sq.atlas_id) show(sq.atlas_id, reply);
    toast(`Square ${sq.square_id} ${body.add ? "added to" : "removed from"} the targets`);
  } catch (err) {
    toast(`Targets not changed: ${err.message}`, true);
  }
}

function setLinks(atlasId) {
  const nav = $("#dl-nav");
  const csv = $("#dl-csv");
  const report = $("#open-report");
  const labels = $("#dl-labels");
  labels.href = url("/api/labels.csv");
  labels.setAttribute("download", "labels.csv");
  for (const a of [nav, csv, report]) a.classList.toggle("disabled", !atlasId);
  if (!atlasId) return;
  const atlas = atlasById(atlasId);
  const stem = atlas ? atlas.name : `atlas${atlasId}`;
  // The files of the list shown: the chosen model's ranking.
  const model = $("#targets-model").value;
  const q = model ? `?model=${model}` : "";
  nav.href = url(`/api/atlases/${atlasId}/targets.nav${q}`);
  nav.setAttribute("download", `${stem}_targets.nav`);
  csv.href = url(`/api/atlases/${atlasId}/targets.csv${q}`);
  csv.setAttribute("download", `${stem}_targets.csv`);
  report.href = url(`/api/atlases/${atlasId}/report.html`);
}

function show(atlasId, reply) {
  current = { ...reply, atlasId };
  const tbody = $("#targets-table tbody");
  const data = state.squares.get(atlasId);
  const added = new Set(reply.added || []);
  $("#targets-k").value = reply.top_k;
  const nav = $("#dl-nav");
  if (reply.has_stage === false) {
    nav.classList.add("disabled");
    nav.title = "This atlas has no stage positions, so there is no navigator file.";
  } else {
    nav.title = "SerialEM navigator file of these targets";
  }
  $("#targets-empty").hidden = reply.targets.length > 0;
  $("#targets-summary").textContent = `${reply.targets.length} targets · top ${reply.top_k}` +
    (added.size ? ` + ${added.size} added by hand` : "") +
    (reply.removed && reply.removed.length ? ` − ${reply.removed.length} removed by hand` : "");
  tbody.replaceChildren(...reply.targets.map((t) => {
    const sq = data ? data.byId.get(t.square_id) : null;
    // Scores of the chosen model (the reply's), not necessarily the current one.
    const sc = t.overall !== undefined ? t : sq ? sq.scores : {};
    const source = t.source || (added.has(t.square_id) ? "added" : "top-k");
    return h("tr", { class: "clickable", "data-square": t.square_id,
      onclick: () => { select(atlasId, t.square_id); location.hash = `#/squares/${atlasId}`; } },
    h("td", { class: "thumb" }, sq && data ? spriteTile(data.sprites, sq.index, 44) : ""),
    h("td", { class: "left" }, `${t.rank !== undefined && t.rank !== null ? `#${t.rank} · ` : ""}square ${t.square_id}`),
    ...["overall", "brightness", "squareness", "cracking", "contamination"].map((a) =>
      h("td", { style: { color: colorFor(a, sc[a]) , fontWeight: a === "overall" ? 600 : 400 } }, fmt(sc[a]))),
    h("td", {}, fmt(t.stage_x_um, 1)), h("td", {}, fmt(t.stage_y_um, 1)),
    h("td", { class: "left" }, source === "added" ? "added by hand" : "top-k"),
    h("td", {}, h("button", {
      type: "button", title: "Remove from the targets",
      onclick: (e) => { e.stopPropagation(); if (sq) toggleTarget(sq); else removeById(atlasId, t.square_id); },
    }, "✕")));
  }));
}

async function removeById(atlasId, squareId) {
  const body = { atlas_id: atlasId, top_k: current.top_k, remove: [squareId] };
  const reply = await api("/api/targets", { method: "POST", body });
  applyTargets(atlasId, reply);
  show(atlasId, reply);
}

export async function refreshTargets() {
  const atlasId = Number($("#targets-atlas").value) || null;
  setLinks(atlasId);
  if (!atlasId) {
    $("#targets-table tbody").replaceChildren();
    $("#targets-empty").hidden = false;
    return;
  }
  const model = $("#targets-model").value;
  await loadSquares(atlasId);
  // Without top_k the server answers with the atlas's stored choice.
  const reply = await api(`/api/atlases/${atlasId}/targets${model ? `?model=${model}` : ""}`);
  show(atlasId, reply);
}

export function fillTargetSelects() {
  const atl = readyAtlases();
  fillSelect($("#targets-atlas"), atl.map((a) => [a.id, a.name]),
    state.selection ? state.selection.atlasId : undefined);
  // The current model unless the user chose another one here.
  const cur = state.models.find((m) => m.current);
  fillSelect($("#targets-model"), state.models.map((m) => [m.id, `v${m.id} ${m.name}${m.current ? " (current)" : ""}`]),
    modelChosen ? undefined : cur ? cur.id : undefined);
}

export function initTargets() {
  $("#targets-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const atlasId = Number($("#targets-atlas").value);
    if (!atlasId) return;
    const body = { atlas_id: atlasId, top_k: Number($("#targets-k").value) || 20 };
    const model = $("#targets-model").value;
    if (model) body.model_id = Number(model);
    try {
      const reply = await api("/api/targets", { method: "POST", body });
      applyTargets(atlasId, reply);
      show(atlasId, reply);
    } catch (err) {
      toast(`Targets not chosen: ${err.message}`, true);
    }
  });
  $("#targets-atlas").addEventListener("change", () => refreshTargets().catch((e) => toast(e.message, true)));
  $("#targets-model").addEventListener("change", () => {
    modelChosen = true;
    refreshTargets().catch((e) => toast(e.message, true));
  });
  on("atlases", fillTargetSelects);
  on("models", fillTargetSelects);
}
