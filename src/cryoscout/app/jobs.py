"""Runs queued jobs one at a time, each in its own worker process.

One job at a time: screening and training both want every core, and two at
once would only make both slower. The runner is a thread of the server; the
work itself happens in ``python -m cryoscout.app.worker`` (see
:mod:`cryoscout.app.worker`), so a cancelled job is simply a stopped process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from cryoscout.app.project import Project


class JobRunner:
    """Start with :meth:`start`; :meth:`wake` after queuing a job; :meth:`cancel` stops one."""

    def __init__(self, project_dir: str | os.PathLike) -> None:
        self.project_dir = Path(project_dir)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._job_id: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Mark jobs of an earlier server as interrupted, then start running queued ones."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        Project(self.project_dir).interrupt_running_jobs()
        self._thread = threading.Thread(target=self._loop, name="cryoscout-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop the loop and the running worker (its job becomes ``interrupted``)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            proc, job_id = self._proc, self._job_id
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if job_id is not None:
            project = Project(self.project_dir)
            project.finish_job(job_id, "interrupted", "interrupted: the server stopped")
            project.close()
        if self._thread is not None:
            self._thread.join(10)

    def cancel(self, job_id: int) -> None:
        """Mark a job cancelled and stop its worker when it is the one running."""
        project = Project(self.project_dir)
        job = project.job(job_id)
        if job["state"] in ("queued", "running"):
            project.finish_job(job_id, "cancelled", "cancelled")
            if job["kind"] == "screen":
                project.set_atlas(job["params"]["atlas_id"], status="failed", message="cancelled")
        project.close()
        with self._lock:
            proc = self._proc if self._job_id == job_id else None
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _loop(self) -> None:
        project = Project(self.project_dir)
        while not self._stop.is_set():
            job = project.next_queued_job()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if project.claim_job(job["id"]):
                self._run(project, job)
        project.close()

    def _run(self, project: Project, job: dict) -> None:
        log = self.project_dir / "logs" / f"job-{job['id']}.log"
        log.parent.mkdir(exist_ok=True)
        env = dict(os.environ, CRYOSCOUT_NO_PROGRESS="1")
        src = str(Path(__file__).resolve().parents[2])  # the cryoscout package's own copy
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        with open(log, "wb") as out:
            with self._lock:
                self._proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cryoscout.app.worker",
                        str(self.project_dir),
                        str(job["id"]),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                self._job_id = job["id"]
            rc = self._proc.wait()
        with self._lock:
            self._proc, self._job_id = None, None
        after = project.job(job["id"])
        if self._stop.is_set():  # stopped by the server: stop() marks the job interrupted
            return
        if after["state"] in ("queued", "running"):  # the worker died without saying why
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            project.finish_job(job["id"], "failed", f"worker exited with status {rc}: {tail[0]}")
            if job["kind"] == "screen":
                project.set_atlas(job["params"]["atlas_id"], status="failed", message=tail[0])
