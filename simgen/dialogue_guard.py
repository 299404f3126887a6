"""The dialogue guard: does a whole dialogue read like people's, or like the simulator's?

The line guards (intent_guard.py, realism_guard.py) judge one line at a time. `simgen realism` also
reads whole dialogues, and there the default dialogues still give themselves away (README
"Sim-to-real"): each line passes, but a dialogue's lines add up (its users type alike, talk alike,
keep no habit of their own). This guard is the realism check's dialogue-level reading turned on
generation. With `--dialogue-redraws N`, a finished dialogue that reads less like people's than
three real dialogues in four is written again, from its first line, with the same latents
(profile, intents, lengths, who opens) and seeds of its own (`rng.derive`'s `take`), up to N
times; the take that reads most like people's is kept. Every take is the model's own dialogue:
this is the best of N+1 samples by a discriminator's odds (cf. Azadi et al.'s "Discriminator
Rejection Sampling", 2019), and dialogue i stays a function of (seed, i).

Two members, as two of the realism check's three (simgen/realism/discriminators.py), each fitted
on the real corpus's train split (people) against the dialogues of a run of the scenario's own
simulator:
- text: TF-IDF of the user lines (word 1-2 grams and char 2-4 grams, case kept) and of the
  assistant lines (word 1-2 grams), hashed as the line guards hash them, into a balanced logistic
  regression;
- style: the realism check's own per-dialogue style and structure features (`dialogue_style`)
  into histogram gradient boosting, kept as plain arrays of split features, thresholds and leaf
  values (no pickle).
A dialogue's score is the mean of the two members' log-odds of "person"; the threshold is the
`QUANTILE` of real dialogues' out-of-fold scores, each from members that never saw it. The file
keeps hashed buckets, idf, weights, trees and the threshold, never text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simgen.data import Dialogue, frame_to_dialogues
from simgen.errors import DataError
from simgen.intent_guard import _hashers, _tfidf

QUANTILE = 0.25  # of real dialogues' out-of-fold score: the threshold under which a dialogue misses
FORMAT = 1
KIND = "dialogue"
# (name, role whose lines it reads, case kept, analysers)
BLOCKS: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    ("user", "user", True, ("word", "char")),
    ("assistant", "assistant", False, ("word",)),
)
TEXT_C = 2.0  # as the realism check's TF-IDF member
STYLE_TREES = dict(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, l2_regularization=1.0)  # as its style member

# A dialogue as the guard reads it: its lines in order, (role, text) each.
Lines = Sequence[tuple[str, str]]


def as_lines(dialogue: Dialogue) -> list[tuple[str, str]]:
    """A dialogue as the guard reads it."""
    return [(t.role, t.text) for t in dialogue.turns]


def dialogues_of(turns: pl.DataFrame) -> list[list[tuple[str, str]]]:
    """A turns frame's dialogues (`frame_to_dialogues`: in dialogue and turn order) as the guard reads them."""
    return [as_lines(d) for d in frame_to_dialogues(turns)]


def _block_counts(texts: Sequence[str], keep_case: bool, analysers: tuple[str, ...]) -> Any:
    from scipy.sparse import hstack

    word, char = _hashers(lowercase=not keep_case)
    parts = {"word": word, "char": char}
    return hstack([parts[a].transform(texts) for a in analysers]).tocsr()


def _joined(dialogues: Sequence[Lines], role: str) -> list[str]:
    return [" \n ".join(text for r, text in d if r == role) for d in dialogues]


def style_features(dialogues: Sequence[Lines]) -> tuple[np.ndarray, list[str]]:
    """The realism check's per-dialogue style features (`dialogue_style`) of `dialogues`, and their names."""
    from simgen.realism.features import build_units, dialogue_style

    rows = [{"dialogue_id": f"{i:08d}", "turn": t, "role": role, "text": text}
            for i, d in enumerate(dialogues) for t, (role, text) in enumerate(d)]
    schema = {"dialogue_id": pl.String, "turn": pl.Int64, "role": pl.String, "text": pl.String}
    frame = pl.DataFrame(rows, schema=schema)
    units = build_units(frame.clear(), frame)
    return dialogue_style(units)


