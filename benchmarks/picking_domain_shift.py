"""Picking under domain shift: train on one simulator setting, pick on a very different one.

Domain ``A`` ("home microscope"): SHREC templates 4v94 and 4cr2 at 20 Å, image SNR 0.1,
white noise, 3 µm defocus, no astigmatism, nothing but the annotated particles.
Domains ``B`` and ``C`` ("other microscopes"): half the SNR with noise rising with
frequency (B), or noise falling with frequency (C); other defocus (5 and 2 µm) with
astigmatism (1 and 0.5 µm) and a defocus gradient; residual alignment errors; other
intensity units (x37 + 512, x0.01 - 3); and in both, 30 non-annotated proteins (5mrc,
3d2f, 1u6g, 1qvr, 3cf3), 4 gold beads, 2 vesicles and material entering the field of
view at high tilt.

Domain ``M`` (mixture, training only): every training tomogram its own setting drawn by
``simulate.tomo_domains.draw_domain`` (SNR, noise colour, CTF, alignment errors, units,
distractor counts), with non-annotated proteins of six *other* species (1bxn, 1s3x,
2cg9, 3gl1, 3h84, 3qm1), so the test domains' distractors are unseen species.
Domain ``L`` (training only): M's settings, tomogram by tomogram, whose samples also hold
six complexes each, packed from 6-24 of those species' maps as branching chains
(``simulate.tomo_complexes``), so that it sees negatives as large as its targets (M's are
all under a quarter of 4cr2's mass; B's and C's 5mrc is 2.5 times it). Domain ``K``: the
same with the complexes packed as globules. Domain ``S``: M's settings whose non-annotated
proteins also include both targets enlarged 1.3-1.6 times (size decoys,
``simulate.tomo_decoys``): negatives with a target's shape at a size no target has.

Stages (each writes into ``--out``, so runs can go in parallel and resume)::

    python benchmarks/picking_domain_shift.py simulate --out D --domains A,B,C,M,L,K,S
    python benchmarks/picking_domain_shift.py train --out D --domain A --variant plain
    python benchmarks/picking_domain_shift.py train --out D --domain M --variant neg
    python benchmarks/picking_domain_shift.py train --out D --domain B --variant neg
    python benchmarks/picking_domain_shift.py evaluate --out D      # every model x domain
    python benchmarks/picking_domain_shift.py postprocess --out D   # then evaluate again

``postprocess`` caches every model's segmentation of the validation and test tomograms
(``D/seg/``) and scores post-processing variants on them (``POSTPROCESS``: threshold grid,
per-tomogram threshold, minimum peak volume, MP-NMS isolation test), the same for every
model, into ``D/postprocess.json``; ``evaluate`` then adds them to the results.

``plain``: the geometric augmentation and intensity jitter only; ``random``: plus
appearance randomisation (``picking.data.Appearance``); ``neg``: plain, with a quarter of
the patches centred on distractors (learned negatives); ``neg-random``: both; ``neg-lp``:
``neg`` on tomograms low-passed to the particle scale, at training and prediction. All use the
robust (median/MAD) normalisation. The MP-NMS threshold is chosen on a validation
tomogram of the model's *training* domain, as a user would, never on a test tomogram.

Writes ``D/summary.json`` and ``benchmarks/results/picking_domain_shift.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO.parent / "shared" / "data" / "templates_10A"
CLASSES = ["4v94", "4cr2"]
DISTRACTOR_CLASSES = ["5mrc", "3d2f", "1u6g", "1qvr", "3cf3"]
VOXEL_A = 20.0

_SAMPLE = {  # what both other microscopes' samples hold besides the annotated particles
    "n_distractors": 30,
    "n_fiducials": 4,
    "n_membranes": 2,
    "outside_material": True,
    "defocus_gradient": True,
}
DOMAINS = {
    "A": {"snr": 0.1},
    "B": {
        "snr": 0.05,
        "noise_slope": 1.0,
        "defocus_um": 5.0,
        "astigmatism_um": 1.0,
        "astigmatism_angle_deg": 30.0,
        "alignment_shift_px": 0.5,
        "alignment_rotation_deg": 0.3,
        "intensity_scale": 37.0,
        "intensity_offset": 512.0,
        **_SAMPLE,
    },
    "C": {
        "snr": 0.1,
        "noise_slope": -1.0,
        "defocus_um": 2.0,
        "astigmatism_um": 0.5,
        "astigmatism_angle_deg": -45.0,
        "alignment_shift_px": 1.0,
        "alignment_rotation_deg": 0.5,
        "intensity_scale": 0.01,
        "intensity_offset": -3.0,
        **_SAMPLE,
    },
}
# One factor of domain B at a time on top of domain A (stage ``ablate``): which one costs F1.
FACTORS = {
    "snr 0.05": {"snr": 0.05},
    "noise rising (+1)": {"noise_slope": 1.0},
    "noise falling (-1)": {"noise_slope": -1.0},
    "CTF (5 µm, 1 µm astig., gradient)": {
        "defocus_um": 5.0,
        "astigmatism_um": 1.0,
        "astigmatism_angle_deg": 30.0,
        "defocus_gradient": True,
    },
    "distractors (proteins, gold, vesicles)": {
        "n_distractors": 30,
        "n_fiducials": 4,
        "n_membranes": 2,
    },
    "outside material": {"outside_material": True},
    "alignment errors (1 px, 0.5°)": {"alignment_shift_px": 1.0, "alignment_rotation_deg": 0.5},
    "units x37 + 512": {"intensity_scale": 37.0, "intensity_offset": 512.0},
}
# Domain "M" (mixture): every tomogram its own setting, drawn by
# ``simulate.tomo_domains.draw_domain`` from its default ranges (no test domain's exact
# setting), with non-annotated proteins of *other* species than the test domains', so
# that the test distractors are unseen ones.
MIXTURE = "M"
MIXTURE_DISTRACTOR_CLASSES = ["1bxn", "1s3x", "2cg9", "3gl1", "3h84", "3qm1"]
# Domain "L": the mixture's tomograms (the same settings, tomogram by tomogram) whose
# sample also holds large non-annotated complexes, each tomogram its own, assembled from
# the mixture's six species (``simulate.tomo_complexes``): those species are all under
# a quarter of 4cr2's mass, so M never sees a negative as large as a target.
MIXTURE_COMPLEXES = "L"
# Domain "K": the same with the complexes packed as globules, not branching chains.
MIXTURE_COMPACT = "K"
COMPLEX_PACKING = {MIXTURE_COMPLEXES: "branched", MIXTURE_COMPACT: "compact"}
COMPLEXES_PER_TOMOGRAM = 6
# Domain "S": the mixture's tomograms whose non-annotated proteins also include both
# annotated species enlarged 1.3-1.6 times (size decoys, ``simulate.tomo_decoys``), each
# tomogram its own scales, so that the network sees negatives larger than its targets.
MIXTURE_DECOYS = "S"
MIXTURES = (MIXTURE, MIXTURE_COMPLEXES, MIXTURE_COMPACT, MIXTURE_DECOYS)
# Seeds of each domain's tomograms: training, validation (threshold), test.
# The first validation tomogram is the one stage ``evaluate`` uses; ``postprocess`` also
# pools all three (a threshold chosen on one tomogram's ~30 particles per class is noisy).
SPLITS = {"train": [0, 1, 2], "val": [10, 11, 12], "test": [20, 21]}
MIXTURE_SPLITS = {"train": list(range(12)), "val": [20, 21, 22], "test": []}
SEED_BASE = {
    "A": 1000,
    "B": 2000,
    "C": 3000,
    MIXTURE: 4000,
    MIXTURE_COMPLEXES: 5000,
    MIXTURE_COMPACT: 6000,
    MIXTURE_DECOYS: 7000,
}
# Training variants: appearance randomisation of patches, share of patches centred on
# a distractor (learned negatives).
VARIANTS = {
    "plain": {"appearance": False, "distractor_fraction": 0.0},
    "random": {"appearance": True, "distractor_fraction": 0.0},
    "neg": {"appearance": False, "distractor_fraction": 0.25},
    "neg-random": {"appearance": True, "distractor_fraction": 0.25},
    # Input band-limited to the particle scale at training and prediction (a Gaussian of
    # LOWPASS_SIGMA voxels before normalisation: `pick train --lowpass 30`,
    # cryoscout.picking.lowpass), so the noise above it, whose colour is what differs most
    # between microscopes, never reaches the network.
    "neg-lp": {"appearance": False, "distractor_fraction": 0.25, "lowpass": True},
}
LOWPASS_SIGMA = 1.5  # voxels (30 Å): 4cr2's radius is 6.8 voxels


def _normalization(info) -> dict:
    """A model's normalisation with its input low-pass, which prediction applies.

    Models trained before the low-pass was recorded in the normalisation (as ``pick train
    --lowpass`` does) kept its sigma in ``extra["lowpass_sigma"]``.
    """
    sigma = info.extra.get("lowpass_sigma")
    if sigma and "lowpass_sigma" not in info.normalization:
        return {**info.normalization, "lowpass_sigma": float(sigma)}
    return info.normalization


def mixture_setting(seed: int) -> dict:
    """The simulator setting of mixture tomogram ``seed`` (reproducible)."""
    from cryoscout.simulate.tomo_domains import draw_domain

    return draw_domain(np.random.default_rng([seed, 4]))


def _config(domain: str, shape, particles: int, seed: int | None = None):
    from cryoscout.simulate.tomogram import TomogramConfig, load_templates

    targets = load_templates(TEMPLATES, CLASSES)
    distractors = DISTRACTOR_CLASSES
    if domain in MIXTURES:
        # L's, K's and S's tomogram i is imaged as M's tomogram i.
        opts = mixture_setting(seed - SEED_BASE[domain] + SEED_BASE[MIXTURE])
        distractors = MIXTURE_DISTRACTOR_CLASSES
    elif domain in DOMAINS:
        opts = dict(DOMAINS[domain])
    else:
        opts = {**DOMAINS["A"], **FACTORS[domain]}
    if opts.get("n_distractors"):
        maps = load_templates(TEMPLATES, distractors)
        if domain in COMPLEX_PACKING:
            from cryoscout.simulate.tomo_complexes import complex_maps

            packing = COMPLEX_PACKING[domain]
            maps |= complex_maps(maps, COMPLEXES_PER_TOMOGRAM, [seed, 5], packing=packing)
        if domain == MIXTURE_DECOYS:
            from cryoscout.simulate.tomo_decoys import enlarged_maps

            maps |= enlarged_maps(targets, [seed, 6])
        opts["distractor_templates"] = maps
    return TomogramConfig(
        shape=shape,
        voxel_size_A=VOXEL_A,
        n_particles=particles,
        templates=targets,
        **opts,
    )


def _sim_path(out: Path, domain: str, seed: int) -> Path:
    if domain in FACTORS:
        domain = "A+" + "".join(c if c.isalnum() else "_" for c in domain)
    return out / "sims" / f"{domain}-{seed}.npz"


def simulate(out: Path, domain: str, seeds: list[int], shape, particles: int) -> None:
    """Simulate (once) and cache the tomograms of a domain."""
    from cryoscout.io.atomic import atomic_path
    from cryoscout.simulate.tomogram import simulate_tomogram

    for seed in seeds:
        path = _sim_path(out, domain, seed)
        if path.is_file():
            continue
        cfg = _config(domain, shape, particles, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        sim = simulate_tomogram(cfg, seed=seed)
        distractors = getattr(sim, "distractors", None)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    tomogram=sim.tomogram,
                    particles=sim.particles.to_csv(index=False),
                    distractors=(distractors if distractors is not None else pd.DataFrame()).to_csv(
                        index=False
                    ),
                    radii=json.dumps({str(k): float(v) for k, v in sim.radii.items()}),
                )
        print(f"simulated {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)


def load_sim(out: Path, domain: str, seed: int) -> dict:
    with np.load(_sim_path(out, domain, seed)) as z:
        dis = str(z["distractors"])
        return {
            "tomogram": z["tomogram"],
            "particles": pd.read_csv(io.StringIO(str(z["particles"]))),
            "distractors": pd.read_csv(io.StringIO(dis)) if dis.strip() else pd.DataFrame(),
            "radii": {int(k): v for k, v in json.loads(str(z["radii"])).items()},
        }


def _seeds(domain: str, split: str) -> list[int]:
    splits = MIXTURE_SPLITS if domain in MIXTURES else SPLITS
    return [SEED_BASE[domain] + s for s in splits[split]]


def train(args) -> None:
    import torch

    from cryoscout.picking.data import NORMALIZATION, Appearance, Augmentation, prepare_tomogram
    from cryoscout.picking.module import TrainConfig, train_model
    from cryoscout.picking.weights import PickingModelInfo, save_model

    torch.set_num_threads(args.threads)
    name = f"{args.domain}-{args.variant}" + (f"-{args.tag}" if args.tag else "")
    run = args.out / "models" / name
    if (run / "model.pt").is_file():
        print(f"{name}: already trained", flush=True)
        return
    run.mkdir(parents=True, exist_ok=True)
    sims = [load_sim(args.out, args.domain, s) for s in _seeds(args.domain, "train")]
    radii = sims[0]["radii"]
    label_r = {c: float(max(1, round(args.label_frac * r))) for c, r in radii.items()}
    variant = VARIANTS[args.variant]
    lowpass = LOWPASS_SIGMA if variant.get("lowpass") else 0.0
    tomos = [
        prepare_tomogram(
            s["tomogram"],
            s["particles"],
            label_r,
            distractors=s["distractors"],
            lowpass_sigma=lowpass,
        )
        for s in sims
    ]
    aug = Augmentation(appearance=Appearance() if variant["appearance"] else None)
    cfg = TrainConfig(
        channels=tuple(int(c) for c in args.channels.split(",")),
        coord_mode="tomogram",
        patch_size=args.patch,
        epochs=args.epochs,
        batch_size=4,
        samples_per_epoch=args.samples,
        lr=args.lr,
        seed=args.seed,
        accelerator="cpu",
        augmentation=aug,
        distractor_fraction=variant["distractor_fraction"],
    )
    t0 = time.perf_counter()

    def progress(history: pd.DataFrame) -> None:
        row = history.iloc[-1]
        print(
            f"{name}: epoch {int(row['epoch'])}/{args.epochs} loss {row['train_loss']:.4f} "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )

    model, history = train_model(tomos, len(CLASSES), cfg, on_epoch=progress)
    seconds = time.perf_counter() - t0
    history.to_csv(run / "metrics.csv", index=False)
    info = PickingModelInfo(
        CLASSES,
        label_r,
        args.patch,
        dict(
            NORMALIZATION,
            **({"lowpass_sigma": lowpass, "lowpass_A": lowpass * VOXEL_A} if lowpass else {}),
        ),
        VOXEL_A,
        extra={
            "domain": args.domain,
            "variant": args.variant,
            "patches": args.epochs * args.samples,
            "train_seconds": round(seconds, 0),
            "particle_radius": {str(c): r for c, r in radii.items()},
        },
    )
    save_model(run / "model.pt", model, info)
    print(f"{name}: trained {args.epochs * args.samples} patches in {seconds:.0f} s", flush=True)


def _false_picks(picks: pd.DataFrame, ev) -> pd.DataFrame:
    """The picks that ``ev`` (``evaluate_picks`` of ``picks``) matched to no true centre."""
    matched = set(ev.matches["pick"].astype(int))
    return picks.iloc[[i for i in range(len(picks)) if i not in matched]]


def _distractor_fps(fp_picks: pd.DataFrame, distractors: pd.DataFrame, radii) -> dict[str, int]:
    """False picks that lie on a distractor, by kind (protein, gold, membrane)."""
    out = {"protein": 0, "gold": 0, "membrane": 0, "elsewhere": 0}
    if len(fp_picks) == 0:
        return out
    p = fp_picks[["x", "y", "z"]].to_numpy(float)
    r_pick = np.array([radii[int(c)] for c in fp_picks["class"]])
    on = np.full(len(p), "", dtype=object)
    for _, d in distractors.iterrows() if len(distractors) else []:
        dist = np.linalg.norm(p - np.array([d.x, d.y, d.z], float), axis=1)
        # Within a particle radius of the distractor's surface (membranes: of the shell).
        near = (
            np.abs(dist - d.radius) <= r_pick
            if d.kind == "membrane"
            else dist <= d.radius + 0.5 * r_pick
        )
        on[(on == "") & near] = d.kind
    for kind in ("protein", "gold", "membrane"):
        out[kind] = int((on == kind).sum())
    out["elsewhere"] = int((on == "").sum())
    return out


def evaluate(args) -> None:
    import torch

    from cryoscout.io.atomic import write_text
    from cryoscout.picking.evaluate import evaluate_picks
    from cryoscout.picking.mpnms import mp_nms
    from cryoscout.picking.weights import load_model

    torch.set_num_threads(args.threads)
    thresholds = [float(v) for v in args.thresholds.split(",")]
    classes = list(range(1, len(CLASSES) + 1))
    results = {}
    for run in sorted((args.out / "models").glob("*/model.pt")):
        name = run.parent.name
        cache = run.parent / "eval.json"
        if cache.is_file() and cache.stat().st_mtime > run.stat().st_mtime and not args.force:
            results[name] = json.loads(cache.read_text())
            continue
        model, info = load_model(run)
        home = info.extra["domain"]
        radii = {int(c): float(r) for c, r in info.extra["particle_radius"].items()}

        def segment(sim, model=model, info=info):
            return segment_tomogram(model, info, sim, args)

        val = load_sim(args.out, home, _seeds(home, "val")[0])
        val_labels = segment(val)

        def f1(picks, sim, radii=radii):
            return float(evaluate_picks(picks, sim["particles"], radii).overall["f1"])

        val_f1 = {
            t: f1(mp_nms(val_labels, radii, threshold=t, classes=classes), val) for t in thresholds
        }
        thr = max(thresholds, key=lambda t: (val_f1[t], -t))
        res = {"threshold": thr, "val_f1": {str(k): round(v, 3) for k, v in val_f1.items()}}
        res.update({k: info.extra[k] for k in ("patches", "train_seconds")})
        # False picks on the training domain's own kinds of distractors (for the mixture:
        # the species it was shown as negatives), against those on the test domains'.
        val_picks = mp_nms(val_labels, radii, threshold=thr, classes=classes)
        unmatched = _false_picks(val_picks, evaluate_picks(val_picks, val["particles"], radii))
        res["val_false_picks"] = _distractor_fps(unmatched, val["distractors"], radii)
        res["val_distractors"] = {
            k: int((val["distractors"]["kind"] == k).sum()) if len(val["distractors"]) else 0
            for k in ("protein", "gold", "membrane")
        }
        for domain in DOMAINS:
            counts = {c: {"tp": 0, "fp": 0, "fn": 0} for c in classes}
            fps = {"protein": 0, "gold": 0, "membrane": 0, "elsewhere": 0}
            n_dis = {"protein": 0, "gold": 0, "membrane": 0}
            for seed in _seeds(domain, "test"):
                path = _sim_path(args.out, domain, seed)
                if not path.is_file():
                    continue
                sim = load_sim(args.out, domain, seed)
                picks = mp_nms(segment(sim), radii, threshold=thr, classes=classes)
                ev = evaluate_picks(picks, sim["particles"], radii)
                for c, row in ev.per_class.iterrows():
                    for k in ("tp", "fp", "fn"):
                        counts[int(c)][k] += int(row[k])
                fp_picks = _false_picks(picks, ev)
                for k, v in _distractor_fps(fp_picks, sim["distractors"], radii).items():
                    fps[k] += v
                if len(sim["distractors"]):
                    for k in n_dis:
                        n_dis[k] += int((sim["distractors"]["kind"] == k).sum())
            per = {}
            for c in classes:
                tp, fp, fn = (counts[c][k] for k in ("tp", "fp", "fn"))
                p = tp / (tp + fp) if tp + fp else 0.0
                r = tp / (tp + fn) if tp + fn else 0.0
                per[CLASSES[c - 1]] = {
                    "precision": round(p, 3),
                    "recall": round(r, 3),
                    "f1": round(2 * p * r / (p + r) if p + r else 0.0, 3),
                    "tp": tp,
                    "fp": fp,
                    "fn": fn,
                }
            res[domain] = {"per_class": per, "false_picks": fps, "distractors": n_dis}
        results[name] = res
        write_text(cache, json.dumps(res, indent=1))
        print(name, json.dumps(res), flush=True)
    summary = {
        "machine": f"{platform.node()}: {os.cpu_count()} CPU cores shared with other jobs, no GPU",
        "domains": {k: {kk: vv for kk, vv in v.items()} for k, v in DOMAINS.items()},
        "classes": CLASSES,
        "distractor_classes": DISTRACTOR_CLASSES,
        "splits": SPLITS,
        "results": results,
        "ablation": (
            json.loads((args.out / "ablation.json").read_text())
            if (args.out / "ablation.json").is_file()
            else None
        ),
        "postprocess": (
            json.loads((args.out / "postprocess.json").read_text())
            if (args.out / "postprocess.json").is_file()
            else None
        ),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    write_text(args.out / "summary.json", json.dumps(summary, indent=1))
    if not args.no_results:
        write_text(REPO / "benchmarks" / "results" / "picking_domain_shift.md", _markdown(summary))


def _segment(model, info, sim: dict, args, **options):
    """``predict_tomogram`` on a simulated tomogram, tiled as the options say."""
    from cryoscout.picking.infer import predict_tomogram

    return predict_tomogram(
        model,
        sim["tomogram"],
        tile=args.tile,
        margin=args.margin,
        normalization=_normalization(info),
        progress=False,
        **options,
    )


def segment_tomogram(model, info, sim: dict, args) -> np.ndarray:
    """The network's label map of a simulated tomogram."""
    return _segment(model, info, sim, args).labels


