"""Which words a run's dialogues talk about, beside people's: for each word, the share of dialogues that
use it at least once (either side, case-folded, whole words), in a split of the real corpus and in
each run. A development tool for reading what a lever changed in what the simulator talks about; the
realism report's topic clusters and discriminators give the figures that count.

    python benchmarks/word_share.py outputs/s61/c200-s2 outputs/s64/c100-s2-campus --reference chitchat
    python benchmarks/word_share.py RUN --reference ../shared/data/iard --words film,movie,watched --split validation

`RUN:A-B` reads dialogues A..B-1 of a run only. The default words are chitchat's campus and work
words: where chitchat-dataset's people (students of one university) and the simulator differ most.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from realism_repeats import run_turns  # noqa: E402  (RUN or RUN:A-B, read as realism_repeats reads it)
from simgen.corpora import load_corpus  # noqa: E402

WORDS = ("byu", "provo", "utah", "major", "semester", "classes", "campus", "freshman", "mission", "roommate",
         "school", "college", "work", "job", "career", "coffee", "vacation", "trip", "hair", "wife")


def dialogue_share(turns: pl.DataFrame, words: list[str]) -> dict[str, float]:
    """The share of dialogues whose text (all lines, case-folded) holds each word at least once."""
    text = turns.group_by("dialogue_id").agg(pl.col("text").str.to_lowercase().str.join("\n"))["text"]
    return {w: float(text.str.contains(rf"\b{w}\b").mean()) for w in words}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, each optionally RUN:A-B")
    parser.add_argument("--reference", required=True, help="real corpus (a registered name or a path)")
    parser.add_argument("--split", default="train", choices=("train", "validation"),
                        help="the real split to read (never the test split; default: train)")
    parser.add_argument("--words", default=",".join(WORDS), help="comma-separated words")
    args = parser.parse_args(argv)
    words = [w.strip().lower() for w in args.words.split(",") if w.strip()]
    real = load_corpus(args.reference, split=args.split).turns
    columns = [(f"{args.reference} {args.split} ({real['dialogue_id'].n_unique()})", dialogue_share(real, words))]
    for spec in args.runs:
        turns = run_turns(spec)
        columns.append((f"{spec} ({turns['dialogue_id'].n_unique()})", dialogue_share(turns, words)))
    print("| word | " + " | ".join(name for name, _ in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for w in words:
        print(f"| {w} | " + " | ".join(f"{share[w]:.2f}" for _, share in columns) + " |")


if __name__ == "__main__":
    main()
