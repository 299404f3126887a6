"""The intent guard: does a user line read like the intent its turn was given?

A tuned simulator learns how people write better than which act they perform: at temperature 1
the shipped one wrote lines a classifier recognised as their intent half as often as it does real
lines (README "Sim-to-real"). With redraws on, the guard draws such a line again, as the copy
guard redraws near-copies: the kept line is still the model's own sample, conditioned on passing.

What "reads like" means: a linear classifier (TF-IDF word 1-2 grams and char 2-4 grams, sublinear
tf, into a balanced logistic regression) fitted on a real corpus's labelled user lines gives
p(intent | line). A line misses when that probability is below its intent's threshold: the
`QUANTILE` (a quarter) of the same probability over real lines of that intent, each scored out of
fold by a classifier that never saw its dialogue. So three real lines in four pass the guard with
their own intent, and an intent the classifier cannot read from real lines (low probabilities all
round) gets a low threshold and is seldom redrawn. Intents the classifier has no class for are
never checked.

The features are hashed (`HashingVectorizer`, 2**20 buckets per analyser), and the file keeps the
used buckets, their idf, the weights and the thresholds, never text, so a scenario can ship the
guard of a corpus that cannot ship itself (`profiles/movie-recommendation.intent-guard.npz`, written
by scripts/fit_intent_guard.py from IARD's train split).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simgen.errors import DataError

QUANTILE = 0.25  # of real lines' out-of-fold p(own intent): the threshold under which a line misses
MIN_LINES = 10  # real lines an intent needs for a class of its own
BUCKETS = 2 ** 20
C = 4.0  # as realism's adherence classifier
FORMAT = 1


def _hashers(lowercase: bool = True) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import HashingVectorizer

    common = {"n_features": BUCKETS, "alternate_sign": False, "norm": None, "lowercase": lowercase}
    return (HashingVectorizer(analyzer="word", ngram_range=(1, 2), **common),
            HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), **common))


def _counts(texts: Sequence[str], lowercase: bool = True) -> Any:
    from scipy.sparse import hstack

    word, char = _hashers(lowercase)
    return hstack([word.transform(texts), char.transform(texts)]).tocsr()


def _tfidf(counts: Any, columns: np.ndarray, idf: np.ndarray) -> Any:
    """Hashed counts -> sublinear tf * idf over the kept columns, rows L2-normalised.

    The kept columns (`columns`, sorted) are found among each row's few nonzeros by `searchsorted`:
    scipy's column indexing, `counts[:, columns]`, gives the same matrix but builds an index over
    all 2 x BUCKETS columns on every call, most of the time of checking one line."""
    from scipy.sparse import csr_matrix
    from sklearn.preprocessing import normalize

    counts = counts.tocsr()
    at = np.searchsorted(columns, counts.indices)
    hit = at < len(columns)
    hit[hit] = columns[at[hit]] == counts.indices[hit]
    indptr = np.concatenate([[0], np.cumsum(hit)])[counts.indptr]
    x = csr_matrix((counts.data[hit].astype(np.float64), at[hit], indptr), shape=(counts.shape[0], len(columns)))
    x.data = 1.0 + np.log(x.data)
    return normalize(x.multiply(idf).tocsr())


class IntentGuard:
    """p(intent | line) from a fitted linear classifier, and the per-intent thresholds under which a line misses."""

    def __init__(self, classes: Sequence[str], columns: np.ndarray, idf: np.ndarray, coef: np.ndarray,
                 intercept: np.ndarray, thresholds: np.ndarray, meta: dict[str, Any]) -> None:
        self.classes = tuple(classes)
        self.columns, self.idf, self.coef, self.intercept = columns, idf, coef, intercept
        self.thresholds = dict(zip(self.classes, (float(t) for t in thresholds)))
        self.meta = meta
        self._index = {c: i for i, c in enumerate(self.classes)}

    # --- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str], groups: Sequence[str], *, seed: int = 0,
            folds: int = 5, quantile: float = QUANTILE, source: str = "", lowercase: bool = True,
            kind: str = "intent") -> IntentGuard:
        """Fit on real user lines, their intents and their dialogue ids (`groups`: the folds that set
        the thresholds keep a dialogue's lines together). Intents with fewer than `MIN_LINES` lines
        are left out (never checked). `lowercase=False` keeps case in the features, and `kind` names
        what the classes are (`load` checks it): the realism guard (simgen/realism_guard.py) fits
        this classifier on people's lines against the simulator's. The file records either only
        where it is not the default, so the shipped intent guard stays as it was written."""
        labels_arr = np.asarray(labels, dtype=object)
        names, counts = np.unique(labels_arr, return_counts=True)
        classes = sorted(str(n) for n, c in zip(names, counts) if c >= MIN_LINES)
        if len(classes) < 2:
            raise DataError(f"{source or 'the corpus'}: the intent guard needs at least two intents with >= {MIN_LINES} "
                            f"labelled user lines each; found {dict(zip(names.tolist(), counts.tolist()))}.")
        keep = np.isin(labels_arr, classes)
        texts = [t for t, k in zip(texts, keep) if k]
        y, g = labels_arr[keep].astype(str), np.asarray(groups, dtype=object)[keep]
        counts_x = _counts(texts, lowercase)
        df = np.asarray((counts_x > 0).sum(axis=0)).ravel()
        columns = np.flatnonzero(df >= 2)  # a bucket seen in one line only is noise (and a fingerprint of that line)
        n = len(texts)
        idf = np.log((1 + n) / (1 + df[columns])) + 1.0
        x = _tfidf(counts_x, columns, idf)

        keys, inverse = np.unique(g, return_inverse=True)
        fold = (np.random.default_rng(seed).permutation(len(keys)) % min(folds, len(keys)))[inverse]
        own, guess = np.empty(n), np.empty(n, dtype=object)  # out of fold: p(own intent), and the likeliest intent
        for f in np.unique(fold):
            train, test = fold != f, fold == f
            model = cls._model(seed).fit(x[train], y[train])
            p = model.predict_proba(x[test])
            col = {c: i for i, c in enumerate(model.classes_)}
            own[test] = [p[r, col[c]] if c in col else 0.0 for r, c in enumerate(y[test])]
            guess[test] = model.classes_[p.argmax(axis=1)]
        thresholds = np.array([np.quantile(own[y == c], quantile) for c in classes])
        model = cls._model(seed).fit(x, y)
        assert list(model.classes_) == classes
        meta = {"format": FORMAT, "source": source, "lines": n, "dialogues": len(keys), "quantile": quantile,
                "folds": int(fold.max() + 1), "seed": seed,
                "lines_per_intent": {c: int((y == c).sum()) for c in classes},
                "out_of_fold_accuracy": round(float(np.mean(guess == y)), 4)}
        if not lowercase:
            meta["lowercase"] = False
        if kind != "intent":
            meta["kind"] = kind
        coef, intercept = model.coef_, model.intercept_
        if len(classes) == 2:  # sklearn keeps one row for two classes: p = sigmoid(z) is the softmax of (0, z)
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        return cls(classes, columns, idf, coef.astype(np.float32), intercept.astype(np.float32), thresholds, meta)

    @staticmethod
    def _model(seed: int) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)

    # --- use ------------------------------------------------------------------------------------
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(classes)) p(intent | line)."""
        z = _tfidf(_counts(list(texts), self.meta.get("lowercase", True)), self.columns, self.idf) @ self.coef.T.astype(np.float64) + self.intercept
        z = np.asarray(z)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def probability(self, text: str, intent: str) -> float | None:
        """p(intent | text), or None when the guard has no class for `intent`."""
        i = self._index.get(intent)
        return None if i is None else float(self.probabilities([text])[0, i])

    def misses(self, text: str, intent: str | None) -> bool:
        """Whether `text` reads less like `intent` than three real lines of it in four (never for an intent it does not know)."""
        p = self.probability(text, intent) if intent is not None else None
        return p is not None and p < self.thresholds[intent]

    # --- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, classes=np.array(self.classes), columns=self.columns.astype(np.int64), idf=self.idf.astype(np.float32),
                            coef=self.coef, intercept=self.intercept, thresholds=np.array([self.thresholds[c] for c in self.classes]),
                            meta=np.array(json.dumps(self.meta, sort_keys=True)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, kind: str = "intent") -> IntentGuard:
        """The guard in `path`, refused (DataError) unless it is a guard of this `kind`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
                if meta.get("kind", "intent") != kind:
                    raise ValueError(f"kind {meta.get('kind', 'intent')!r}, expected {kind!r}")
                guard = cls([str(c) for c in z["classes"]], z["columns"], z["idf"].astype(np.float64), z["coef"], z["intercept"],
                            z["thresholds"], meta)
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: not {_a(kind)} guard file ({e}). Rewrite it: python scripts/fit_{kind}_guard.py") from e
        if guard.coef.shape != (len(guard.classes), len(guard.columns)) or guard.idf.shape != guard.columns.shape:
            raise DataError(f"{path}: {_a(kind)} guard file with inconsistent shapes. Rewrite it: python scripts/fit_{kind}_guard.py")
        return guard


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def labelled_user_lines(turns: pl.DataFrame, label_of: Any, closing: str | None = None,
                        closing_acts: frozenset[str] = frozenset()) -> pl.DataFrame:
    """A corpus's user lines with the intent the generator would have given them: `label_of(raw)`
    (the intent model's aliases; None drops the line), and, with `closing`, the trailing run of a
    dialogue's user lines whose acts are all `closing_acts` (thanks, goodbye) labelled `closing`, as
    the intent model's closing turns are (scripts/fit_iard_intents.py). Columns: dialogue_id, text, label."""
    user = turns.filter(pl.col("role") == "user").sort("dialogue_id", "turn")
    if "intent" not in user.columns:
        raise DataError("the corpus has no `intent` column: the intent guard learns from labelled user lines.")
    rows = []
    for (did,), frame in user.group_by(["dialogue_id"], maintain_order=True):
        texts = frame["text"].to_list()
        raws = frame["intent"].to_list()
        acts = frame["acts"].to_list() if "acts" in frame.columns else [None] * len(texts)
        tail = len(texts)
        if closing is not None:
            while tail > 0 and acts[tail - 1] and set(acts[tail - 1].split(",")) <= closing_acts:
                tail -= 1
        for k, (text, raw) in enumerate(zip(texts, raws)):
            label = closing if k >= tail else label_of(raw)
            if label is not None and text and text.strip():
                rows.append((str(did), text, label))
    return pl.DataFrame(rows, schema={"dialogue_id": pl.String, "text": pl.String, "label": pl.String}, orient="row")
