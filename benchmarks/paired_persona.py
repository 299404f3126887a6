"""Persona scores of two runs with the same profiles, paired by dialogue: B minus A, mean ± standard error.

Two runs of one scenario and seed have the same profiles and intents (dialogue i is determined by
(seed, i)), so their persona scores differ by what the simulators did with them. Each run's
`consistency.json` (`simgen consistency RUN --out DIR`) holds per-dialogue scores; this pairs the
dialogues both scored and reports, per score, A's mean, B's mean, the mean paired difference with its
standard error, and in how many dialogues B did better and worse:

    simgen consistency outputs/guard/c100-fit-s2 --max-dialogues 30 --no-axis --out outputs/guard/c100-fit-s2/cons30
    simgen consistency outputs/guard/c100-b50-s2 --max-dialogues 30 --no-axis --out outputs/guard/c100-b50-s2/cons30
    python benchmarks/paired_persona.py outputs/guard/c100-fit-s2/cons30 outputs/guard/c100-b50-s2/cons30
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

SCORES = ("prompt_to_line", "line_to_line", "qa", "specificity")


def per_dialogue(folder: Path) -> dict[str, dict]:
    path = folder / "consistency.json" if folder.is_dir() else folder
    try:
        rows = json.loads(path.read_text())["dialogues"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{path}: not a `simgen consistency` report ({e}); run simgen consistency RUN --out {folder}.") from None
    return {r["dialogue_id"]: r for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="consistency report folder (or its consistency.json) of the reference run")
    parser.add_argument("b", type=Path, help="the same of the run compared with it")
    args = parser.parse_args()
    a, b = per_dialogue(args.a), per_dialogue(args.b)
    shared = sorted(set(a) & set(b))
    if not shared:
        raise SystemExit(f"{args.a} and {args.b} share no dialogue id; score the same runs' dialogues (same seed, --max-dialogues).")
    print(f"{len(shared)} dialogues in both")
    print("| score | A | B | B - A (paired) | B better | B worse |")
    print("| --- | --- | --- | --- | --- | --- |")
    for score in SCORES:
        pairs = [(a[d][score], b[d][score]) for d in shared if a[d].get(score) is not None and b[d].get(score) is not None]
        if not pairs:
            continue
        diffs = [y - x for x, y in pairs]
        mean = sum(diffs) / len(diffs)
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) if len(diffs) > 1 else float("nan")
        print(f"| {score} | {sum(x for x, _ in pairs) / len(pairs):.3f} | {sum(y for _, y in pairs) / len(pairs):.3f} | "
              f"{mean:+.3f} ± {se:.3f} | {sum(d > 0 for d in diffs)} | {sum(d < 0 for d in diffs)} |")


if __name__ == "__main__":
    main()
