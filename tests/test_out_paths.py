"""Output paths: nothing a user names (a scenario, a manifest entry) places a file outside the
chosen output folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simgen
from simgen.config import GenerateConfig, SamplingConfig
from simgen.generation.pipeline import OUTPUTS, default_out_dir
from simgen.generation.run import SHARDS, RunWriter
from simgen.scenario import list_scenarios

HOSTILE = ["../../x", "../../x.yaml", "/etc/evil.yaml", "/", "..", ".", "a/../../b.yml", "..yaml", "x\n/../y", "~/z", "\\..\\..\\w"]


def inside_outputs(path: Path) -> bool:
    root = (Path.cwd() / OUTPUTS).resolve()
    return path.parent == OUTPUTS and (Path.cwd() / path).resolve().parent == root


@pytest.mark.parametrize("scenario", HOSTILE)
def test_default_out_dir_stays_one_folder_inside_outputs(scenario):
    out = default_out_dir(GenerateConfig(scenario=scenario, n=3, seed=1))
    assert inside_outputs(out) and not out.name.startswith(".") and out.name.endswith("-n3-seed1")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_default_out_dir_of_any_scenario_text(scenario):
    out = default_out_dir(GenerateConfig(scenario=scenario))
    assert inside_outputs(out) and not out.name.startswith(".")


def test_scenario_path_that_climbs_writes_under_outputs(tiny_model_dir, tmp_path, monkeypatch):
    """End to end: `--scenario ../../x.yaml` without --out lands in ./outputs/x-n1-seed0 only."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    shutil.copy(list_scenarios()["chitchat"], tmp_path / "x.yaml")
    for name in ("chitchat.intents.yaml", "chitchat.lengths.yaml", "chitchat.intent-guard.npz", "chitchat.simulator"):  # the files the scenario names beside it
        src = list_scenarios()["chitchat"].with_name(name)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    monkeypatch.chdir(work)
    before = set(tmp_path.rglob("*"))
    run = simgen.generate(scenario="../../x.yaml", n=1, seed=0, model=str(tiny_model_dir), assistant_model=str(tiny_model_dir),
                          max_turns=1, dtype="float32",
                          progress=False, user=SamplingConfig(max_new_tokens=4), assistant_sampling=SamplingConfig(max_new_tokens=4))
    assert run.path == Path("outputs/x-n1-seed0")
    new = set(tmp_path.rglob("*")) - before
    assert new and all(p.is_relative_to(work / "outputs") for p in new), sorted(map(str, new))


def test_shard_files_come_from_their_index_not_the_manifest(tmp_path):
    """A manifest entry whose `file` points elsewhere is neither read nor written."""
    out = tmp_path / "run"
    out.mkdir()
    outside = tmp_path / "escape.parquet"
    hostile = {"shard": 0, "file": os.path.relpath(outside, out), "dialogues": [0, 0], "rows": 1}
    writer = RunWriter(out, {"progress": {"shards": [hostile], "n_shards": 1, "dialogues_done": 1}})
    assert writer.done_shards == set()  # its own shard file is missing, so it is made again
    writer.write_shard(0, pl.DataFrame({"stop_reason": ["max_turns"]}), 0, 0, tokens=1, seconds=0.1)
    assert not outside.exists()
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.parquet")] == [f"{SHARDS}/part-00000.parquet"]
