"""HTTP routes of the tomogram workspace: tomograms, slices, particle classes, annotations.

See ``docs/app-api-tomograms.md``. Routes validate, call
:class:`cryoscout.app.tomograms.TomogramStore` and shape JSON; errors are turned into
``{"detail": ...}`` by the app's exception handlers (``server.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cryoscout.app.tomograms import TomogramStore

router = APIRouter()

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Path_ = Annotated[str, Field(min_length=1, max_length=4096)]
Coord = Annotated[float, Field(allow_inf_nan=False)]
Radius = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TomogramIn(_Strict):
    path: Path_
    name: Name | None = None
    voxel_size_A: Radius | None = None
    tomo_type: Name | None = None


class ClassIn(_Strict):
    name: str
    colour: str | None = None
    radius_A: Radius | None = None
    radius_vox: Radius | None = None
    template: Path_ | None = None


class ClassPatch(_Strict):
    name: str | None = None
    colour: str | None = None
    radius_A: Radius | None = None
    radius_vox: Radius | None = None
    template: Path_ | None = None


class AnnotationIn(_Strict):
    class_: str = Field(alias="class")
    x: Coord
    y: Coord
    z: Coord
    labeler: Name = "user"


class AnnotationPatch(_Strict):
    class_: str | None = Field(default=None, alias="class")
    x: Coord | None = None
    y: Coord | None = None
    z: Coord | None = None
    labeler: Name = "user"


class UndoIn(_Strict):
    labeler: Name = "user"


class ImportIn(_Strict):
    path: Path_
    class_: str | None = Field(default=None, alias="class")
    labeler: Name = "user"
    tilt_series_pixel_size: Radius | None = None
    binning: Radius | None = None


def store(request: Request) -> TomogramStore:
    """The app's store (one per app, over its project)."""
    app = request.app
    if not hasattr(app.state, "tomograms"):
        app.state.tomograms = TomogramStore(app.state.project)
    return app.state.tomograms


# -- tomograms --------------------------------------------------------------------------
@router.post("/api/tomograms", status_code=201)
def add_tomogram(request: Request, body: TomogramIn):
    rows = store(request).add(body.path, body.name, body.voxel_size_A, body.tomo_type)
    return {"tomograms": rows}


@router.get("/api/tomograms")
def list_tomograms(request: Request):
    return store(request).tomograms()


@router.get("/api/tomograms/{tomogram_id}")
def get_tomogram(request: Request, tomogram_id: int):
    return store(request).tomogram(tomogram_id)


@router.get("/api/tomograms/{tomogram_id}/slice.png")
def slice_png(
    request: Request,
    tomogram_id: int,
    axis: Literal["z", "y", "x"] = "z",
    index: int = 0,
    bin: int = 1,
    lowpass: Annotated[float, Query(ge=0, le=50)] = 0.0,
    lo: Annotated[float, Query(ge=0, le=100)] = 1.0,
    hi: Annotated[float, Query(ge=0, le=100)] = 99.0,
):
    png, (h, w) = store(request).slice_png(tomogram_id, axis, index, bin, lowpass, lo, hi)
    headers = {"Cache-Control": "no-cache", "X-Slice-Shape": f"{h},{w}"}
    return Response(png, media_type="image/png", headers=headers)


# -- particle classes -------------------------------------------------------------------
@router.get("/api/particle-classes")
def list_classes(request: Request):
    return store(request).classes()


@router.post("/api/particle-classes", status_code=201)
def add_class(request: Request, body: ClassIn):
    return store(request).add_class(**body.model_dump())


@router.patch("/api/particle-classes/{class_id}")
def update_class(request: Request, class_id: int, body: ClassPatch):
    return store(request).update_class(class_id, **body.model_dump(exclude_unset=True))


@router.delete("/api/particle-classes/{class_id}")
def delete_class(request: Request, class_id: int):
    return store(request).delete_class(class_id)


