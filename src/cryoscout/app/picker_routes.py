"""HTTP routes of the picker: train, predict, review picks, evaluate.

See docs/app-api-tomograms.md ("Picker" and "Picks"). Routes validate, call
:mod:`cryoscout.app.pickers` and shape JSON; training and prediction are background
jobs (:mod:`cryoscout.app.picking_jobs`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cryoscout.app import pickers

Labeler = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
ClassName = Annotated[str, Field(min_length=1, max_length=64)]
Ids = Annotated[list[int], Field(min_length=1, max_length=10_000)]
Channels = Annotated[list[Annotated[int, Field(ge=1, le=512)]], Field(min_length=1, max_length=6)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PickerTrainIn(_Strict):
    tomograms: Ids | None = None
    classes: Annotated[list[ClassName], Field(min_length=1, max_length=100)] | None = None
    epochs: Annotated[int, Field(ge=1, le=1000)] = pickers.TRAIN_DEFAULTS["epochs"]
    samples_per_epoch: Annotated[int, Field(ge=1, le=100_000)] = pickers.TRAIN_DEFAULTS[
        "samples_per_epoch"
    ]
    seed: Annotated[int, Field(ge=0)] = 0
    init: int | None = None
    patch: Annotated[int, Field(ge=8, le=256)] = pickers.TRAIN_DEFAULTS["patch"]
    channels: Annotated[
        list[Annotated[int, Field(ge=1, le=512)]], Field(min_length=1, max_length=6)
    ] = pickers.TRAIN_DEFAULTS["channels"]
    batch_size: Annotated[int, Field(ge=1, le=256)] = pickers.TRAIN_DEFAULTS["batch_size"]
    lr: Annotated[float, Field(gt=0, le=1.0)] = pickers.TRAIN_DEFAULTS["lr"]
    lowpass_A: Annotated[float, Field(ge=0, le=500)] = pickers.TRAIN_DEFAULTS["lowpass_A"]


class PickerPredictIn(_Strict):
    picker: int
    tomograms: Ids | None = None


class PickStatusIn(_Strict):
    status: Literal["accepted", "rejected", "pending"]
    labeler: Labeler = "user"


class AcceptIn(_Strict):
    picker: int | None = None
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    # "class" is a Python keyword: the field is class_ in Python, "class" in JSON.
    class_: ClassName | None = Field(None, alias="class")
    labeler: Labeler = "user"


def router() -> APIRouter:
    """The routes; the app's project and job runner come from ``request.app.state``."""
    api = APIRouter()

    def project(request: Request):
        return request.app.state.project

    @api.post("/api/picker/train", status_code=201)
    def train(request: Request, body: PickerTrainIn = Body(default_factory=PickerTrainIn)):
        job, picker = pickers.request_training(project(request), body.model_dump())
        request.app.state.runner.wake()
        return {"job": job, "picker": picker}

    @api.get("/api/pickers")
    def list_pickers(request: Request):
        return pickers.pickers(project(request))

    @api.get("/api/pickers/{picker_id}")
    def get_picker(request: Request, picker_id: int):
        return pickers.picker(project(request), picker_id)

    @api.post("/api/picker/predict", status_code=201)
    def predict(request: Request, body: PickerPredictIn):
        job = pickers.request_prediction(project(request), body.picker, body.tomograms)
        request.app.state.runner.wake()
        return {"job": job}

    @api.get("/api/tomograms/{tomogram_id}/picks")
    def picks(request: Request, tomogram_id: int, picker: int | None = None):
        return pickers.tomogram_picks(project(request), tomogram_id, picker)

    @api.put("/api/picks/{pick_id}")
    def set_status(request: Request, pick_id: int, body: PickStatusIn):
        return pickers.set_pick_status(project(request), pick_id, body.status, body.labeler)

    @api.post("/api/tomograms/{tomogram_id}/picks/accept")
    def accept(request: Request, tomogram_id: int, body: AcceptIn):
        return pickers.accept_above(
            project(request), tomogram_id, body.threshold, body.picker, body.class_, body.labeler
        )

    @api.get("/api/tomograms/{tomogram_id}/picks/evaluate")
    def evaluate(
        request: Request,
        tomogram_id: int,
        picker: int | None = None,
        threshold: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
    ):
        return pickers.evaluate(project(request), tomogram_id, picker, threshold)

    return api