def cached_probabilities(out: Path, name: str, domain: str, seed: int, args) -> np.ndarray:
    """Per-class probabilities ``(classes, z, y, x)`` of model ``name`` on one tomogram.

    Segmentation is deterministic, so it is computed once and kept (float16) under
    ``out/seg/<model>/``; post-processing variants then cost seconds each.
    """
    from cryoscout.io.atomic import atomic_path
    from cryoscout.picking.weights import load_model

    path = out / "seg" / name / (_sim_path(out, domain, seed).stem + ".npy")
    if path.is_file():
        return np.load(path).astype(np.float32)
    model, info = load_model(out / "models" / name / "model.pt")
    sim = load_sim(out, domain, seed)
    prob = _segment(model, info, sim, args, with_probabilities=True).probabilities
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, prob.astype(np.float16))
    return prob


def ablate(args) -> None:
    """F1 of each model on domain A with one factor of domain B added (one test seed)."""
    import torch

    from cryoscout.io.atomic import write_text
    from cryoscout.picking.evaluate import evaluate_picks
    from cryoscout.picking.mpnms import mp_nms
    from cryoscout.picking.weights import load_model

    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.shape.split(","))
    seed = _seeds("A", "test")[0]
    classes = list(range(1, len(CLASSES) + 1))
    models = {}
    for run in sorted((args.out / "models").glob("A-*/model.pt")):
        ev = json.loads((run.parent / "eval.json").read_text())
        models[run.parent.name] = (*load_model(run), ev["threshold"])
    table = {}
    for factor in FACTORS:
        simulate(args.out, factor, [seed], shape, args.particles)
        sim = load_sim(args.out, factor, seed)
        for name, (model, info, thr) in models.items():
            radii = {int(c): float(r) for c, r in info.extra["particle_radius"].items()}
            labels = segment_tomogram(model, info, sim, args)
            ev = evaluate_picks(
                mp_nms(labels, radii, threshold=thr, classes=classes), sim["particles"], radii
            )
            table.setdefault(factor, {})[name] = {
                CLASSES[int(c) - 1]: round(float(r["f1"]), 3) for c, r in ev.per_class.iterrows()
            }
        print(factor, json.dumps(table[factor]), flush=True)
        write_text(args.out / "ablation.json", json.dumps(table, indent=1))


