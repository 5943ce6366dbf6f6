"""Run the app with uvicorn, showing background-job progress in the terminal."""

from __future__ import annotations

import os
import sys
import threading
import time


def serve(
    project_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    data_roots: list | None = None,
    echo: bool = True,
) -> None:
    """Serve the project until interrupted (Ctrl-C); ``echo`` prints job progress on stderr."""
    import uvicorn

    from cryoscout.app.server import create_app

    app = create_app(project_dir, token=token, data_roots=data_roots)
    stop = threading.Event()
    watcher = threading.Thread(target=_echo_jobs, args=(app.state.project.path, stop), daemon=True)
    if echo:
        watcher.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        stop.set()


def _echo_jobs(project_dir, stop: threading.Event) -> None:
    """One line on stderr whenever a job starts, moves by 10 %, or ends."""
    from cryoscout.app.project import Project

    project = Project(project_dir)
    seen: dict[int, tuple] = {}
    while not stop.wait(1.0):
        for job in reversed(project.jobs(limit=50)):
            step = (job["state"], int((job["progress"] or 0) * 10))
            if seen.get(job["id"]) == step or job["state"] == "queued":
                continue
            if job["id"] not in seen and job["state"] != "running":
                seen[job["id"]] = step  # finished before this watcher started: stay quiet
                continue
            seen[job["id"]] = step
            what = job["kind"] + (
                f" atlas {job['params']['atlas_id']}" if job["kind"] == "screen" else ""
            )
            eta = (
                f", about {job['eta_s']:.0f} s left"
                if job.get("eta_s") and step[0] == "running"
                else ""
            )
            print(
                f"[{time.strftime('%H:%M:%S')}] job {job['id']} {what}: {job['state']} "
                f"{100 * (job['progress'] or 0):.0f}% {job['message'] or ''}{eta}",
                file=sys.stderr,
                flush=True,
            )
