"""Generate a development run with per-side sampling that `simgen generate` cannot set from the
command line (its `--temperature` and `--top-p` set both sides), for `tell_apart.py` to compare
against the real corpus's TRAIN split. Everything else is `simgen generate`'s default.

    python benchmarks/dev_sampling.py --user-temperature 0.9 --assistant-temperature 1.0 --out outputs/dev-user09-asst10
    python benchmarks/tell_apart.py outputs/dev-user09-asst10 --unit user --adherence
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import simgen
from simgen.config import GenerateConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="movie-recommendation")
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=20)
    for side in ("user", "assistant"):
        parser.add_argument(f"--{side}-temperature", type=float, default=None, help="default: simgen generate's")
        parser.add_argument(f"--{side}-top-p", type=float, default=None, help="default: simgen generate's")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    base = GenerateConfig(scenario=args.scenario, n=args.n, seed=args.seed, batch_size=args.batch_size)
    sides = {}
    for side in ("user", "assistant"):
        chosen = {k: v for k, v in (("temperature", getattr(args, f"{side}_temperature")), ("top_p", getattr(args, f"{side}_top_p")))
                  if v is not None}
        sides[side] = replace(getattr(base, side), **chosen)
    run = simgen.generate(config=replace(base, **sides), out=args.out)
    print(f"{run.path}: {run.manifest['timings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
