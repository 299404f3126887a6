"""The rating statistics on planted answers: a perfect rater, a random one, raters who always agree,
and Fleiss' kappa on the textbook example."""

from __future__ import annotations

import numpy as np
import pytest

from simgen.rating.stats import cohen_kappas, fleiss_counts, fleiss_kappa, judged, suspicion

N_ITEMS = 40
TRUTH = {f"i{j:03d}": j % 2 for j in range(N_ITEMS)}  # odd items are simulated


def answers(rater: str, pick, items=TRUTH) -> list[dict]:
    """One answer per item: pick(item, truth) -> (choice, confidence)."""
    rows = []
    for item, y in items.items():
        choice, conf = pick(item, y)
        rows.append({"rater": rater, "item": item, "choice": choice, "confidence": conf, "seconds": 3.0})
    return rows


def test_suspicion_orders_every_answer_from_sure_real_to_sure_simulated():
    scale = [suspicion("real", c) for c in (4, 3, 2, 1)] + [suspicion("simulated", c) for c in (1, 2, 3, 4)]
    assert scale == list(range(1, 9))


def test_a_perfect_rater_scores_one_with_a_degenerate_interval():
    rows = answers("ann", lambda i, y: ("simulated" if y else "real", 4))
    r = judged(rows, TRUTH, n_boot=300)
    assert r["accuracy"] == 1.0 and r["accuracy_ci"] == [1.0, 1.0]
    assert r["auc"] == 1.0 and r["auc_ci"] == [1.0, 1.0]
    assert r["answers"] == r["items"] == N_ITEMS and r["said_simulated"] == 0.5


def test_an_always_wrong_rater_scores_zero():
    r = judged(answers("bo", lambda i, y: ("real" if y else "simulated", 3)), TRUTH, n_boot=300)
    assert r["accuracy"] == 0.0 and r["auc"] == 0.0


def test_a_random_rater_is_at_chance_and_its_intervals_cover_half():
    rng = np.random.default_rng(0)
    truth = {f"i{j:04d}": j % 2 for j in range(600)}
    rows = answers("cy", lambda i, y: (rng.choice(["real", "simulated"]), int(rng.integers(1, 5))), truth)
    r = judged(rows, truth, n_boot=500)
    assert abs(r["auc"] - 0.5) < 0.06 and abs(r["accuracy"] - 0.5) < 0.06
    assert r["auc_ci"][0] < 0.5 < r["auc_ci"][1] and r["accuracy_ci"][0] < 0.5 < r["accuracy_ci"][1]


def test_auc_uses_the_confidence_where_accuracy_cannot():
    """Says 'simulated' to everything, but is surer on the simulated ones: accuracy at chance, AUC perfect."""
    r = judged(answers("di", lambda i, y: ("simulated", 4 if y else 1)), TRUTH, n_boot=300)
    assert r["accuracy"] == 0.5 and r["auc"] == 1.0


def test_pooled_intervals_resample_dialogues_not_answers():
    """Two raters with identical answers add no evidence: the pooled interval equals one rater's."""
    rng = np.random.default_rng(1)
    picks = {i: (rng.choice(["real", "simulated"]), int(rng.integers(1, 5))) for i in TRUTH}
    one = answers("ed", lambda i, y: picks[i])
    both = one + answers("flo", lambda i, y: picks[i])
    r1, r2 = judged(one, TRUTH, n_boot=400, seed=3), judged(both, TRUTH, n_boot=400, seed=3)
    assert r2["answers"] == 2 * r1["answers"] and r2["items"] == r1["items"]
    assert r2["auc"] == r1["auc"] and r2["auc_ci"] == r1["auc_ci"] and r2["accuracy_ci"] == r1["accuracy_ci"]


def test_raters_who_always_agree_have_kappa_one_and_opposite_raters_minus_one():
    rng = np.random.default_rng(2)
    picks = dict(zip(TRUTH, rng.permutation(["real", "simulated"] * (N_ITEMS // 2))))  # balanced: -1 is reachable
    a = answers("gus", lambda i, y: (picks[i], 2))
    b = answers("hal", lambda i, y: (picks[i], 3))
    flip = answers("ivy", lambda i, y: ("real" if picks[i] == "simulated" else "simulated", 1))
    assert fleiss_kappa(a + b)["kappa"] == 1.0 and fleiss_kappa(a + b)["items"] == N_ITEMS
    pairs = {tuple(c["raters"]): c for c in cohen_kappas(a + b + flip)}
    assert pairs[("gus", "hal")]["kappa"] == 1.0 and pairs[("gus", "hal")]["agree"] == 1.0
    assert pairs[("gus", "ivy")]["kappa"] == -1.0 and pairs[("gus", "ivy")]["agree"] == 0.0


def test_independent_random_raters_have_kappa_near_zero():
    rng = np.random.default_rng(4)
    truth = {f"i{j:04d}": j % 2 for j in range(800)}
    rows = [r for name in ("jo", "kim", "lu") for r in answers(name, lambda i, y: (rng.choice(["real", "simulated"]), 1), truth)]
    assert abs(fleiss_kappa(rows)["kappa"]) < 0.05
    assert all(abs(c["kappa"]) < 0.08 for c in cohen_kappas(rows))


def test_kappa_is_undefined_when_everyone_gives_one_answer_and_absent_without_shared_items():
    a = answers("mo", lambda i, y: ("simulated", 2))
    b = answers("ned", lambda i, y: ("simulated", 4))
    assert fleiss_kappa(a + b)["kappa"] is None and cohen_kappas(a + b)[0]["kappa"] is None
    assert fleiss_kappa(a)["items"] == 0 and fleiss_kappa(a)["kappa"] is None  # one rater: nothing to agree on


def test_fleiss_kappa_matches_the_textbook_example():
    """Fleiss (1971)'s layout as Wikipedia works it: 10 subjects, 14 raters, 5 categories, kappa 0.210."""
    counts = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    k = fleiss_counts(counts)
    assert k["kappa"] == pytest.approx(0.210, abs=5e-4)
    assert k["observed"] == pytest.approx(0.378, abs=5e-4) and k["chance"] == pytest.approx(0.213, abs=5e-4)
