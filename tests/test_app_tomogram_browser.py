"""The Tomograms workspace in a real browser: headless Chromium driven by Playwright.

A small simulated tomogram (known shape and voxel size), the real server (uvicorn on a free
loopback port, jobs in their worker process) and the page as a user works it: add the
tomogram, step through sections, define a class, place three particles by clicks, reload,
move, delete and undo, export RELION 5 STAR, then train a tiny picker, predict and review its
picks with the threshold slider. The tests run in file order and share one server and page.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from browser_support import api, open_page, require_browser, serve
from copick_support import copick_project

require_browser()

from playwright.sync_api import expect  # noqa: E402

SHAPE = (40, 96, 112)  # (z, y, x): x and y differ so a swapped axis shows
VOXEL_A = 10.0
RADIUS_A = 50.0  # 5 voxels
JOB_TIMEOUT_MS = 400_000  # the tiny jobs take ~30 s idle; the machine may be shared
# Long: on a shared machine the server's first evaluate imports scipy, pandas... slowly.
expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def tomogram_path(tmp_path_factory) -> Path:
    from cryoscout.simulate.tomogram import (
        TomogramConfig,
        simulate_tomogram,
        write_simulated_tomogram,
    )

    root = tmp_path_factory.mktemp("tomo_browser_data")
    cfg = TomogramConfig(
        shape=SHAPE,
        voxel_size_A=VOXEL_A,
        n_particles=14,
        shapes=("sphere",),
        tilt_step_deg=6.0,
        snr=0.5,
    )
    files = write_simulated_tomogram(simulate_tomogram(cfg, seed=4), root / "TS_01")
    return Path(files["tomogram"])


@pytest.fixture(scope="module")
def server(tmp_path_factory, tomogram_path):
    project = tmp_path_factory.mktemp("tomo_browser_project")
    with serve(project, [tomogram_path.parent.parent]) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    def watch_slices(pg) -> None:
        pg.slices = []
        pg.on("request", lambda r: pg.slices.append(r.url) if "/slice.png" in r.url else None)

    with open_page(server["url"], on_page=watch_slices) as pg:
        yield pg


def requested(page, axis: str = "z") -> list[int]:
    """Section indices of the slice images the page asked for, in order."""
    from urllib.parse import parse_qs, urlparse

    out = []
    for u in page.slices:
        q = parse_qs(urlparse(u).query)
        if q["axis"][0] == axis:
            out.append(int(q["index"][0]))
    return out


def screen_of(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of voxel (x, y) in the fitted xy view (0.97 of the tighter side)."""
    box = page.locator("#slice-canvas").bounding_box()
    _, ny, nx = SHAPE
    zoom = min(box["width"] / nx, box["height"] / ny) * 0.97
    ox = (box["width"] - nx * zoom) / 2
    oy = (box["height"] - ny * zoom) / 2
    return box["x"] + ox + (x + 0.5) * zoom, box["y"] + oy + (y + 0.5) * zoom


def open_section(page, sel: str):
    """Unfold a side panel section (whatever state an earlier test left it in)."""
    page.locator(sel).evaluate("d => { d.open = true; }")


def shown(page, value: str):
    expect(page.locator("#slice-wrap")).to_have_attribute("data-shown", value)


def drawn(page, what: str, n: int):
    expect(page.locator("#slice-wrap")).to_have_attribute(f"data-drawn-{what}", str(n))


MID = SHAPE[0] // 2
CLICKS = [(20.0, 30.0), (60.0, 50.0), (90.0, 20.0)]  # voxels (x, y) on section MID


