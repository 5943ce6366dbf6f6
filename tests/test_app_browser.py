"""The app in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

One small simulated EPU atlas, the real server (uvicorn on a free loopback port, background
jobs in their worker process), and the page as a user works it: open the project and an
atlas, label squares with the keyboard, reload, ask for suggestions, retrain, export targets.
The tests run in file order and share one server and one browser page.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest

from browser_support import api, open_page, require_browser, serve

require_browser()

from playwright.sync_api import expect  # noqa: E402

ATTRS = ("brightness", "squareness", "cracking", "contamination", "overall")
# Generous: the machine running the suite may be shared and slow.
JOB_TIMEOUT_MS = 240_000
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def atlas_path(tmp_path_factory) -> Path:
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas, write_simulated_atlas

    root = tmp_path_factory.mktemp("browser_data")
    sim = simulate_atlas(
        AtlasConfig(tiles_x=2, tiles_y=2, tile_size=512, crack_rate=0.3, contamination_rate=0.3),
        seed=7,
    )
    return Path(write_simulated_atlas(sim, root / "grid01", fmt="epu"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, atlas_path):
    """The real app on 127.0.0.1:<free port>, serving a fresh project."""
    project = tmp_path_factory.mktemp("browser_project")
    with serve(project, [atlas_path.parent.parent]) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with open_page(server["url"]) as pg:
        yield pg


def selected_square(page) -> int:
    text = page.locator("#squares-side .detail-head h2").inner_text()
    m = re.search(r"square (\d+)", text)
    assert m, text
    return int(m.group(1))


def test_add_atlas_shows_screening_progress_then_the_cassette_row(page, server, atlas_path):
    page.goto(server["url"] + "/")
    expect(page.locator("#project-name")).to_contain_text(server["project"].name)
    page.fill("#add-atlas-path", str(atlas_path))
    page.fill("#add-atlas-name", "grid01")
    page.click("#add-atlas-form button[type=submit]")
    # While the background job screens it, the row and the job list show a progress bar.
    row = page.locator("#cassette-table tbody tr[data-atlas='1']")
    expect(row).to_contain_text("grid01")
    expect(page.locator("#atlas-jobs .job .bar")).to_have_count(1)
    expect(row.locator(".status")).to_have_text("ready", timeout=JOB_TIMEOUT_MS)
    # The row holds the same figures as the API, and a thumbnail.
    info = api(page, "/api/atlases")[0]
    cells = row.locator("td")
    assert cells.nth(3).inner_text() == str(info["n_full"])
    assert cells.nth(4).inner_text() == str(info["n_good"])
    assert cells.nth(5).inner_text() == f"{info['median_overall']:.2f}"
    expect(row.locator("td.thumb img")).to_have_attribute("src", info["thumbnail_url"])
    assert not page.errors


def test_bad_atlas_path_is_explained_in_the_page(page, server, tmp_path):
    page.goto(server["url"] + "/#/cassette")
    page.fill("#add-atlas-path", str(tmp_path / "no_such_atlas.dm"))
    page.click("#add-atlas-form button[type=submit]")
    expect(page.locator("#toast")).to_contain_text("Not added")
    assert len(api(page, "/api/atlases")) == 1


def test_atlas_view_hover_shows_the_scores_and_click_opens_the_square(page, server):
    page.goto(server["url"] + "/#/cassette")
    page.locator("#cassette-table tbody tr[data-atlas='1']").click()
    expect(page).to_have_url(re.compile(r"#/atlas/1$"))
    meta = api(page, "/api/atlases/1")
    squares = api(page, "/api/atlases/1/squares")["squares"]
    sq = max((s for s in squares if s["full"]), key=lambda s: s["scores"]["overall"])
    # The view fits the overview into the canvas (centred, 0.97 of the tighter side).
    box = page.locator("#overview").bounding_box()
    w, h = meta["overview"]["width"], meta["overview"]["height"]
    zoom = min(box["width"] / w, box["height"] / h) * 0.97
    ox, oy = (box["width"] - w * zoom) / 2, (box["height"] - h * zoom) / 2
    s = meta["overview"]["scale"]
    x = box["x"] + ox + sq["x_px"] * s * zoom
    y = box["y"] + oy + sq["y_px"] * s * zoom
    page.mouse.move(x, y)
    card = page.locator("#hover-card")
    expect(card).to_be_visible()
    expect(card).to_contain_text(f"Square {sq['square_id']}")
    expect(card).to_contain_text(f"{sq['scores']['cracking']:.1f}")
    # Click another square: the detail panel opens it.
    other = next(t for t in squares if t["square_id"] != sq["square_id"] and t["full"])
    page.mouse.click(
        box["x"] + ox + other["x_px"] * s * zoom, box["y"] + oy + other["y_px"] * s * zoom
    )
    expect(page.locator("#atlas-side .detail-head h2")).to_have_text(
        f"grid01 · square {other['square_id']}"
    )
    # Keyboard zoom changes what is drawn.
    before = page.locator("#overview").screenshot()
    page.keyboard.press("+")
    page.wait_for_timeout(200)
    assert page.locator("#overview").screenshot() != before
    assert not page.errors


LABELED: dict[int, dict[str, int]] = {}


def test_label_five_squares_by_keyboard_saved_only_after_the_server_confirms(page, server):
    page.goto(server["url"] + "/#/squares/1")
    page.fill("#labeler", "alice")
    page.press("#labeler", "Enter")
    expect(page.locator("#gallery .cell").first).to_be_visible()
    page.locator("#gallery .cell").first.click()
    first = selected_square(page)

    # Hold the first PUT: the page must show it as saving, not saved.
    held = []
    page.route("**/api/labels", lambda route: held.append(route))
    page.keyboard.press("2")  # brightness = 2
    expect(page.locator("#score-table tr[data-attr=brightness] .label-state")).to_have_text(
        "saving…"
    )
    page.wait_for_timeout(300)
    assert held, "the label was not sent at once"
    expect(page.locator("#score-table tr[data-attr=brightness] .label-state")).to_have_text(
        "saving…"
    )
    for route in held:
        route.continue_()
    page.unroute("**/api/labels")
    expect(page.locator("#score-table tr[data-attr=brightness] .label-state")).to_have_text(
        "saved ✓"
    )
    # The rest of a whole label set: squareness, cracking, contamination, overall; then the
    # page moves on to the next square by itself.
    for key in "4013":
        page.keyboard.press(key)
    LABELED[first] = {"brightness": 2, "squareness": 4, "cracking": 0, "contamination": 1}
    LABELED[first]["overall"] = 3
    expect(page.locator("#squares-side .detail-head h2")).not_to_have_text(
        f"grid01 · square {first}"
    )
    # Four more squares: overall only (o, digit), with j to move on and k/j to come back.
    for value in (4, 1, 0, 2):
        sid = selected_square(page)
        page.keyboard.press("o")
        page.keyboard.press(str(value))  # overall is the last attribute: moves to the next
        LABELED[sid] = {"overall": value}
    page.keyboard.press("k")
    page.keyboard.press("j")
    assert len(LABELED) == 5
    expect(page.locator("#gallery .badge.pending")).to_have_count(0)
    expect(page.locator("#gallery .badge.labeled")).to_have_count(5)
    stored = {s["square_id"]: s["labels"] for s in api(page, "/api/atlases/1/squares")["squares"]}
    for sid, labels in LABELED.items():
        assert stored[sid] == labels, (sid, stored[sid], labels)
    history = api(page, f"/api/labels?atlas_id=1&square_id={first}")
    assert {r["labeler"] for r in history} == {"alice"}

    # u undoes the last label on the server (so it holds after a reload too).
    extra = selected_square(page)
    page.keyboard.press("o")
    page.keyboard.press("4")
    expect(page.locator("#gallery .badge.labeled")).to_have_count(6)
    page.keyboard.press("u")
    expect(page.locator("#toast")).to_contain_text("Undone")
    expect(page.locator("#gallery .badge.labeled")).to_have_count(5)
    stored = {s["square_id"]: s["labels"] for s in api(page, "/api/atlases/1/squares")["squares"]}
    assert not stored[extra].get("overall"), stored[extra]
    assert not page.errors


def test_labels_are_visible_after_a_reload(page, server):
    page.reload()
    expect(page.locator("#gallery .badge.labeled")).to_have_count(5)
    assert page.input_value("#labeler") == "alice"
    sid, labels = next((k, v) for k, v in LABELED.items() if len(v) == 5)
    page.locator(f"#gallery .cell[data-square='{sid}']").click()
    for attr, value in labels.items():
        saved = page.locator(f"#score-table tr[data-attr={attr}] button.saved")
        expect(saved).to_have_text(str(value))


def test_suggest_next_lists_unlabeled_squares_in_the_servers_order(page, server):
    page.click("#suggest-btn")
    expect(page.locator("#gallery .badge.suggest").first).to_be_visible()
    reply = api(page, "/api/suggestions?n=30")
    shown = [int(c.get_attribute("data-square")) for c in page.locator("#gallery .cell").all()[:5]]
    assert shown == [s["square_id"] for s in reply["squares"][:5]]
    assert not set(shown) & set(LABELED)
    assert selected_square(page) == reply["squares"][0]["square_id"]


def test_train_runs_with_live_progress_and_registers_a_model(page, server):
    page.goto(server["url"] + "/#/train")
    page.fill("#train-epochs", "1")
    page.fill("#train-unlabeled", "16")
    page.click("#train-start")
    job = page.locator("#train-job .job")
    expect(job).to_be_visible()
    expect(page.locator("#train-cancel")).to_be_visible()
    # Progress is polled and shown while it runs, then the job is done.
    expect(job).to_have_attribute("data-state", "done", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#train-job .job .bar > i")).to_have_attribute(
        "style", re.compile("width: 100%")
    )
    models = api(page, "/api/models")
    assert len(models) == 3 and models[-1]["current"]  # the shipped network, baseline, new
    rows = page.locator("#models-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("current")
    # Rescoring with the new model follows; the gallery then shows the new model's scores.
    t0 = time.monotonic()
    while time.monotonic() - t0 < JOB_TIMEOUT_MS / 1000:
        if api(page, "/api/atlases/1/squares")["model_id"] == models[-1]["id"] and not any(
            j["state"] in ("queued", "running") for j in api(page, "/api/jobs")
        ):
            break
        time.sleep(1)
    page.goto(server["url"] + "/#/squares/1")
    page.select_option("#gallery-filter", "all")
    page.select_option("#gallery-sort", "overall")
    squares = api(page, "/api/atlases/1/squares")["squares"]
    best = max(squares, key=lambda s: (s["scores"]["overall"], -s["square_id"]))
    first = page.locator("#gallery .cell").first
    expect(first).to_have_attribute("data-square", str(best["square_id"]))
    expect(first.locator(".chip")).to_have_text(f"{best['scores']['overall']:.1f}")
    assert not page.errors


def test_targets_download_nav_that_parses(page, server, tmp_path):
    from cryoscout.io.navigator import read_navigator

    page.goto(server["url"] + "/#/targets")
    expect(page.locator("#targets-summary")).to_contain_text("targets")  # the stored list shown
    page.fill("#targets-k", "5")
    page.click("#targets-form button[type=submit]")
    rows = page.locator("#targets-table tbody tr")
    expect(rows).to_have_count(5)
    # Remove one by hand: it leaves the list, the next best full square fills the top 5.
    removed = int(rows.first.get_attribute("data-square"))
    rows.first.locator("button").click()
    expect(page.locator(f"#targets-table tbody tr[data-square='{removed}']")).to_have_count(0)
    expect(page.locator("#targets-summary")).to_contain_text("1 removed by hand")
    expect(rows).to_have_count(5)
    with page.expect_download() as dl:
        page.click("#dl-nav")
    nav = tmp_path / "targets.nav"
    dl.value.save_as(nav)
    items = read_navigator(nav)
    targets = api(page, "/api/atlases/1/targets")["targets"]
    assert len(items) == len(targets) == 5
    assert removed not in {t["square_id"] for t in targets}
    for item, t in zip(items, targets, strict=True):
        x, y, _ = (float(v) for v in item["StageXYZ"].split())
        assert x == pytest.approx(t["stage_x_um"], abs=0.01)
        assert y == pytest.approx(t["stage_y_um"], abs=0.01)
    with page.expect_download() as dl:
        page.click("#dl-labels")
    labels = tmp_path / "labels.csv"
    dl.value.save_as(labels)
    table = pd.read_csv(labels).set_index("square_id")
    assert sorted(table.index) == sorted(LABELED)
    for sid, given in LABELED.items():
        row = table.loc[sid]
        assert {a: int(row[a]) for a in given} == given
        assert row[[a for a in row.index if a not in given and a in ATTRS]].isna().all()
    assert not page.errors