# Post-processing variants (stage ``postprocess``), applied identically to every model on
# its cached segmentations; none uses labels of a test domain. ``grid``: MP-NMS thresholds
# to choose from on the training domain's validation tomogram; ``otsu``: instead, each
# tomogram's own threshold per class (Otsu's, on its candidates' scores above 0.05);
# ``min_volume``: a pick's connected component must hold this share of a label ball;
# ``max_surround``: ``mp_nms``'s isolation test (picks inside a region of their class
# much larger than a particle are dropped); ``per_class``: each class's threshold chosen
# on its own validation F1 (one threshold for all classes otherwise); ``validation``: how
# many of the training domain's validation tomograms it is chosen on, their counts pooled
# (one otherwise).
BASE_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
WIDE_GRID = (*BASE_GRID, 0.6, 0.7, 0.8, 0.9)
POSTPROCESS = {
    "MP-NMS, threshold 0.05-0.5 (as above)": {"grid": BASE_GRID},
    "threshold grid to 0.9": {"grid": WIDE_GRID},
    "threshold per tomogram (Otsu of its scores)": {"otsu": True},
    "min peak volume (half a label ball)": {"grid": BASE_GRID, "min_volume": 0.5},
    "isolation, surround <= 0.3": {"grid": BASE_GRID, "max_surround": 0.3},
    "isolation, surround <= 0.5": {"grid": BASE_GRID, "max_surround": 0.5},
    "isolation, surround <= 0.7": {"grid": BASE_GRID, "max_surround": 0.7},
    "isolation <= 0.5 + grid to 0.9": {"grid": WIDE_GRID, "max_surround": 0.5},
    "threshold per class (grid to 0.9)": {"grid": WIDE_GRID, "per_class": True},
    "threshold per class, three validation tomograms": {
        "grid": WIDE_GRID,
        "per_class": True,
        "validation": 3,
    },
}