def test_add_a_tomogram_and_step_through_its_sections(page, server, tomogram_path):
    page.goto(server["url"] + "/#/tomograms")
    expect(page.locator("#tomo-empty")).to_be_visible()
    page.fill("#add-tomo-path", str(tomogram_path))
    page.fill("#add-tomo-name", "TS_01")
    page.click("#add-tomo-form button[type=submit]")
    row = page.locator("#tomo-table tbody tr[data-tomogram='1']")
    expect(row).to_contain_text("TS_01")
    expect(row).to_contain_text(f"{SHAPE[2]}×{SHAPE[1]}×{SHAPE[0]}")
    # It opens on the middle section, fitted.
    shown(page, f"z:{MID}")
    expect(page.locator("#tomo-pos")).to_contain_text(f"z {MID} / {SHAPE[0] - 1}")
    before = page.locator("#slice-canvas").screenshot()
    page.locator("#slice-wrap").focus()
    page.keyboard.press("ArrowUp")
    shown(page, f"z:{MID + 1}")
    assert MID + 1 in requested(page)
    assert page.locator("#slice-canvas").screenshot() != before
    page.keyboard.press("PageDown")
    shown(page, f"z:{MID - 9}")
    page.keyboard.press("Shift+ArrowUp")
    shown(page, f"z:{MID + 1}")
    page.keyboard.press("ArrowDown")
    shown(page, f"z:{MID}")
    # Stepping back never asks for a section already shown (the page keeps it).
    idx = requested(page)
    assert idx.count(MID) == 1 and idx.count(MID + 1) == 1, idx
    # The neighbours were fetched ahead of the steps.
    assert {MID + 2, MID - 1} <= set(idx), idx
    # xz view: rows are z, the slider runs over y.
    page.click("#tomo-axis button[data-axis=y]")
    shown(page, f"y:{SHAPE[1] // 2}")
    expect(page.locator("#tomo-index-max")).to_have_text(f"/ {SHAPE[1] - 1}")
    page.click("#tomo-axis button[data-axis=z]")
    shown(page, f"z:{MID}")
    assert not page.errors


def test_define_a_class_and_place_three_particles_by_clicks(page, server):
    page.fill("#labeler", "alice")
    page.press("#labeler", "Enter")
    page.fill("#add-class-name", "ribosome")
    page.fill("#add-class-radius", str(RADIUS_A))
    page.click("#add-class-form button[type=submit]")
    expect(page.locator("#class-list li[data-class=ribosome]")).to_have_class("current")
    for x, y in CLICKS:
        page.mouse.click(*screen_of(page, x, y))
    expect(page.locator("#tomo-save")).to_have_text("all saved ✓")
    drawn(page, "annotations", 3)
    rows = sorted(api(page, "/api/tomograms/1/annotations"), key=lambda a: a["x"])
    assert len(rows) == 3
    for row, (x, y) in zip(rows, CLICKS, strict=True):
        assert row["class"] == "ribosome" and row["labeler"] == "alice"
        assert row["z"] == MID
        assert abs(row["x"] - x) < 0.3 and abs(row["y"] - y) < 0.3, (row, x, y)
    # Each is drawn where its sphere (radius 5 voxels) cuts the section: 4 sections away
    # still, 5 away no more.
    page.locator("#slice-wrap").focus()
    for _ in range(4):
        page.keyboard.press("ArrowUp")
    shown(page, f"z:{MID + 4}")
    drawn(page, "annotations", 3)
    page.keyboard.press("ArrowUp")
    shown(page, f"z:{MID + 5}")
    drawn(page, "annotations", 0)
    assert not page.errors


def test_particles_are_there_after_a_reload(page, server):
    page.reload()
    shown(page, f"z:{MID}")
    drawn(page, "annotations", 3)
    expect(page.locator("#class-list li[data-class=ribosome] .count")).to_have_text("3")
    expect(page.locator("#tomo-ann-count")).to_have_text("3 particles annotated")


