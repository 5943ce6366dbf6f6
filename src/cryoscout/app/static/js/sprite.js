// Square crops cut from per-atlas sprite sheets with CSS background-position, so thousands
// of squares are a few cached images.

import { url } from "./api.js";
import { h } from "./ui.js";

/** Style a (square) element to show tile `index` of sheet `src`, whatever its size. */
export function styleTile(el, sprites, src, index) {
  const cols = sprites.cols;
  const rows = Math.max(1, Math.ceil(sprites.count / cols));
  const col = index % cols;
  const row = Math.floor(index / cols);
  // Percent positions: p% aligns the image's p% point with the element's p% point.
  el.style.backgroundImage = `url("${url(src)}")`;
  el.style.backgroundSize = `${cols * 100}% ${rows * 100}%`;
  el.style.backgroundPosition = `${cols > 1 ? (col / (cols - 1)) * 100 : 0}% ${rows > 1 ? (row / (rows - 1)) * 100 : 0}%`;
}

/** A crop with optional attention overlays on top. */
export function spriteTile(sprites, index, px, overlays = []) {
  const el = h("div", { class: "sprite", style: { width: `${px}px`, height: `${px}px` } });
  styleTile(el, sprites, sprites.crop, index);
  for (const kind of overlays) {
    if (!sprites[kind]) continue;
    const ov = h("div", { class: "ov", title: `${kind} attention` });
    styleTile(ov, sprites, sprites[kind], index);
    el.append(ov);
  }
  return el;
}