class _Trees:
    """A fitted HistGradientBoostingClassifier's trees as arrays: its raw score (log-odds of class 1) without sklearn's pickle."""

    FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf", "value")

    def __init__(self, arrays: dict[str, np.ndarray], roots: np.ndarray, baseline: float) -> None:
        self.arrays, self.roots, self.baseline = arrays, roots, float(baseline)

    @classmethod
    def of(cls, model: Any) -> _Trees:
        nodes, roots, at = [], [], 0
        for (tree,) in model._predictors:  # one tree per iteration for a binary classifier
            n = tree.nodes
            if n["is_categorical"].any():
                raise ValueError("categorical splits are not supported")
            n = n.copy()
            n["left"] += at
            n["right"] += at
            roots.append(at)
            nodes.append(n)
            at += len(n)
        allnodes = np.concatenate(nodes)
        arrays = {f: np.asarray(allnodes[f]) for f in cls.FIELDS}
        return cls(arrays, np.asarray(roots, dtype=np.int64), float(np.ravel(model._baseline_prediction)[0]))

    def raw(self, X: np.ndarray) -> np.ndarray:
        a = self.arrays
        out = np.full(len(X), self.baseline)
        rows = np.arange(len(X))
        for root in self.roots:
            node = np.full(len(X), root, dtype=np.int64)
            while True:
                inner = ~a["is_leaf"][node].astype(bool)
                if not inner.any():
                    break
                r, nd = rows[inner], node[inner]
                x = X[r, a["feature_idx"][nd]]
                go_left = np.where(np.isnan(x), a["missing_go_to_left"][nd].astype(bool), x <= a["num_threshold"][nd])
                node[inner] = np.where(go_left, a["left"][nd], a["right"][nd])
            out += a["value"][node]
        return out


