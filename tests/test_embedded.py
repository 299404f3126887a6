"""The embedded SmolLM2-135M-Instruct, end to end (slow: loads the real model)."""

from __future__ import annotations

import json

import polars as pl
import pytest

import simgen
from simgen.scenario import load_scenario
from simgen.config import SamplingConfig

pytestmark = pytest.mark.slow


def test_embedded_conversion_into_a_fresh_cache(tmp_path, monkeypatch):
    """The GGUF converts into $SIMGEN_CACHE once; the copy loads as a plain causal LM."""
    from transformers import AutoModelForCausalLM

    from simgen.models import embedded_model_dir, resolve_model

    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path / "cache"))
    folder = embedded_model_dir()
    assert folder.is_relative_to(tmp_path / "cache") and (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    src = resolve_model(None)
    assert src.id == "SmolLM2-135M-Instruct" and len(src.fingerprint) == 64
    assert not list((tmp_path / "cache" / "models").glob(".convert-*"))  # no temp folder left behind


def test_embedded_end_to_end(tmp_path):
    run = simgen.generate(scenario="movie-recommendation", n=4, seed=0, out=tmp_path / "run", max_turns=3,
                          batch_size=4, progress=False, user=SamplingConfig(max_new_tokens=32),
                          assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=40))
    t = run.turns
    assert t["dialogue_id"].n_unique() == 4
    users = t.filter(pl.col("role") == "user")
    assert users["intent"].null_count() == 0
    # a real model writes words, and ends lines on its own or at a sentence end near the length target
    assert users["text"].str.len_chars().mean() > 10
    assert t["finish_reason"].is_in(["stop", "target"]).any()
    assert users["target_words"].null_count() == 0
    m = run.manifest
    # the scenario ships a simulator tuned on IARD (both sides): the default run is the embedded model with it merged
    simulator = load_scenario("movie-recommendation").simulator
    assert simulator is not None and m["config"]["model"] == m["config"]["assistant_model"] == str(simulator)
    assert m["backend"]["user"]["model"]["id"] == str(simulator)
    assert m["timings"]["tokens_per_s"] > 0
    plain = simgen.generate(scenario="movie-recommendation", model="embedded", n=1, seed=0, out=tmp_path / "plain", max_turns=1,
                            progress=False, user=SamplingConfig(max_new_tokens=16))
    assert plain.manifest["backend"]["user"]["model"]["id"] == "SmolLM2-135M-Instruct"


def test_embedded_greedy_runs_are_byte_identical(tmp_path):
    kw = dict(scenario="chitchat", n=2, seed=5, max_turns=2, batch_size=2, temperature=0.0, progress=False,
              user=SamplingConfig(temperature=0, max_new_tokens=16), assistant_sampling=SamplingConfig(temperature=0, max_new_tokens=16))
    a = simgen.generate(out=tmp_path / "a", **kw)
    b = simgen.generate(out=tmp_path / "b", **kw)
    assert (a.path / "turns.parquet").read_bytes() == (b.path / "turns.parquet").read_bytes()
