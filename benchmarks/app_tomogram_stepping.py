"""Stepping through a big tomogram in the page: how soon a section shows after a key.

The real app server (uvicorn on loopback) over a tomogram file (the 1024 x 1024 x 500
float32 of ``benchmarks/app_tomogram_slices.py``, or any MRC) and headless Chromium on the
Tomograms view. Times are taken inside the page (``performance.now()`` at the keydown and
when the viewer marks the new section shown), so they include fetching, decoding and
drawing, not Playwright's polling:

- **step**: ArrowUp, then a pause (``--pause`` ms) in which the viewer prefetches the next
  sections, as when a user looks at each section.
- **jump**: to a section far from any seen or prefetched one (typed into the section
  field): a fetch.
- **held**: ``--held`` steps at 30 per second (a held key); the time from the last keydown to
  its section shown, and how many slice images were requested for them.

Run (TOMO: the 2 GB file ``benchmarks/app_tomogram_slices.py`` writes)::

    python benchmarks/app_tomogram_stepping.py --tomogram TOMO
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"

# Keydown and "section shown" times, recorded by the page itself.
PROBE = """() => {
  window.__t = { keys: [], shown: [] };
  document.addEventListener("keydown", () => window.__t.keys.push(performance.now()), true);
  const wrap = document.getElementById("slice-wrap");
  new MutationObserver(() => window.__t.shown.push([performance.now(), wrap.dataset.shown]))
    .observe(wrap, { attributes: true, attributeFilter: ["data-shown"] });
}"""


# Type a section number into the viewer's field, recording the time as a keydown would.
GOTO = """(z) => {
  window.__t.keys.push(performance.now());
  const el = document.getElementById("tomo-index-num");
  el.value = String(z);
  el.dispatchEvent(new Event("change"));
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tomogram", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pause", type=int, default=400, help="ms between single steps")
    parser.add_argument("--jumps", type=int, default=6)
    parser.add_argument("--held", type=int, default=30)
    args = parser.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from cryoscout.app.server import create_app

    project = Path(tempfile.mkdtemp(prefix="cryoscout_step_"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(project, data_roots=[args.tomogram.parent])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(
                viewport={"width": 1400, "height": 900}, base_url=f"http://127.0.0.1:{port}"
            )
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url) if "slice.png" in r.url else None)
            r = page.request.post("/api/tomograms", data={"path": str(args.tomogram)})
            assert r.ok, r.text()
            nz = r.json()["tomograms"][0]["shape"]["z"]
            page.goto("/#/tomograms/1")
            page.wait_for_selector("#slice-wrap[data-shown]")
            page.evaluate(PROBE)
            page.wait_for_timeout(2000)
            page.locator("#slice-wrap").focus()

            def delays(n_keys: int) -> list[float]:
                """ms from each of the last n_keys keydowns to its section shown."""
                t = page.evaluate("window.__t")
                out = []
                for k in t["keys"][-n_keys:]:
                    after = [s for s, _ in t["shown"] if s >= k]
                    out.append(after[0] - k if after else float("nan"))
                return out

            for _ in range(args.steps):
                page.keyboard.press("ArrowUp")
                page.wait_for_timeout(args.pause)
            step = delays(args.steps)
            jump = []
            for i in range(args.jumps):
                # Far apart, alternately near the ends: never seen, never prefetched.
                z = (i // 2 + 1) * nz // (2 * args.jumps + 2)
                z = z if i % 2 == 0 else nz - 1 - z
                page.evaluate(GOTO, z)
                page.wait_for_selector(f"#slice-wrap[data-shown='z:{z}']")
                page.wait_for_timeout(args.pause)
                jump += delays(1)
            page.keyboard.press("Home")
            page.wait_for_timeout(2000)
            n0 = len(requests)
            for _ in range(args.held):
                page.keyboard.press("ArrowUp")
                page.wait_for_timeout(33)
            page.wait_for_selector(f"#slice-wrap[data-shown='z:{args.held}']")
            held = delays(1)[0]
            n_held = len(requests) - n0
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
        shutil.rmtree(project, ignore_errors=True)

    def stats(v: list[float]) -> str:
        v = sorted(v)
        p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
        return f"median {statistics.median(v):.0f} ms, p95 {p95:.0f} ms (n={len(v)})"

    print(f"step (pause {args.pause} ms): {stats(step)}")
    print(f"jump (typed section): {stats(jump)}")
    print(
        f"held ({args.held} steps at 30/s): last section {held:.0f} ms after its key, "
        f"{n_held} images requested"
    )


if __name__ == "__main__":
    main()
