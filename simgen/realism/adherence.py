"""Intent adherence and the shape of dialogues: does a line say what its intent latent asked for,
and do dialogues run as long, and end as, real ones?

Intent adherence: a classifier (TF-IDF word and character n-grams, plus the sentence embeddings
when the check computed them, into a balanced logistic regression) is trained on the reference's
labelled user lines and predicts the intent of each synthetic user line; accuracy and macro-F1
against the sampled intent latent are reported beside the same classifier's grouped
cross-validated score on the reference lines (the ceiling: how well intents can be read from real
lines at all). Reference labels are mapped onto the run's intents through the intent model's
`aliases` (IARD's ASK counts as INQ, END as BYE); only intents both sides hold, with at least
`MIN_PER_INTENT` reference lines, are scored.

Shape: user lines per dialogue and words per user line, real vs synthetic (medians, JSD over fixed
bins), and the share of dialogues whose last user line closes the conversation (thanks or a
goodbye: `simgen.endings.closes`, read the same way on both sides), and the share of lines, either
role, that say goodbye although their role speaks again later (`simgen.endings.farewell`; about 1%
in real dialogues), and the share that open with a greeting although their role spoke before
(`simgen.endings.greeting`; under 0.1% in IARD).

Habits: how much users differ from each other. Per dialogue, the share of its user lines with a
typing habit (starting with a capital, ending in . ! or ?, all lower case, holding an exclamation
mark) and their mean words; per side, the mean over dialogues and the spread (standard deviation)
across them. People keep their habits through a dialogue, so real dialogues spread wide; a
simulator that draws each line's style afresh can match the mean with a narrow spread, which the
dialogue-level discriminators read even where every line passes alone (the README's realism
section has the figures for the shipped simulator). A spread ratio (synthetic SD / reference SD)
under 1 says so.

What it leaves out: intents the reference does not label (nothing to learn them from) and any
claim about assistant lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from simgen.endings import closes, farewell, greeting
from simgen.realism import stats
from simgen.realism.features import Units

MIN_PER_INTENT = 5  # reference lines an intent needs to be scored
HABITS: dict[str, tuple[str, str]] = {  # name -> (regex a user line matches, what it means)
    "starts_upper": (r"^\s*[A-Z]", "starts with a capital"),
    "ends_punct": (r"[.!?]\s*$", "ends in . ! or ?"),
    "all_lower": (r"^[^A-Z]*$", "no capital letter"),
    "exclaims": (r"!", "holds an exclamation mark"),
}
WORD_BINS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 60)  # lower edges; the last bin is open
TURN_BINS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30)
def jsd(a: np.ndarray, b: np.ndarray, edges: tuple[int, ...]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two samples over bins with these lower edges."""
    bins = np.array([*edges, np.inf])
    p = np.histogram(a, bins)[0].astype(float)
    q = np.histogram(b, bins)[0].astype(float)
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    return float(stats.jsd(p / p.sum(), q / q.sum()))


def shape(units: Units) -> dict[str, Any]:
    """User lines per dialogue, words per user line and closing endings, per side, with their JSDs."""
    user = units.user.with_columns(pl.col("text").str.count_matches(r"\S+").alias("words"))  # as the length attribute counts
    per_dialogue = user.group_by("key", maintain_order=True).agg(pl.col("side").first(), pl.len().alias("lines"),
                                                                 pl.col("text").last().alias("last"))
    out: dict[str, Any] = {}
    for name, frame, column, edges in (("user_lines_per_dialogue", per_dialogue, "lines", TURN_BINS),
                                       ("words_per_user_line", user, "words", WORD_BINS)):
        sides = [frame.filter(pl.col("side") == s)[column].to_numpy() for s in (0, 1)]
        out[name] = {"reference": _summary(sides[0]), "synthetic": _summary(sides[1]), "jsd": round(jsd(*sides, edges), 4),
                     "bins": list(edges)}
    ends = [per_dialogue.filter(pl.col("side") == s)["last"].to_list() for s in (0, 1)]
    out["closing_endings"] = {side: round(float(np.mean([closes(t) for t in e])), 4) if e else None
                              for side, e in zip(("reference", "synthetic"), ends)}
    # goodbyes said too early: lines of either role that say goodbye although their role speaks again later
    turns = units.turns.with_columns((pl.col("turn") < pl.col("turn").max().over("key", "role")).alias("midway"))
    midway = [turns.filter(pl.col("midway") & (pl.col("side") == s))["text"].to_list() for s in (0, 1)]
    out["midway_goodbyes"] = {side: round(float(np.mean([farewell(t) for t in m])), 4) if m else None
                              for side, m in zip(("reference", "synthetic"), midway)}
    # greetings said too late: lines of either role that open with a greeting although their role spoke before
    later = units.turns.with_columns((pl.col("turn") > pl.col("turn").min().over("key", "role")).alias("later"))
    late = [later.filter(pl.col("later") & (pl.col("side") == s))["text"].to_list() for s in (0, 1)]
    out["late_greetings"] = {side: round(float(np.mean([greeting(t) for t in m])), 4) if m else None
                             for side, m in zip(("reference", "synthetic"), late)}
    out["habits_per_dialogue"] = habits(user)
    return out