class DialogueGuard:
    """A score of how much a dialogue reads like people's (log-odds), and the threshold under which it misses."""

    def __init__(self, blocks: dict[str, tuple[np.ndarray, np.ndarray]], coef: np.ndarray, intercept: float,
                 trees: _Trees, style_names: list[str], threshold: float, meta: dict[str, Any]) -> None:
        self.blocks, self.coef, self.intercept = blocks, coef, float(intercept)
        self.trees, self.style_names, self.threshold, self.meta = trees, list(style_names), float(threshold), meta

    # --- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(cls, human: Sequence[Lines], simulated: Sequence[Lines], *, seed: int = 0, folds: int = 5,
            quantile: float = QUANTILE, source: str = "", about: dict[str, Any] | None = None) -> DialogueGuard:
        """Fit on people's dialogues and the simulator's. The threshold is the `quantile` of people's
        dialogues' out-of-fold scores. `about` goes into the file's meta (the fitting script records
        the run and its simulator)."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression

        if min(len(human), len(simulated)) < 2 * folds:
            raise DataError(f"{source or 'the corpus'}: the dialogue guard needs at least {2 * folds} dialogues on each side; "
                            f"got {len(human)} real and {len(simulated)} simulated.")
        dialogues = [*human, *simulated]
        y = np.r_[np.zeros(len(human), int), np.ones(len(simulated), int)]  # 1: the simulator's
        blocks, parts = {}, []
        for name, role, keep_case, analysers in BLOCKS:
            counts = _block_counts(_joined(dialogues, role), keep_case, analysers)
            df = np.asarray((counts > 0).sum(axis=0)).ravel()
            columns = np.flatnonzero(df >= 2)  # a bucket in one dialogue only is noise (and a fingerprint of it)
            idf = np.log((1 + len(dialogues)) / (1 + df[columns])) + 1.0
            blocks[name] = (columns, idf)
            parts.append(_tfidf(counts, columns, idf))
        from scipy.sparse import hstack

        X_text = hstack(parts).tocsr()
        X_style, style_names = style_features(dialogues)

        def text_model() -> Any:
            return LogisticRegression(C=TEXT_C, solver="liblinear", max_iter=1000, class_weight="balanced", random_state=seed)

        def style_model() -> Any:
            return HistGradientBoostingClassifier(**STYLE_TREES, early_stopping=False, class_weight="balanced", random_state=seed)

        from simgen.realism.discriminators import make_folds

        fold = make_folds(np.arange(len(y)), y, folds, seed)  # as the realism check deals its dialogues to folds
        oof = np.zeros(len(y))
        for f in range(folds):
            test = fold == f
            z_text = text_model().fit(X_text[~test], y[~test]).decision_function(X_text[test])
            z_style = _Trees.of(style_model().fit(X_style[~test], y[~test])).raw(X_style[test])
            oof[test] = -(z_text + z_style) / 2
        text, style = text_model().fit(X_text, y), style_model().fit(X_style, y)
        threshold = float(np.quantile(oof[y == 0], quantile))
        from simgen.stats import auc

        meta = {"format": FORMAT, "kind": KIND, "source": source, "dialogues": {"human": len(human), "simulated": len(simulated)},
                "quantile": quantile, "folds": folds, "seed": seed,
                "out_of_fold_auc": round(float(auc(-oof, y)), 4),
                "simulated_passing": round(float(np.mean(oof[y == 1] >= threshold)), 4)}
        meta.update(about or {})
        return cls(blocks, text.coef_[0].astype(np.float32), float(text.intercept_[0]), _Trees.of(style), style_names, threshold, meta)

    # --- use ------------------------------------------------------------------------------------
    def scores(self, dialogues: Sequence[Lines]) -> np.ndarray:
        """How much each dialogue reads like people's: the mean of the members' log-odds of "person"."""
        from scipy.sparse import hstack

        parts = [_tfidf(_block_counts(_joined(dialogues, role), keep_case, analysers), *self.blocks[name])
                 for name, role, keep_case, analysers in BLOCKS]
        z_text = np.asarray(hstack(parts).tocsr() @ self.coef.astype(np.float64)).ravel() + self.intercept
        X_style, names = style_features(dialogues)
        if names != self.style_names:
            raise DataError("the dialogue guard was fitted on other style features than this simgen computes; refit it: "
                            "python scripts/fit_dialogue_guard.py")
        return -(z_text + self.trees.raw(X_style)) / 2

    def misses(self, dialogue: Lines) -> bool:
        """Whether `dialogue` reads less like people's than three real dialogues in four (the fitted quantile)."""
        return bool(self.scores([dialogue])[0] < self.threshold)

    # --- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {f"{name}_{part}": value for name, (columns, idf) in self.blocks.items()
                  for part, value in (("columns", columns.astype(np.int64)), ("idf", idf.astype(np.float32)))}
        arrays |= {f"tree_{f}": v for f, v in self.trees.arrays.items()}
        meta = self.meta | {"intercept": self.intercept, "threshold": self.threshold, "baseline": self.trees.baseline,
                            "style_names": self.style_names}
        np.savez_compressed(tmp, coef=self.coef, tree_roots=self.trees.roots, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DialogueGuard:
        """The guard in `path`; a DataError naming it when it is not a dialogue guard file."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT or meta.get("kind") != KIND:
                    raise ValueError(f"format {meta.get('format')!r} kind {meta.get('kind')!r}, expected {FORMAT} {KIND!r}")
                blocks = {name: (z[f"{name}_columns"], z[f"{name}_idf"].astype(np.float64)) for name, *_ in BLOCKS}
                trees = _Trees({f: z[f"tree_{f}"] for f in _Trees.FIELDS}, z["tree_roots"], meta.pop("baseline"))
                guard = cls(blocks, z["coef"], meta.pop("intercept"), trees, meta.pop("style_names"), meta.pop("threshold"), meta)
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: not a dialogue guard file ({e}). Rewrite it: python scripts/fit_dialogue_guard.py") from e
        if guard.coef.shape != (sum(len(c) for c, _ in guard.blocks.values()),):
            raise DataError(f"{path}: a dialogue guard file with inconsistent shapes. Rewrite it: python scripts/fit_dialogue_guard.py")
        return guard
