"""What the realism check's style member reads: its cross-validated AUC with all its features, with
each feature alone, and with each feature left out. A development tool for finding a structural
giveaway (a feature that alone tells the sides apart, or whose removal costs the member most) before
building the lever that would remove it; `simgen realism` gives the figures that count.

    python benchmarks/style_giveaways.py outputs/guard/c100-off --reference chitchat
    python benchmarks/style_giveaways.py RUN --reference ../shared/data/iard --level dialogue --split train

The member is the check's own: its features (`simgen.realism.features.user_turn_style` or
`dialogue_style`), its gradient-boosted trees and its folds (whole dialogues, balanced per side,
`--seed` as `simgen realism --seed`). `--split validation` (the default) reads a split no
simulator was fitted on; the test split stays for the benchmark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from simgen.corpora import load_corpus  # noqa: E402
from simgen.realism.discriminators import StyleDiscriminator, cross_val_scores, make_folds  # noqa: E402
from simgen.realism.features import build_units, dialogue_style, user_turn_style  # noqa: E402
from simgen.stats import auc  # noqa: E402


def giveaways(X: np.ndarray, y: np.ndarray, keys: np.ndarray, names: list[str], *, seed: int = 0,
              n_folds: int = 5) -> list[dict]:
    """Per feature: the member's AUC on it alone and without it; first row `*`, all features."""
    folds = make_folds(keys, y, n_folds, seed)
    member = StyleDiscriminator()

    def score(cols: list[int]) -> float:
        return float(auc(cross_val_scores(X[:, cols], y, folds, lambda: member.make_model(seed)), y))

    every = list(range(len(names)))
    rows = [{"feature": "*", "alone": score(every), "without": None}]
    for j, name in enumerate(names):
        rows.append({"feature": name, "alone": score([j]), "without": score([k for k in every if k != j])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder (or any corpus load_corpus reads)")
    parser.add_argument("--reference", required=True, help="the real corpus (path or registered name)")
    parser.add_argument("--split", default="validation", help="its split (default: validation)")
    parser.add_argument("--level", choices=("user_turn", "dialogue"), default="user_turn")
    parser.add_argument("--seed", type=int, default=0, help="fold seed (default 0, as simgen realism)")
    args = parser.parse_args(argv)

    units = build_units(load_corpus(args.reference, split=args.split).turns, load_corpus(args.run).turns)
    if args.level == "user_turn":
        (X, names), y, keys = user_turn_style(units), units.y_user, units.user["key"].to_numpy()
    else:
        (X, names), y, keys = dialogue_style(units), units.y_dialogue, units.dialogues["key"].to_numpy()
    rows = giveaways(X, y, keys, names, seed=args.seed)
    print(f"style member, {args.level}: {len(y)} units ({int(y.sum())} simulated); AUC with every feature {rows[0]['alone']:.3f}")
    print("| feature | alone | without it |\n| --- | --- | --- |")
    for r in sorted(rows[1:], key=lambda r: r["without"]):
        print(f"| {r['feature']} | {r['alone']:.3f} | {r['without']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
