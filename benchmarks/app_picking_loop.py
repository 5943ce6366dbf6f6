"""The app's annotate -> train -> predict loop on the README's CPU-sized picking example.

Simulates the README's three tomograms (SHREC 2021 templates 4v94 and 4cr2, 160x160x64
voxels of 20 Å, 70 particles, seeds 1-3), opens an app project on them and drives it
through its HTTP API (the same server, job runner and worker processes as
``cryoscout app``) as a user would:

1. add the three tomograms; define the two classes from their template maps;
2. click ``--per-class`` particle centres per class on each training tomogram (tomo1,
   tomo2), taken from the simulator's truth;
3. train a picker with the README's settings (``--epochs 40 --samples-per-epoch 64``, patch
   32, channels 8,16,24,32: the API's defaults) and wait for the job;
4. predict on the held-out tomo3 and wait for the job;
5. import tomo3's true particles as its annotations and ask the app to evaluate (one-to-one
   precision/recall/F1 within each class's particle radius, the ``pick evaluate`` code),
   at the API's default review threshold 0.5 and at every threshold in a sweep.

Prints the wall time of every stage and the F1; ``--json`` writes them too. Run::

    python benchmarks/app_picking_loop.py --out /tmp/app_loop --json /tmp/app_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("CRYOSCOUT_NO_PROGRESS", "1")

TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "data" / "templates_10A"
CLASSES = ("4v94", "4cr2")


def simulate(out: Path, templates: Path) -> dict[str, Path]:
    """The README's three tomograms, by its own ``cryoscout simulate tomogram`` commands."""
    from cryoscout.cli.main import main as cli

    folders = {}
    for i in (1, 2, 3):
        folders[f"tomo{i}"] = out / f"tomo{i}"
        args = ["simulate", "tomogram", str(folders[f"tomo{i}"]), "--seed", str(i)]
        args += ["--templates", str(templates), "--classes", ",".join(CLASSES)]
        args += ["--shape", "160,160,64", "--voxel-size", "20", "--particles", "70"]
        if cli(args) != 0:
            raise RuntimeError(f"simulate tomogram {i} failed")
    return folders


def wait(client, job_id: int, timeout: float = 7200.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(1.0)
    raise RuntimeError(f"job {job_id} did not finish in {timeout} s")


def ok(response, status: int = 200) -> dict:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


def main() -> None:
    import numpy as np
    import pandas as pd
    from fastapi.testclient import TestClient

    from cryoscout.app.server import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="Work folder (replaced).")
    ap.add_argument("--templates", type=Path, default=TEMPLATES)
    ap.add_argument("--per-class", type=int, default=12, help="Clicks per class and tomogram.")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--samples-per-epoch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="Seed of the clicked particles.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    load_start = os.getloadavg()[0]
    data = args.out / "data"
    times: dict[str, float] = {}
    t = time.perf_counter()
    folders = simulate(data, args.templates)
    times["simulate (not part of the loop)"] = time.perf_counter() - t

    with TestClient(create_app(args.out / "project", data_roots=[data, args.templates])) as c:
        t = time.perf_counter()
        ids = {}
        for name, folder in folders.items():
            r = ok(
                c.post("/api/tomograms", json={"path": str(folder / "tomogram.mrc"), "name": name}),
                201,
            )
            ids[name] = r["tomograms"][0]["id"]
        for cls in CLASSES:
            ok(
                c.post(
                    "/api/particle-classes",
                    json={"name": cls, "template": str(args.templates / f"{cls}.mrc")},
                ),
                201,
            )
        times["add tomograms and classes"] = time.perf_counter() - t
        classes = {r["name"]: r for r in ok(c.get("/api/particle-classes"))}

        rng = np.random.default_rng(args.seed)
        t = time.perf_counter()
        n_clicks = 0
        for name in ("tomo1", "tomo2"):
            truth = pd.read_csv(folders[name] / "particles.csv")
            for cls in CLASSES:
                rows = truth[truth["name"] == cls]
                pick = rng.choice(len(rows), size=min(args.per_class, len(rows)), replace=False)
                for x, y, z in rows.iloc[np.sort(pick)][["x", "y", "z"]].to_numpy(float):
                    body = {"class": cls, "x": x, "y": y, "z": z, "labeler": "benchmark"}
                    ok(c.post(f"/api/tomograms/{ids[name]}/annotations", json=body), 201)
                    n_clicks += 1
        times["annotate (POST each click)"] = time.perf_counter() - t

        t = time.perf_counter()
        body = {"tomograms": [ids["tomo1"], ids["tomo2"]], "epochs": args.epochs}
        body["samples_per_epoch"] = args.samples_per_epoch
        started = ok(c.post("/api/picker/train", json=body), 201)
        train_job = wait(c, started["job"]["id"])
        times["train job"] = time.perf_counter() - t
        if train_job["state"] != "done":
            raise RuntimeError(f"training {train_job['state']}: {train_job['message']}")
        picker = ok(c.get(f"/api/pickers/{started['picker']['id']}"))

        t = time.perf_counter()
        body = {"picker": picker["id"], "tomograms": [ids["tomo3"]]}
        job = wait(c, ok(c.post("/api/picker/predict", json=body), 201)["job"]["id"])
        times["predict job (tomo3)"] = time.perf_counter() - t
        if job["state"] != "done":
            raise RuntimeError(f"prediction {job['state']}: {job['message']}")

        t = time.perf_counter()
        truth3 = folders["tomo3"] / "particles.csv"
        ok(
            c.post(f"/api/tomograms/{ids['tomo3']}/annotations/import", json={"path": str(truth3)}),
            201,
        )
        url = f"/api/tomograms/{ids['tomo3']}/picks/evaluate"
        at_default = ok(c.get(url, params={"threshold": 0.5}))
        times["evaluate"] = time.perf_counter() - t
        sweep = {
            th: ok(c.get(url, params={"threshold": th}))["overall"]
            for th in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
        }
        n_picks = len(ok(c.get(f"/api/tomograms/{ids['tomo3']}/picks"))["picks"])

    loop = sum(v for k, v in times.items() if not k.startswith("simulate"))
    best = max(sweep, key=lambda th: sweep[th]["f1"] or 0)
    result = {
        "machine": f"{os.cpu_count()} CPUs visible ({platform.processor() or platform.machine()}), "
        f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        "clicks": n_clicks,
        "per_class_per_tomogram": args.per_class,
        "radius_vox": {
            k: round(v["radius_A"] / 20.0, 2) if v["radius_A"] else v["radius_vox"]
            for k, v in classes.items()
        },
        "epochs": args.epochs,
        "samples_per_epoch": args.samples_per_epoch,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "loop_seconds": round(loop, 1),
        "train_losses": [round(e["train_loss"], 4) for e in train_job["losses"]],
        "train_job_seconds_in_epochs": picker["metrics"]["seconds"],
        "n_picks_tomo3": n_picks,
        "evaluate_at_0.5": at_default,
        "sweep": sweep,
        "best_threshold": best,
    }
    for k, v in times.items():
        print(f"{k:34s} {v:8.1f} s")
    print(f"{'loop (add .. evaluate)':34s} {loop:8.1f} s")
    print(f"{n_picks} picks on tomo3; at threshold 0.5: " + json.dumps(at_default["per_class"]))
    print(f"overall F1 at 0.5: {at_default['overall']['f1']}; best {sweep[best]['f1']} at {best}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
