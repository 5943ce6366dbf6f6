"""App first paint in a real browser on a project of 12 atlases / 5,000 squares (issue 9, c).

The page marks the moment its atlas overview (image + every square outlined) and its
gallery (first screen of squares, crop sheets decoded) are drawn
(``performance.mark("cryoscout:overview-painted" | "cryoscout:gallery-painted")``). This
script builds the same project as ``app_responsiveness.py`` (in the database, noise
images of realistic size), serves it, and opens each view in headless Chromium: cold = a
fresh browser context (nothing cached), warm = the page reloaded in that context.
Reported: milliseconds from navigation start to the mark, median of ``--repeats``.

Run::

    python benchmarks/app_first_paint.py --out /tmp/app_resp
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_responsiveness import build_project

VIEWS = {
    "overview (atlas 3)": ("#/atlas/3", "cryoscout:overview-painted"),
    "gallery (atlas 4, 416 squares)": ("#/squares/4", "cryoscout:gallery-painted"),
    "gallery (all atlases, 5,000 squares)": ("#/squares/all", "cryoscout:gallery-painted"),
}


def paint_ms(page, base: str, hash_: str, mark: str, reload: bool = False) -> float:
    """Load the page on the view (or reload it) and return navigation start -> mark, in ms."""
    if reload:
        page.reload()
    else:
        page.goto(f"{base}/{hash_}")
    page.wait_for_function(f"performance.getEntriesByName({mark!r}).length > 0", timeout=60_000)
    return page.evaluate(f"performance.getEntriesByName({mark!r})[0].startTime")


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="project folder (built if absent)")
    ap.add_argument("--atlases", type=int, default=12)
    ap.add_argument("--squares", type=int, default=5000, help="total squares")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    if not (args.out / "cryoscout.db").is_file():
        build_project(args.out, args.atlases, args.squares // args.atlases)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"from cryoscout.app.serve import serve; serve({str(args.out)!r}, port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                urllib.request.urlopen(base + "/api/project", timeout=5)
                break
            except OSError:
                time.sleep(0.25)
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium)
            for name, (hash_, mark) in VIEWS.items():
                cold, warm = [], []
                for _ in range(args.repeats):
                    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
                    page = ctx.new_page()
                    cold.append(paint_ms(page, base, hash_, mark))
                    warm.append(paint_ms(page, base, hash_, mark, reload=True))
                    ctx.close()
                rows.append((name, statistics.median(cold), statistics.median(warm), max(cold)))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"| view | cold median (ms) | warm median (ms) | cold max (ms) | n = {args.repeats} |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, cold, warm, worst in rows:
        print(f"| {name} | {cold:.0f} | {warm:.0f} | {worst:.0f} | |")


if __name__ == "__main__":
    main()
