"""simgen.realism.stats: AUC, cluster bootstrap, divergences, permutation tests, MAUVE."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from simgen.realism.stats import auc_with_ci, divergence_test, jsd, mauve_score, tv
from simgen.stats import auc, weighted_auc


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1)), min_size=2, max_size=60))
def test_auc_matches_sklearn_with_ties(pairs: list[tuple[int, int]]) -> None:
    s = np.array([p[0] for p in pairs], float)
    y = np.array([p[1] for p in pairs])
    if len(set(y)) < 2:
        return
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s))


def test_weighted_auc_equals_auc_of_repeated_units() -> None:
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=40), rng.integers(0, 2, 40)
    w = rng.integers(0, 4, 40)
    rep = np.repeat(np.arange(40), w)
    assert weighted_auc(s, y, w[None, :].astype(float))[0] == pytest.approx(roc_auc_score(y[rep], s[rep]))


def test_auc_ci_brackets_point_and_narrows_with_n() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1600):
        y = np.repeat([0, 1], n // 2)
        s = rng.normal(size=n) + 0.5 * y
        groups = np.arange(n) // 2 + y * 100_000  # pairs of units share a dialogue, per side
        r = auc_with_ci(s, y, groups, n_boot=400, seed=0)
        assert r["ci"][0] <= r["auc"] <= r["ci"][1]
        widths.append(r["ci"][1] - r["ci"][0])
    assert widths[1] < widths[0] / 2


def test_cluster_bootstrap_is_wider_for_correlated_units() -> None:
    """Turns copied within a dialogue carry no extra information; the CI must not shrink."""
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 100)
    s = rng.normal(size=200) + 0.4 * y
    one = auc_with_ci(s, y, np.arange(200), n_boot=400, seed=0)
    rep_s, rep_y = np.repeat(s, 10), np.repeat(y, 10)
    clustered = auc_with_ci(rep_s, rep_y, np.repeat(np.arange(200), 10), n_boot=400, seed=0)
    naive = auc_with_ci(rep_s, rep_y, np.arange(2000), n_boot=400, seed=0)
    assert clustered["se"] == pytest.approx(one["se"], rel=0.25)
    assert naive["se"] < clustered["se"] / 2


def test_jsd_and_tv_bounds() -> None:
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.0, 0.0, 1.0])
    assert jsd(p, p) == pytest.approx(0) and tv(p, p) == pytest.approx(0)
    assert jsd(p, q) == pytest.approx(1) and tv(p, q) == pytest.approx(1)
    r = np.array([0.2, 0.3, 0.5])
    assert jsd(p, r) == pytest.approx(jsd(r, p))


def test_divergence_same_distribution_covers_zero() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for i in range(20):
        a = rng.multinomial(4, [0.2, 0.3, 0.5], size=150)
        b = rng.multinomial(4, [0.2, 0.3, 0.5], size=150)
        r = divergence_test(a, b, n_boot=300, n_perm=300, seed=i)
        assert r["jsd"]["value"] > 0  # the plug-in estimate is biased upwards ...
        covered += r["jsd"]["ci"][0] == 0 and r["tv"]["ci"][0] == 0  # ... the corrected interval is not
    assert covered >= 17


def test_divergence_detects_a_shift() -> None:
    rng = np.random.default_rng(4)
    a = rng.multinomial(4, [0.2, 0.3, 0.5], size=150)
    b = rng.multinomial(4, [0.4, 0.3, 0.3], size=150)
    r = divergence_test(a, b, n_boot=300, n_perm=300, seed=0)
    assert r["jsd"]["ci"][0] > 0 and r["tv"]["ci"][0] > 0.1
    assert r["jsd"]["p_value"] < 0.01
    assert r["reference"] == pytest.approx(a.sum(0) / a.sum())


def test_mauve_same_is_near_one_disjoint_near_zero() -> None:
    rng = np.random.default_rng(5)
    same = mauve_score(rng.integers(0, 10, 2000), rng.integers(0, 10, 2000), 10)
    apart = mauve_score(rng.integers(0, 5, 2000), rng.integers(5, 10, 2000), 10)
    half = mauve_score(rng.integers(0, 10, 2000), rng.integers(0, 5, 2000), 10)
    assert same > 0.98 and apart < 0.01 and apart < half < same


def test_interval_covers_zero_whenever_permutation_test_does_not_reject() -> None:
    rng = np.random.default_rng(6)
    rejected = 0
    for i in range(30):
        shift = 0.04 * (i % 5)
        a = rng.multinomial(3, [0.3, 0.3, 0.4], size=120)
        b = rng.multinomial(3, [0.3 + shift, 0.3, 0.4 - shift], size=120)
        r = divergence_test(a, b, n_boot=200, n_perm=200, ci=0.95, seed=i)
        for m in ("jsd", "tv"):
            lo, hi = r[m]["ci"]
            assert 0 <= lo <= hi
            if r[m]["p_value"] >= 0.05:
                assert lo == 0, r[m]
            else:
                rejected += 1
    assert rejected > 10  # the larger shifts are detected


def test_pooled_auc_matches_simulated_dialogues() -> None:
    """Lines with binormal scores of a known AUC, averaged over n per dialogue: the dialogues' AUC is `pooled_auc`."""
    from scipy.stats import norm

    from simgen.realism.stats import line_auc_needed, pooled_auc

    rng = np.random.default_rng(0)
    for line_auc, n in ((0.7, 12), (0.6, 6), (0.78, 1)):
        shift = np.sqrt(2) * norm.ppf(line_auc)
        real = rng.normal(0, 1, (4000, n)).mean(1)
        synthetic = rng.normal(shift, 1, (4000, n)).mean(1)
        simulated = roc_auc_score([0] * 4000 + [1] * 4000, np.r_[real, synthetic])
        assert pooled_auc(line_auc, n) == pytest.approx(simulated, abs=0.01)
        assert line_auc_needed(pooled_auc(line_auc, n), n) == pytest.approx(line_auc)
    assert pooled_auc(0.5, 20) == pytest.approx(0.5) and pooled_auc(0.7, 1) == pytest.approx(0.7)
    assert line_auc_needed(0.85, 12) < 0.65  # a dialogue target is a much stricter line target