# -- annotations ------------------------------------------------------------------------
@router.get("/api/tomograms/{tomogram_id}/annotations")
def list_annotations(request: Request, tomogram_id: int):
    return store(request).annotations(tomogram_id)


@router.post("/api/tomograms/{tomogram_id}/annotations", status_code=201)
def add_annotation(request: Request, tomogram_id: int, body: AnnotationIn):
    return store(request).add_annotation(
        tomogram_id, body.class_, body.x, body.y, body.z, body.labeler
    )


@router.patch("/api/annotations/{annotation_id}")
def move_annotation(request: Request, annotation_id: int, body: AnnotationPatch):
    changes = body.model_dump(exclude_unset=True, by_alias=True)
    labeler = changes.pop("labeler", "user")
    return store(request).move_annotation(annotation_id, labeler, **changes)


@router.delete("/api/annotations/{annotation_id}")
def delete_annotation(
    request: Request,
    annotation_id: int,
    labeler: Annotated[str, Query(min_length=1, max_length=64)] = "user",
):
    return store(request).delete_annotation(annotation_id, labeler)


@router.post("/api/annotations/undo")
def undo(request: Request, body: UndoIn = Body(default_factory=UndoIn)):
    return store(request).undo(body.labeler)


@router.post("/api/tomograms/{tomogram_id}/annotations/import", status_code=201)
def import_annotations(request: Request, tomogram_id: int, body: ImportIn):
    return store(request).import_annotations(
        tomogram_id, body.path, body.class_, body.labeler, body.tilt_series_pixel_size, body.binning
    )


# -- export -----------------------------------------------------------------------------
Format = Literal["csv", "coords", "relion4", "relion5"]
What = Literal["annotations", "picks"]
Status = Literal["accepted", "all"]
Positive = Annotated[float | None, Query(gt=0, allow_inf_nan=False)]


def download(content: bytes, filename: str) -> Response:
    media = "text/csv" if filename.endswith(".csv") else "text/plain"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(content, media_type=media, headers=headers)


@router.get("/api/tomograms/{tomogram_id}/export")
def export_tomogram(
    request: Request,
    tomogram_id: int,
    format: Format = "relion5",
    what: What = "annotations",
    picker: int | None = None,
    threshold: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    status: Status = "all",
    tilt_series_pixel_size: Positive = None,
    binning: Positive = None,
):
    from cryoscout.app.export import export_file

    content, name = export_file(
        store(request), [tomogram_id], format, what, picker, threshold, status,
        tilt_series_pixel_size, binning,
    )  # fmt: skip
    return download(content, name)


@router.get("/api/export")
def export_all(
    request: Request,
    format: Format = "relion5",
    what: What = "annotations",
    tomograms: Annotated[list[int] | None, Query()] = None,
    picker: int | None = None,
    threshold: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    status: Status = "all",
    tilt_series_pixel_size: Positive = None,
    binning: Positive = None,
):
    from cryoscout.app.export import export_file

    s = store(request)
    ids = tomograms or [t["id"] for t in s.tomograms()]
    content, name = export_file(
        s, ids, format, what, picker, threshold, status, tilt_series_pixel_size, binning
    )
    return download(content, name)


class CopickExportIn(_Strict):
    config: Path_ | None = None
    what: What = "annotations"
    tomograms: Annotated[list[int], Field(max_length=10_000)] | None = None
    user_id: Name = "cryoscout"
    session_id: Name = "0"
    picker: int | None = None
    threshold: Annotated[float, Field(allow_inf_nan=False)] | None = None
    status: Status = "all"


@router.post("/api/export/copick")
def export_copick(request: Request, body: CopickExportIn):
    from cryoscout.app.export import export_copick

    return export_copick(
        store(request), body.what, body.tomograms, body.config, body.user_id, body.session_id,
        body.picker, body.threshold, body.status,
    )  # fmt: skip
