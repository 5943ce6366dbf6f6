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


def _cards(text: str) -> dict[int, str]:
    """Row index -> the HTML of its card."""
    parts = re.split(r'(?=<div class="card[^"]*" id="sq\d+")', text)
    return {int(re.match(r'<div class="card[^"]*" id="sq(\d+)"', p).group(1)): p for p in parts[1:]}


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
    # overview + a thumbnail per row + per card: the square and one overlay per predicted defect
    cards = _cards(text)
    targets = set(np.flatnonzero(scores["target"]))
    assert targets <= set(cards)
    overlays = sum(
        int(scores.loc[i, "cracking"] >= 1) + int(scores.loc[i, "contamination"] >= 1)
        for i in cards
    )
    assert len(uris) == 1 + n + len(cards) + overlays
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


def test_cards_are_the_targets_and_the_worst_full_squares_and_say_why(tmp_path):
    _, scores, stack, attention = _inputs(30, seed=4)
    text = write_report(tmp_path / "r.html", None, scores, stack, attention, detail_k=3).read_text()
    cards = _cards(text)
    targets = sorted(np.flatnonzero(scores["target"]), key=lambda i: scores.loc[i, "rank"])
    shown = list(cards)
    assert shown[: len(targets)] == targets
    # each target card carries its rank in the badge
    for i in targets:
        assert f'<span class="badge">{scores.loc[i, "rank"]}</span>' in cards[i]
    worst = shown[len(targets) :]
    full_others = scores[(scores["full"] == 1) & ~scores["target"]].sort_values("rank")
    assert worst == list(full_others.index[-3:])
    assert f"Cards show the {len(targets)} targets and the 3 lowest-ranked full squares" in text
    assert f"({len(targets) + 3} of the 30 squares)" in text
    assert "Atlas overview" not in text


def test_overlays_only_for_predicted_defects_on_one_scale(tmp_path):
    n, s = 8, 32
    stack = np.ones((n, s, s), np.float32)  # identical squares: colours differ only by attention
    stack[:, :4] = 0  # a bar, so the squares are not constant
    scores = pd.DataFrame({k: np.full(n, 0.5) for k in SCORES})
    scores["overall"] = np.linspace(3.9, 0.1, n)
    scores.insert(0, "square_id", np.arange(n) + 100)
    scores["rank"] = np.arange(1, n + 1)
    scores["full"] = 1
    scores["target"] = scores["rank"] <= 2
    scores.loc[5, "cracking"] = 2.2  # a predicted crack
    scores.loc[6, "contamination"] = 1.0  # just at the threshold
    scores.loc[7, "contamination"] = 0.99  # just below
    crack = np.full((n, s, s), 0.95, np.float32)
    crack[5, 10:20, :] = 0.80  # square 5: structure in the opening
    crack[6, :, :] = 0.90  # square 6: a flat map at another level
    crack[0, :16] = 1.0  # other squares widen the atlas' range beyond square 5's own
    crack[7, :16] = 0.7
    cont = np.full((n, s, s), 0.97, np.float32)
    text = write_report(
        tmp_path / "r.html",
        None,
        scores,
        stack,
        {"cracking": crack, "contamination": cont},
        detail_k=6,
    ).read_text()
    cards = _cards(text)
    assert set(cards) == set(range(8))
    for i, card in cards.items():
        has_crack = 'alt="cracking attention' in card
        has_cont = 'alt="contamination attention' in card
        assert has_crack == (i == 5), i
        assert has_cont == (i == 6), i
    # flat is said where the map has no structure inside the opening
    assert "cracking attention (flat" not in cards[5]
    assert "contamination attention (flat: nothing singled out)" in cards[6]
    assert "contamination 1.0 predicted, but its map is flat" in cards[6]
    assert "cracked (cracking 2.2)" in cards[5]
    assert "no cracking or contamination predicted, so no overlay" in cards[7]
    # one scale for every square: the legend shows the range over all squares' maps
    from cryoscout.screening.explain import attention_range

    lo, hi = attention_range(crack)
    assert f"{lo:.3f}" in text and f"{hi:.3f}" in text
    # and the colour of attention 0.95 is the same on square 5 as on the other squares
    # of this atlas, whatever the square's own range: compare against the direct drawing
    from cryoscout.screening.explain import attention_overlay

    uri = re.findall(r'<img alt="cracking attention[^"]*" src="([^"]+)"', cards[5])[0]
    png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")
    drawn = np.asarray(png).astype(int)
    shared = attention_overlay(stack[5], crack[5], lo, hi).astype(int)
    own = attention_overlay(stack[5], crack[5], *attention_range(crack[5])).astype(int)
    assert np.abs(drawn - shared).mean() < 4  # palette rounding only
    assert np.abs(drawn - own).mean() > 10


def test_scale_legend_explains_each_score_and_a_fractional_prediction(tmp_path):
    _, scores, stack, attention = _inputs(12, seed=5)
    text = write_report(tmp_path / "r.html", None, scores, stack, attention).read_text()
    assert "What the scores mean (0-4)" in text
    for name in SCORES:
        assert f"<b>{name}</b>" in text
    assert "a cracking of 0.7 lies between 0 (no crack) and 1 (a short crack)" in text
    assert "one crack across the square" in text  # what 2 means, from the rubric
    targets = scores[scores["target"]]
    lo, hi = targets["cracking"].min(), targets["cracking"].max()
    assert f"targets score cracking {lo:.2f}-{hi:.2f}" in text


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