def test_drag_moves_delete_removes_and_ctrl_z_undoes_on_the_server(page, server):
    x, y = CLICKS[1]
    start = screen_of(page, x, y)
    end = screen_of(page, x + 8, y + 6)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    page.mouse.move(*end)
    page.mouse.up()
    expect(page.locator("#tomo-save")).to_have_text("all saved ✓")

    def near(px, py):
        rows = api(page, "/api/tomograms/1/annotations")
        return [a for a in rows if abs(a["x"] - px) < 0.3 and abs(a["y"] - py) < 0.3]

    (row,) = near(x + 8, y + 6)
    assert row["z"] == MID and not near(x, y)
    # The dragged particle is selected: Delete removes it.
    page.locator("#slice-wrap").focus()
    page.keyboard.press("Delete")
    drawn(page, "annotations", 2)
    expect(page.locator("#tomo-save")).to_have_text("all saved ✓")
    assert len(api(page, "/api/tomograms/1/annotations")) == 2
    # Ctrl+Z brings it back where it was dragged to; again, and the move is undone too.
    page.keyboard.press("Control+z")
    drawn(page, "annotations", 3)
    expect(page.locator("#toast")).to_contain_text("Undone")
    expect(page.locator("#tomo-save")).to_have_text("all saved ✓")
    assert len(near(x + 8, y + 6)) == 1
    page.keyboard.press("Control+z")
    expect(page.locator("#toast")).to_contain_text("Undone: the last move")
    expect(page.locator("#tomo-save")).to_have_text("all saved ✓")
    rows = sorted(api(page, "/api/tomograms/1/annotations"), key=lambda a: a["x"])
    got = [v for r in rows for v in (r["x"], r["y"])]
    assert got == pytest.approx([v for xy in CLICKS for v in xy], abs=0.3)
    assert not page.errors


def test_export_relion5_star_holds_the_clicks_in_centred_angstrom(page, server, tmp_path):
    import starfile

    open_section(page, "#sec-export")
    page.select_option("#ex-what", "annotations")
    page.select_option("#ex-format", "relion5")
    with page.expect_download() as dl:
        page.click("#ex-download")
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(path)
    assert path.suffix == ".star"
    table = starfile.read(path)
    if isinstance(table, dict):
        table = next(iter(table.values()))
    table = table.sort_values("rlnCenteredCoordinateXAngst")
    nz, ny, nx = SHAPE
    want_x = [(x - nx / 2) * VOXEL_A for x, _ in CLICKS]
    want_y = [(y - ny / 2) * VOXEL_A for _, y in CLICKS]
    assert list(table["rlnCenteredCoordinateXAngst"]) == pytest.approx(want_x, abs=3)
    assert list(table["rlnCenteredCoordinateYAngst"]) == pytest.approx(want_y, abs=3)
    assert list(table["rlnCenteredCoordinateZAngst"]) == pytest.approx(
        [(MID - nz / 2) * VOXEL_A] * 3
    )
    assert set(table["rlnTomoName"]) == {"TS_01"}
    # RELION 4 without the tilt series' pixel size is refused in the page, not downloaded.
    page.select_option("#ex-format", "relion4")
    page.click("#ex-download")
    expect(page.locator("#toast")).to_contain_text("RELION 4 needs")
    assert not page.errors


def by_xyz(points: np.ndarray) -> np.ndarray:
    """Rows sorted by x, then y, then z (to compare point sets)."""
    return points[np.lexsort(points.T[::-1])]


def on_section(picks, z: int, threshold: float) -> int:
    """Picks the page draws on section z: above the threshold, not rejected, sphere cuts z."""
    r = RADIUS_A / VOXEL_A
    return sum(
        p["score"] >= threshold and p["status"] == "pending" and abs(p["z"] - z) < r for p in picks
    )