def _labels(prob: np.ndarray) -> np.ndarray:
    """The class map (0 = background) of per-class probabilities ``(classes, z, y, x)``."""
    return np.concatenate([1 - prob.sum(0, keepdims=True), prob]).argmax(0)


def _pick(prob: np.ndarray, radii, label_radius, threshold: float | dict, variant: dict):
    """Picks of one cached segmentation (per-class probabilities) under a variant."""
    from scipy import ndimage

    from cryoscout.picking.labels import tball_labels
    from cryoscout.picking.mpnms import mp_nms

    labels = _labels(prob)
    classes = list(range(1, prob.shape[0] + 1))
    if variant.get("otsu"):
        from skimage.filters import threshold_otsu

        cand = mp_nms(labels, radii, threshold=0.05, classes=classes, progress=False)
        keep = np.zeros(len(cand), bool)
        for c in classes:
            sel = (cand["class"] == c).to_numpy()
            if sel.sum() > 1 and np.ptp(cand["score"][sel]) > 0:
                keep[sel] = cand["score"][sel] > threshold_otsu(cand["score"][sel].to_numpy())
            else:
                keep[sel] = True
        return cand[keep].reset_index(drop=True)
    picks = mp_nms(
        labels,
        radii,
        threshold=threshold,
        classes=classes,
        progress=False,
        max_surround=variant.get("max_surround"),
    )
    if variant.get("min_volume") and len(picks):
        keep = np.ones(len(picks), bool)
        for c in classes:
            sel = (picks["class"] == c).to_numpy()
            if not sel.any():
                continue
            comp, _ = ndimage.label(labels == c)
            sizes = np.bincount(comp.ravel())
            r = label_radius[c]
            ball = int(tball_labels((2 * int(r) + 3,) * 3, _centre(int(r) + 1), r).sum())
            z, y, x = (picks.loc[sel, k].to_numpy(int) for k in "zyx")
            keep[sel] = sizes[comp[z, y, x]] >= variant["min_volume"] * ball
        picks = picks[keep].reset_index(drop=True)
    return picks


