"""The worker process: ``python -m cryoscout.app.worker PROJECT JOB_ID`` runs one job.

A job runs outside the server process, so a long training never blocks a
request and a crash in the numerics cannot take the server down. The job's
state, progress and result live in the database; the server only starts and
stops this process.
"""

from __future__ import annotations

import logging
import sys
import traceback


def run_job(project_dir: str, job_id: int) -> int:
    """Run job ``job_id`` of the project; return the exit status (0 done, 1 failed)."""
    from cryoscout.app.operations import OPERATIONS, Cancelled, Reporter, _message
    from cryoscout.app.project import Project

    project = Project(project_dir)
    job = project.job(job_id)
    report = Reporter(project, job_id)
    if job["state"] == "queued":  # run by hand rather than by the server's runner
        project.claim_job(job_id)
    elif job["state"] != "running":  # cancelled (or finished) before this process started
        return 1
    try:
        result = OPERATIONS[job["kind"]](project, job, report)
    except Cancelled:
        return 1
    except Exception as exc:
        logging.getLogger(__name__).debug("job %s failed", job_id, exc_info=True)
        traceback.print_exc(file=sys.stderr)
        project.finish_job(job_id, "failed", _message(exc))
        return 1
    project.update_job(job_id, losses=report.losses)
    project.finish_job(job_id, "done", "done", result=result)
    return 0


if __name__ == "__main__":
    sys.exit(run_job(sys.argv[1], int(sys.argv[2])))
