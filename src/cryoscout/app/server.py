"""The app's HTTP server: FastAPI routes over :class:`cryoscout.app.project.Project`.

See ``docs/app-api.md`` for every endpoint. Routes only validate, call the
project and shape JSON; the work happens in background jobs.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from cryoscout.app import picker_routes, pickers
from cryoscout.app.jobs import JobRunner
from cryoscout.app.project import Conflict, NotFound, Project
from cryoscout.app.tomogram_routes import router as tomogram_router
from cryoscout.errors import InputError

STATIC = Path(__file__).resolve().parent / "static"
#: Largest request body accepted (bytes): labels and options are small.
MAX_BODY = 256 * 1024
#: Cookie holding the token once a request carried it (so the page's modules load).
TOKEN_COOKIE = "cryoscout_token"
Attribute = Literal["brightness", "squareness", "cracking", "contamination", "overall"]
Score = Annotated[int, Field(ge=0, le=4)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AtlasIn(_Strict):
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    name: Name | None = None


class LabelIn(_Strict):
    atlas_id: int
    square_id: int
    attribute: Attribute
    value: Score | None
    labeler: Name = "user"


class LabelBatchIn(_Strict):
    labels: Annotated[list[LabelIn], Field(min_length=1, max_length=500)]


class UndoIn(_Strict):
    labeler: Name = "user"


class TrainIn(_Strict):
    epochs: Annotated[int, Field(ge=1, le=200)] = 5
    unlabeled: Annotated[int, Field(ge=0, le=100_000)] = 200
    seed: Annotated[int, Field(ge=0)] = 0
    test_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = 0.2
    batch_size: Annotated[int, Field(ge=1, le=512)] = 32
    lr: Annotated[float, Field(gt=0, le=1.0)] = 3e-4


class TargetsIn(_Strict):
    atlas_id: int
    model_id: int | None = None
    top_k: Annotated[int, Field(ge=0, le=10_000)] = 20
    add: Annotated[list[int], Field(max_length=10_000)] = []
    remove: Annotated[list[int], Field(max_length=10_000)] = []


MIN_LABELED_TO_TRAIN = 5


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require: the given one, or a new random one for a non-loopback host."""
    import secrets

    if token is None and not is_loopback(host):
        return secrets.token_urlsafe(18)
    return token


