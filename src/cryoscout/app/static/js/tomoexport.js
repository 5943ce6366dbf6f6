// Exporting annotations or picks: a file download (CSV, .coords, RELION 4 or 5 STAR, written
// by the server's io/coords.py) or picks written into a copick project.

import { api, url } from "./api.js";
import { on } from "./state.js";
import { openTomogram, tomo } from "./tomostate.js";
import { $, h, toast } from "./ui.js";

function exportPath() {
  const what = $("#ex-what").value;
  const format = $("#ex-format").value;
  const q = new URLSearchParams({ what, format });
  if (what === "picks") {
    q.set("status", $("#ex-status").value);
    q.set("threshold", String(tomo.threshold));
    if (tomo.pickerShown) q.set("picker", String(tomo.pickerShown));
  }
  if (format === "relion4") {
    const px = $("#ex-tspx").value.trim();
    const bin = $("#ex-binning").value.trim();
    if (px) q.set("tilt_series_pixel_size", px);
    if (bin) q.set("binning", bin);
  }
  if ($("#ex-scope").value === "all" && format === "relion5") return `/api/export?${q}`;
  return `/api/tomograms/${tomo.id}/export?${q}`;
}

function filename(res, fallback) {
  const cd = res.headers.get("Content-Disposition") || "";
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
  return m ? decodeURIComponent(m[1]) : fallback;
}

/** Fetch first, so a refusal (e.g. RELION 4 without a binning) is shown, not saved as a file. */
async function download() {
  if (tomo.id === null) {
    toast("Open a tomogram first.", true);
    return;
  }
  if ($("#ex-format").value === "relion4" && !$("#ex-tspx").value.trim() && !$("#ex-binning").value.trim()) {
    toast("RELION 4 needs the tilt series' pixel size (Å) or the tomogram's binning.", true);
    $("#ex-tspx").focus();
    return;
  }
  const path = exportPath();
  try {
    const res = await fetch(url(path), { cache: "no-store" });
    if (!res.ok) {
      let detail = `${res.status} ${res.statusText}`;
      try { detail = (await res.json()).detail || detail; } catch { /* not JSON */ }
      throw new Error(detail);
    }
    const blob = await res.blob();
    const name = filename(res, `${openTomogram()?.name || "tomogram"}_${$("#ex-what").value}`);
    const a = h("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    $("#ex-result").textContent = `Saved ${name}.`;
  } catch (err) {
    $("#ex-result").textContent = "";
    toast(`Not exported: ${err.message}`, true);
  }
}

async function writeCopick(e) {
  e.preventDefault();
  const body = {
    what: $("#ex-what").value,
    tomograms: tomo.id !== null ? [tomo.id] : undefined,
    user_id: $("#ex-copick-user").value.trim() || "cryoscout",
    session_id: $("#ex-copick-session").value.trim() || "0",
  };
  if (body.what === "picks") {
    body.status = $("#ex-status").value;
    body.threshold = tomo.threshold;
    if (tomo.pickerShown) body.picker = tomo.pickerShown;
  }
  const config = $("#ex-copick-config").value.trim();
  if (config) body.config = config;
  try {
    const reply = await api("/api/export/copick", { method: "POST", body });
    const parts = Object.entries(reply.written || {}).map(([run, counts]) =>
      `${run}: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ")}`);
    $("#ex-result").textContent = `Written to ${reply.config}${parts.length ? ` (${parts.join("; ")})` : ""}.`;
    toast("Written into the copick project.");
  } catch (err) {
    toast(`Not written to copick: ${err.message}`, true);
  }
}

function renderForm() {
  const picks = $("#ex-what").value === "picks";
  const fmt = $("#ex-format").value;
  $("#ex-status-l").hidden = !picks;
  $("#ex-r4").hidden = fmt !== "relion4";
  $("#ex-scope-l").hidden = fmt !== "relion5";
  const t = openTomogram();
  $("#ex-copick-config").placeholder = t && t.copick ? `${t.copick.config} (this tomogram's project)` : "/path/to/copick config.json";
}

export function initExport() {
  for (const id of ["#ex-what", "#ex-format"]) $(id).addEventListener("change", renderForm);
  $("#ex-download").addEventListener("click", download);
  $("#ex-copick-form").addEventListener("submit", writeCopick);
  on("tomo-open", renderForm);
  renderForm();
}
