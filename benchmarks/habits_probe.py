"""What would users who keep their typing habits through a dialogue buy? An upper-bound probe.

The realism report's "habits per dialogue" table (simgen/realism/adherence.py) says simulated users
type more alike than people: per dialogue, the share of user lines that start with a capital or end
in . ! or ? spreads much less across simulated dialogues than across real ones, because the
simulator draws each line's style afresh. Before building a lever for it (a habit latent the tuned
simulator is conditioned on), this probe measures what the perfect version of that lever could buy,
without any model: it copies a run's turns and gives each dialogue's user lines the habits of one
real **train-split** dialogue (a donor drawn at random, seeded): each line starts with a capital or
not, and ends in punctuation or not, as often as the donor's lines do. Nothing else changes (words,
order, assistant lines), so the difference between the two reports is the habits' share of the
discriminators' evidence. Both sides are scored by `simgen.realism.compare` against `--split`
(validation by default, the development split; `test` only to report a figure, never to choose).

    python benchmarks/habits_probe.py outputs/guard/d200-default --reference ../shared/data/iard

Prints one row per side (run as it is, run with donated habits): ensemble AUC at dialogue and
user-turn level, the style member's, and the spread ratios of the two habits. Then the verbosity
habit, which the probe leaves alone: how much of user-line length is the dialogue's (the
intra-dialogue correlation of the lines' normal scores, `length_icc`, in the train split and in the
run), and how closely the run's lines follow their length latents (`target_words` against the
stored words), the two things a per-dialogue verbosity latent would need.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from simgen.corpora import load_corpus  # noqa: E402
from simgen.lengths import words  # noqa: E402
from simgen.realism import RealismConfig, compare  # noqa: E402
from simgen.realism.adherence import HABITS  # noqa: E402

END = re.compile(HABITS["ends_punct"][0])  # the realism report's own habit patterns, so the probe moves what it measures
UPPER = HABITS["starts_upper"][0]
TRAILING = re.compile(r"[.!?]+\s*$")  # every end mark, so "wow!!" loses both


def donor_habits(reference: pl.DataFrame) -> np.ndarray:
    """(dialogues, 2): per real dialogue, the share of its user lines that start with a capital and
    the share that end in . ! or ?."""
    user = reference.filter(pl.col("role") == "user").with_columns(
        pl.col("text").str.contains(UPPER).cast(pl.Float64).alias("upper"),
        pl.col("text").str.contains(END.pattern).cast(pl.Float64).alias("punct"))
    per = user.group_by("dialogue_id").agg(pl.col("upper").mean(), pl.col("punct").mean()).sort("dialogue_id")
    return per.select("upper", "punct").to_numpy()


def restyle(text: str, upper: bool, punct: bool) -> str:
    """`text` starting with a capital (or not) and ending in punctuation (or not); its words unchanged."""
    body = text.strip()
    if not body:
        return text
    body = body[0].upper() + body[1:] if upper else body[0].lower() + body[1:]
    if punct and not END.search(body):
        body += "."
    elif not punct:
        body = TRAILING.sub("", body).rstrip() or body
    return body


def donate(turns: pl.DataFrame, habits: np.ndarray, seed: int) -> pl.DataFrame:
    """`turns` with each dialogue's user lines restyled after one donor's habits (drawn per dialogue)."""
    rng = np.random.default_rng(seed)
    texts = turns["text"].to_list()
    roles = turns["role"].to_list()
    ids = turns["dialogue_id"].to_list()
    donor: dict[str, np.ndarray] = {}
    for i, (role, key) in enumerate(zip(roles, ids)):
        if role != "user":
            continue
        if key not in donor:
            donor[key] = habits[rng.integers(len(habits))]
        p_upper, p_punct = donor[key]
        texts[i] = restyle(texts[i], bool(rng.random() < p_upper), bool(rng.random() < p_punct))
    return turns.with_columns(pl.Series("text", texts))


def length_icc(turns: pl.DataFrame) -> float:
    """The intra-dialogue correlation of user-line lengths: each line's word count as a normal
    score (its mid-rank in the lines' histogram), then the one-way random-effects ICC over
    dialogues (ANOVA estimator, unequal sizes). 0: a dialogue's lines are as long as any lines;
    1: a dialogue's lines are all alike."""
    user = turns.filter(pl.col("role") == "user").with_columns(
        pl.col("text").map_elements(words, return_dtype=pl.Int64).alias("w")).filter(pl.col("w") > 0)
    values, counts = np.unique(user["w"].to_numpy(), return_counts=True)
    p = counts / counts.sum()
    mid = dict(zip(values.tolist(), (np.cumsum(p) - p / 2).tolist()))
    normal = NormalDist()
    user = user.with_columns(pl.col("w").replace_strict(mid, return_dtype=pl.Float64).map_elements(normal.inv_cdf, return_dtype=pl.Float64).alias("z"))
    groups = [g["z"].to_numpy() for _, g in user.group_by("dialogue_id")]
    n, k = sum(len(g) for g in groups), len(groups)
    grand = np.concatenate(groups).mean()
    sizes = np.array([len(g) for g in groups])
    between = float((sizes * (np.array([g.mean() for g in groups]) - grand) ** 2).sum() / (k - 1))
    within = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / (n - k))
    n0 = (n - (sizes ** 2).sum() / n) / (k - 1)
    return (between - within) / (between + (n0 - 1) * within)


