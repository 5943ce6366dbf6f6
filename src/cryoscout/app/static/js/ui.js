// Small DOM helpers shared by the views.

export function $(sel, root = document) {
  return root.querySelector(sel);
}

/** Create an element: h("div", {class: "x", onclick: fn}, child, "text", ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let toastTimer = null;
export function toast(message, isError = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.toggle("error", !!isError);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, isError ? 7000 : 3500);
}

export function progressBar(fraction) {
  const bar = h("div", { class: "bar" }, h("i"));
  if (fraction === null || fraction === undefined) bar.classList.add("indeterminate");
  else bar.firstChild.style.width = `${Math.round(Math.min(1, Math.max(0, fraction)) * 100)}%`;
  return bar;
}

export function fmtEta(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "";
  if (s < 60) return `${Math.round(s)} s left`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s left`;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** Fill a <select> with [value, text] pairs, keeping the current choice when it still exists. */
export function fillSelect(sel, options, preferred) {
  const cur = preferred !== undefined ? String(preferred) : sel.value;
  sel.replaceChildren(...options.map(([v, t]) => h("option", { value: v }, t)));
  if (options.some(([v]) => String(v) === cur)) sel.value = cur;
}

/** True when a key event comes from a text field (then it is typing, not a command). */
export function isTyping(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)
    && !(t.type === "checkbox");
}

/** Centre a W x H image in a cw x ch canvas at 97 % of the tighter side (view: zoom, ox, oy). */
export function fitView(view, cw, ch, W, H) {
  view.zoom = Math.min(cw / W, ch / H) * 0.97;
  view.ox = (cw - W * view.zoom) / 2;
  view.oy = (ch - H * view.zoom) / 2;
}

/** Zoom a view by `factor` around screen point (sx, sy), within 0.05-maxZoom. */
export function zoomView(view, factor, sx, sy, maxZoom) {
  const z = Math.min(maxZoom, Math.max(0.05, view.zoom * factor));
  const f = z / view.zoom;
  view.ox = sx - (sx - view.ox) * f;
  view.oy = sy - (sy - view.oy) * f;
  view.zoom = z;
}

/**
 * A canvas's 2D context at the screen's pixel ratio (resized only when its CSS size changed),
 * cleared or filled with `background`; its size in CSS px (width/height when not laid out).
 */
export function canvasContext(c, width, height, background = null) {
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || width;
  const ht = c.clientHeight || height;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(ht * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(ht * dpr);
  }
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  if (background) {
    ctx.fillStyle = background;
    ctx.fillRect(0, 0, w, ht);
  } else {
    ctx.clearRect(0, 0, w, ht);
  }
  return { ctx, w, h: ht };
}

/** `fn` wrapped so that however often it is asked for, it runs once per animation frame. */
export function oncePerFrame(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

