"""How much of a realism figure is noise: each run scored at several cross-validation seeds.

`simgen realism` trains its discriminators with one grouped 5-fold split (`RealismConfig.seed`).
Against a small real split (IARD's validation split: 34 dialogues) which dialogues share a fold
moves the dialogue AUC by a few hundredths, and so does which 200 dialogues the simulator wrote.
This script scores each run at `--seeds` fold seeds and prints the mean and SD of the ensemble's
dialogue and user-turn AUCs and of the three members' dialogue AUCs. `RUN:A-B` scores dialogues
A..B-1 of a run only (two halves of one run show the synthetic side's share of the noise).

    python benchmarks/realism_repeats.py outputs/guard/d200-default outputs/guard/d200-dg1 --reference ../shared/data/iard
    python benchmarks/realism_repeats.py outputs/guard/dpool-s4:0-200 outputs/guard/dpool-s4:200-400 --reference ../shared/data/iard
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from simgen.corpora import load_corpus  # noqa: E402
from simgen.realism import RealismConfig, compare  # noqa: E402

MEMBERS = ("tfidf", "embedding", "style")


def run_turns(spec: str) -> pl.DataFrame:
    """A run's turns, or dialogues A..B-1 of it (in id order) for `RUN:A-B`."""
    path, _, part = spec.partition(":")
    turns = load_corpus(path).turns
    if part:
        first, last = (int(x) for x in part.split("-"))
        ids = turns["dialogue_id"].unique().sort().to_list()[first:last]
        turns = turns.filter(pl.col("dialogue_id").is_in(ids))
    return turns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, or RUN:A-B for dialogues A..B-1 of one")
    parser.add_argument("--reference", required=True, help="the real corpus (path or registered name)")
    parser.add_argument("--split", default="validation", help="its split to score against (default: validation)")
    parser.add_argument("--seeds", type=int, default=5, help="cross-validation seeds per run (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    reference = load_corpus(args.reference, split=args.split)
    out = {}
    print("| run | dialogue AUC, mean ± SD | user-turn AUC | " + " | ".join(f"{m}, dialogues" for m in MEMBERS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in MEMBERS) + " |")
    for spec in args.runs:
        turns = run_turns(spec)
        rows = []
        for seed in range(args.seeds):
            # the discriminators only: no attributes, and the fewest resamples the check allows (the AUCs do not use them)
            report = compare(turns, reference, out=None, config=RealismConfig(seed=seed, n_boot=50, n_perm=50, attributes=False))
            d = report["discriminators"]
            rows.append([report["auc"], d["ensemble"]["user_turn"]["auc"], *(d[m]["dialogue"]["auc"] for m in MEMBERS)])
        a = np.asarray(rows)
        out[spec] = {"dialogue": [float(a[:, 0].mean()), float(a[:, 0].std())], "user_turn": [float(a[:, 1].mean()), float(a[:, 1].std())],
                     **{m: float(a[:, 2 + i].mean()) for i, m in enumerate(MEMBERS)}, "seeds": args.seeds}
        print(f"| {spec} | {a[:, 0].mean():.3f} ± {a[:, 0].std():.3f} | {a[:, 1].mean():.3f} ± {a[:, 1].std():.3f} | "
              + " | ".join(f"{a[:, 2 + i].mean():.3f}" for i in range(len(MEMBERS))) + " |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