def test_train_a_tiny_picker_predict_and_review_with_the_threshold(page, server):
    page.goto(server["url"] + "/#/tomograms/1")
    shown(page, f"z:{MID}")
    open_section(page, "#sec-train")
    page.fill("#pt-epochs", "2")
    page.fill("#pt-samples", "8")
    page.fill("#pt-patch", "24")
    page.fill("#pt-channels", "4,8")  # a tiny network: the test is about the page
    page.click("#pt-start")
    job = page.locator("#pt-job .job")
    expect(job).to_be_visible()
    expect(job).to_have_attribute("data-state", "done", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#pt-loss")).to_be_visible()  # the loss of each epoch, drawn
    (picker,) = api(page, "/api/pickers")
    assert picker["status"] == "ready" and picker["classes"] == ["ribosome"]
    # Predict on the open tomogram (checked by default) with the new picker.
    expect(page.locator("#pp-picker")).to_have_value(str(picker["id"]))
    expect(page.locator("#pp-tomos input[value='1']")).to_be_checked()
    page.click("#pp-start")
    job = page.locator("#pp-job .job")
    expect(job).to_have_attribute("data-state", "done", timeout=JOB_TIMEOUT_MS)
    picks = api(page, "/api/tomograms/1/picks")["picks"]
    assert picks, "the picker found nothing"
    expect(page.locator("#review-count")).to_contain_text(f"of {len(picks)} picks")

    # The threshold slider filters the list and the drawing live.
    scores = sorted(p["score"] for p in picks)
    t = round(scores[len(scores) // 2], 2)
    page.locator("#review-threshold").fill(str(t))
    above = sum(p["score"] >= t for p in picks)
    expect(page.locator("#review-count")).to_contain_text(
        f"{above} of {len(picks)} picks ≥ {t:.2f}"
    )
    page.locator("#slice-wrap").focus()
    page.keyboard.press("n")  # the best pick: its section is shown
    best = max(picks, key=lambda p: (p["score"], -p["id"]))
    z = math.floor(best["z"] + 0.5)  # as the page rounds (Math.round), not half to even
    shown(page, f"z:{z}")
    expect(page.locator("#review-selected")).to_contain_text(f"Pick {best['id']}")
    page.keyboard.press("Escape")  # a selected pick is drawn whatever its score
    page.keyboard.press("f")
    drawn(page, "picks", on_section(picks, z, t))
    page.locator("#review-threshold").fill("1")
    drawn(page, "picks", on_section(picks, z, 1.0))
    page.locator("#review-threshold").fill("0")
    drawn(page, "picks", on_section(picks, z, 0.0))
    assert on_section(picks, z, 0.0) > on_section(picks, z, 1.0)

    # a accepts the selected pick: it becomes an annotation (source "pick").
    n_before = len(api(page, "/api/tomograms/1/annotations"))
    page.keyboard.press("n")
    expect(page.locator("#review-selected")).to_contain_text(f"Pick {best['id']}")
    page.keyboard.press("a")
    expect(page.locator("#review-count")).to_contain_text("1 accepted")
    anns = api(page, "/api/tomograms/1/annotations")
    assert len(anns) == n_before + 1
    assert [a["pick_id"] for a in anns if a["source"] == "pick"] == [best["id"]]
    # Precision/recall/F1 against the hand-placed particles.
    expect(page.locator("#review-eval-table tr[data-class=ribosome]")).to_be_visible()
    assert not page.errors


def test_copick_project_adds_its_runs_and_takes_the_particles(page, server, tomogram_path):
    copick = pytest.importorskip("copick")
    config = copick_project(tomogram_path.parent.parent / "copick", runs=("TS_1", "TS_2"))
    page.goto(server["url"] + "/#/tomograms/1")
    page.fill("#add-tomo-path", str(config))
    expect(page.locator("#add-tomo-copick")).to_be_visible()  # voxel spacing, type if needed
    page.click("#add-tomo-form button[type=submit]")
    for run in ("TS_1", "TS_2"):
        expect(page.locator("#tomo-table tbody tr", has_text=run)).to_contain_text("copick")
    shown(page, "z:6")  # the first run opens: 28 x 24 x 12 voxels
    expect(page.locator("#tomo-pos")).to_contain_text("z 6 / 11")

    # The hand-placed particles of TS_01 go into the project as copick picks.
    page.goto(server["url"] + "/#/tomograms/1")
    shown(page, f"z:{MID}")
    open_section(page, "#sec-export")
    page.select_option("#ex-what", "annotations")
    page.fill("#ex-copick-config", str(config))
    page.fill("#ex-copick-user", "alice")
    page.click("#ex-copick-form button[type=submit]")
    expect(page.locator("#ex-result")).to_contain_text("Written to")
    anns = api(page, "/api/tomograms/1/annotations")
    run = copick.from_file(str(config)).get_run("TS_01")
    (picks,) = run.get_picks(object_name="ribosome", user_id="alice", session_id="0")
    points, _ = picks.numpy()  # Å
    want = np.array([[a["x"], a["y"], a["z"]] for a in anns]) * VOXEL_A
    np.testing.assert_allclose(by_xyz(points[:, :3]), by_xyz(want), atol=1e-3)
    assert not page.errors
