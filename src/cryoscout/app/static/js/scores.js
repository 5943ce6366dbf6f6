// Names, keys, the 0-4 scale and colour maps of the five XCryoNet scores.

export const ATTRS = ["brightness", "squareness", "cracking", "contamination", "overall"];

export const ATTR_INFO = {
  brightness: {
    label: "Brightness", key: "b",
    scale: ["black: thick ice or no opening", "dark: thick ice", "medium ice", "bright: thin ice",
      "brightest: very thin or empty"],
    good: "mid", // neither extreme is good; colour as a plain ramp
  },
  squareness: {
    label: "Squareness", key: "s",
    scale: ["most of the film gone", "large parts broken", "partly broken", "small defects",
      "intact, fully square"],
    good: "high",
  },
  cracking: {
    label: "Cracking", key: "c",
    scale: ["no cracks", "a short crack", "one crack across", "several cracks", "shattered"],
    good: "low",
  },
  contamination: {
    label: "Contamination", key: "t",
    scale: ["clean", "a few specks", "some contamination", "much of it covered",
      "a third or more covered"],
    good: "low",
  },
  overall: {
    label: "Overall", key: "o",
    scale: ["useless", "poor", "usable", "good", "ideal: collect here"],
    good: "high",
  },
};

export const KEY_TO_ATTR = Object.fromEntries(ATTRS.map((a) => [ATTR_INFO[a].key, a]));

export function attrLabel(a) {
  if (a === "uncertainty") return "Uncertainty";
  return ATTR_INFO[a] ? ATTR_INFO[a].label : a;
}

// Colour ramps as a few stops, interpolated linearly in RGB.
const RAMPS = {
  // red (bad) -> amber -> green (good)
  quality: [[178, 34, 34], [230, 145, 30], [240, 210, 60], [120, 190, 80], [30, 140, 70]],
  // viridis-like: plain magnitude
  magnitude: [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
  // low uncertainty grey-blue -> high magenta
  uncertainty: [[70, 110, 170], [130, 120, 190], [200, 90, 170], [240, 60, 120]],
};

function rampColor(stops, t) {
  t = Math.min(1, Math.max(0, t));
  const x = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** Colour of a value of a score (0-4) or of uncertainty (0-1+). */
export function colorFor(what, value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "rgb(150,150,150)";
  if (what === "uncertainty") return rampColor(RAMPS.uncertainty, value / uncertaintyMax);
  const info = ATTR_INFO[what];
  const t = value / 4;
  if (!info || info.good === "mid") return rampColor(RAMPS.magnitude, t);
  return rampColor(RAMPS.quality, info.good === "high" ? t : 1 - t);
}

let uncertaintyMax = 1;
/** The uncertainty ramp spans 0..max of the shown squares. */
export function setUncertaintyMax(v) {
  uncertaintyMax = v > 0 ? v : 1;
}

/** CSS linear-gradient of the ramp used for `what`, left = 0. */
export function rampCss(what) {
  const n = 9;
  const stops = [];
  for (let i = 0; i < n; i++) {
    const t = i / (n - 1);
    const v = what === "uncertainty" ? t * uncertaintyMax : t * 4;
    stops.push(colorFor(what, v));
  }
  return `linear-gradient(to right, ${stops.join(", ")})`;
}

export function legendRange(what) {
  if (what === "uncertainty") return ["0 (sure)", `${uncertaintyMax.toFixed(2)} (unsure)`];
  const s = ATTR_INFO[what].scale;
  return [`0 ${s[0]}`, `4 ${s[4]}`];
}

export function fmt(v, digits = 1) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}
