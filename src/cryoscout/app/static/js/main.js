// Entry point: loads the project, routes #/view/arg to the views, dispatches keys, and reloads
// what a finished background job changed.

import { handleAtlasKey, hideAtlas, initAtlas, showAtlas } from "./atlas.js";
import { initCassette } from "./cassette.js";
import { handleLabelKey, registerDetailPanel, renderDetail } from "./detail.js";
import { hideGallery, initGallery, showGallery, toggleOverlays } from "./gallery.js";
import { pollJobs } from "./jobs.js";
import { initLabeler } from "./labels.js";
import { loadAtlases, loadModels, loadProject, loadSquares, on, state } from "./state.js";
import { fillTargetSelects, initTargets, refreshTargets } from "./targets.js";
import { handleTomoKey, hideTomograms, initTomograms, showTomograms } from "./tomograms.js";
import { initTrain } from "./train.js";
import { $, isTyping, toast } from "./ui.js";

const VIEWS = ["cassette", "atlas", "squares", "train", "targets", "tomograms"];
let current = null;

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS.includes(parts[0]) ? parts[0] : "cassette";
  return { view, arg: parts[1] || null };
}

async function route() {
  const { view, arg } = parseHash();
  if (current && current !== view) {
    // One detail panel at a time (its element ids are unique on the page).
    if (current === "atlas") {
      hideAtlas();
      clearPanel($("#atlas-side"));
    }
    if (current === "squares") {
      hideGallery();
      clearPanel($("#squares-side"));
    }
    if (current === "tomograms") hideTomograms();
  }
  current = view;
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll(".tabs a")) a.classList.toggle("active", a.dataset.view === view);
  document.body.dataset.view = view;
  try {
    if (view === "atlas") await showAtlas(arg);
    else if (view === "squares") await showGallery(arg);
    else if (view === "targets") {
      fillTargetSelects();
      await refreshTargets();
    } else if (view === "tomograms") await showTomograms(arg);
  } catch (err) {
    toast(err.message, true);
  }
  if (view === "atlas") renderDetail($("#atlas-side"));
  if (view === "squares") renderDetail($("#squares-side"));
}

function clearPanel(el) {
  el.replaceChildren();
  el.dataset.square = "";
}

function onKey(e) {
  if (isTyping(e)) return;
  if (current === "tomograms") {
    if (handleTomoKey(e)) e.preventDefault();
    return;
  }
  if (e.key === "?") {
    toast("Keys: b s c t o choose the attribute, 0-4 score it, j/k or →/← next/previous, u undo, x target.");
    return;
  }
  if (current === "atlas" && handleAtlasKey(e)) {
    e.preventDefault();
    return;
  }
  if (current === "squares" && e.key === "v" && !e.ctrlKey && !e.metaKey) {
    toggleOverlays();
    return;
  }
  if ((current === "atlas" || current === "squares") && handleLabelKey(e)) e.preventDefault();
}

async function start() {
  initCassette();
  initAtlas();
  initGallery();
  initTrain();
  initTargets();
  initTomograms();
  registerDetailPanel($("#atlas-side"), () => current === "atlas");
  registerDetailPanel($("#squares-side"), () => current === "squares");
  document.addEventListener("keydown", onKey);
  // A toolbar choice hands the keys back to labeling at once.
  document.addEventListener("change", (e) => {
    if (e.target.tagName === "SELECT" && e.target.closest(".toolbar")) e.target.blur();
  });
  try {
    const [project] = await Promise.all([loadProject(), loadAtlases(), loadModels()]);
    initLabeler(project.labeler);
    $("#project-name").textContent = `${project.name} · ${project.path}`;
    document.title = `cryoscout · ${project.name}`;
  } catch (err) {
    toast(`Project not loaded: ${err.message}`, true);
  }
  on("job-finished", async (job) => {
    // Screening adds an atlas's squares; rescoring changes every atlas's predictions.
    await loadAtlases();
    await loadProject();
    if (job.kind === "rescore" || job.kind === "screen") {
      const ids = job.kind === "screen" && job.params?.atlas_id ? [job.params.atlas_id] : [...state.squares.keys()];
      state.suggestions = null;
      await Promise.all(ids.filter((id) => state.squares.has(id) || id === state.selection?.atlasId)
        .map((id) => loadSquares(id, { force: true }).catch(() => null)));
      if (job.kind === "rescore" && job.state === "done") toast("Rescored with the new model: scores and rankings updated.");
      if (job.kind === "screen" && job.state === "failed") toast(`Screening failed: ${job.message}`, true);
    }
  });
  on("labels", () => {
    // Label counts in the cassette are refreshed lazily, not on every keystroke.
    clearTimeout(start.countTimer);
    start.countTimer = setTimeout(() => { loadAtlases().catch(() => null); loadProject().catch(() => null); }, 1500);
  });
  window.addEventListener("hashchange", route);
  await route();
  pollJobs();
}

start();
