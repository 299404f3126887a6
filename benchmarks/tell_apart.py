"""What tells a run's lines from people's: a TF-IDF logistic regression, cross-validated, against the
TRAIN split of the real corpus (never the test split the sim-to-real benchmark scores on), and the
n-grams it leans on most for each side. A development tool for choosing the next lever without
touching held-out data; `simgen realism` and `bench_sim2real.py` give the figures that count.

    python benchmarks/tell_apart.py outputs/demo --reference ../shared/data/iard --unit user
    python benchmarks/tell_apart.py outputs/demo --reference chitchat --unit dialogue --analyzer char_wb

Units: `user` or `assistant` lines, or whole `dialogue`s (each line prefixed by its role). `--unit
lines` judges every line of both sides on its own (role-prefixed, folds grouped by dialogue), then
averages each dialogue's out-of-fold line scores: how much of the dialogue-level AUC the lines alone
give away, beside `pooled_auc`'s guide for independent lines.
`--mask REGEX` deletes what the pattern matches on both sides first (`--mask '\((19|20)\d\d\)'`: no
film years), to see what a giveaway is worth before building the lever that would remove it.
`--adherence` also scores intent adherence the way `simgen realism` does, with the classifier
fitted on the train split's labelled user lines (TF-IDF only: no sentence embeddings), so a lever
that buys realism by ignoring the intent shows here too. `--split validation` reads the validation split
instead (no simulator is fitted on it; `simgen tune` only scores its loss there): the fairer check
between simulators trained for different lengths, since the longer one has seen the train lines more often. For `user` and `assistant` it also prints
words per line against that split (median, mean, JSD) and the share ending in . ! or ?.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import polars as pl
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score

from simgen.corpora import load_corpus


def texts(turns: pl.DataFrame, unit: str) -> list[str]:
    if unit != "dialogue":
        return turns.filter(pl.col("role") == unit)["text"].to_list()
    turns = turns.sort("dialogue_id", "turn")
    return [" \n ".join(f"{role[0].upper()}: {text}" for role, text in zip(g["role"], g["text"]))
            for _, g in turns.group_by("dialogue_id", maintain_order=True)]


def tell_apart(real: list[str], synthetic: list[str], analyzer: str = "word", top: int = 30, seed: int = 0) -> dict:
    """5-fold CV ROC-AUC of telling `synthetic` (1) from `real` (0), and the `top` n-grams of each side."""
    X, y = real + synthetic, np.array([0] * len(real) + [1] * len(synthetic))
    grams = (1, 2) if analyzer == "word" else (2, 4)
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=grams, min_df=2, sublinear_tf=True, lowercase=False)
    M = vectorizer.fit_transform(X)
    model = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced")
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    auc = float(cross_val_score(model, M, y, cv=folds, scoring="roc_auc").mean())
    order = np.argsort(model.fit(M, y).coef_[0])
    names = vectorizer.get_feature_names_out()
    return {"auc": auc, "real": [names[i] for i in order[:top]], "synthetic": [names[i] for i in order[::-1][:top]]}


def from_lines(real: pl.DataFrame, synthetic: pl.DataFrame, seed: int = 0) -> dict:
    """Every line judged alone (word 1-2-gram TF-IDF, 5 folds grouped by dialogue), then averaged per dialogue."""
    from simgen.realism.stats import pooled_auc

    rows = [(f"{side}{d}", f"{r[0].upper()}: {t}", side)
            for side, turns in ((0, real), (1, synthetic))
            for d, r, t in zip(turns["dialogue_id"].cast(pl.String), turns["role"], turns["text"])]
    groups = np.array([g for g, _, _ in rows])
    X = [t for _, t, _ in rows]
    y = np.array([s for _, _, s in rows])
    scores = np.zeros(len(y))
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(X, y, groups):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=False)
        model = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced")
        model.fit(vectorizer.fit_transform([X[i] for i in train]), y[train])
        scores[test] = model.decision_function(vectorizer.transform([X[i] for i in test]))
    per = pl.DataFrame({"g": groups, "s": scores, "y": y}).group_by("g").agg(pl.col("s").mean(), pl.col("y").first(), pl.len())
    line_auc = float(roc_auc_score(y, scores))
    n = float(per["len"].median())
    return {"line_auc": line_auc, "dialogue_auc": float(roc_auc_score(per["y"], per["s"])), "lines": n,
            "independent": pooled_auc(line_auc, n)}


def adherence(reference: pl.DataFrame, run: str, split: str = "train") -> str:
    """Intent adherence of the run's user lines / the classifier's cross-validated ceiling on `reference`."""
    from simgen.realism.adherence import intent_adherence
    from simgen.realism.features import build_units
    from simgen.realism.report import _aliases

    synthetic = load_corpus(run)
    out = intent_adherence(build_units(reference, synthetic.turns), _aliases(synthetic), None)
    if out is None:
        return "adherence: the run and the corpus share no scorable intent"
    syn, ceiling = out["synthetic"], out["ceiling"]
    return (f"adherence ({split}-split classifier, TF-IDF): accuracy {syn['accuracy']:.3f} / ceiling {ceiling['accuracy']:.3f}, "
            f"macro-F1 {syn['macro_f1']:.3f} / {ceiling['macro_f1']:.3f}")


def lengths(real: list[str], synthetic: list[str], split: str = "train") -> str:
    """Words per line on each side (counted as `simgen realism` counts them), their JSD over the
    realism report's bins, and the share of lines that end in . ! or ?."""
    from simgen.realism.adherence import WORD_BINS, jsd

    count = [np.array([len(t.split()) for t in side]) for side in (real, synthetic)]
    ends = [np.mean([t.rstrip().endswith((".", "!", "?")) for t in side]) for side in (real, synthetic)]
    return (f"words per line: median {np.median(count[1]):.0f} / mean {count[1].mean():.1f} ({split} split: {np.median(count[0]):.0f} / "
            f"{count[0].mean():.1f}), JSD {jsd(*count, WORD_BINS):.3f}; ending in . ! ?: {ends[1]:.0%} ({split} split: {ends[0]:.0%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder")
    parser.add_argument("--reference", default="../shared/data/iard", help="the real corpus (its --split is read)")
    parser.add_argument("--split", choices=("train", "validation"), default="train",
                        help="the real side: train, or validation (no simulator fitted on it: fairer where the runs compared come "
                             "from simulators trained for different lengths on the train split)")
    parser.add_argument("--unit", choices=("user", "assistant", "dialogue", "lines"), default="user")
    parser.add_argument("--analyzer", choices=("word", "char_wb"), default="word")
    parser.add_argument("--mask", help="a regular expression deleted from every line of both sides before fitting")
    parser.add_argument("--adherence", action="store_true", help="also intent adherence / its ceiling, fitted on the --split")
    args = parser.parse_args(argv)
    reference = load_corpus(args.reference, split=args.split).turns
    run = pl.read_parquet(f"{args.run}/turns.parquet")
    if args.mask:
        reference, run = (t.with_columns(pl.col("text").str.replace_all(args.mask, "")) for t in (reference, run))
    if args.unit == "lines":
        out = from_lines(reference, run)
        print(f"lines, each alone: AUC {out['line_auc']:.3f}; their mean per dialogue: AUC {out['dialogue_auc']:.3f} "
              f"(median {out['lines']:.0f} lines a dialogue; independent lines would give {out['independent']:.3f})")
        return 0
    real = texts(reference, args.unit)
    synthetic = texts(run, args.unit)
    if args.adherence:
        print(adherence(reference, args.run, args.split))
    if args.unit in ("user", "assistant"):
        print(lengths(real, synthetic, args.split))
    out = tell_apart(real, synthetic, args.analyzer)
    print(f"{args.unit} {args.analyzer}: cross-validated AUC {out['auc']:.3f} ({len(synthetic)} synthetic, {len(real)} real {args.split}-split)")
    print("real side leans on:     ", ", ".join(map(repr, out["real"])))
    print("synthetic side leans on:", ", ".join(map(repr, out["synthetic"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
