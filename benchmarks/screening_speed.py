"""Inference throughput of the screening model (``ScoringModel.predict``) on this machine.

Example::

    $ python benchmarks/screening_speed.py --size 128 --n 512 --threads 2
    $ python benchmarks/screening_speed.py --model default --threads 2  # the shipped model
    $ python benchmarks/screening_speed.py --model baseline --threads 2  # the shipped GBT baseline
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from cryoscout.screening.model import XCryoNet
from cryoscout.screening.predict import ScoringModel, load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", default="xcryonet")
    p.add_argument("-m", "--model", help="A model file; 'default': the shipped one "
                   "(with its head and calibration); 'baseline': the shipped GBT baseline. "
                   "Without: a random network.")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = load_model(None if args.model == "default" else args.model)
        args.size, args.variant = model.size, model.kind
    else:
        model = ScoringModel(XCryoNet(args.variant, args.size), {"variant": args.variant,
                             "size": args.size, "normalisation": "atlas"})  # fmt: skip
    stack = np.random.default_rng(0).normal(size=(args.n, args.size, args.size))
    stack = stack.astype(np.float32)
    model.predict(stack[: args.batch_size])  # warm-up
    for attention in (False, True):
        start = time.perf_counter()
        model.predict(stack, batch_size=args.batch_size, attention=attention)
        secs = time.perf_counter() - start
        print(
            f"{args.variant} {args.size}px attention={attention}: {args.n / secs:.0f} squares/s "
            f"({args.threads} threads, load average {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
