// Retraining: start a fine-tuning job on the project's labels, follow its progress and
// losses, cancel or resume it; the model versions with held-out error before and after.

import { api } from "./api.js";
import { cancelJob, jobRow, pollSoon, resumeJob } from "./jobs.js";
import { ATTRS, attrLabel, fmt } from "./scores.js";
import { loadModels, loadProject, on, state } from "./state.js";
import { $, canvasContext, fmtTime, h, toast } from "./ui.js";

/** The path of the model version that is the gradient-boosted-trees baseline. */
const BASELINE = "baseline";

function latestTrainJob() {
  return state.jobs.find((j) => j.kind === "train") || null;
}

function meanErr(err) {
  if (!err) return null;
  const vals = Object.values(err).filter((v) => v !== null && v !== undefined);
  return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
}

function errCell(err, other, isAfter) {
  const m = meanErr(err);
  if (m === null) return h("td", {}, "–");
  const title = ATTRS.filter((a) => err[a] !== undefined && err[a] !== null)
    .map((a) => `${attrLabel(a)} ${fmt(err[a], 2)}`).join("\n");
  const o = meanErr(other);
  const cls = isAfter && o !== null ? (m < o ? "err-better" : m > o ? "err-worse" : "") : "";
  return h("td", { title, class: cls }, fmt(m, 2));
}

function renderModels() {
  const tbody = $("#models-table tbody");
  tbody.replaceChildren(...state.models.slice().reverse().map((m) => h("tr", { "data-model": m.id },
    h("td", { class: "left", title: m.path === BASELINE ? "Gradient-boosted trees on hand-made features: no attention maps; training fine-tunes the shipped network v1" : "" },
      h("b", {}, `v${m.id}`), ` ${m.name} `,
      m.current ? h("span", { class: "chip", style: { background: "#2456a6" } }, "current") : ""),
    h("td", { class: "left", title: m.path && m.path !== BASELINE ? m.path : "shipped with cryoscout" }, fmtTime(m.created)),
    h("td", {}, m.n_labeled ? `${m.n_labeled} + ${m.n_test || 0}` : "–"),
    errCell(m.error_before, null, false),
    errCell(m.error_after, m.error_before, true),
    h("td", {}, m.current ? "" : h("button", { type: "button", title: "Make this the current model (rescores the atlases)", onclick: () => activate(m) }, "Use")))));
  renderErrorDetail();
}

/** Per-attribute held-out error of the newest trained model, before and after. */
function renderErrorDetail() {
  const box = $("#model-errors");
  const m = state.models.slice().reverse().find((x) => x.error_after);
  if (!m) {
    box.replaceChildren();
    return;
  }
  box.replaceChildren(
    h("h3", {}, `Held-out error by score, v${m.id} against its parent v${m.parent ?? "?"}`),
    h("table", { class: "data" },
      h("thead", {}, h("tr", {}, h("th", { class: "left" }, "score"), h("th", {}, "before"), h("th", {}, "after"), h("th", {}, "change"))),
      h("tbody", {}, ATTRS.map((a) => {
        const b = m.error_before ? m.error_before[a] : null;
        const af = m.error_after[a];
        const d = Number.isFinite(b) && Number.isFinite(af) ? af - b : null;
        return h("tr", {}, h("td", { class: "left" }, attrLabel(a)), h("td", {}, fmt(b, 2)), h("td", {}, fmt(af, 2)),
          h("td", { class: d === null ? "" : d < 0 ? "err-better" : d > 0 ? "err-worse" : "" }, d === null ? "–" : `${d > 0 ? "+" : ""}${d.toFixed(2)}`));
      }))),
    h("p", { class: "hint" }, `${m.n_test} labeled squares held out of this training; ${m.n_labeled} labeled and ${m.n_unlabeled ?? "?"} unlabeled squares trained on.`));
}

async function activate(m) {
  try {
    await api(`/api/models/${m.id}/activate`, { method: "POST" });
    toast(`Model v${m.id} is now current; atlases are rescored with it.`);
    await loadModels();
    pollSoon();
  } catch (err) {
    toast(err.message, true);
  }
}

// Friendly names of the metrics the training module logs once per epoch.
const METRIC_NAMES = {
  "train/loss_primary_sup": "primary (labels)",
  "train/loss_primary_rec": "primary (reconstr.)",
  "train/loss_attr_sup": "attention (labels)",
  "train/loss_attr_rec": "attention (reconstr.)",
  "train/loss_fusion": "fusion (labels)",
  "val/mad_overall": "overall",
  "val/mad_mean": "mean of the five",
};
const COLOURS = ["#2456a6", "#c2410c", "#1f7a44", "#7b3fb0", "#b8860b", "#0e7490", "#be185d"];

export function metricKeys(losses) {
  const keys = new Set();
  for (const p of losses) for (const [k, v] of Object.entries(p)) if (typeof v === "number" && k !== "epoch" && k !== "step") keys.add(k);
  return [...keys];
}