def _centre(i: int) -> pd.DataFrame:
    return pd.DataFrame({"class": [1], "x": [i], "y": [i], "z": [i]})


def _scores(picks_by_tomo: list, truths: list, radii, classes) -> dict:
    """P / R / F1 per class pooled over tomograms (one-to-one matching within each)."""
    from cryoscout.picking.evaluate import evaluate_picks, stack_tomograms

    ev = evaluate_picks(stack_tomograms(picks_by_tomo), stack_tomograms(truths), radii)
    out = {}
    for c in classes:
        row = ev.per_class.loc[c] if c in ev.per_class.index else None
        tp, fp, fn = (int(row[k]) if row is not None else 0 for k in ("tp", "fp", "fn"))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[CLASSES[c - 1]] = {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3)}
        out[CLASSES[c - 1]].update(tp=tp, fp=fp, fn=fn)
    return out


def postprocess(args) -> None:
    """Every post-processing variant on every model's cached segmentations (no retraining)."""
    from cryoscout.io.atomic import write_text
    from cryoscout.picking.thresholds import choose_thresholds
    from cryoscout.picking.weights import load_model

    classes = list(range(1, len(CLASSES) + 1))
    cache = args.out / "postprocess.json"
    table: dict = json.loads(cache.read_text()) if cache.is_file() and not args.force else {}
    for run in sorted((args.out / "models").glob("*/model.pt")):
        name = run.parent.name
        # Variants not scored yet; the chosen one also when scored before it counted
        # false picks by name.
        done = {v for v in POSTPROCESS if name in table.get(v, {})}
        if "false_picks_by_name" not in table.get(CHOSEN_POSTPROCESS, {}).get(name, {}):
            done.discard(CHOSEN_POSTPROCESS)
        todo = {v: x for v, x in POSTPROCESS.items() if v not in done}
        if not todo:
            continue  # scored before (--force: again)
        _, info = load_model(run)
        home = info.extra["domain"]
        radii = {int(c): float(r) for c, r in info.extra["particle_radius"].items()}
        label_r = {int(c): float(r) for c, r in info.radius.items()}
        n_val = max(v.get("validation", 1) for v in todo.values())
        vals = [
            (cached_probabilities(args.out, name, home, s, args), load_sim(args.out, home, s))
            for s in _seeds(home, "val")[:n_val]
        ]
        tests = {
            d: [
                (cached_probabilities(args.out, name, d, s, args), load_sim(args.out, d, s))
                for s in _seeds(d, "test")
            ]
            for d in DOMAINS
        }
        for vname, variant in todo.items():
            grid = variant.get("grid") or [None]
            if variant.get("per_class"):
                # Each class at the threshold of its best validation F1 (the lowest on ties).
                # Each class at the threshold of its best validation F1 (the lowest on
                # ties), counts pooled over the validation tomograms: what pick train
                # records from its --val-tomogram(s). A class it says nothing about keeps
                # the lowest threshold.
                use = vals[: variant.get("validation", 1)]
                chosen, _ = choose_thresholds(
                    [(_labels(prob), sim["particles"]) for prob, sim in use], radii, classes, grid
                )
                thr = {c: chosen.get(c, min(grid)) for c in classes}
                res = {"threshold": {CLASSES[c - 1]: t for c, t in thr.items()}}
            else:
                # The threshold with the best validation F1 (the lowest on ties), as evaluate.
                prob, sim = vals[0]
                val = {
                    t: _overall_f1(_pick(prob, radii, label_r, t, variant), sim["particles"], radii)
                    for t in grid
                }
                thr = max(grid, key=lambda t: (val[t], -(t or 0)))
                res = {"threshold": thr, "val_f1": round(val[thr], 3)}
            for d, items in tests.items():
                picks = [_pick(prob, radii, label_r, thr, variant) for prob, _ in items]
                res[d] = _scores(picks, [sim["particles"] for _, sim in items], radii, classes)
                if vname == CHOSEN_POSTPROCESS:
                    res.setdefault("false_picks_by_name", {})[d] = _false_picks_by_name(
                        picks, [sim for _, sim in items], radii
                    )
            table.setdefault(vname, {})[name] = res
            print(
                name,
                vname,
                json.dumps({d: {c: v["f1"] for c, v in res[d].items()} for d in DOMAINS}),
                flush=True,
            )
    write_text(args.out / "postprocess.json", json.dumps(table, indent=1))


