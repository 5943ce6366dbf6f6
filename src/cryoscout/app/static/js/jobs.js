// Background jobs (screening, training, rescoring): polled from the server, so their state
// survives a page reload; views listen for "jobs" and "job-finished".

import { api } from "./api.js";
import { emit, state } from "./state.js";
import { $, fmtEta, h, progressBar, toast } from "./ui.js";

const ACTIVE = new Set(["queued", "running"]);
const KIND = { screen: "Screening", train: "Training", rescore: "Rescoring", pick_train: "Picker training", pick_predict: "Picking" };
let known = new Map(); // id -> state
let timer = null;

export function jobTitle(job) {
  const p = job.params || {};
  const atlas = p.atlas_id ? state.atlases.find((a) => a.id === p.atlas_id) : null;
  const what = p.atlas_name || (atlas ? atlas.name : p.atlas_id ? `atlas ${p.atlas_id}` : "");
  return `${KIND[job.kind] || job.kind}${what ? ` ${what}` : ""}`;
}

export function activeJobs() {
  return state.jobs.filter((j) => ACTIVE.has(j.state));
}

export async function pollJobs() {
  clearTimeout(timer);
  try {
    const jobs = await api("/api/jobs");
    if (!Array.isArray(jobs)) throw new Error("unexpected /api/jobs reply");
    state.jobs = jobs;
    for (const j of jobs) {
      const before = known.get(j.id);
      if (before !== undefined && ACTIVE.has(before) && !ACTIVE.has(j.state)) emit("job-finished", j);
    }
    known = new Map(jobs.map((j) => [j.id, j.state]));
    emit("jobs", jobs);
    indicator();
  } catch {
    // The server may be restarting; keep polling.
  }
  timer = setTimeout(pollJobs, activeJobs().length ? 1000 : 4000);
}

/** Poll soon (after starting a job). */
export function pollSoon() {
  clearTimeout(timer);
  timer = setTimeout(pollJobs, 150);
}

function indicator() {
  const el = $("#jobs-indicator");
  const active = activeJobs();
  if (!active.length) {
    el.hidden = true;
    return;
  }
  const j = active.find((x) => x.state === "running") || active[0];
  el.hidden = false;
  el.title = j.message || "";
  el.replaceChildren(h("span", {}, `${jobTitle(j)} ${j.state === "queued" ? "(queued)" : `${Math.round((j.progress || 0) * 100)}%`}`
    + (active.length > 1 ? ` · +${active.length - 1} queued` : "")), progressBar(j.state === "queued" ? null : j.progress));
}

/** A job row: title, bar, progress, message (and cancel / resume where they apply). */
export function jobRow(job, { onCancel, onResume } = {}) {
  const pct = job.progress !== null && job.progress !== undefined ? `${Math.round(job.progress * 100)}%` : "";
  const status = job.state === "running" ? `${pct} ${fmtEta(job.eta_s)}` : job.state;
  return h("div", { class: `job ${job.state}`, "data-job": job.id, "data-state": job.state },
    h("span", { class: "what" }, jobTitle(job)),
    progressBar(job.state === "queued" ? null : job.state === "done" ? 1 : job.progress || 0),
    h("span", {},
      h("span", { class: "muted" }, status),
      onCancel && ACTIVE.has(job.state) ? h("button", { type: "button", style: { marginLeft: "8px" }, onclick: () => onCancel(job) }, "Cancel") : null,
      onResume && job.resumable && ["interrupted", "cancelled"].includes(job.state)
        ? h("button", { type: "button", style: { marginLeft: "8px" }, onclick: () => onResume(job) }, "Resume") : null),
    job.message && job.message !== job.state ? h("span", { class: "msg" }, job.message) : null);
}

/** Stop a job (its worker process is stopped); errors show as a toast. */
export async function cancelJob(job) {
  try {
    await api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    pollSoon();
  } catch (err) {
    toast(err.message, true);
  }
}

/** Continue an interrupted or cancelled training job from its checkpoint. */
export async function resumeJob(job) {
  try {
    await api(`/api/jobs/${job.id}/resume`, { method: "POST" });
    pollSoon();
  } catch (err) {
    toast(err.message, true);
  }
}
