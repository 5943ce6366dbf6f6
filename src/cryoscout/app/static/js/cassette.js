// The cassette: one row per atlas (full squares, squares scored >= 3, median overall,
// thumbnail), and adding atlases, each screened by a background job.

import { api, url } from "./api.js";
import { jobRow, pollSoon } from "./jobs.js";
import { colorFor, fmt } from "./scores.js";
import { loadAtlases, on, state } from "./state.js";
import { $, h, progressBar, toast } from "./ui.js";

const sort = { key: null, desc: false };

function render() {
  const rows = state.atlases.slice();
  if (sort.key) {
    rows.sort((a, b) => {
      const va = a[sort.key];
      const vb = b[sort.key];
      const d = typeof va === "string" ? String(va).localeCompare(String(vb)) : (va ?? -1) - (vb ?? -1);
      return sort.desc ? -d : d;
    });
  }
  const jobs = new Map(state.jobs.map((j) => [j.id, j]));
  const tbody = $("#cassette-table tbody");
  tbody.replaceChildren(...rows.map((a) => {
    const ready = a.status === "ready";
    const job = a.job_id ? jobs.get(a.job_id) : null;
    let status;
    if (a.status === "screening" || a.status === "queued") {
      status = h("span", { class: `status ${a.status}` }, a.status === "queued" ? "queued" : "screening",
        progressBar(job && a.status === "screening" ? job.progress || 0 : null));
    } else if (a.status === "failed") {
      status = h("span", { class: "status failed", title: a.message || "" }, `failed: ${a.message || "see the job"}`);
    } else {
      status = h("span", { class: `status ${a.status}` }, ready ? "ready" : a.status);
    }
    return h("tr", {
      class: ready ? "clickable" : "", "data-atlas": a.id,
      onclick: ready ? () => { location.hash = `#/atlas/${a.id}`; } : null,
      title: ready ? `Open ${a.name}` : a.path,
    },
    h("td", { class: "thumb" }, a.thumbnail_url && ready ? h("img", { src: url(a.thumbnail_url), alt: "", loading: "lazy" }) : ""),
    h("td", { class: "left" }, h("b", {}, a.name), h("div", { class: "muted", style: { fontSize: "11.5px" } }, a.path)),
    h("td", {}, a.n_squares ?? "–"),
    h("td", {}, a.n_full ?? "–"),
    h("td", {}, a.n_good ?? "–"),
    h("td", {}, a.median_overall === null || a.median_overall === undefined ? "–"
      : h("span", { class: "chip", style: { background: colorFor("overall", a.median_overall) } }, fmt(a.median_overall, 2))),
    h("td", {}, a.n_labeled ?? 0),
    h("td", { class: "left" }, status));
  }));
  $("#cassette-empty").hidden = rows.length > 0;
  const ready = state.atlases.filter((a) => a.status === "ready");
  const full = ready.reduce((n, a) => n + (a.n_full || 0), 0);
  const good = ready.reduce((n, a) => n + (a.n_good || 0), 0);
  $("#cassette-summary").textContent = `${state.atlases.length} atlases · ${full} full squares · ${good} scored ≥ 3 overall`;
  for (const th of document.querySelectorAll("#cassette-table th[data-key]")) {
    th.classList.toggle("asc", sort.key === th.dataset.key && !sort.desc);
    th.classList.toggle("desc", sort.key === th.dataset.key && sort.desc);
  }
}

function renderJobs() {
  const list = $("#atlas-jobs");
  // Screening jobs that run now, plus failures of the last ones (so a bad path is explained).
  const jobs = state.jobs.filter((j) => j.kind === "screen" || j.kind === "rescore")
    .filter((j) => ["queued", "running", "failed"].includes(j.state)).slice(0, 8);
  list.replaceChildren(...jobs.map((j) => jobRow(j, { onCancel: cancel })));
}

async function cancel(job) {
  try {
    await api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    pollSoon();
  } catch (err) {
    toast(err.message, true);
  }
}

export function initCassette() {
  $("#add-atlas-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const path = $("#add-atlas-path").value.trim();
    if (!path) return;
    const name = $("#add-atlas-name").value.trim();
    const btn = e.target.querySelector("button");
    btn.disabled = true;
    try {
      const reply = await api("/api/atlases", { method: "POST", body: name ? { path, name } : { path } });
      $("#add-atlas-path").value = "";
      $("#add-atlas-name").value = "";
      toast(`Added ${reply.atlas.name}; screening it in the background.`);
      await loadAtlases();
      pollSoon();
    } catch (err) {
      toast(`Not added: ${err.message}`, true);
    } finally {
      btn.disabled = false;
    }
  });
  for (const th of document.querySelectorAll("#cassette-table th[data-key]")) {
    th.addEventListener("click", () => {
      const k = th.dataset.key;
      sort.desc = sort.key === k ? !sort.desc : k !== "name";
      sort.key = k;
      render();
    });
  }
  on("atlases", render);
  on("jobs", () => { render(); renderJobs(); });
}
