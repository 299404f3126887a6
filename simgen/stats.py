"""The one ROC-AUC of simgen: realism's discriminators and bootstrap, and the judges' evaluation, use it.

ROC-AUC is computed from ranks, ties counting one half, in O(n log n) once and O(n) per weighting,
so a cluster bootstrap scores many resamples of the same scores cheaply (`weighted_auc`).
"""

from __future__ import annotations

import numpy as np


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC of `scores` for labels y in {0,1} (ties count one half)."""
    return float(weighted_auc(np.asarray(scores, float), np.asarray(y, int), np.ones((1, len(y))))[0])


def weighted_auc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC under each row of `weights` (B, n) of unit multiplicities -> (B,).

    Sorted once; each row is O(n): positives' weighted count of lower-scored negatives (+1/2 ties).
    """
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    yy = y[order].astype(bool)
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each distinct score
    pos = np.add.reduceat(np.where(yy, w, 0.0), starts, axis=1)  # (B, groups)
    neg = np.add.reduceat(np.where(yy, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
