"""`simgen consistency --ray` on a real local Ray cluster (two single-CPU workers), tiny random Llama as judge
and simulator, Q&A and the persona axis on: the scores equal the one-machine check's (atol 1e-5; the workers
run torch on one thread each), the driver scores nothing itself, and a worker SIGKILLed mid-chunk costs only
that chunk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simgen.cluster import RayConfig
from simgen.config import SamplingConfig
from simgen.consistency import ConsistencyConfig, check_run

pytestmark = pytest.mark.slow  # a real Ray cluster: about 5 minutes for tests/cluster (CI runs them)

CONFIG = ConsistencyConfig(chunk_dialogues=2)  # 6 dialogues: 3 chunks


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import simgen

    return simgen.generate(scenario="movie-recommendation", n=6, seed=4, max_turns=3, batch_size=2, dtype="float32",
                           model=str(tiny_model_dir), out=tmp_path_factory.mktemp("ray-consistency") / "run", progress=False,
                           user=SamplingConfig(max_new_tokens=8, trim=False),
                           assistant_sampling=SamplingConfig(max_new_tokens=10, trim=False)).path


@pytest.fixture(scope="module")
def local_report(run_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, pl.DataFrame]:
    path = tmp_path_factory.mktemp("consistency-local") / "run"
    shutil.copytree(run_dir, path)
    report = check_run(path, f"llm:{tiny_model_dir}", config=CONFIG)
    return report, pl.read_parquet(path / "consistency.parquet")


def same_scores(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns and a.height == b.height
    assert a.select("dialogue_id", "turn").equals(b.select("dialogue_id", "turn"))
    for col in a.columns:
        if a[col].dtype.is_float():
            x, y = a[col].to_numpy(), b[col].to_numpy()
            assert np.array_equal(np.isnan(x), np.isnan(y)) and np.allclose(x, y, atol=1e-5, equal_nan=True), col
        else:
            assert a[col].equals(b[col]), col


def test_consistency_on_ray_equals_the_one_machine_check(ray_address, run_dir, tiny_model_dir, local_report, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(run_dir, path)
    out = tmp_path / "rep"  # --out: the workers save their chunks there too, and the run folder gets nothing
    report = check_run(path, f"llm:{tiny_model_dir}", out=out, config=CONFIG, ray=RayConfig(address=ray_address, workers=2))
    same_scores(local_report[1], pl.read_parquet(out / "consistency.parquet"))
    assert report["not_computed"] == {} and report["axis"] is not None  # Q&A and the axis ran, on the workers
    assert report["seconds"] == {"judge": 0.0, "qa": 0.0, "axis": 0.0}  # the driver scored nothing itself
    assert not (out / "consistency.parts").exists() and not (path / "consistency.parts").exists()
    assert not (path / "consistency.parquet").exists()


def test_a_worker_killed_mid_chunk_costs_only_that_chunk(ray_address, run_dir, tiny_model_dir, local_report, tmp_path,
                                                         monkeypatch):
    path = tmp_path / "run"
    shutil.copytree(run_dir, path)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("SIMGEN_RAY_FAULT", f"kill:1:{marker}")
    check_run(path, f"llm:{tiny_model_dir}", config=CONFIG, ray=RayConfig(address=ray_address, workers=2, retries=1))
    assert "on unit 1" in marker.read_text()
    same_scores(local_report[1], pl.read_parquet(path / "consistency.parquet"))


def test_ray_needs_a_judge_spec(ray_address, run_dir, tiny_model_dir, tmp_path):
    from simgen.consistency.judges import LLMJudge
    from simgen.errors import ConfigError

    path = tmp_path / "run"
    shutil.copytree(run_dir, path)
    with pytest.raises(ConfigError, match="--ray needs the judge as a spec"):
        check_run(path, LLMJudge(str(tiny_model_dir)), config=CONFIG, ray=RayConfig(address=ray_address))
