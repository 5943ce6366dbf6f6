// The detail panel of one square (large crop, both attention overlays, the five predicted
// scores and the user's labels) and the keyboard labeling that works on it.

import { api, url } from "./api.js";
import { labelState, labeler, setLabel, undo } from "./labels.js";
import { ATTR_INFO, ATTRS, KEY_TO_ATTR, colorFor, fmt } from "./scores.js";
import { spriteTile } from "./sprite.js";
import { atlasById, emit, on, selectedSquare, state } from "./state.js";
import { toggleTarget } from "./targets.js";
import { fmtTime, h, isTyping } from "./ui.js";

const ADVANCE_KEY = "cryoscout.advance";
export const labeling = {
  attr: "brightness",
  // After a digit: "attr" = next attribute, then the next square after the last one;
  // "square" = same attribute, next square; "stay" = nothing moves.
  advance: localStorage.getItem(ADVANCE_KEY) || "attr",
};

// The ordered list of squares "next/previous" walks through, supplied by the active view.
let navigator = null;
export function setNavigator(nav) {
  navigator = nav;
}

function move(step) {
  if (navigator) navigator(step);
}

function setAttr(a) {
  labeling.attr = a;
  emit("labeling", labeling);
}

function giveScore(sq, value) {
  const attr = labeling.attr;
  setLabel(sq.atlas_id, sq.square_id, attr, value);
  if (labeling.advance === "attr") {
    const i = ATTRS.indexOf(attr);
    if (i === ATTRS.length - 1) {
      setAttr(ATTRS[0]);
      move(1);
    } else {
      setAttr(ATTRS[i + 1]);
    }
  } else if (labeling.advance === "square") {
    move(1);
  }
}

/** Keyboard labeling; returns true when the key was handled. */
export function handleLabelKey(e) {
  if (isTyping(e) || e.ctrlKey || e.metaKey || e.altKey) return false;
  const sq = selectedSquare();
  const k = e.key;
  if (KEY_TO_ATTR[k.toLowerCase()] && !e.shiftKey) {
    setAttr(KEY_TO_ATTR[k.toLowerCase()]);
    return true;
  }
  if (/^[0-4]$/.test(k)) {
    if (sq) giveScore(sq, Number(k));
    return true;
  }
  if (k === "Backspace" || k === "Delete") {
    if (sq) setLabel(sq.atlas_id, sq.square_id, labeling.attr, null);
    return true;
  }
  if (k === "u") {
    undo();
    return true;
  }
  if (k === "j" || k === "ArrowRight" || k === "n") {
    move(1);
    return true;
  }
  if (k === "k" || k === "ArrowLeft" || k === "p") {
    move(-1);
    return true;
  }
  if (k === "x") {
    if (sq) toggleTarget(sq);
    return true;
  }
  return false;
}

function scoreRow(sq, attr) {
  const info = ATTR_INFO[attr];
  const pred = sq.scores ? sq.scores[attr] : null;
  const ls = labelState(sq, attr);
  const buttons = h("span", { class: "score-buttons" });
  for (let v = 0; v <= 4; v++) {
    const cls = ls.value === v ? (ls.state === "pending" ? "pending" : ls.state === "saved" ? "saved" : "") : "";
    buttons.append(h("button", {
      class: cls, type: "button", title: `${info.label} ${v}: ${info.scale[v]}`,
      "data-attr": attr, "data-value": v,
      onclick: () => {
        setAttr(attr);
        setLabel(sq.atlas_id, sq.square_id, attr, v);
      },
    }, String(v)));
  }
  const stateText = { saved: "saved ✓", pending: "saving…", error: "not saved", none: "" }[ls.state];
  const bar = h("div", { class: "pbar", title: `predicted ${fmt(pred, 2)} of 4` },
    h("i", { style: { width: `${Math.max(0, Math.min(4, pred || 0)) * 25}%`, background: colorFor(attr, pred) } }),
    h("span", {}, fmt(pred)));
  return h("tr", { class: labeling.attr === attr ? "active" : "", "data-attr": attr },
    h("td", { class: "attr", onclick: () => setAttr(attr), title: `key ${info.key}` },
      h("kbd", {}, info.key), " ", info.label),
    h("td", { class: "pred" }, bar),
    h("td", {}, buttons),
    h("td", { class: `label-state ${ls.state}`, "data-state": ls.state }, stateText));
}

function bigImage(sq, sprites, kind) {
  // Full-size crop from the server when it offers one; the sprite tile otherwise.
  const tile = spriteTile(sprites, sq.index, 100, kind ? [kind] : []);
  tile.style.width = "100%";
  tile.style.height = "auto";
  tile.style.aspectRatio = "1";
  const base = `/api/atlases/${sq.atlas_id}/squares/${sq.square_id}`;
  const img = new Image();
  img.onload = () => {
    const stack = h("div", { class: "stack" }, h("img", { src: url(`${base}/crop.png`), alt: "square" }));
    if (kind) stack.append(h("img", { src: img.src, alt: `${kind} attention` }));
    tile.replaceWith(stack);
  };
  img.src = url(kind ? `${base}/${kind}.png` : `${base}/crop.png`);
  return tile;
}

