"""App responsiveness on a project of 12 atlases / 5,000 squares (issue 9, measurement c).

Builds a project of the target size directly in the database (12 ready atlases,
~417 squares each, predictions, features, sprite sheets and overview images of
realistic pixel sizes filled with noise: what is measured is the server, not
the screening), starts the real server (uvicorn, in a subprocess) and measures:

- overview first paint: ``GET /api/atlases/{id}`` + ``overview.png`` +
  ``squares`` JSON (what the atlas view needs before it can draw);
- gallery first paint: ``squares`` JSON + the crop sprite sheet;
- label round trip: ``PUT /api/labels`` latency, p50/p95, with 4 clients
  labeling at once (each its own connection, 100 labels each).

Cold = first request (nothing cached), warm = median of 5 repeats.

Run::

    python benchmarks/app_responsiveness.py --out /tmp/app_resp
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CRYOSCOUT_NO_PROGRESS", "1")


def build_project(folder: Path, n_atlases: int, per_atlas: int, seed: int = 0) -> None:
    from cryoscout.app import db, sprites
    from cryoscout.app.project import Project
    from cryoscout.io.atomic import write_bytes

    rng = np.random.default_rng(seed)
    p = Project(folder)
    cols = sprites.sprite_cols(per_atlas)
    for a in range(n_atlases):
        atlas_id = a + 1
        d = p.atlas_dir(atlas_id)
        (d / "m1").mkdir(parents=True, exist_ok=True)
        over = rng.integers(0, 255, (2048, 2048), dtype=np.uint8)
        write_bytes(d / "overview.png", sprites.png_bytes(over))
        write_bytes(d / "thumbnail.png", sprites.png_bytes(over[::8, ::8]))
        crops = rng.integers(0, 255, (per_atlas, 64, 64), dtype=np.uint8)
        write_bytes(d / "crop.png", sprites.png_bytes(sprites.sprite_sheet(crops)))
        maps = rng.random((per_atlas, 64, 64)).astype(np.float32)
        for name, rgb in sprites.OVERLAY_COLOURS.items():
            sheet = sprites.overlay_sheet(maps, rgb)
            write_bytes(d / "m1" / f"{name}.png", sprites.png_bytes(sheet))
        np.save(d / "m1" / "features.npy", rng.normal(size=(per_atlas, 32)).astype(np.float32))
        np.save(d / "m1" / "uncertainty.npy", rng.random(per_atlas).astype(np.float32))
        with db.transaction(p.conn) as c:
            c.execute(
                "INSERT INTO atlases (id, name, path, folder, status, created, has_stage, "
                "square_px, overview_w, overview_h, overview_scale, sprite_size, sprite_cols, "
                "lattice_angle_deg) VALUES (?, ?, '/dev/null', ?, 'ready', ?, 1, 90, 2048, 2048, "
                "0.25, 64, ?, 10)",
                (atlas_id, f"grid{atlas_id:02d}", f"atlases/{atlas_id}", db.now(), cols),
            )
            xy = rng.random((per_atlas, 2)) * 8192
            c.executemany(
                "INSERT INTO squares VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                [(atlas_id, i, i, x, y, x / 10, y / 10) for i, (x, y) in enumerate(xy)],
            )
            s = rng.random((per_atlas, 5)) * 4
            c.executemany(
                "INSERT INTO predictions VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(atlas_id, i, *map(float, s[i]), float(rng.random())) for i in range(per_atlas)],
            )
    p.close()


def timed(client, url: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = client.get(url)
    r.raise_for_status()
    return time.perf_counter() - t, len(r.content)


def main() -> None:
    import httpx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--atlases", type=int, default=12)
    ap.add_argument("--squares", type=int, default=5000, help="total squares")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--labels", type=int, default=100, help="labels per client")
    args = ap.parse_args()
    per = args.squares // args.atlases
    if not (args.out / "cryoscout.db").is_file():
        t = time.perf_counter()
        build_project(args.out, args.atlases, per)
        print(f"built project: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        f"from cryoscout.app.serve import serve; serve({str(args.out)!r}, port={port}, echo=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for _ in range(400):
                try:
                    c.get("/api/project")
                    break
                except httpx.HTTPError:
                    time.sleep(0.25)
            rows = []
            for label, urls in (
                (
                    "overview first paint",
                    ["/api/atlases/3", "/api/atlases/3/overview.png", "/api/atlases/3/squares"],
                ),
                (
                    "gallery first paint",
                    ["/api/atlases/4/squares", "/api/atlases/4/sprites/crop.png"],
                ),
                ("cassette table", ["/api/atlases"]),
                ("suggestions (n=20, 5,000 squares)", ["/api/suggestions?n=20"]),
            ):
                cold = sum(timed(c, u)[0] for u in urls)
                warm = statistics.median(sum(timed(c, u)[0] for u in urls) for _ in range(5))
                size = sum(timed(c, u)[1] for u in urls)
                rows.append((label, cold, warm, size))
        lat: list[float] = []
        lock = threading.Lock()

        def labeler(k: int) -> None:
            rng = np.random.default_rng(k)
            with httpx.Client(base_url=base, timeout=60) as c:
                for _ in range(args.labels):
                    body = {
                        "atlas_id": int(rng.integers(1, args.atlases + 1)),
                        "square_id": int(rng.integers(0, per)),
                        "attribute": "overall",
                        "value": int(rng.integers(0, 5)),
                        "labeler": f"client{k}",
                    }
                    t = time.perf_counter()
                    c.put("/api/labels", json=body).raise_for_status()
                    with lock:
                        lat.append(time.perf_counter() - t)

        threads = [threading.Thread(target=labeler, args=(k,)) for k in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    print(
        f"{args.atlases} atlases, {per * args.atlases} squares; machine: 2 CPU cores shared "
        "with other jobs, no GPU\n"
    )
    print("| view | cold (s) | warm median (s) | bytes |\n| --- | --- | --- | --- |")
    for label, cold, warm, size in rows:
        print(f"| {label} | {cold:.3f} | {warm:.3f} | {size:,} |")
    q = np.percentile(np.asarray(lat) * 1000, [50, 95, 99])
    print(
        f"\nlabel round trip, {args.clients} concurrent clients x {args.labels} labels: "
        f"p50 {q[0]:.1f} ms, p95 {q[1]:.1f} ms, p99 {q[2]:.1f} ms "
        f"({len(lat) / total:.0f} labels/s overall)"
    )


if __name__ == "__main__":
    main()
