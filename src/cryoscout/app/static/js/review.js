// Reviewing a picker's picks on the open tomogram: a score threshold that filters the drawn
// picks live, next/previous pick (jumping to its section), accept/reject by key (accepting
// makes an annotation for the next training round), accept all above the threshold, and
// precision/recall/F1 against the tomogram's own annotations.

import { api } from "./api.js";
import { labeler } from "./labels.js";
import { emit, on, state } from "./state.js";
import { jumpTo } from "./slices.js";
import { loadAnnotations, loadPicks, loadTomograms, select, selected, tomo } from "./tomostate.js";
import { $, fillSelect, h, toast } from "./ui.js";

const fmt2 = (v) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(2));

/** Picks the review walks through: above the threshold, best first. */
function reviewList() {
  return tomo.picks.filter((p) => p.score >= tomo.threshold)
    .sort((a, b) => b.score - a.score || a.id - b.id);
}

/** Select the next (step 1) or previous (-1) pick and show its centre section. */
export function nextPick(stepBy, { pendingOnly = false } = {}) {
  const list = reviewList();
  if (!list.length) {
    toast("No pick at or above the threshold.");
    return;
  }
  const s = tomo.selection;
  let i = s && s.kind === "pick" ? list.findIndex((p) => p.id === s.id) : -1;
  if (i < 0) i = stepBy > 0 ? -1 : list.length;
  for (let k = 0; k < list.length; k++) {
    i += stepBy;
    if (i < 0 || i >= list.length) return; // the end of the list: stay
    if (!pendingOnly || list[i].status === "pending") break;
  }
  const p = list[i];
  select("pick", p.id);
  jumpTo(p);
}

/** Accept or reject the selected pick (status "accepted" | "rejected" | "pending"). */
export async function decide(status) {
  const p = tomo.selection?.kind === "pick" ? selected() : null;
  if (!p) {
    toast("Select a pick first (click it, or n / p).");
    return;
  }
  const before = p.status;
  p.status = status; // shown at once; put back if the server refuses
  emit("picks", tomo.picks);
  try {
    const reply = await api(`/api/picks/${p.id}`, { method: "PUT", body: { status, labeler: labeler() || state.project?.labeler } });
    Object.assign(p, reply.pick || {});
    emit("picks", tomo.picks);
    await loadAnnotations();
    if (status !== "pending") nextPick(1, { pendingOnly: true });
  } catch (err) {
    p.status = before;
    emit("picks", tomo.picks);
    toast(`Pick not ${status}: ${err.message}`, true);
  }
}

async function acceptAll() {
  try {
    const body = { threshold: tomo.threshold, labeler: labeler() || state.project?.labeler };
    if (tomo.pickerShown) body.picker = tomo.pickerShown;
    const reply = await api(`/api/tomograms/${tomo.id}/picks/accept`, { method: "POST", body });
    toast(`${reply.accepted} picks accepted (score ≥ ${tomo.threshold.toFixed(2)}); they are annotations now.`);
    await Promise.all([loadPicks(), loadAnnotations()]);
    loadTomograms().catch(() => null);
  } catch (err) {
    toast(`Not accepted: ${err.message}`, true);
  }
}

function renderCounts() {
  const all = tomo.picks;
  const above = all.filter((p) => p.score >= tomo.threshold);
  const n = (st) => above.filter((p) => p.status === st).length;
  $("#review-count").textContent = all.length
    ? `${above.length} of ${all.length} picks ≥ ${tomo.threshold.toFixed(2)} · ${n("pending")} to review, ${n("accepted")} accepted, ${n("rejected")} rejected`
    : tomo.id === null ? "" : "No picks on this tomogram yet: train a picker and predict.";
  const none = !all.length;
  for (const id of ["#review-prev", "#review-next", "#review-accept-all"]) $(id).disabled = none;
}

