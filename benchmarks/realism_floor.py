"""The sim-to-real benchmark's floor: what a perfect simulator of a corpus's train split would read.

A simulator tuned on the train split can at best write dialogues like the train split's. So score
the train split's own dialogues, as if they were a run, against each held-out split with the same
checks as `benchmarks/bench_sim2real.py` (`simgen.realism.compare`): the ensemble's AUCs there are
the floor its rows can reach, the split's own difference plus the checks' noise at that size. Far
above 0.5, the held-out split differs from the train split and no simulator of the latter would
pass for it; near 0.5, what the simulator's rows read above it is the simulator's.

Reads the held-out splits only as a reference, as the benchmark does; nothing is fitted on them.

    python benchmarks/realism_floor.py --reference ../shared/data/iard
    python benchmarks/realism_floor.py --reference chitchat --splits test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from simgen.corpora import load_corpus
from simgen.realism import RealismConfig, compare

MEMBERS = ("tfidf", "embedding", "style")


def floors(reference: str, splits: list[str], out: Path | None = None) -> list[dict]:
    """The train split of `reference` (read once) scored against each of its `splits` (the realism
    report's discriminators, in brief); each split's whole report goes to OUT/floor-<split>/ when `out` is given."""
    train = load_corpus(reference, split="train").turns
    rows = []
    for split in splits:
        held_out = load_corpus(reference, split=split).turns
        report = compare(train, held_out, out / f"floor-{split}" if out else None, config=RealismConfig(n_boot=300, n_perm=200))
        disc = report["discriminators"]
        rows.append({"split": split, "dialogues": {"train": train["dialogue_id"].n_unique(), split: held_out["dialogue_id"].n_unique()},
                     "user_turn_auc": disc["ensemble"]["user_turn"]["auc"], "user_turn_ci": disc["ensemble"]["user_turn"]["ci"],
                     "dialogue_auc": disc["ensemble"]["dialogue"]["auc"], "dialogue_ci": disc["ensemble"]["dialogue"]["ci"],
                     **{f"{m}_dialogue_auc": disc[m]["dialogue"]["auc"] for m in MEMBERS}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="../shared/data/iard", help="the real corpus (path or registered name)")
    parser.add_argument("--splits", default="validation,test", help="comma-separated held-out splits to score the train split against")
    parser.add_argument("--out", type=Path, help="a folder for each split's realism report (floor-<split>/)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = floors(args.reference, [s.strip() for s in args.splits.split(",") if s.strip()], args.out)
    print(f"\n{args.reference}: its train split scored as if it were a simulator's run\n")
    print("| against | dialogues (train / it) | user-turn AUC [CI] | dialogue AUC [CI] | TF-IDF / embedding / style, dialogues |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        n = r["dialogues"]
        print(f"| {r['split']} | {n['train']} / {n[r['split']]} | {r['user_turn_auc']:.3f} [{r['user_turn_ci'][0]:.2f}-{r['user_turn_ci'][1]:.2f}] "
              f"| {r['dialogue_auc']:.3f} [{r['dialogue_ci'][0]:.2f}-{r['dialogue_ci'][1]:.2f}] | "
              + " / ".join(f"{r[f'{m}_dialogue_auc']:.3f}" for m in MEMBERS) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
