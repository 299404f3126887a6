"""Discriminators: a classifier two-sample test of synthetic against reference dialogues.

Each discriminator turns units (user turns, or whole dialogues) into features and trains a
classifier to tell synthetic (y=1) from reference (y=0). Scores are out-of-fold: grouped
cross-validation assigns whole dialogues to folds, balanced per side, so no dialogue is in both
train and test. An AUC of 0.5 means the two corpora cannot be told apart.

- `tfidf`: word 1-2-grams and character 2-4-grams (TF-IDF) + logistic regression. Vocabulary and
  IDF are fitted on both sides without labels; only the classifier sees labels, per fold.
- `embedding`: all-MiniLM-L6-v2 sentence embeddings + logistic regression. A user turn is its own
  embedding, the previous turn's and their cosine; a dialogue is the mean user and assistant
  embeddings, the first turn's and the mean/spread of adjacent-turn cosines (coherence).
- `style`: hand-made style, context and structure features (see `features.py`) + histogram
  gradient boosting.

The ensemble stacks the members' out-of-fold scores (at dialogue level: each discriminator's
dialogue score and its user-turn scores averaged per dialogue) with a logistic regression that is
itself cross-validated on fresh grouped folds.

It leaves out: hyper-parameter search (the fixed settings are deliberately plain) and explanations
beyond linear weights and univariate feature AUCs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simgen.errors import DataError
from simgen.realism.features import DESCRIPTIONS, Units, dialogue_style, user_turn_style

LEVELS: tuple[str, ...] = ("user_turn", "dialogue")


@dataclass(frozen=True)
class Context:
    """What discriminators may use besides the units."""

    seed: int
    # (n_turns_total, 384) embedding of every turn, rows aligned with units.turns["row"]; None if unused
    turn_embeddings: np.ndarray | None = field(default=None, repr=False)


def make_folds(keys: np.ndarray, sides: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per unit: whole dialogues (keys) dealt round-robin to folds within each side."""
    uniq, inv = np.unique(keys, return_inverse=True)
    key_side = np.zeros(len(uniq), dtype=int)
    key_side[inv] = sides
    rng = np.random.default_rng(seed)
    key_fold = np.zeros(len(uniq), dtype=int)
    for side in (0, 1):
        idx = np.flatnonzero(key_side == side)
        if len(idx) < n_folds:
            name = "reference" if side == 0 else "synthetic"
            raise DataError(
                f"the {name} side has {len(idx)} dialogue(s) with units at this level; grouped "
                f"{n_folds}-fold cross-validation needs at least {n_folds}. Add dialogues or lower n_folds."
            )
        key_fold[rng.permutation(idx)] = np.arange(len(idx)) % n_folds
    return key_fold[inv]


def cross_val_scores(X: Any, y: np.ndarray, folds: np.ndarray, make_model: Any) -> np.ndarray:
    """Out-of-fold decision scores (n,) of `make_model()` fitted per fold (X dense or sparse)."""
    if len(np.unique(y)) < 2:
        raise DataError("a discriminator needs both synthetic and reference units, but only one side has any.")
    out = np.zeros(len(y))
    for k in np.unique(folds):
        test = folds == k
        train = ~test
        if len(np.unique(y[train])) < 2:
            raise DataError("a cross-validation fold holds units of one side only; add dialogues to both sides.")
        model = make_model().fit(X[train], y[train])
        s = _score(model, X[test])
        # standardise within the fold: each fold's model has its own offset, and that offset is
        # (weakly, inversely) tied to the fold's side balance; pooled raw scores would let the
        # stacker learn from fold composition instead of text
        out[test] = (s - s.mean()) / (s.std() + 1e-12)
    return out


def _score(model: Any, X: Any) -> np.ndarray:
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), float)
    return np.asarray(model.predict_proba(X)[:, 1], float)


class Discriminator(ABC):
    """One discriminator: features per level, a model factory, and what gives synthetic away."""

    name: str
    description: str
    needs_embeddings: bool = False

    @abstractmethod
    def features(self, units: Units, level: str, ctx: Context) -> Any:
        """Feature matrix (n_units, F) for `level` ('user_turn' or 'dialogue')."""

    @abstractmethod
    def make_model(self, seed: int) -> Any:
        """A fresh, unfitted sklearn classifier."""

    def giveaways(self, units: Units, level: str, X: Any, y: np.ndarray, ctx: Context, top: int) -> list[dict]:
        """What pushes a unit towards 'synthetic' (default: nothing to report)."""
        return []