function renderSelected() {
  const box = $("#review-selected");
  const obj = selected();
  const s = tomo.selection;
  $("#review-accept").disabled = !(s && s.kind === "pick");
  $("#review-reject").disabled = !(s && s.kind === "pick");
  if (!obj) {
    box.replaceChildren(h("span", { class: "muted" }, "Nothing selected: click a particle or a pick."));
    return;
  }
  const pos = `x ${obj.x.toFixed(1)} · y ${obj.y.toFixed(1)} · z ${obj.z.toFixed(1)}`;
  if (s.kind === "pick") {
    box.replaceChildren(h("b", {}, `Pick ${obj.id}`), ` ${obj.class} · score ${fmt2(obj.score)} · `,
      h("span", { class: `pick-status ${obj.status}` }, obj.status), h("div", { class: "muted" }, pos));
  } else {
    box.replaceChildren(h("b", {}, obj.id > 0 ? `Particle ${obj.id}` : "Particle (saving…)"), ` ${obj.class}`,
      obj.source && obj.source !== "click" ? h("span", { class: "muted" }, ` · from ${obj.source}`) : "",
      h("div", { class: "muted" }, `${pos}${obj.labeler ? ` · ${obj.labeler}` : ""}`));
  }
}

function renderPickers() {
  const opts = [["", "latest"], ...tomo.pickers.filter((p) => p.status !== "failed").map((p) => [String(p.id), p.name || `picker ${p.id}`])];
  fillSelect($("#review-picker"), opts, tomo.picker ? String(tomo.picker) : "");
}

let evalTimer = null;
function scheduleEvaluate() {
  clearTimeout(evalTimer);
  evalTimer = setTimeout(evaluate, 250);
}

async function evaluate() {
  const box = $("#review-eval");
  if (tomo.id === null || !tomo.picks.length) {
    box.replaceChildren();
    return;
  }
  const id = tomo.id;
  let reply;
  try {
    const picker = tomo.pickerShown ? `picker=${tomo.pickerShown}&` : "";
    reply = await api(`/api/tomograms/${id}/picks/evaluate?${picker}threshold=${tomo.threshold}`);
  } catch (err) {
    box.replaceChildren(h("p", { class: "muted" }, `No evaluation: ${err.message}`));
    return;
  }
  if (id !== tomo.id) return;
  const rows = Object.entries(reply.per_class || {}).filter(([, m]) => m);
  if (!rows.length) {
    box.replaceChildren(h("p", { class: "hint" }, "Precision, recall and F1 appear once the tomogram has annotations of the picked classes (placed by hand, not accepted picks)."));
    return;
  }
  if (reply.overall && rows.length > 1) rows.push(["all", reply.overall]);
  box.replaceChildren(
    h("table", { class: "data compact", id: "review-eval-table" },
      h("thead", {}, h("tr", {}, h("th", { class: "left" }, "class"), h("th", {}, "precision"), h("th", {}, "recall"),
        h("th", {}, "F1"), h("th", { title: "annotations (true particles)" }, "true"), h("th", { title: "picks at or above the threshold" }, "picked"))),
      h("tbody", {}, rows.map(([name, m]) => h("tr", { "data-class": name },
        h("td", { class: "left" }, name), h("td", {}, fmt2(m.precision)), h("td", {}, fmt2(m.recall)), h("td", {}, h("b", {}, fmt2(m.f1))),
        h("td", {}, m.n_true ?? "–"), h("td", {}, m.n_picked ?? "–"))))),
    h("p", { class: "hint" }, `One-to-one matching at score ≥ ${fmt2(reply.threshold)} against this tomogram's annotations that did not come from these picks (the pick evaluate code). Precision counts every unannotated particle as a false pick: it means something only where every particle is annotated.`));
}

export function initReview() {
  const slider = $("#review-threshold");
  slider.value = String(tomo.threshold);
  slider.addEventListener("input", () => {
    tomo.threshold = Number(slider.value);
    $("#review-threshold-v").textContent = tomo.threshold.toFixed(2);
    renderCounts();
    emit("tomo-threshold", tomo.threshold);
    scheduleEvaluate();
  });
  $("#review-picker").addEventListener("change", (e) => {
    tomo.picker = e.target.value ? Number(e.target.value) : null;
    loadPicks().catch((err) => toast(err.message, true));
  });
  $("#review-prev").addEventListener("click", () => nextPick(-1));
  $("#review-next").addEventListener("click", () => nextPick(1));
  $("#review-accept").addEventListener("click", () => decide("accepted"));
  $("#review-reject").addEventListener("click", () => decide("rejected"));
  $("#review-accept-all").addEventListener("click", acceptAll);
  on("picks", () => { renderCounts(); renderSelected(); scheduleEvaluate(); });
  on("annotations", () => { renderSelected(); scheduleEvaluate(); });
  on("tomo-selection", renderSelected);
  on("pickers", renderPickers);
  renderCounts();
  renderSelected();
}
