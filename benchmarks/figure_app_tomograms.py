"""Draw the README's screenshots of the app's Tomograms workspace over a simulated tomogram.

A simulated tomogram (procedural shapes, known particle positions), the real app server and
headless Chromium: a dozen particles annotated at their true centres (as clicks would place
them), a picker trained on them and its picks reviewed with the threshold slider.

Run from the repository root (a few minutes on 2 free CPU cores, most of it training):

    $ python benchmarks/figure_app_tomograms.py --out docs
    $ python benchmarks/figure_app_tomograms.py --out docs --no-picker   # annotation only
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def serve(project: Path, data_root: Path):
    import socket

    import uvicorn

    from cryoscout.app.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(project, data_roots=[data_root])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    return srv, thread, f"http://127.0.0.1:{port}"


def call(page, method: str, path: str, body=None):
    r = page.request.fetch(path, method=method, data=body)
    if not r.ok:
        raise SystemExit(f"{method} {path}: {r.status} {r.text()}")
    return r.json()


def wait_job(page, job_id: int, what: str) -> dict:
    t0 = time.monotonic()
    while True:
        job = call(page, "GET", f"/api/jobs/{job_id}")
        if job["state"] not in ("queued", "running"):
            if job["state"] != "done":
                raise SystemExit(f"{what} job {job['state']}: {job['message']}")
            print(f"{what}: {time.monotonic() - t0:.0f} s")
            return job
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples-per-epoch", type=int, default=32)
    parser.add_argument("--patch", type=int, default=24)
    parser.add_argument("--channels", default="8,16,24", help="U-Net channels per level")
    parser.add_argument("--no-picker", action="store_true", help="only the annotation screenshot")
    args = parser.parse_args()

    import pandas as pd
    from playwright.sync_api import sync_playwright

    from cryoscout.simulate.tomogram import (
        TomogramConfig,
        simulate_tomogram,
        write_simulated_tomogram,
    )

    tmp = Path(tempfile.mkdtemp(prefix="cryoscout_fig_"))
    cfg = TomogramConfig(
        shape=(48, 128, 128),
        voxel_size_A=20.0,
        n_particles=40,
        shapes=("sphere", "dumbbell"),
        tilt_step_deg=3.0,
        snr=0.3,
    )
    sim = simulate_tomogram(cfg, seed=args.seed)
    files = write_simulated_tomogram(sim, tmp / "data" / "TS_01")
    truth = pd.read_csv(files["particles"])
    classes = pd.read_csv(files["classes"])
    (tmp / "project").mkdir()
    srv, thread, base = serve(tmp / "project", tmp / "data")
    colours = ["#e6194b", "#42d4f4"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 860}, base_url=base)
            call(page, "POST", "/api/tomograms", {"path": str(files["tomogram"]), "name": "TS_01"})
            for (_, c), colour in zip(classes.iterrows(), colours, strict=False):
                body = {"name": c["name"], "colour": colour, "radius_vox": float(c["radius_vox"])}
                call(page, "POST", "/api/particle-classes", body)
            # The section through most particles, so the figure shows full and cut circles, and
            # the dozen true particles of each class nearest to it, as clicks place them.
            z = int(truth["z"].round().mode().iloc[0])
            near = truth.assign(dz=(truth["z"] - z).abs()).sort_values("dz")
            names = dict(zip(classes["class"], classes["name"], strict=True))
            for _, t in near.groupby("class").head(12).iterrows():
                body = {"class": names[t["class"]], "x": float(t["x"]), "y": float(t["y"])}
                body.update(z=float(round(t["z"])), labeler="alice")
                call(page, "POST", "/api/tomograms/1/annotations", body)
            page.goto(base + "/#/tomograms/1")
            page.fill("#labeler", "alice")
            page.wait_for_selector("#slice-wrap[data-shown]")
            page.fill("#tomo-lowpass", "1")
            page.dispatch_event("#tomo-lowpass", "change")
            page.fill("#tomo-index-num", str(z))
            page.dispatch_event("#tomo-index-num", "change")
            page.wait_for_selector(f"#slice-wrap[data-shown='z:{z}']:not(.loading)")
            page.locator("#slice-wrap").focus()
            page.keyboard.press("Escape")
            page.wait_for_timeout(400)
            args.out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out / "app_tomogram_annotate.png"))
            print("wrote", args.out / "app_tomogram_annotate.png")
            if not args.no_picker:
                body = {"epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch}
                body.update(patch=args.patch, channels=[int(c) for c in args.channels.split(",")])
                reply = call(page, "POST", "/api/picker/train", body)
                wait_job(page, reply["job"]["id"], "training")
                picker = reply["picker"]["id"]
                reply = call(page, "POST", "/api/picker/predict", {"picker": picker})
                wait_job(page, reply["job"]["id"], "prediction")
                page.goto(base + "/#/tomograms/1")
                page.wait_for_selector("#slice-wrap[data-shown]")
                page.click("#sec-classes summary")  # folded, so the review panel shows whole
                page.click("#sec-tomos summary")
                page.locator("#review-threshold").fill("0.4")
                page.locator("#slice-wrap").focus()
                page.keyboard.press("n")
                page.wait_for_selector("#slice-wrap:not(.loading)")
                page.wait_for_selector("#review-eval-table")
                page.wait_for_timeout(500)
                page.screenshot(path=str(args.out / "app_tomogram_review.png"))
                print("wrote", args.out / "app_tomogram_review.png")
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(timeout=20)


if __name__ == "__main__":
    main()