def _false_picks_by_name(picks_by_tomo: list, sims: list, radii) -> dict[str, dict[str, int]]:
    """False picks per class on each kind of distractor, by name (protein species,
    ``gold``, ``vesicle``), or ``elsewhere``; a pick lies on a distractor within half its
    particle radius of the distractor's surface (of a vesicle's shell: a whole radius),
    the distances :func:`_distractor_fps` uses, and counts for the nearest."""
    from cryoscout.picking.evaluate import evaluate_picks

    out: dict[str, dict[str, int]] = {}
    for picks, sim in zip(picks_by_tomo, sims, strict=True):
        dis = sim["distractors"]
        false = _false_picks(picks, evaluate_picks(picks, sim["particles"], radii))
        for _, pick in false.iterrows():
            r = radii[int(pick["class"])]
            name = "elsewhere"
            if len(dis):
                dist = np.linalg.norm(
                    dis[["x", "y", "z"]].to_numpy(float) - pick[["x", "y", "z"]].to_numpy(float),
                    axis=1,
                )
                gap = np.where(
                    dis["kind"] == "membrane",
                    np.abs(dist - dis["radius"]) - 0.5 * r,
                    dist - dis["radius"],
                )
                j = int(np.argmin(gap))
                if gap[j] <= 0.5 * r:
                    name = str(dis.iloc[j]["name"])
            per = out.setdefault(CLASSES[int(pick["class"]) - 1], {})
            per[name] = per.get(name, 0) + 1
    return out


