// HTTP access to the cryoscout server (docs/app-api.md). Adds the access token when the
// page was opened with ?token=..., and turns error replies into Error(detail).

const TOKEN_KEY = "cryoscout.token";

function readToken() {
  const params = new URLSearchParams(window.location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    return fromUrl;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

const token = readToken();

/** URL for <img src>, downloads and links: carries the token as a query parameter. */
export function url(path) {
  if (!token) return path;
  const sep = path.includes("?") ? "&" : "?";
  return `${path}${sep}token=${encodeURIComponent(token)}`;
}

/** Call the JSON API; throws an Error whose message is the server's one-line detail. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers["X-Cryoscout-Token"] = token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new Error("the cryoscout server does not answer (was it stopped?)");
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      // Tolerate bare NaN (Python's json writes it for missing errors); otherwise keep the text.
      try { data = JSON.parse(text.replace(/\bNaN\b/g, "null")); } catch { data = text; }
    }
  }
  if (!res.ok) {
    let detail = data && data.detail !== undefined ? data.detail : `${res.status} ${res.statusText}`;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    const err = new Error(String(detail));
    err.status = res.status;
    throw err;
  }
  return data;
}
