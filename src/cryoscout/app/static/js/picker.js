// Training the picker on the project's annotations and predicting on tomograms: background
// jobs (the code of `cryoscout pick train` / `pick predict`) shown with the page's job rows
// (progress, estimate, cancel, resume after an interruption) and the training loss by epoch.

import { api } from "./api.js";
import { cancelJob, jobRow, pollSoon, resumeJob } from "./jobs.js";
import { on, state } from "./state.js";
import { loadPickers, loadPicks, loadTomograms, tomo } from "./tomostate.js";
import { chart, metricKeys } from "./train.js";
import { $, canvasContext, fillSelect, h, toast } from "./ui.js";

const latest = (kind) => state.jobs.find((j) => j.kind === kind) || null;

function drawLosses(job) {
  const c = $("#pt-loss");
  const losses = (job && job.losses) || [];
  c.hidden = !losses.length;
  if (!losses.length) return;
  const { ctx, w, h: ht } = canvasContext(c, 340, 170);
  const keys = metricKeys(losses).filter((k) => k !== "lr"); // the learning rate is not a loss
  chart(ctx, { x0: 0, y0: 0, w, h: ht }, "Training loss by epoch", losses, keys);
}

function renderJobs() {
  const train = latest("pick_train");
  const running = train && ["queued", "running"].includes(train.state);
  $("#pt-start").disabled = !!running;
  $("#pt-job").replaceChildren(...(train ? [jobRow(train, { onCancel: cancelJob, onResume: resumeJob })] : []));
  drawLosses(train);
  const pred = latest("pick_predict");
  updatePredictButton();
  $("#pp-job").replaceChildren(...(pred ? [jobRow(pred, { onCancel: cancelJob })] : []));
}

/** Predict needs a ready picker and no prediction already running. */
function updatePredictButton() {
  const pred = latest("pick_predict");
  const running = !!(pred && ["queued", "running"].includes(pred.state));
  $("#pp-start").disabled = running || !tomo.pickers.some((p) => p.status === "ready");
}

function renderPickers() {
  const ready = tomo.pickers.filter((p) => p.status === "ready" || p.status === undefined);
  fillSelect($("#pp-picker"), ready.slice().reverse().map((p) => [String(p.id),
    `${p.name || `picker ${p.id}`} · ${(p.classes || []).join(", ")} · ${p.n_annotations ?? "?"} particles`]));
  updatePredictButton();
  $("#pp-none").hidden = ready.length > 0;
  $("#pt-init").disabled = !ready.length;
}

function renderTomoChoices() {
  const box = $("#pp-tomos");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => Number(i.value)));
  if (!box.dataset.touched && tomo.id !== null) checked.add(tomo.id);
  box.replaceChildren(...tomo.tomograms.map((t) => h("label", { class: "check" },
    h("input", { type: "checkbox", value: t.id, checked: checked.has(t.id), onchange: () => { box.dataset.touched = "1"; } }),
    t.name)));
}

async function startTraining(e) {
  e.preventDefault();
  const body = {
    epochs: Number($("#pt-epochs").value) || 40,
    samples_per_epoch: Number($("#pt-samples").value) || 64,
    seed: Number($("#pt-seed").value) || 0,
  };
  const patch = $("#pt-patch").value.trim();
  if (patch) body.patch = Number(patch);
  const lowpass = $("#pt-lowpass").value.trim();
  if (lowpass) body.lowpass_A = Number(lowpass);
  const channels = $("#pt-channels").value.trim();
  if (channels) {
    body.channels = channels.split(/[\s,]+/).filter(Boolean).map(Number);
    if (body.channels.some((c) => !Number.isInteger(c) || c < 1)) {
      toast(`Channels must be whole numbers separated by commas, not "${channels}".`, true);
      return;
    }
  }
  const init = $("#pt-init").checked ? tomo.pickers.filter((p) => p.status === "ready").at(-1) : null;
  if (init) body.init = init.id;
  try {
    await api("/api/picker/train", { method: "POST", body });
    toast("Picker training started; it runs in the background (you can keep annotating).");
    await loadPickers();
    pollSoon();
  } catch (err) {
    toast(`Training not started: ${err.message}`, true);
  }
}

async function startPredict() {
  const picker = Number($("#pp-picker").value);
  const tomograms = [...$("#pp-tomos").querySelectorAll("input:checked")].map((i) => Number(i.value));
  if (!picker) {
    toast("Train a picker first.", true);
    return;
  }
  if (!tomograms.length) {
    toast("Choose at least one tomogram to predict on.", true);
    return;
  }
  try {
    await api("/api/picker/predict", { method: "POST", body: { picker, tomograms } });
    toast(`Predicting on ${tomograms.length} tomogram${tomograms.length > 1 ? "s" : ""} in the background.`);
    pollSoon();
  } catch (err) {
    toast(`Prediction not started: ${err.message}`, true);
  }
}

export function initPicker() {
  $("#pt-form").addEventListener("submit", startTraining);
  $("#pp-start").addEventListener("click", startPredict);
  on("jobs", renderJobs);
  on("pickers", renderPickers);
  on("tomograms", renderTomoChoices);
  on("tomo-open", renderTomoChoices);
  on("job-finished", async (job) => {
    if (job.kind === "pick_train") {
      await loadPickers().catch(() => null);
      if (job.state === "done") toast("Picker trained: predict with it below.");
      else if (job.state === "failed") toast(`Picker training failed: ${job.message}`, true);
    } else if (job.kind === "pick_predict") {
      await Promise.all([loadPicks(), loadTomograms(), loadPickers()].map((p) => p.catch(() => null)));
      if (job.state === "done") toast("Picks ready: review them with the threshold slider.");
      else if (job.state === "failed") toast(`Prediction failed: ${job.message}`, true);
    }
  });
  window.addEventListener("resize", () => drawLosses(latest("pick_train")));
}