def target_following(turns: pl.DataFrame) -> str:
    """How the run's user lines follow their length latents: correlation of target and stored words,
    and mean stored words for short and long targets."""
    user = turns.filter((pl.col("role") == "user") & pl.col("target_words").is_not_null()).with_columns(
        pl.col("text").map_elements(words, return_dtype=pl.Int64).alias("w"))
    if user.is_empty():
        return "no length latents in the run"
    r = float(np.corrcoef(user["target_words"].to_numpy(), user["w"].to_numpy())[0, 1])
    short = user.filter(pl.col("target_words") <= 3)["w"].mean()
    long = user.filter(pl.col("target_words") > 25)["w"].mean()
    return f"target vs stored words: r = {r:.2f}; targets <= 3 words give {short:.1f} words, targets > 25 give {long:.1f}"


def summary(report: dict) -> str:
    d = report["discriminators"]
    habits = report["shape"]["habits_per_dialogue"]
    return (f"dialogue AUC {report['auc']:.3f} [{report['auc_ci'][0]:.3f}-{report['auc_ci'][1]:.3f}]  "
            f"user-turn {d['ensemble']['user_turn']['auc']:.3f}  style: dialogue {d['style']['dialogue']['auc']:.3f}, "
            f"user-turn {d['style']['user_turn']['auc']:.3f}  spread ratios: starts_upper "
            f"{habits['starts_upper']['spread_ratio']}, ends_punct {habits['ends_punct']['spread_ratio']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder (simgen generate --out)")
    parser.add_argument("--reference", required=True, help="the real corpus (path or registered name)")
    parser.add_argument("--split", default="validation", choices=("validation", "test"),
                        help="the split scored against (default validation, the development split; the donors come from train)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    synthetic = load_corpus(args.run).turns
    train = load_corpus(args.reference, split="train").turns
    habits = donor_habits(train)
    reference = load_corpus(args.reference, split=args.split)
    config = RealismConfig(seed=args.seed)
    for name, turns in (("as generated", synthetic), ("donated habits", donate(synthetic, habits, args.seed))):
        print(f"{name:15s} {summary(compare(turns, reference, config=config))}", flush=True)
    print(f"verbosity: length ICC {length_icc(train):.3f} in the reference's train split, {length_icc(synthetic):.3f} in the run; "
          f"{target_following(synthetic)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
