"""benchmarks/bench_sim2real.py's rows: where each run goes, and when a finished one is reused (tiny model).

A row's run is reused when the benchmark is run again; it must be that row's run. A copy of the
shipped movie-recommendation scenario (tests/test_fingerprint.py's) writes a row; with one of its
files edited since, or with other models named, the benchmark must refuse that folder.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import simgen
from simgen.config import GenerateConfig, SamplingConfig
from tests.conftest import load_benchmark
from tests.test_fingerprint import copy_scenario


def test_a_row_folder_stays_inside_out_whatever_the_scenario_is_called(tmp_path):
    """A scenario given as a path (an absolute one too) names its row by its file's stem, inside --out;
    before, `--out / "/abs/x.yaml-row..."` wrote the run beside the scenario's YAML."""
    bench = load_benchmark("bench_sim2real")
    out = tmp_path / "out"
    for scenario in ("movie-recommendation", "mine/movie-recommendation.yaml", str(tmp_path / "mine" / "movie-recommendation.yaml")):
        assert bench.row_folder(out, scenario, "opening", "-sim", 40, 0) == out / "movie-recommendation-opening-sim-n40-seed0"


def test_a_finished_row_is_reused_only_with_the_scenario_files_and_models_it_was_written_with(tiny_model_dir, tmp_path):
    bench = load_benchmark("bench_sim2real")
    yaml = copy_scenario(tmp_path / "scenario")
    config = GenerateConfig(scenario=str(yaml), n=2, seed=3, model=str(tiny_model_dir), max_turns=2, batch_size=2, dtype="float32",
                            user=SamplingConfig(max_new_tokens=6), assistant=SamplingConfig(max_new_tokens=6))
    out = tmp_path / "row"
    assert bench.finished_row(out, config) is None  # nothing there yet: the row is generated
    run = simgen.generate(config=config, out=out, progress=False)
    assert bench.finished_row(out, config).path == run.path  # the same row again: reused

    with pytest.raises(SystemExit, match="assistant_model"):  # the same scenario, another assistant
        bench.finished_row(out, replace(config, assistant_model="embedded"))
    lengths = yaml.with_name("movie-recommendation.lengths.yaml")
    lengths.write_text(lengths.read_text() + "\n# edited\n")
    with pytest.raises(SystemExit, match=r"other scenario files than .*movie-recommendation\.yaml"):  # one file changed since
        bench.finished_row(out, config)
    assert (out / "manifest.json").is_file()  # refused, not removed
