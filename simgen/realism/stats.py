"""Statistics for the realism check: AUC with a cluster bootstrap, divergences with bootstrap CIs
and permutation p-values, and a MAUVE-style score.

Units and clusters: turns of one dialogue are not independent, so every resample draws whole
dialogues (a cluster bootstrap), separately within each side, and every permutation moves whole
dialogues between sides.

Divergences: the plug-in JSD or TV of two sampled distributions is biased upwards (it is above 0
even for two halves of one corpus). The interval is the basic ("reverse percentile") bootstrap
interval, [2 d - q_hi, 2 d - q_lo] clipped at 0, which corrects that bias to first order, and the
reported `value_bc` is the bias-corrected estimate 2 d - mean(d*). The plug-in `value` is kept too.

Intervals at the null: near 0 a bootstrap interval of a divergence is not reliable (the bootstrap
is not valid at the boundary, and TV is not smooth there), while the permutation test is exact
for "same distribution". So the interval is the set of values not rejected: its lower end is 0
whenever the permutation test does not reject at the interval's level, and the basic bootstrap
bound otherwise. The caller passes the level; `distribution.py` Bonferroni-adjusts it across all
attribute comparisons of a report, so all its intervals hold together at the nominal level.
"""

from __future__ import annotations

import numpy as np

from simgen.stats import auc, weighted_auc


def cluster_weights(groups: np.ndarray, sides: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_units) multiplicities from resampling whole groups within each side."""
    uniq, inv = np.unique(groups, return_inverse=True)
    group_side = np.zeros(len(uniq), dtype=int)
    group_side[inv] = sides
    gw = np.zeros((n_boot, len(uniq)))
    for side in (0, 1):
        idx = np.flatnonzero(group_side == side)
        if len(idx):
            gw[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=n_boot)
    return gw[:, inv]


def auc_with_ci(
    scores: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> dict:
    """AUC, its cluster-bootstrap percentile CI and standard error.

    scores, y, groups: (n_units,); y = 1 for synthetic; groups = dialogue keys (unique per side).
    """
    scores = np.asarray(scores, float)
    y = np.asarray(y, int)
    rng = np.random.default_rng(seed)
    point = auc(scores, y)
    boots = []
    for chunk in _chunks(n_boot, max(1, 2_000_000 // max(1, len(y)))):
        boots.append(weighted_auc(scores, y, cluster_weights(np.asarray(groups), y, chunk, rng)))
    b = np.concatenate(boots)
    b = b[~np.isnan(b)]
    a = (1 - ci) / 2
    return {
        "auc": round(point, 4),
        "ci": [round(float(np.quantile(b, a)), 4), round(float(np.quantile(b, 1 - a)), 4)],
        "se": round(float(b.std(ddof=1)), 4),
    }


def _chunks(total: int, size: int):  # noqa: ANN202
    while total > 0:
        yield min(size, total)
        total -= size


def jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (0..1) between rows of p and q (..., K), each summing to 1."""
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0.0)
        return t.sum(-1)

    return np.clip((kl(p, m) + kl(q, m)) / 2, 0.0, 1.0)


def tv(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total-variation distance (0..1) between rows of p and q."""
    return np.abs(p - q).sum(-1) / 2


def _normalise(counts: np.ndarray) -> np.ndarray:
    tot = counts.sum(-1, keepdims=True)
    return counts / np.where(tot > 0, tot, 1)


def divergence_test(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    *,
    n_boot: int = 1000,
    n_perm: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict:
    """Compare two label distributions given per-dialogue label counts.

    counts_a: (dialogues of side a, K) label counts; counts_b likewise for side b.
    Returns the two distributions and, for JSD and TV: plug-in value, bias-corrected value, basic
    bootstrap CI (clipped at 0) and a permutation p-value (dialogues shuffled between sides).
    """
    rng = np.random.default_rng(seed)
    ca, cb = np.asarray(counts_a, float), np.asarray(counts_b, float)
    pa, pb = _normalise(ca.sum(0)), _normalise(cb.sum(0))
    na, nb = len(ca), len(cb)
    wa = rng.multinomial(na, np.full(na, 1 / na), size=n_boot)  # (B, na)
    wb = rng.multinomial(nb, np.full(nb, 1 / nb), size=n_boot)
    bpa, bpb = _normalise(wa @ ca), _normalise(wb @ cb)  # (B, K)
    pooled = np.vstack([ca, cb])
    perm_a = np.zeros((n_perm, na + nb))
    for i in range(n_perm):
        perm_a[i, rng.permutation(na + nb)[:na]] = 1
    ppa, ppb = _normalise(perm_a @ pooled), _normalise((1 - perm_a) @ pooled)
    alpha = 1 - ci
    out: dict = {"reference": pa.tolist(), "synthetic": pb.tolist()}
    for name, fn in (("jsd", jsd), ("tv", tv)):
        d = float(fn(pa, pb))
        boot = fn(bpa, bpb)
        perm = fn(ppa, ppb)
        p_value = float((1 + (perm >= d - 1e-12).sum()) / (1 + n_perm))
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
        low = 0.0 if p_value >= alpha else max(0.0, 2 * d - float(hi))
        out[name] = {
            "value": round(d, 5),
            "value_bc": round(max(0.0, 2 * d - float(boot.mean())), 5),
            "ci": [round(low, 5), round(max(0.0, 2 * d - float(lo)), 5)],
            "p_value": round(p_value, 4),
        }
    return out


def mauve_score(p_labels: np.ndarray, q_labels: np.ndarray, k: int, *, scale: float = 5.0, grid: int = 49) -> float:
    """MAUVE (Pillutla et al. 2021) from cluster assignments of the two samples (labels in 0..k-1).

    The area under the divergence frontier {(exp(-c KL(Q|R)), exp(-c KL(P|R))) : R = l P + (1-l) Q}.
    """
    p = np.bincount(p_labels, minlength=k) / len(p_labels)
    q = np.bincount(q_labels, minlength=k) / len(q_labels)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        with np.errstate(divide="ignore"):
            return float((a[mask] * np.log(a[mask] / b[mask])).sum())

    # curve order: (1, 0), then R from Q (lambda=0) to P (lambda=1), then (0, 1)
    xs, ys = [1.0], [0.0]
    for lam in np.linspace(0, 1, grid):
        r = lam * p + (1 - lam) * q
        xs.append(np.exp(-scale * kl(q, r)))
        ys.append(np.exp(-scale * kl(p, r)))
    xs.append(0.0)
    ys.append(1.0)
    x, y = np.asarray(xs), np.asarray(ys)
    return float(abs(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)))


def pooled_auc(line_auc: float, n_lines: float) -> float:
    """The AUC of a dialogue's mean line score when each of its `n_lines` lines is told apart with AUC `line_auc`
    on its own, the lines independent (equal-variance binormal scores: a line's d' = sqrt(2) * Phi^-1(AUC), the mean
    of n lines has sqrt(n) times that d'). An upper guide for what lines alone give away at dialogue level: lines of
    one dialogue are correlated, which gives less, and a dialogue discriminator also reads what lines do together."""
    from scipy.stats import norm

    return float(norm.cdf(np.sqrt(n_lines) * norm.ppf(line_auc)))


def line_auc_needed(dialogue_auc: float, n_lines: float) -> float:
    """The inverse of `pooled_auc`: the line AUC whose mean over `n_lines` independent lines gives `dialogue_auc`."""
    from scipy.stats import norm

    return float(norm.cdf(norm.ppf(dialogue_auc) / np.sqrt(n_lines)))
