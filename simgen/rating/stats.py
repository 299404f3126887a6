"""Statistics of human answers: how well people tell simulated dialogues from real ones, and how much
they agree with each other.

- Suspicion: an answer on one ordinal scale, 1 = "real, sure" ... 4 = "real, a guess",
  5 = "simulated, a guess" ... 8 = "simulated, sure". ROC-AUC of suspicion against the truth uses
  the confidence as well as the choice (AUC 0.5: people cannot tell; 1.0: they always can).
- Accuracy: the share of answers whose choice matches the truth.
- Intervals: cluster bootstrap over dialogues (items), within each side, as realism's AUCs; a
  pooled interval resamples items with all their raters' answers, so raters of one item are not
  counted as independent evidence.
- Agreement: Fleiss' kappa over the items at least two raters answered (the variable-raters
  form: with the same raters on every item it is Fleiss' 1971 kappa), and Cohen's kappa for each
  pair of raters over the items both answered. Both are on the real/simulated choice.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from simgen.realism.stats import auc_with_ci, cluster_weights
from simgen.stats import auc


def suspicion(choice: str, confidence: int) -> int:
    """1 (sure it is real) ... 8 (sure it is simulated)."""
    return 4 + int(confidence) if choice == "simulated" else 5 - int(confidence)


def _round(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def judged(rows: list[dict[str, Any]], truth: dict[str, int], *, n_boot: int = 1000, ci: float = 0.95,
           seed: int = 0) -> dict[str, Any]:
    """Accuracy and AUC of a set of answers (one rater's, or everyone's), with intervals over items."""
    if not rows:
        return {"answers": 0, "items": 0, "accuracy": None, "accuracy_ci": None, "auc": None, "auc_ci": None}
    items = np.array([r["item"] for r in rows])
    y = np.array([truth[i] for i in items])
    said = np.array([r["choice"] == "simulated" for r in rows])
    correct = (said == y.astype(bool)).astype(float)
    scores = np.array([suspicion(r["choice"], r["confidence"]) for r in rows], float)
    rng = np.random.default_rng(seed)
    w = cluster_weights(items, y, n_boot, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        accs = (w @ correct) / w.sum(1)
    a = (1 - ci) / 2
    out: dict[str, Any] = {
        "answers": len(rows), "items": int(len(set(items.tolist()))),
        "synthetic_answers": int(y.sum()), "real_answers": int(len(y) - y.sum()),
        "accuracy": _round(correct.mean()),
        "accuracy_ci": [_round(np.quantile(accs, a)), _round(np.quantile(accs, 1 - a))],
        "said_simulated": _round(said.mean()),
        "auc": None, "auc_ci": None,
    }
    if 0 < y.sum() < len(y):
        res = auc_with_ci(scores, y, items, n_boot=n_boot, ci=ci, seed=seed)
        out["auc"], out["auc_ci"] = res["auc"], res["ci"]
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    out["median_seconds"] = _round(float(np.median(secs))) if secs else None
    return out


def fleiss_counts(counts: np.ndarray) -> dict[str, Any]:
    """Fleiss' kappa of a (subjects, categories) table of how many raters put each subject in each category.

    Subjects may have different numbers of raters (at least two each).
    """
    counts = np.asarray(counts, float)
    m = counts.sum(1)
    p_i = (counts * (counts - 1)).sum(1) / (m * (m - 1))
    p_j = counts.sum(0) / m.sum()
    p_bar, p_e = float(p_i.mean()), float((p_j**2).sum())
    kappa = None if p_e >= 1 else (p_bar - p_e) / (1 - p_e)  # one answer to everything: undefined
    return {"kappa": _round(kappa), "items": int(len(counts)), "observed": _round(p_bar), "chance": _round(p_e)}


def fleiss_kappa(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fleiss' kappa of the real/simulated choice over items with at least two answers."""
    by_item: dict[str, list[bool]] = {}
    for r in rows:
        by_item.setdefault(r["item"], []).append(r["choice"] == "simulated")
    counts = [(sum(v), len(v) - sum(v)) for v in by_item.values() if len(v) >= 2]
    if not counts:
        return {"kappa": None, "items": 0, "observed": None, "chance": None}
    return fleiss_counts(np.array(counts))


def cohen_kappas(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cohen's kappa of each pair of raters over the items both answered."""
    from sklearn.metrics import cohen_kappa_score

    by_rater: dict[str, dict[str, str]] = {}
    for r in rows:
        by_rater.setdefault(r["rater"], {})[r["item"]] = r["choice"]
    out = []
    for a, b in combinations(sorted(by_rater), 2):
        common = sorted(set(by_rater[a]) & set(by_rater[b]))
        entry: dict[str, Any] = {"raters": [a, b], "items": len(common), "kappa": None}
        if common:
            xa, xb = [by_rater[a][i] for i in common], [by_rater[b][i] for i in common]
            entry["agree"] = _round(np.mean([p == q for p, q in zip(xa, xb)]))
            if len(set(xa) | set(xb)) > 1:  # else undefined (both gave one answer to everything)
                entry["kappa"] = _round(cohen_kappa_score(xa, xb))
        out.append(entry)
    return out


def item_auc(scores: dict[str, float], truth: dict[str, int]) -> float | None:
    """AUC of one score per item against the truth (None without both sides)."""
    keys = sorted(scores)
    y = np.array([truth[k] for k in keys])
    if not 0 < y.sum() < len(y):
        return None
    return _round(auc(np.array([scores[k] for k in keys], float), y))
