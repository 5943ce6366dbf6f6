// Retraining: start a fine-tuning job on the project's labels, follow its progress and
// losses, cancel or resume it; the model versions with held-out error before and after.

import { api } from "./api.js";
import { jobRow, pollSoon } from "./jobs.js";
import { ATTRS, attrLabel, fmt } from "./scores.js";
import { loadModels, loadProject, on, state } from "./state.js";
import { $, fmtTime, h, toast } from "./ui.js";

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
    h("td", { class: "left" }, h("b", {}, `v${m.id}`), ` ${m.name}`),
    h("td", { class: "left" }, fmtTime(m.created)),
    h("td", {}, m.n_labeled ? `${m.n_labeled}${m.n_test ? ` (+${m.n_test} held out)` : ""}` : "–"),
    errCell(m.error_before, null, false),
    errCell(m.error_after, m.error_before, true),
    h("td", { class: "left" }, m.current ? h("b", {}, "current") : ""),
    h("td", {}, m.current ? "" : h("button", { type: "button", onclick: () => activate(m) }, "Use")))));
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

function drawLosses(job) {
  const c = $("#loss-chart");
  const losses = (job && job.losses) || [];
  c.hidden = losses.length === 0;
  if (!losses.length) return;
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || 640;
  const ht = c.clientHeight || 220;
  c.width = w * dpr;
  c.height = ht * dpr;
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, ht);
  const pad = { l: 44, r: 12, t: 22, b: 26 };
  const xs = losses.map((p, i) => p.step ?? i);
  const series = [
    { key: "loss", label: "training loss", colour: "#2456a6" },
    { key: "val_mad", label: "held-out error (0-4)", colour: "#c2410c" },
  ].filter((s) => losses.some((p) => p[s.key] !== null && p[s.key] !== undefined));
  const all = series.flatMap((s) => losses.map((p) => p[s.key]).filter((v) => v !== null && v !== undefined));
  const ymax = Math.max(1e-6, ...all) * 1.08;
  const xmin = Math.min(...xs);
  const xmax = Math.max(xmin + 1, ...xs);
  const X = (x) => pad.l + ((x - xmin) / (xmax - xmin)) * (w - pad.l - pad.r);
  const Y = (y) => ht - pad.b - (y / ymax) * (ht - pad.t - pad.b);
  ctx.strokeStyle = "#dde1e7";
  ctx.fillStyle = "#5d6675";
  ctx.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = (ymax * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, Y(y)); ctx.lineTo(w - pad.r, Y(y)); ctx.stroke();
    ctx.fillText(y.toFixed(2), 6, Y(y) + 4);
  }
  ctx.fillText("step", w - pad.r - 26, ht - 8);
  let lx = pad.l;
  for (const s of series) {
    ctx.strokeStyle = s.colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    losses.forEach((p, i) => {
      const v = p[s.key];
      if (v === null || v === undefined) return;
      if (!started) { ctx.moveTo(X(xs[i]), Y(v)); started = true; } else ctx.lineTo(X(xs[i]), Y(v));
    });
    ctx.stroke();
    ctx.fillStyle = s.colour;
    ctx.fillRect(lx, 8, 12, 3);
    ctx.fillStyle = "#1d2330";
    ctx.fillText(s.label, lx + 16, 13);
    lx += ctx.measureText(s.label).width + 36;
  }
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
  box.replaceChildren(jobRow(job, { onCancel: cancel, onResume: resume }), ...extra);
  drawLosses(job);
}

async function cancel(job) {
  try {
    await api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    pollSoon();
  } catch (err) {
    toast(err.message, true);
  }
}

async function resume(job) {
  try {
    await api(`/api/jobs/${job.id}/resume`, { method: "POST" });
    pollSoon();
  } catch (err) {
    toast(err.message, true);
  }
}

function renderLabelCount() {
  const p = state.project;
  if (!p) return;
  const cur = state.models.find((m) => m.current);
  $("#train-label-count").textContent = `${p.labeled_squares} labeled squares (${p.labels} labels) in the project · ` +
    `fine-tunes the current model ${cur ? `v${cur.id} ${cur.name}` : ""}`;
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
    if (job) cancel(job);
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