def habits(user: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per habit (`HABITS`, and `words`: mean words per line), each side's mean over dialogues of
    the dialogue's share of user lines with it, the spread of that share across dialogues (SD), and
    the ratio of the spreads (synthetic / reference; None where the reference does not vary).
    `user`: user lines with key, side, text and words."""
    per = user.group_by("key", maintain_order=True).agg(
        pl.col("side").first(),
        *[pl.col("text").str.contains(rx).cast(pl.Float64).mean().alias(name) for name, (rx, _) in HABITS.items()],
        pl.col("words").cast(pl.Float64).mean().alias("words"))
    out: dict[str, dict[str, Any]] = {}
    for name in (*HABITS, "words"):
        sides = {side: per.filter(pl.col("side") == s)[name].to_numpy() for s, side in ((0, "reference"), (1, "synthetic"))}
        summary = {side: {"mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)), 4)} if len(v) > 1 else None
                   for side, v in sides.items()}
        ref, syn = summary["reference"], summary["synthetic"]
        ratio = round(syn["sd"] / ref["sd"], 3) if ref and syn and ref["sd"] > 0 else None
        out[name] = {**summary, "spread_ratio": ratio,
                     "what": HABITS[name][1] if name in HABITS else "mean words per line"}
    return out


def _summary(values: np.ndarray) -> dict[str, Any]:
    if not len(values):
        return {"n": 0}
    return {"n": int(len(values)), "median": float(np.median(values)), "mean": round(float(np.mean(values)), 2),
            "p90": float(np.percentile(values, 90))}


def intent_adherence(units: Units, aliases: Mapping[str, str] | None, embeddings: np.ndarray | None, *,
                     seed: int = 0, n_folds: int = 5) -> dict[str, Any] | None:
    """The adherence block of the report, or None when the sides share no scorable intent.

    `embeddings`: (turns, dim) rows aligned with `units.turns["row"]`, or None (TF-IDF alone).
    """
    from sklearn.metrics import accuracy_score, f1_score

    aliases = aliases or {}
    user = units.user.with_columns(pl.col("intent").replace(dict(aliases)).alias("label"))
    ref = user.filter((pl.col("side") == 0) & pl.col("label").is_not_null())
    syn = user.filter((pl.col("side") == 1) & pl.col("label").is_not_null())
    counts = ref["label"].value_counts()
    common = sorted(set(counts.filter(pl.col("count") >= MIN_PER_INTENT)["label"].to_list()) & set(syn["label"].to_list()))
    if len(common) < 2:
        return None
    ref = ref.filter(pl.col("label").is_in(common))
    syn = syn.filter(pl.col("label").is_in(common))
    n_ref_dialogues = ref["key"].n_unique()
    keys, inverse = np.unique(ref["key"].to_numpy(), return_inverse=True)  # whole dialogues go to one fold
    folds = (np.random.default_rng(seed).permutation(len(keys)) % min(n_folds, n_ref_dialogues))[inverse]

    y = ref["label"].to_numpy()
    cv = np.empty(ref.height, dtype=object)
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        model = _Model(seed).fit(ref.filter(pl.Series(train)), y[train], embeddings)
        cv[test] = model.predict(ref.filter(pl.Series(test)), embeddings)
    model = _Model(seed).fit(ref, y, embeddings)
    pred = model.predict(syn, embeddings)
    truth = syn["label"].to_numpy()

    def scores(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return {"accuracy": round(float(accuracy_score(t, p)), 4),
                "macro_f1": round(float(f1_score(t, p, labels=common, average="macro", zero_division=0)), 4)}

    ceiling, synthetic = scores(y, cv), scores(truth, pred)
    per_intent = {i: {"synthetic_recall": round(float(np.mean(pred[truth == i] == i)), 4) if (truth == i).any() else None,
                      "ceiling_recall": round(float(np.mean(cv[y == i] == i)), 4),
                      "n_synthetic": int((truth == i).sum()), "n_reference": int((y == i).sum())} for i in common}
    return {
        "intents": common,
        "classifier": "TF-IDF word 1-2 + char 2-4 grams" + (" + sentence embeddings" if embeddings is not None else "")
                      + " -> logistic regression (balanced)",
        "ceiling": ceiling | {"how": f"grouped {folds.max() + 1}-fold cross-validation on {ref.height} reference lines"},
        "synthetic": synthetic | {"n": int(syn.height)},
        "ratio": {k: round(synthetic[k] / ceiling[k], 4) if ceiling[k] else None for k in ("accuracy", "macro_f1")},
        "per_intent": per_intent,
        "aliases": dict(aliases),
    }


class _Model:
    """TF-IDF (+ embeddings) -> logistic regression over user lines."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _features(self, frame: pl.DataFrame, embeddings: np.ndarray | None, fit: bool) -> Any:
        from scipy.sparse import csr_matrix, hstack

        texts = frame["text"].to_list()
        if fit:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.word = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True).fit(texts)
            self.char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True).fit(texts)
        parts = [self.word.transform(texts), self.char.transform(texts)]
        if embeddings is not None:
            parts.append(csr_matrix(embeddings[frame["row"].to_numpy()]))
        return hstack(parts).tocsr()

    def fit(self, frame: pl.DataFrame, y: np.ndarray, embeddings: np.ndarray | None) -> _Model:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=self.seed)
        self.model.fit(self._features(frame, embeddings, fit=True), y)
        return self

    def predict(self, frame: pl.DataFrame, embeddings: np.ndarray | None) -> np.ndarray:
        return self.model.predict(self._features(frame, embeddings, fit=False)).astype(object)
