"""Give a trained XCryoNet a tree head and a calibration (reproducible recipe of the default).

1. The network of ``--net`` (a model file or run folder; ``default``: the
   shipped one, without any head it has) scores the squares of ``--head-data``,
   atlases it never trained on, and returns what a tree head reads
   (:func:`cryoscout.screening.head.head_inputs`); one gradient-boosted tree
   ensemble per score is fitted on their labels (``--no-head``: skip, keep the
   network's own scores).
2. The network (+ head) scores ``--calib-data``, more atlases seen by neither,
   and a monotone map per score from predicted to labeled scores is fitted
   (:mod:`cryoscout.screening.calibration`), with a zero point for the scores
   of ``--zero-point`` (default cracking and contamination: squares more
   likely clean than not score exactly 0).
3. The result goes to ``-o`` (and with ``--install`` into the package as the
   default model, ``default_xcryonet.pt`` + ``.json``).

Example (the shipped default, round 7 of ``benchmarks/results/screening_quality.md``: the
stage-4 network of ``train_default_model.py``, its head and calibration fitted on atlases
extracted with the flat field, ``benchmarks/make_screening_data.py`` since round 6, three
seeds averaged; since round 7 the head also reads the crack features, ``--hand lines``, and
predicts overall as an ordinal score, ``--ordinal overall``)::

    $ D=/tmp/s18/ff
    $ python benchmarks/make_screening_data.py -o $D/head_a --atlases 10 --seed 3
    $ python benchmarks/make_screening_data.py -o $D/head_b --atlases 4 --seed 4 \\
        --crack-scale 2.5
    $ python benchmarks/make_screening_data.py -o $D/head_w --atlases 12 --seed 5 --wide
    $ python benchmarks/make_screening_data.py -o $D/head_w2 --atlases 12 --seed 9 --wide
    $ python benchmarks/make_screening_data.py -o $D/head_ld --atlases 6 --seed 22 \\
        --wide --dose 45 90
    $ python benchmarks/make_screening_data.py -o $D/head_w3 --atlases 4 --seed 23 --wide
    $ python benchmarks/make_screening_data.py -o $D/head_w4 --atlases 12 --seed 40 --wide
    $ python benchmarks/make_screening_data.py -o $D/head_ti --atlases 6 --seed 41 --wide \\
        --ice 40 80
    $ python benchmarks/make_screening_data.py -o $D/head_ld2 --atlases 6 --seed 42 \\
        --wide --dose 45 90
    $ python benchmarks/make_screening_data.py -o $D/calib --atlases 4 --seed 2
    $ python benchmarks/make_screening_data.py -o $D/calib_w --atlases 4 --seed 6 --wide
    $ python benchmarks/make_screening_data.py -o $D/calib_w2 --atlases 4 --seed 10 --wide
    $ python benchmarks/make_screening_data.py -o $D/calib_ld --atlases 3 --seed 24 \\
        --wide --dose 45 90
    $ python benchmarks/fit_tree_head.py --net /tmp/s14/net_run2/model.pt --hand lines \\
        --ordinal overall --threads 1 --seeds 3 --head-data $D/head_a/atlas0* $D/head_b/atlas0* \\
        $D/head_w/atlas* $D/head_w2/atlas* $D/head_ld/atlas* $D/head_w3/atlas* \\
        $D/head_w4/atlas* $D/head_ti/atlas* $D/head_ld2/atlas* --calib-data \\
        $D/calib/atlas0* $D/calib_w/atlas0* $D/calib_w2/atlas0* $D/calib_ld/atlas0* \\
        --cache /tmp/s18/cache -o /tmp/s19/o1b.pt --install
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from cryoscout.io.atomic import write_text
from cryoscout.io.squares import read_extraction
from cryoscout.progress import track
from cryoscout.screening.calibration import MonotoneMap
from cryoscout.screening.data import labels_array
from cryoscout.screening.head import HAND_FEATURES, TreeHead
from cryoscout.screening.model import SCORES
from cryoscout.screening.predict import ScoringModel, load_model, save_model

MODELS = Path(__file__).resolve().parents[1] / "src" / "cryoscout" / "models"


def scored(model: ScoringModel, folders: list[Path], hand: str | None, cache: Path | None):
    """Scores (and head inputs of ``hand``) of every labeled square of ``folders``, and labels.

    With ``cache``, each folder's head inputs are kept there (keyed by model and folder).
    """
    scores, feats, labels = [], [], []
    for folder in track(folders, "scoring atlases", unit="atlas"):
        key = hashlib.sha1(f"{model.source}\n{folder.resolve()}".encode()).hexdigest()[:12]
        path = cache / f"head_inputs_{hand}_{key}.npz" if cache and hand else None
        if path is not None and path.is_file():
            saved = np.load(path)
            scores.append(saved["scores"])
            feats.append(saved["inputs"])
            labels.append(saved["labels"])
            continue
        ext = read_extraction(folder)
        pred = model.predict(ext.stack, attention=False, head_inputs=hand or False)
        lab = labels_array(ext.table, ext.labels, folder / "labels.csv")
        keep = ~np.isnan(lab).all(axis=1)
        scores.append(pred.scores[list(SCORES)].to_numpy()[keep])
        labels.append(lab[keep])
        if hand:
            feats.append(pred.head_inputs[keep])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, scores=scores[-1], inputs=feats[-1], labels=labels[-1])
    return (
        np.concatenate(scores),
        np.concatenate(feats) if hand else None,
        np.concatenate(labels),
    )


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="default", help="Model file or run folder; 'default'.")
    p.add_argument("--head-data", nargs="+", type=Path, default=[], help="Head's atlases.")
    p.add_argument("--calib-data", nargs="+", type=Path, default=[], help="Calibration atlases.")
    p.add_argument("--no-head", action="store_true", help="Calibrate the network alone.")
    p.add_argument("--zero-point", nargs="*", choices=SCORES, default=["cracking", "contamination"],
                   help="Scores whose calibration has a zero point (none: no value).")  # fmt: skip
    p.add_argument("--hand", choices=HAND_FEATURES, default="all", help="Hand-made features.")
    p.add_argument("--ordinal", nargs="*", choices=SCORES, default=[],
                   help="Scores fitted as ordinal (one classifier per level).")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="Ensembles to average (seeds from --seed).")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    p.add_argument("--cache", type=Path, help="Folder caching the head inputs.")
    p.add_argument("-o", "--out", type=Path, required=True, help="Model file to write.")
    p.add_argument("--install", action="store_true", help="Also make it the default model.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    source = load_model(None if args.net == "default" else args.net)
    if getattr(source, "net", None) is None:
        p.error(
            f"{args.net} has no network ({source.kind}): a tree head reads a network's features"
        )
    head_keys = ("head_fit", "calibration_fit", "head_recipe", "head_seconds")
    meta = {k: v for k, v in source.meta.items() if k not in head_keys}
    net_only = ScoringModel(source.net, meta, source=source.source)

    head = None
    record: dict = {}
    if not args.no_head:
        _, inputs, labels = scored(net_only, args.head_data, args.hand, args.cache)
        head = TreeHead.fit(inputs, labels, seed=args.seed, hand=args.hand, n_seeds=args.seeds,
                            ordinal=tuple(args.ordinal))  # fmt: skip
        record["head_fit"] = {
            "data": [str(f) for f in args.head_data],
            "n_labeled": len(labels),
            "n_inputs": head.n_inputs,
            "hand": head.hand,
            "ordinal": list(head.ordinal),
            "trees": {s: head.trees[s].n_trees for s in SCORES},
            "seed": args.seed,
            "seeds": args.seeds,
        }
    model = ScoringModel(source.net, meta, source=source.source, head=head)
    calibration = {}
    if args.calib_data:
        pred, _, labels = scored(model, args.calib_data, None, None)
        calibration = {
            s: MonotoneMap.fit(pred[:, j], labels[:, j], zero_point=s in args.zero_point)
            for j, s in enumerate(SCORES)
        }
        record["calibration_fit"] = {
            "data": [str(f) for f in args.calib_data],
            "n_labeled": len(labels),
            "breakpoints": {s: len(m.x) for s, m in calibration.items()},
            "zero_below": {s: m.zero_below for s, m in calibration.items() if s in args.zero_point},
        }
    record["head_seconds"] = round(time.perf_counter() - start, 1)
    extra = {k: v for k, v in meta.items() if k not in ("variant", "size", "width",
             "normalisation", "cryoscout_version")}  # fmt: skip
    extra["head_recipe"] = (
        f"python benchmarks/fit_tree_head.py --net {args.net}"
        + (" --no-head" if args.no_head else " --head-data " + " ".join(map(str, args.head_data)))
        + ("" if args.no_head else f" --hand {args.hand}")
        + (" --ordinal " + " ".join(args.ordinal) if args.ordinal and not args.no_head else "")
        + (" --calib-data " + " ".join(map(str, args.calib_data)) if args.calib_data else "")
        + (" --zero-point " + " ".join(args.zero_point) if args.calib_data else "")
        + f" --seed {args.seed}"
        + (f" --seeds {args.seeds}" if args.seeds > 1 else "")
    )
    save_model(args.out, source.net, meta["normalisation"], head=head, calibration=calibration,
               **extra, **record)  # fmt: skip
    print(json.dumps(record, indent=1), flush=True)
    if args.install:
        save_model(MODELS / "default_xcryonet.pt", source.net, meta["normalisation"], head=head,
                   calibration=calibration, **extra, **record)  # fmt: skip
        installed = load_model(MODELS / "default_xcryonet.pt").meta
        write_text(MODELS / "default_xcryonet.json", json.dumps(installed, indent=1) + "\n")
        print(f"installed {MODELS / 'default_xcryonet.pt'}")


if __name__ == "__main__":
    main()