def create_app(
    project_dir: str | os.PathLike,
    token: str | None = None,
    data_roots: list[str | os.PathLike] | None = None,
    run_jobs: bool = True,
) -> FastAPI:
    """The app for one project.

    Parameters
    ----------
    project_dir
        The project folder (created if needed).
    token
        When set, every request must carry it (``Authorization: Bearer``,
        ``X-Cryoscout-Token`` or ``?token=``). The CLI sets one for any
        non-loopback host.
    data_roots
        Folders atlases may be added from, besides the project folder.
    run_jobs
        Start the background job runner (tests of pure API calls may skip it).
    """
    project = Project(project_dir, data_roots=data_roots)
    runner = JobRunner(project.path)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if run_jobs:
            runner.start()
        yield
        if run_jobs:
            runner.stop()

    app = FastAPI(title="cryoscout", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.project = project
    app.state.runner = runner

    @app.middleware("http")
    async def guard(request: Request, call_next):
        set_cookie = False
        if token is not None:
            given = (
                request.headers.get("x-cryoscout-token")
                or request.query_params.get("token")
                or request.cookies.get(TOKEN_COOKIE)
            )
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "a valid token is required"}, status_code=401)
            # The page's own scripts and images cannot carry the token: a cookie does.
            set_cookie = request.cookies.get(TOKEN_COOKIE) != token
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, 413)
        if request.method in ("POST", "PUT", "PATCH") and length is None:
            body = await request.body()  # chunked: read and check what actually came
            if len(body) > MAX_BODY:
                return JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, 413)
        response = await call_next(request)
        if set_cookie:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    for exc_type, status in (
        (NotFound, 404),
        (Conflict, 409),
        (InputError, 400),
        (PermissionError, 403),
        (ValueError, 400),
    ):

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(exc_type, handler)

    def proj() -> Project:
        return project

    # -- project and atlases --------------------------------------------------------
    @app.get("/api/project")
    def get_project():
        return proj().info()

    @app.get("/api/atlases")
    def list_atlases():
        return proj().atlases()

    @app.post("/api/atlases", status_code=201)
    def add_atlas(body: AtlasIn):
        atlas, job = proj().add_atlas(body.path, body.name)
        runner.wake()
        return {"atlas": atlas, "job": job}

    @app.get("/api/atlases/{atlas_id}")
    def get_atlas(atlas_id: int):
        return proj().atlas(atlas_id)

    @app.get("/api/atlases/{atlas_id}/squares")
    def get_squares(atlas_id: int, model: int | None = None):
        return proj().squares(atlas_id, model)

    def atlas_file(atlas_id: int, relative: str) -> FileResponse:
        p = proj()
        p._atlas_record(atlas_id)
        path = p.project_file(p.atlas_dir(atlas_id).relative_to(p.path) / relative)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/atlases/{atlas_id}/overview.png")
    def overview(atlas_id: int):
        return atlas_file(atlas_id, "overview.png")

    @app.get("/api/atlases/{atlas_id}/thumbnail.png")
    def thumbnail(atlas_id: int):
        return atlas_file(atlas_id, "thumbnail.png")

    @app.get("/api/atlases/{atlas_id}/sprites/{kind}.png")
    def sprite(
        atlas_id: int, kind: Literal["crop", "cracking", "contamination"], model: int | None = None
    ):
        if kind == "crop":
            return atlas_file(atlas_id, "crop.png")
        m = proj().current_model if model is None else model
        return atlas_file(atlas_id, f"m{int(m)}/{kind}.png")

    @app.get("/api/atlases/{atlas_id}/squares/{square_id}/{kind}.png")
    def square_png(
        atlas_id: int,
        square_id: int,
        kind: Literal["crop", "cracking", "contamination"],
        model: int | None = None,
    ):
        png = proj().square_png(atlas_id, square_id, kind, model)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/atlases/{atlas_id}/report.html")
    def report(atlas_id: int):
        p = proj()
        folder = p.screen_dir(atlas_id, p.current_model).relative_to(p.path)
        p._atlas_record(atlas_id)
        return FileResponse(p.project_file(folder / "report.html"), media_type="text/html")

    # -- labels ---------------------------------------------------------------------
    def check_labels(labels: list[LabelIn]) -> list[dict]:
        return [lab.model_dump() for lab in labels]

    @app.put("/api/labels")
    def put_label(body: LabelIn):
        return proj().put_labels(check_labels([body]))[0]

    @app.put("/api/labels/batch")
    def put_labels(body: LabelBatchIn):
        return {"saved": proj().put_labels(check_labels(body.labels))}

    @app.post("/api/labels/undo")
    def undo(body: UndoIn = Body(default_factory=UndoIn)):
        return proj().undo(body.labeler)

    @app.get("/api/labels")
    def label_history(
        atlas_id: int | None = None,
        square_id: int | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ):
        return proj().label_history(atlas_id, square_id, limit)

    def csv_response(table, filename: str) -> Response:
        return Response(
            table.to_csv(index=False),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.get("/api/labels.csv")
    def labels_csv():
        return csv_response(proj().labels_table(), "labels.csv")

    @app.get("/api/atlases/{atlas_id}/labels.csv")
    def atlas_labels_csv(atlas_id: int):
        return csv_response(proj().labels_table(atlas_id), "labels.csv")

    # -- suggestions ----------------------------------------------------------------
    @app.get("/api/suggestions")
    def suggestions(
        n: Annotated[int, Query(ge=1, le=500)] = 20,
        atlas_id: int | None = None,
        model: int | None = None,
    ):
        p = proj()
        model_id = p.current_model if model is None else model
        found = p.suggestions(n, atlas_id, model_id)
        scores = {}
        for s in found:
            key = (s.atlas_id, s.square_id)
            row = p.conn.execute(
                "SELECT brightness, squareness, cracking, contamination, overall FROM predictions "
                "WHERE model_id = ? AND atlas_id = ? AND square_id = ?",
                (model_id, *key),
            ).fetchone()
            scores[key] = dict(row) if row else {}
        return {
            "model_id": model_id,
            "method": "tta-disagreement x k-centre",
            "squares": [{**s.__dict__, "scores": scores[(s.atlas_id, s.square_id)]} for s in found],
        }

    # -- jobs -----------------------------------------------------------------------
    @app.get("/api/jobs")
    def list_jobs(state: str | None = None):
        return proj().jobs(state)

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: int):
        return proj().job(job_id)

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: int):
        proj().job(job_id)
        runner.cancel(job_id)
        return proj().job(job_id)

    @app.post("/api/jobs/{job_id}/resume", status_code=201)
    def resume_job(job_id: int):
        p = proj()
        job = p.job(job_id)
        if not job["resumable"]:
            raise Conflict(f"job {job_id} cannot be resumed (no checkpoint, or not training)")
        params = dict(job["params"], resume=f"{job['params']['run_dir']}/checkpoints/last.ckpt")
        if job["kind"] == "pick_train":
            new = pickers.resume_training(p, params)
        else:
            new = p.create_job("train", params)
        runner.wake()
        return new

    # -- training and models --------------------------------------------------------
    @app.post("/api/train", status_code=201)
    def train(body: TrainIn = Body(default_factory=TrainIn)):
        p = proj()
        n = p.info()["labeled_squares"]
        if n < MIN_LABELED_TO_TRAIN:
            raise HTTPException(
                400, f"label at least {MIN_LABELED_TO_TRAIN} squares before training ({n} so far)"
            )
        if p.jobs("running") and any(j["kind"] == "train" for j in p.jobs("running")):
            raise Conflict("a training job is already running")
        params = body.model_dump() | {"parent": p.fine_tune_parent(p.current_model)}
        job = p.create_job("train", params)
        p.update_job(job["id"], params=params | {"run_dir": f"models/train-{job['id']}"})
        runner.wake()
        return p.job(job["id"])

    @app.get("/api/models")
    def models():
        return proj().models()

    @app.post("/api/models/{model_id}/activate")
    def activate(model_id: int):
        m = proj().activate(model_id)
        runner.wake()
        return m

    # -- targets --------------------------------------------------------------------
    def targets_json(t: dict) -> dict:
        t = dict(t)
        t["targets"] = (
            t["targets"].astype(object).where(t["targets"].notna(), None).to_dict("records")
        )
        return t

    @app.get("/api/atlases/{atlas_id}/targets")
    def get_targets(
        atlas_id: int,
        top_k: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        model: int | None = None,
    ):
        return targets_json(proj().targets(atlas_id, top_k, model))

    @app.post("/api/targets")
    def set_targets(body: TargetsIn):
        p = proj()
        t = p.set_targets(body.atlas_id, body.top_k, body.add, body.remove, body.model_id)
        return targets_json(t)

    @app.get("/api/atlases/{atlas_id}/targets.csv")
    def targets_csv(atlas_id: int, model: int | None = None):
        t = proj().targets(atlas_id, model_id=model)["targets"]
        return Response(
            t.to_csv(index=False, float_format="%.4f"),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="targets.csv"'},
        )

    @app.get("/api/atlases/{atlas_id}/targets.nav")
    def targets_nav(atlas_id: int, model: int | None = None):
        return PlainTextResponse(
            proj().targets_nav(atlas_id, model),
            headers={"Content-Disposition": 'attachment; filename="targets.nav"'},
        )

    app.include_router(picker_routes.router())  # picker, picks (docs/app-api-tomograms.md)

    # -- the page -------------------------------------------------------------------
    @app.get("/")
    def index():
        page = STATIC / "index.html"
        if not page.is_file():
            return PlainTextResponse("cryoscout app: the page is not installed", 404)
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    app.include_router(tomogram_router)  # docs/app-api-tomograms.md

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