def _overall_f1(picks, truth, radii) -> float:
    from cryoscout.picking.evaluate import evaluate_picks

    return float(evaluate_picks(picks, truth, radii).overall["f1"])


def _markdown(s: dict) -> str:
    res = s["results"]
    lines = [
        "## Picking under domain shift (train on one simulator setting, test on another)",
        "",
        f"Machine: {s['machine']}.",
        "",
        f"Classes {s['classes']} at {VOXEL_A:g} Å; "
        + "; ".join(f"domain {k}: {v}" for k, v in s["domains"].items())
        + f"; non-annotated proteins {s['distractor_classes']}. "
        f"Tomogram seeds per domain {s['splits']} (3 to train, 2 to test; the first "
        "validation tomogram of the training domain chooses the MP-NMS threshold of this "
        "table, and stage `postprocess` also pools all three; the mixtures' seeds are "
        f"{MIXTURE_SPLITS}).",
        "",
        "| model (trained on - augmentation) | patches | test | "
        + " | ".join(f"{c} P / R / F1" for c in s["classes"])
        + " | false picks on proteins / gold / membranes / elsewhere |",
        "| --- | --- | --- | " + " | ".join("---" for _ in s["classes"]) + " | --- |",
    ]
    for name, r in res.items():
        for domain in s["domains"]:
            if domain not in r:
                continue
            d = r[domain]
            cells = [
                f"{d['per_class'][c]['precision']} / {d['per_class'][c]['recall']} / "
                f"**{d['per_class'][c]['f1']}**"
                for c in s["classes"]
            ]
            fp = d["false_picks"]
            lines.append(
                f"| {name} | {r['patches']} | {domain} | "
                + " | ".join(cells)
                + f" | {fp['protein']} / {fp['gold']} / {fp['membrane']} / {fp['elsewhere']} |"
            )
    lines += [
        "",
        "Drop in F1 from the training domain to each other domain (same model; positive = "
        "worse), and in brackets from a model trained in the test domain itself:",
        "",
        "| model | test | " + " | ".join(f"{c} drop" for c in s["classes"]) + " |",
        "| --- | --- | " + " | ".join("---" for _ in s["classes"]) + " |",
    ]
    for name, r in res.items():
        home = name.split("-")[0]
        for domain in s["domains"]:
            if domain == home or domain not in r:
                continue
            if home not in r:  # the mixture has no test tomograms of its own
                continue
            cells = []
            for c in s["classes"]:
                f = r[domain]["per_class"][c]["f1"]
                vs_home = r[home]["per_class"][c]["f1"] - f
                own = [
                    f"vs {m} {res[m][domain]['per_class'][c]['f1'] - f:+.3f}"
                    for m in res
                    if m.startswith(domain + "-")
                ]
                cells.append(f"{vs_home:+.3f}" + (f" ({', '.join(own)})" if own else ""))
            lines.append(f"| {name} | {domain} | " + " | ".join(cells) + " |")
    val_fp = {m: r for m, r in res.items() if r.get("val_distractors", {}).get("protein")}
    if val_fp:
        lines += [
            "",
            "False picks on distractors in the model's own validation tomogram (the "
            "distractor species it trained with) against the test domains' (other species "
            "for the mixture): false picks / distractors present, proteins, gold, membranes:",
            "",
            "| model | tomograms | proteins | gold | membranes | false picks elsewhere |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for m, r in val_fp.items():
            rows = [("validation", r["val_false_picks"], r["val_distractors"])]
            rows += [
                (f"test {d}", r[d]["false_picks"], r[d]["distractors"])
                for d in s["domains"]
                if d in r and r[d]["distractors"]["protein"]
            ]
            for label, fp, n in rows:
                lines.append(
                    f"| {m} | {label} | "
                    + " | ".join(f"{fp[k]} / {n[k]}" for k in ("protein", "gold", "membrane"))
                    + f" | {fp['elsewhere']} |"
                )
    mixed = [m for m in res if m.split("-")[0] in MIXTURES]
    if mixed:
        lines += [
            "",
            "Trained on the mixture against trained in the test domain itself, same budget: "
            "F1 per class, and the drop (best own-domain model's F1 minus the mixture "
            "model's; positive = the mixture model is worse):",
            "",
            "| model | test | "
            + " | ".join(f"{c} F1 (best own-domain model) | {c} drop" for c in s["classes"])
            + " |",
            "| --- | --- | " + " | ".join("--- | ---" for _ in s["classes"]) + " |",
        ]
        for name in mixed:
            for domain in s["domains"]:
                own = [m for m in res if m.startswith(domain + "-") and domain in res[m]]
                if domain not in res[name] or not own:
                    continue
                cells = []
                for c in s["classes"]:
                    f = res[name][domain]["per_class"][c]["f1"]
                    best = max(own, key=lambda m, c=c: res[m][domain]["per_class"][c]["f1"])
                    fb = res[best][domain]["per_class"][c]["f1"]
                    cells.append(f"{f} ({best} {fb}) | {fb - f:+.3f}")
                lines.append(f"| {name} | {domain} | " + " | ".join(cells) + " |")
    if s.get("ablation"):
        models = sorted({m for v in s["ablation"].values() for m in v})
        lines += [
            "",
            f"One factor of domain B at a time, added to domain A (test seed "
            f"{SEED_BASE['A'] + SPLITS['test'][0]}; the same particles except with "
            "distractors, whose gold and vesicles are placed first): F1 per class",
            "",
            "| factor | " + " | ".join(f"{m} {c}" for m in models for c in s["classes"]) + " |",
            "| --- | " + " | ".join("---" for _ in models for _ in s["classes"]) + " |",
        ]
        for factor, row in s["ablation"].items():
            cells = [str(row.get(m, {}).get(c, "")) for m in models for c in s["classes"]]
            lines.append(f"| {factor} | " + " | ".join(cells) + " |")
    if s.get("postprocess"):
        lines += _postprocess_markdown(s["postprocess"], s["classes"], list(s["domains"]))
    lines += ["", f"Command: `python benchmarks/{s['command']}` (after the train stages).", ""]
    return "\n".join(lines)


# The post-processing whose fair comparison (every model with it) is tabulated.
CHOSEN_POSTPROCESS = "threshold per class, three validation tomograms"


def _postprocess_markdown(pp: dict, classes: list[str], domains: list[str]) -> list[str]:
    """Tables of stage ``postprocess``: F1 of every model under every variant."""
    lines = [
        "",
        "Post-processing without labels of the test domain, the same for every model, on "
        "the cached segmentations (stage `postprocess`; the MP-NMS threshold chosen on the "
        "training domain's validation tomogram, or its three pooled, as each row says): F1 "
        + " / ".join(classes)
        + " per test domain",
        "",
        "| model | post-processing | threshold | "
        + " | ".join(f"test {d}" for d in domains)
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in domains) + " |",
    ]
    models = sorted({m for v in pp.values() for m in v})
    for m in models:
        for variant, per_model in pp.items():
            r = per_model.get(m)
            if r is None:
                continue
            cells = [" / ".join(str(r[d][c]["f1"]) for c in classes) for d in domains]
            thr = r["threshold"]
            if thr is None:
                thr = "per tomogram"
            elif isinstance(thr, dict):
                thr = " / ".join(f"{t:g}" for t in thr.values())
            lines.append(f"| {m} | {variant} | {thr} | " + " | ".join(cells) + " |")
    chosen = pp.get(CHOSEN_POSTPROCESS)
    mixed = [m for m in models if m.split("-")[0] in MIXTURES]
    if chosen and mixed:
        lines += [
            "",
            f"With `{CHOSEN_POSTPROCESS}` for every model: the mixture models against the best "
            "model trained in the test domain itself (F1, and the drop = best own-domain "
            "F1 minus the mixture model's; positive = the mixture model is worse):",
            "",
            "| model | test | "
            + " | ".join(f"{c} F1 (best own-domain model) | {c} drop" for c in classes)
            + " |",
            "| --- | --- | " + " | ".join("--- | ---" for _ in classes) + " |",
        ]
        for m in mixed:
            for d in domains:
                own = [o for o in chosen if o.startswith(d + "-")]
                if not own or m not in chosen:
                    continue
                cells = []
                for c in classes:
                    f = chosen[m][d][c]["f1"]
                    best = max(own, key=lambda o, c=c: chosen[o][d][c]["f1"])
                    fb = chosen[best][d][c]["f1"]
                    cells.append(f"{f} ({best} {fb}) | {fb - f:+.3f}")
                lines.append(f"| {m} | {d} | " + " | ".join(cells) + " |")
    named = {
        m: r["false_picks_by_name"] for m, r in (chosen or {}).items() if "false_picks_by_name" in r
    }
    if named:
        lines += [
            "",
            f"False picks with `{CHOSEN_POSTPROCESS}`, by what they lie on (a protein species, "
            "gold, a vesicle, or nothing: `elsewhere`), over each test domain's two "
            "tomograms:",
            "",
            "| model | " + " | ".join(f"test {d}" for d in domains) + " |",
            "| --- | " + " | ".join("---" for _ in domains) + " |",
        ]
        for m, by_domain in named.items():
            cells = [
                "; ".join(
                    f"{c}: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
                    for c, per in by_domain.get(d, {}).items()
                )
                or "none"
                for d in domains
            ]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["simulate", "train", "evaluate", "ablate", "postprocess"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--domain", choices=[*DOMAINS, *MIXTURES], default="A")
    p.add_argument("--domains", default="A,B,C", help="simulate: which domains")
    p.add_argument("--variant", choices=list(VARIANTS), default="random")
    p.add_argument("--shape", default="64,160,160", help="z,y,x of the simulated tomograms")
    p.add_argument("--particles", type=int, default=60)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--samples", type=int, default=64, help="patches per epoch")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--channels", default="8,16,24,32")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--label-frac", type=float, default=0.6)
    p.add_argument("--tile", type=int, default=160, help="inference tile (160: whole volume)")
    p.add_argument("--margin", type=int, default=16)
    p.add_argument("--thresholds", default="0.05,0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="train: appended to the run's name (other budgets)")
    p.add_argument("--no-results", action="store_true")
    p.add_argument(
        "--force", action="store_true", help="evaluate, postprocess: ignore cached results"
    )
    args = p.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    if args.stage == "simulate":
        for d in args.domains.split(","):
            seeds = [s for split in ("train", "val", "test") for s in _seeds(d, split)]
            simulate(args.out, d, seeds, shape, args.particles)
    elif args.stage == "train":
        train(args)
    elif args.stage == "ablate":
        ablate(args)
    elif args.stage == "postprocess":
        postprocess(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