class TfidfDiscriminator(Discriminator):
    name = "tfidf"
    description = "TF-IDF word 1-2-grams + character 2-4-grams, logistic regression"

    def __init__(self) -> None:
        self._word: dict[str, Any] = {}

    def features(self, units: Units, level: str, ctx: Context) -> Any:
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer

        def word() -> TfidfVectorizer:
            return TfidfVectorizer(
                ngram_range=(1, 2), min_df=2, max_features=50_000, sublinear_tf=True,
                token_pattern=r"(?u)\b\w+\b|[^\w\s]", dtype=np.float32,
            )

        def char() -> TfidfVectorizer:
            return TfidfVectorizer(
                analyzer="char_wb", ngram_range=(2, 4), min_df=3, max_features=50_000, sublinear_tf=True,
                lowercase=False, dtype=np.float32,
            )

        if level == "user_turn":
            texts = units.user["text"].to_list()
            w = word()
            Xw = w.fit_transform(texts)
            self._word[level] = (w, Xw)
            return sparse.hstack([Xw, char().fit_transform(texts)]).tocsr()
        d = units.dialogues
        w = word()
        Xw = w.fit_transform(d["user_text"].to_list())
        self._word[level] = (w, Xw)
        blocks = [Xw, char().fit_transform(d["user_text"].to_list())]
        if any(d["assistant_text"].str.len_chars() > 0):
            blocks.append(word().fit_transform(d["assistant_text"].to_list()))
        return sparse.hstack(blocks).tocsr()

    def make_model(self, seed: int) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=2.0, solver="liblinear", max_iter=1000, random_state=seed)

    def giveaways(self, units: Units, level: str, X: Any, y: np.ndarray, ctx: Context, top: int) -> list[dict]:
        """Word n-grams (user text) with the largest weights towards each side, and how often they occur."""
        from sklearn.linear_model import LogisticRegression

        vec, Xw = self._word[level]
        model = LogisticRegression(C=2.0, solver="liblinear", max_iter=1000).fit(Xw, y)
        coef = model.coef_[0]
        names = vec.get_feature_names_out()
        present = (Xw > 0).astype(np.float32)
        n1, n0 = max(1, int((y == 1).sum())), max(1, int((y == 0).sum()))
        rate_syn = np.asarray(present[y == 1].sum(0)).ravel() / n1
        rate_ref = np.asarray(present[y == 0].sum(0)).ravel() / n0
        out = []
        for direction, idx in (("synthetic", np.argsort(-coef)[:top]), ("reference", np.argsort(coef)[:top])):
            for i in idx:
                if (coef[i] > 0) != (direction == "synthetic"):
                    continue
                out.append({
                    "phrase": str(names[i]), "towards": direction, "weight": round(float(coef[i]), 3),
                    "synthetic_rate": round(float(rate_syn[i]), 4), "reference_rate": round(float(rate_ref[i]), 4),
                })
        return out


class EmbeddingDiscriminator(Discriminator):
    name = "embedding"
    description = "all-MiniLM-L6-v2 sentence embeddings (+ previous turn, coherence), logistic regression"
    needs_embeddings = True

    def features(self, units: Units, level: str, ctx: Context) -> Any:
        E = ctx.turn_embeddings
        assert E is not None, "embedding discriminator needs turn embeddings"
        if level == "user_turn":
            u = units.user
            cur = E[u["row"].to_numpy()]
            prev_rows = u["prev_row"].to_numpy()
            prev = np.where((prev_rows >= 0)[:, None], E[np.maximum(prev_rows, 0)], 0.0)
            cos = (cur * prev).sum(1, keepdims=True)
            return np.hstack([cur, prev, cos]).astype(np.float32)
        return dialogue_embedding_features(units, E)

    def make_model(self, seed: int) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000, random_state=seed))


def dialogue_embedding_features(units: Units, E: np.ndarray) -> np.ndarray:
    """(n_dialogues, 3*384+2): mean user, mean assistant, first-turn embedding, adjacent cosine mean/std."""
    import polars as pl

    t = units.turns
    rows = t["row"].to_numpy()
    prev = t["prev_row"].to_numpy()
    adj = np.where(prev >= 0, (E[rows] * E[np.maximum(prev, 0)]).sum(1), np.nan)
    keys = units.dialogues["key"]
    key_idx = pl.DataFrame({"key": keys, "k": np.arange(len(keys))})
    kk = t.select("key").join(key_idx, on="key", how="left", maintain_order="left")["k"].to_numpy()
    n = len(keys)
    dim = E.shape[1]
    out = np.zeros((n, 3 * dim + 2), dtype=np.float64)
    is_user = (t["role"] == "user").to_numpy()
    for block, mask in ((0, is_user), (1, ~is_user)):
        sums = np.zeros((n, dim))
        np.add.at(sums, kk[mask], E[rows[mask]])
        cnt = np.bincount(kk[mask], minlength=n)[:, None]
        out[:, block * dim:(block + 1) * dim] = sums / np.maximum(cnt, 1)
    first = t["pos"].to_numpy() == 0
    out[kk[first], 2 * dim:3 * dim] = E[rows[first]]
    ok = ~np.isnan(adj)
    s = np.bincount(kk[ok], weights=adj[ok], minlength=n)
    s2 = np.bincount(kk[ok], weights=adj[ok] ** 2, minlength=n)
    c = np.maximum(np.bincount(kk[ok], minlength=n), 1)
    out[:, -2] = s / c
    out[:, -1] = np.sqrt(np.maximum(s2 / c - (s / c) ** 2, 0))
    return out.astype(np.float32)


