"""`simgen realism --ray` on a real local Ray cluster: the sentence embeddings of real IARD lines computed on
two workers equal the one-machine ones (atol 1e-5), and the realism report comes out the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simgen.cluster import RayConfig


pytestmark = pytest.mark.slow  # a real Ray cluster: about 5 minutes for tests/cluster (CI runs them)

@pytest.fixture(scope="module")
def iard_texts(shared_dir: Path) -> tuple:
    from simgen.corpora import load_corpus

    turns = load_corpus(shared_dir / "data" / "iard" / "formatted_IARD_annotated_gold.json").turns
    return turns, sorted(set(turns["text"].to_list()))[:600]


def test_embeddings_on_ray_equal_the_one_machine_ones(ray_address, iard_texts):
    from simgen.realism.cluster import encode
    from simgen.realism.embed import _model, encode_texts, precision

    _, texts = iard_texts
    here = encode_texts(_model(), texts, 64)
    there = encode(texts, 64, RayConfig(address=ray_address, workers=2), part=150)  # 4 parts over 2 workers
    assert there.shape == here.shape
    if precision() == "float32":
        assert np.allclose(there, here, atol=1e-5)
    else:  # bf16 (a CPU with bf16 arithmetic): other batch neighbours, other roundings
        assert np.sum(there * here, axis=1).min() > 0.999


def test_the_realism_report_on_ray_equals_the_local_one(ray_address, iard_texts, tmp_path, monkeypatch):
    from simgen.realism import RealismConfig, compare

    turns, _ = iard_texts
    ids = sorted(set(turns["dialogue_id"].to_list()))
    a, b = turns.filter(turns["dialogue_id"].is_in(ids[:38])), turns.filter(turns["dialogue_id"].is_in(ids[38:]))
    cfg = RealismConfig(discriminators=("tfidf", "embedding", "style"), attributes=False, n_boot=100, n_perm=100)
    reports = {}
    for where, ray in (("local", None), ("ray", RayConfig(address=ray_address, workers=2))):
        monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path / where))  # each computes its own embeddings
        reports[where] = compare(a, b, config=cfg, ray=ray)
    assert list((tmp_path / "ray").rglob("*.npy"))  # the Ray run cached what its workers computed
    local, on_ray = reports["local"], reports["ray"]
    assert on_ray["auc"] == pytest.approx(local["auc"], abs=1e-3)
    for name in ("tfidf", "embedding", "style"):
        for level in ("user_turn", "dialogue"):
            assert on_ray["discriminators"][name][level]["auc"] == pytest.approx(local["discriminators"][name][level]["auc"], abs=1e-3)