/** Render the panel for the selected square into `root` (images only when the square changed). */
export function renderDetail(root) {
  const sq = selectedSquare();
  if (!sq) {
    root.dataset.square = "";
    root.replaceChildren(
      h("h2", {}, "No square selected"),
      h("p", { class: "hint" }, "Click a square in the overview or the gallery to see it large and label it."),
      keyLegend());
    return;
  }
  const key = `${sq.atlas_id}:${sq.square_id}`;
  if (root.dataset.square !== key || !root.querySelector(".detail-imgs")) {
    root.dataset.square = key;
    const data = state.squares.get(sq.atlas_id);
    // A model without attention maps (the baseline's trees) says so instead of blank overlays.
    const ovs = data.sprites.cracking
      ? h("div", { class: "ovs" },
        h("figure", {}, bigImage(sq, data.sprites, "cracking"), "cracking attention"),
        h("figure", {}, bigImage(sq, data.sprites, "contamination"), "contamination attention"))
      : h("div", { class: "ovs" },
        h("p", { class: "hint no-attention" }, "No attention maps: the current model (the baseline's trees on hand-made features) has none."));
    const imgs = h("div", { class: "detail-imgs" },
      h("figure", { class: "big" }, bigImage(sq, data.sprites, null)), ovs);
    root.replaceChildren(h("div", { class: "detail-headbox" }), imgs, h("div", { class: "detail-body" }));
  }
  root.querySelector(".detail-headbox").replaceChildren(detailHead(sq));
  root.querySelector(".detail-body").replaceChildren(...detailBody(sq));
  scheduleHistory(sq, root);
}

function detailHead(sq) {
  const atlas = atlasById(sq.atlas_id);
  return h("div", { class: "detail-head" },
    h("h2", {}, `${atlas ? atlas.name : sq.atlas_id} · square ${sq.square_id}`),
    h("span", { class: "muted" }, sq.full ? "full" : "partial"),
    h("span", { class: "spacer" }),
    h("button", {
      type: "button", class: `target-toggle ${sq.target ? "on" : ""}`, id: "target-toggle",
      title: "Add to / remove from the targets (x)", onclick: () => toggleTarget(sq),
    }, sq.target ? "✓ target" : "+ target"));
}

function detailBody(sq) {
  const table = h("table", { class: "scores", id: "score-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "attribute"), h("th", {}, "predicted"),
      h("th", {}, `your label (${labeler() || "no name"})`), h("th", {}))),
    h("tbody", {}, ATTRS.map((a) => scoreRow(sq, a))));
  const unc = h("p", { class: "muted", style: { margin: "4px 0 0", fontSize: "12px" } },
    `Uncertainty ${fmt(sq.uncertainty, 2)}`,
    sq.suggested_rank ? ` · suggested #${sq.suggested_rank} to label` : "",
    ` · centre (${fmt(sq.x_px, 0)}, ${fmt(sq.y_px, 0)}) px`);
  const info = ATTR_INFO[labeling.attr];
  const scale = h("dl", { class: "scale" },
    h("dt", {}, `${info.label}: what 0-4 means`),
    h("dd", { style: { margin: 0 } }, h("ol", {}, info.scale.flatMap((t, v) => [h("b", {}, v), h("span", {}, t)]))));
  const advance = h("label", { class: "advance" }, "After a digit",
    h("select", {
      id: "advance-mode",
      onchange: (e) => {
        labeling.advance = e.target.value;
        localStorage.setItem(ADVANCE_KEY, labeling.advance);
        e.target.blur();
      },
    },
    h("option", { value: "attr" }, "next attribute, then next square"),
    h("option", { value: "square" }, "next square, same attribute"),
    h("option", { value: "stay" }, "stay")));
  advance.querySelector("select").value = labeling.advance;
  return [table, unc, scale, advance, keyLegend(), h("h3", {}, "Label history"), h("ul", { class: "history" })];
}

let historyTimer = null;
function scheduleHistory(sq, root) {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => {
    const ul = root.querySelector(".history");
    if (ul) loadHistory(sq, ul);
  }, 250);
}

async function loadHistory(sq, ul) {
  try {
    const rows = await api(`/api/labels?atlas_id=${sq.atlas_id}&square_id=${sq.square_id}`);
    if (!rows.length) {
      ul.replaceChildren(h("li", {}, "no labels yet"));
      return;
    }
    ul.replaceChildren(...rows.slice(0, 30).map((r) => h("li", {},
      `${fmtTime(r.time)} · ${r.labeler} · ${ATTR_INFO[r.attribute] ? ATTR_INFO[r.attribute].label : r.attribute} = `
      + `${r.value === null ? "cleared" : r.value}${r.undo_of ? " (undo)" : ""}`)));
  } catch {
    ul.replaceChildren();
  }
}

function keyLegend() {
  const row = (keys, text) => [h("span", { class: "k" }, ...keys.map((k) => h("kbd", {}, k))), h("span", {}, text)];
  return h("div", { class: "keys", id: "key-legend" },
    ...row(["b", "s", "c", "t", "o"], "attribute: brightness, squareness, cracking, contamination, overall"),
    ...row(["0", "–", "4"], "score the attribute (0 worst/least … 4, see the scale)"),
    ...row(["j", "→"], "next square"),
    ...row(["k", "←"], "previous square"),
    ...row(["u"], "undo your last label"),
    ...row(["⌫"], "clear this attribute's label"),
    ...row(["x"], "add / remove as target"),
    ...row(["v"], "attention overlays on / off (gallery)"));
}

let lastSideRoots = [];
/** Panels that show the selected square; re-rendered when it or its labels change. */
export function registerDetailPanel(root, isVisible) {
  lastSideRoots.push({ root, isVisible });
}

function refreshPanels() {
  for (const { root, isVisible } of lastSideRoots) if (isVisible()) renderDetail(root);
}

on("selection", refreshPanels);
on("labeling", refreshPanels);
on("labels", ({ atlasId, squareId }) => {
  const s = state.selection;
  if (s && s.atlasId === atlasId && s.squareId === squareId) refreshPanels();
});
on("squares", refreshPanels);
on("targets-changed", refreshPanels);