class StyleDiscriminator(Discriminator):
    name = "style"
    description = "style, context and structure features (lengths, punctuation, casing, informal spelling, questions, turn count), gradient boosting"

    def __init__(self) -> None:
        self._names: dict[str, list[str]] = {}

    def features(self, units: Units, level: str, ctx: Context) -> Any:
        X, names = user_turn_style(units) if level == "user_turn" else dialogue_style(units)
        self._names[level] = names
        return X

    def make_model(self, seed: int) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, l2_regularization=1.0,
            early_stopping=False, random_state=seed,
        )

    def giveaways(self, units: Units, level: str, X: Any, y: np.ndarray, ctx: Context, top: int) -> list[dict]:
        """Features ranked by how well each alone separates the sides (univariate AUC)."""
        from simgen.stats import auc

        rows = []
        for j, name in enumerate(self._names[level]):
            a = auc(X[:, j], y)
            rows.append({
                "feature": name, "description": DESCRIPTIONS.get(name, name), "auc": round(a, 4),
                "towards": "synthetic" if a > 0.5 else "reference",
                "synthetic_mean": round(float(X[y == 1, j].mean()), 4),
                "reference_mean": round(float(X[y == 0, j].mean()), 4),
            })
        rows.sort(key=lambda r: -abs(r["auc"] - 0.5))
        return rows[:top]


# discriminator name -> class; all three ship in this module
REGISTRY: dict[str, type[Discriminator]] = {
    "tfidf": TfidfDiscriminator,
    "embedding": EmbeddingDiscriminator,
    "style": StyleDiscriminator,
}


@dataclass(frozen=True)
class MemberResult:
    """One discriminator at one level: out-of-fold scores and what gave synthetic away."""

    name: str
    level: str
    scores: np.ndarray = field(repr=False)  # (n_units,) out-of-fold decision scores
    giveaways: list[dict] = field(default_factory=list, repr=False)


def run_discriminators(
    units: Units, names: tuple[str, ...], ctx: Context, *, n_folds: int, top: int
) -> list[MemberResult]:
    """Train every named discriminator at both levels with grouped CV."""
    results = []
    folds = {
        "user_turn": make_folds(units.user["key"].to_numpy(), units.y_user, n_folds, ctx.seed),
        "dialogue": make_folds(units.dialogues["key"].to_numpy(), units.y_dialogue, n_folds, ctx.seed),
    }
    ys = {"user_turn": units.y_user, "dialogue": units.y_dialogue}
    for name in names:
        disc = REGISTRY[name]()
        for level in LEVELS:
            X = disc.features(units, level, ctx)
            y = ys[level]
            scores = cross_val_scores(X, y, folds[level], lambda: disc.make_model(ctx.seed))
            results.append(MemberResult(name, level, scores, disc.giveaways(units, level, X, y, ctx, top)))
    return results


def stack(members: list[np.ndarray], y: np.ndarray, keys: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities (n,) of a logistic regression over member scores, on fresh folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.column_stack(members)
    if X.shape[1] == 1:
        return X[:, 0]
    folds = make_folds(keys, y, n_folds, seed + 1)
    out = np.zeros(len(y))
    for k in np.unique(folds):
        test = folds == k
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X[~test], y[~test])
        out[test] = model.predict_proba(X[test])[:, 1]
    return out


def per_dialogue_mean(values: np.ndarray, unit_keys: np.ndarray, dialogue_keys: np.ndarray) -> np.ndarray:
    """Average unit values per dialogue key (dialogues without units get the overall mean)."""
    idx = {k: i for i, k in enumerate(dialogue_keys)}
    kk = np.fromiter((idx[k] for k in unit_keys), dtype=int, count=len(unit_keys))
    s = np.bincount(kk, weights=values, minlength=len(dialogue_keys))
    c = np.bincount(kk, minlength=len(dialogue_keys))
    fill = float(values.mean()) if len(values) else 0.0
    return np.where(c > 0, s / np.maximum(c, 1), fill)