export function chart(ctx, box, title, losses, keys) {
  const { x0, y0, w, h } = box;
  const pad = { l: 40, r: 8, t: 18, b: 20 };
  ctx.fillStyle = "#1d2330";
  ctx.font = "600 12px system-ui, sans-serif";
  ctx.fillText(title, x0 + pad.l, y0 + 12);
  ctx.font = "11px system-ui, sans-serif";
  const xs = losses.map((p, i) => (p.epoch ?? i) + 1);
  const vals = keys.flatMap((k) => losses.map((p) => p[k]).filter((v) => Number.isFinite(v)));
  if (!vals.length) return;
  const ymax = Math.max(1e-6, ...vals) * 1.1;
  const xmax = Math.max(2, ...xs);
  const legendH = 8 + 14 * Math.ceil(keys.length / 2);
  const plotB = y0 + h - pad.b - legendH;
  const X = (x) => x0 + pad.l + ((x - 1) / (xmax - 1)) * (w - pad.l - pad.r);
  const Y = (y) => plotB - (y / ymax) * (plotB - y0 - pad.t);
  ctx.strokeStyle = "#dde1e7";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 3; i++) {
    const y = (ymax * i) / 3;
    ctx.beginPath(); ctx.moveTo(x0 + pad.l, Y(y)); ctx.lineTo(x0 + w - pad.r, Y(y)); ctx.stroke();
    ctx.fillStyle = "#5d6675";
    ctx.fillText(y.toFixed(2), x0 + 4, Y(y) + 4);
  }
  ctx.textAlign = "center";
  for (let e = 1; e <= xmax; e++) if (xmax <= 12 || e % Math.ceil(xmax / 12) === 0) ctx.fillText(String(e), X(e), plotB + 13);
  ctx.textAlign = "start";
  keys.forEach((k, j) => {
    const colour = COLOURS[j % COLOURS.length];
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    losses.forEach((p, i) => {
      const v = p[k];
      if (!Number.isFinite(v)) return;
      if (!started) { ctx.moveTo(X(xs[i]), Y(v)); started = true; } else ctx.lineTo(X(xs[i]), Y(v));
    });
    ctx.stroke();
    losses.forEach((p, i) => {
      if (Number.isFinite(p[k])) { ctx.beginPath(); ctx.arc(X(xs[i]), Y(p[k]), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    });
    const lx = x0 + pad.l + (j % 2) * ((w - pad.l) / 2);
    const ly = plotB + 28 + Math.floor(j / 2) * 14;
    ctx.fillRect(lx, ly - 7, 12, 3);
    ctx.fillStyle = "#1d2330";
    ctx.fillText(METRIC_NAMES[k] || k, lx + 16, ly - 2);
  });
}

function drawLosses(job) {
  const c = $("#loss-chart");
  const losses = (job && job.losses) || [];
  c.hidden = losses.length === 0;
  if (!losses.length) return;
  const { ctx, w, h: ht } = canvasContext(c, 640, 220);
  const keys = metricKeys(losses);
  const train = keys.filter((k) => !k.startsWith("val"));
  const val = keys.filter((k) => k.startsWith("val"));
  const half = val.length ? w / 2 : w;
  chart(ctx, { x0: 0, y0: 0, w: half - 6, h: ht }, "Training losses by epoch", losses, train);
  if (val.length) chart(ctx, { x0: half + 6, y0: 0, w: half - 6, h: ht }, "Validation error (0-4) by epoch", losses, val);
}

function renderJob() {
  const job = latestTrainJob();
  const box = $("#train-job");
  const running = job && ["queued", "running"].includes(job.state);
  $("#train-start").disabled = !!running;
  $("#train-cancel").hidden = !running;
  if (!job) {
    box.replaceChildren();
    drawLosses(null);
    return;
  }
  const extra = [];
  if (job.state === "done" && job.result) {
    const r = job.result;
    const before = meanErr(r.error_before);
    const after = meanErr(r.error_after);
    if (before !== null && after !== null) {
      extra.push(h("p", {}, `Held-out error: ${fmt(before, 2)} before → `,
        h("b", { class: after <= before ? "err-better" : "err-worse" }, fmt(after, 2)), " after (mean |error| on 0-4)."));
    }
  }
  box.replaceChildren(jobRow(job, { onCancel: cancelJob, onResume: resumeJob }), ...extra);
  drawLosses(job);
}

function renderLabelCount() {
  const p = state.project;
  if (!p) return;
  const cur = state.models.find((m) => m.current);
  // The baseline's trees are not a network: training then starts from the shipped network.
  const start = cur && cur.path === BASELINE ? state.models.find((m) => m.id === 1) : cur;
  $("#train-label-count").textContent = `${p.labeled_squares} labeled squares (${p.labels} labels) in the project · ` +
    `fine-tunes ${start === cur ? "the current model " : "the shipped network "}${start ? `v${start.id} ${start.name}` : ""}`;
}

export function initTrain() {
  $("#train-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      epochs: Number($("#train-epochs").value) || 10,
      unlabeled: Number($("#train-unlabeled").value) || 0,
      test_fraction: Number($("#train-holdout").value),
      seed: Number($("#train-seed").value) || 0,
    };
    try {
      await api("/api/train", { method: "POST", body });
      toast("Training started; it runs in the background (you can keep labeling).");
      pollSoon();
    } catch (err) {
      toast(`Training not started: ${err.message}`, true);
    }
  });
  $("#train-cancel").addEventListener("click", () => {
    const job = latestTrainJob();
    if (job) cancelJob(job);
  });
  on("jobs", renderJob);
  on("models", () => { renderModels(); renderLabelCount(); });
  on("project", renderLabelCount);
  on("job-finished", async (job) => {
    if (job.kind === "train") {
      await loadModels();
      await loadProject();
      if (job.state === "done") toast("Training done: new model version registered; rescoring the atlases.");
      else if (job.state === "failed") toast(`Training failed: ${job.message}`, true);
    }
  });
  window.addEventListener("resize", renderJob);
}
