"""SerialEM navigator export: written, parsed back, keys SerialEM needs present."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.errors import InputError
from cryoscout.io.navigator import POINT_KEYS, read_navigator, write_navigator


@pytest.fixture
def targets() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "stage_x_um": rng.uniform(-900, 900, 7),
            "stage_y_um": rng.uniform(-900, 900, 7),
        }
    )


def test_round_trip_keeps_items_and_stage_positions(tmp_path, targets):
    labels = [f"R{i + 1:02d}-GS{1000 + i}" for i in range(len(targets))]
    notes = [f"rank {i + 1}, overall 3.{i}" for i in range(len(targets))]
    path = write_navigator(tmp_path / "t.nav", targets, labels=labels, notes=notes)

    text = path.read_text()
    assert text.startswith("AdocVersion = 2.00\n")
    items = read_navigator(path)
    assert len(items) == len(targets)
    assert [it["label"] for it in items] == labels
    for item, (_, row), note in zip(items, targets.iterrows(), notes, strict=True):
        for key in POINT_KEYS:
            assert key in item, key
        assert item["Type"] == "0" and item["NumPts"] == "1"
        sx, sy, sz = (float(v) for v in item["StageXYZ"].split())
        assert sx == pytest.approx(row.stage_x_um, abs=1e-3)
        assert sy == pytest.approx(row.stage_y_um, abs=1e-3)
        assert sz == 0.0
        # the point's single vertex is its stage position
        assert float(item["PtsX"]) == pytest.approx(sx)
        assert float(item["PtsY"]) == pytest.approx(sy)
        assert item["Note"] == note
    ids = [it["MapID"] for it in items]
    assert len(set(ids)) == len(ids)
    assert len({it["GroupID"] for it in items}) == 1


def test_labels_are_cleaned_and_made_unique(tmp_path, targets):
    two = targets.iloc[:3]
    write_navigator(tmp_path / "t.nav", two, labels=["a b", "a b", "a_b"], acquire=True)
    items = read_navigator(tmp_path / "t.nav")
    labels = [it["label"] for it in items]
    assert len(set(labels)) == 3
    assert all(" " not in lb for lb in labels)
    assert all(it["Acquire"] == "1" for it in items)


def test_default_labels_are_ranks(tmp_path, targets):
    write_navigator(tmp_path / "t.nav", targets)
    assert [it["label"] for it in read_navigator(tmp_path / "t.nav")] == [
        str(i + 1) for i in range(len(targets))
    ]


def test_nan_stage_positions_are_refused(tmp_path, targets):
    bad = targets.copy()
    bad.loc[2, "stage_x_um"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_navigator(tmp_path / "t.nav", bad)
    assert not (tmp_path / "t.nav").exists()


def test_read_rejects_non_navigator(tmp_path):
    p = tmp_path / "x.nav"
    p.write_text("hello\n")
    with pytest.raises(InputError, match="navigator"):
        read_navigator(p)
