"""Fixtures for the export tests: small runs on the tiny random Llama, one scored for consistency.

`run` is a real `simgen generate` run (6 dialogues, seed 3, float32). `scored_run` is a copy scored by
`simgen consistency` with the tiny LLM judge (no Q&A, no axis), so it has RUN/consistency.parquet and
reports/consistency.json. `GEN` holds the generate settings, so the streaming tests can ask for the
same dialogues.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from simgen.config import SamplingConfig

# trimming off: the random tiny model seldom ends a sentence within 8 tokens, and exports need multi-turn dialogues
GEN: dict[str, Any] = dict(scenario="movie-recommendation", seed=3, max_turns=3, batch_size=2, dtype="float32",
                           user=SamplingConfig(max_new_tokens=8, trim=False),
                           assistant=SamplingConfig(temperature=0.7, max_new_tokens=10, trim=False))
N = 6


@pytest.fixture(scope="session")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import simgen

    args = {k: v for k, v in GEN.items() if k != "assistant"}
    return simgen.generate(n=N, model=str(tiny_model_dir), out=tmp_path_factory.mktemp("export-runs") / "run", progress=False,
                           assistant_sampling=GEN["assistant"], **args)


@pytest.fixture(scope="session")
def tiny_judge_spec(tiny_model_dir: Path) -> str:
    return f"llm:{tiny_model_dir}"


@pytest.fixture(scope="session")
def scored_run(run: Any, tiny_judge_spec: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from simgen.consistency import ConsistencyConfig, check_run
    from simgen.generation.run import load_run

    path = tmp_path_factory.mktemp("export-scored") / "run"
    shutil.copytree(run.path, path)
    check_run(path, tiny_judge_spec, config=ConsistencyConfig(qa=False, axis=False))
    return load_run(path)
