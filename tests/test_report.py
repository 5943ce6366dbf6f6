"""The screening report: one self-contained HTML file with every square in it."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cryoscout.report.html import SCORES, write_report


class _Page(HTMLParser):
    """Collects the attributes that could point outside the file, and table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.body_rows = 0
        self._in_tbody = False
        self.ids: set[str] = set()
        self.anchors: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "action", "data") and value is not None:
                self.refs.append((tag, name, value))
            if name == "id" and value:
                self.ids.add(value)
        if tag == "tbody":
            self._in_tbody = True
        if tag == "tr" and self._in_tbody:
            self.body_rows += 1
        if tag == "a":
            self.anchors += [v for k, v in attrs if k == "href" and v]

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False


def _inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    stack = rng.normal(1.0, 0.2, (n, 32, 32)).astype(np.float32)
    scores = pd.DataFrame(rng.uniform(0, 4, (n, 5)), columns=list(SCORES))
    scores.insert(0, "square_id", np.arange(n))
    scores["full"] = (np.arange(n) % 5 != 0).astype(int)
    scores["stage_x_um"] = rng.uniform(-900, 900, n)
    scores["stage_y_um"] = rng.uniform(-900, 900, n)
    order = np.lexsort((-scores["overall"].to_numpy(), -scores["full"].to_numpy()))
    rank = np.empty(n, int)
    rank[order] = np.arange(1, n + 1)
    scores["rank"] = rank
    scores["target"] = (scores["rank"] <= 3) & (scores["full"] == 1)
    attention = {
        k: rng.uniform(0.01, 0.99, (n, 32, 32)).astype(np.float32)
        for k in ("cracking", "contamination")
    }
    buf = io.BytesIO()
    Image.fromarray((rng.random((60, 80)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue(), scores, stack, attention


@pytest.mark.parametrize("n, detail_k", [(9, 12), (40, 4)])
def test_report_is_self_contained_with_a_row_per_square(tmp_path, n, detail_k):
    overview, scores, stack, attention = _inputs(n)
    path = write_report(
        tmp_path / "report.html",
        overview,
        scores,
        stack,
        attention,
        input_path="/data/grid1/Atlas.dm",
        model="default-model v1",
        detail_k=detail_k,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    text = path.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "@import" not in text
    page = _Page()
    page.feed(text)
    assert page.body_rows == n
    for tag, name, value in page.refs:
        # images are embedded; links only jump inside the page
        assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:40])
    for href in page.anchors:
        assert href[1:] in page.ids
    # every embedded image decodes as a PNG
    uris = [v for _, _, v in page.refs if v.startswith("data:")]
    for uri in uris:
        img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True)))
        assert img.format == "PNG"
        img.load()
    # overview + one thumbnail per row + (square + 2 overlays) per detailed square
    shown = min(n, 2 * detail_k)
    assert len(uris) == 1 + n + 3 * shown
    assert "/data/grid1/Atlas.dm" in text and "default-model v1" in text


def test_table_rows_follow_rank_and_mark_targets_and_partials(tmp_path):
    overview, scores, stack, attention = _inputs(15, seed=2)
    text = write_report(tmp_path / "r.html", overview, scores, stack, attention).read_text()
    body = text[text.index("<tbody>") : text.index("</tbody>")]
    rows = re.findall(r"<tr(?: class=\"([^\"]*)\")?><td>(\d+)</td>", body)
    assert [int(r) for _, r in rows] == list(range(1, 16))
    by_rank = scores.set_index("rank")
    for cls, r in rows:
        row = by_rank.loc[int(r)]
        assert ("target" in cls) == bool(row["target"])
        assert ("partial" in cls) == (row["full"] == 0)


def test_worst_detail_squares_are_full_ones(tmp_path):
    _, scores, stack, attention = _inputs(30, seed=4)
    text = write_report(tmp_path / "r.html", None, scores, stack, attention, detail_k=3).read_text()
    shown = [int(i) for i in re.findall(r'<div class="card" id="sq(\d+)"', text)]
    assert len(shown) == 6
    assert set(scores.loc[shown[:3], "rank"]) == {1, 2, 3}
    assert (scores.loc[shown[3:], "full"] == 1).all()
    assert "Atlas overview" not in text


def test_report_without_attention_or_images(tmp_path):
    _, scores, _, _ = _inputs(5)
    text = write_report(tmp_path / "r.html", None, scores, None, {}).read_text()
    assert text.count("<tr") == 6  # header + 5
    assert "data:image" not in text


def test_mismatched_lengths_are_refused(tmp_path):
    overview, scores, stack, attention = _inputs(6)
    with pytest.raises(ValueError):
        write_report(tmp_path / "r.html", overview, scores, stack[:5], attention)
    assert not (tmp_path / "r.html").exists()
