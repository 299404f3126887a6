"""Trimming (`SamplingConfig.trim`, `--trim`): a line that hits the token cap is cut back to its last
sentence end, or, with none, ends its dialogue as an unfinished line; nothing a dialogue goes on from
ends mid-sentence. Checked on the function and on the real transformers path (tiny model)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

import simgen
from simgen.config import SamplingConfig
from simgen.data import Generation
from simgen.generation.simulator import finished_line, trim_to_sentence


@pytest.mark.parametrize(("text", "kept"), [
    ("I like it. And then I", "I like it."),
    ("Wow!! So", "Wow!!"),
    ('He said "hi." and', 'He said "hi."'),
    ("Ok\u2026 maybe", "Ok\u2026"),
    ("Sure! I met Dr. No and", "Sure!"),
    ("I said no. Then", "I said no."),
    ("no end here", None),
    ("3.5 stars is", None),  # a decimal point ends no sentence
    ("I met Mr. Smith and", None),
])
def test_trim_to_sentence(text, kept):
    assert trim_to_sentence(text) == kept


def test_finished_line_trims_only_cut_lines_when_asked():
    on, off = SamplingConfig(trim=True), SamplingConfig(trim=False)
    cut = Generation("Sure. I want a", n_tokens=8, finish_reason="length")
    assert finished_line(cut, on) == ("Sure.", "trimmed")
    assert finished_line(cut, off) == ("Sure. I want a", "length")
    assert finished_line(Generation("Sure. I want a", n_tokens=5, finish_reason="stop"), on) == ("Sure. I want a", "stop")
    assert finished_line(Generation("no end", n_tokens=8, finish_reason="length"), on) == ("no end", "length")
    assert finished_line(Generation("", error="boom"), on) == ("", "error")


def _generate(tiny_model_dir, out, trim):
    return simgen.generate(scenario="movie-recommendation", n=6, seed=5, model=str(tiny_model_dir), out=out, max_turns=3,
                           batch_size=3, dtype="float32", progress=False, user=SamplingConfig(max_new_tokens=24, trim=trim),
                           assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=24, trim=trim))


def test_no_line_a_dialogue_goes_on_from_ends_mid_sentence(tiny_model_dir, tmp_path):
    run = _generate(tiny_model_dir, tmp_path / "on", trim=True)
    turns = run.turns.sort("dialogue_id", "turn")
    stops = dict(run.dialogues().select("dialogue_id", "stop_reason").iter_rows())
    for (did,), rows in turns.group_by("dialogue_id", maintain_order=True):
        reasons = rows["finish_reason"].to_list()
        assert all(r in ("stop", "trimmed", "target") for r in reasons[:-1]), (did, reasons)
        if reasons[-1] == "length":  # cut with no sentence end: stored as it came, and the dialogue ends on it
            assert stops[did] == "degenerate_output: unfinished_line"
    for text in turns.filter(pl.col("finish_reason") == "trimmed")["text"]:
        assert trim_to_sentence(text) == text
    assert json.loads((run.path / "manifest.json").read_text())["config"]["user"]["trim"] is True
    off = _generate(tiny_model_dir, tmp_path / "off", trim=False)
    assert "trimmed" not in off.turns["finish_reason"].to_list()


def test_trimmed_runs_are_deterministic_and_resume_byte_identical(tiny_model_dir, tmp_path, monkeypatch):
    from simgen.generation.pipeline import resume
    from tests.conftest import interrupt_second_shard

    whole = _generate(tiny_model_dir, tmp_path / "a", trim=True)
    interrupt_second_shard(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _generate(tiny_model_dir, tmp_path / "b", trim=True)
    monkeypatch.undo()
    resumed = resume(tmp_path / "b", progress=False)
    assert (resumed.path / "turns.parquet").read_bytes() == (whole.path / "turns.parquet").read_bytes()
    assert whole.turns["target_words"].drop_nulls().len() > 0  # the length latent is part of what resumes identically


def test_cli_trim_flag_sets_both_sides(tiny_model_dir, tmp_path):
    from simgen.cli import cli

    out = tmp_path / "cli"
    res = CliRunner().invoke(cli, ["generate", "-n", "2", "--max-turns", "1", "--model", str(tiny_model_dir), "--dtype", "float32",
                                   "--user-max-new-tokens", "6", "--assistant-max-new-tokens", "6", "--trim", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["user"]["trim"] is True and config["assistant"]["trim"] is True


@pytest.mark.slow
def test_the_embedded_model_s_cut_lines_end_at_a_sentence(tmp_path):
    """The embedded SmolLM2 writes real sentences, so a short cap cuts lines that trimming can save.
    (The embedded model by name: the scenario's tuned simulator writes short lines that seldom reach the cap.)"""
    run = simgen.generate(scenario="movie-recommendation", n=4, seed=2, out=tmp_path / "e", max_turns=2, batch_size=4, progress=False,
                          model="embedded",
                          user=SamplingConfig(max_new_tokens=24, trim=True),
                          assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=32, trim=True))
    turns = run.turns
    trimmed = turns.filter(pl.col("finish_reason") == "trimmed")["text"].to_list()
    assert trimmed and all(trim_to_sentence(t) == t for t in trimmed)
    stops = dict(run.dialogues().select("dialogue_id", "stop_reason").iter_rows())
    for (did,), rows in turns.sort("turn").group_by("dialogue_id", maintain_order=True):
        reasons = rows["finish_reason"].to_list()
        assert all(r in ("stop", "trimmed", "target") for r in reasons[:-1])
        assert reasons[-1] != "length" or stops[did] == "degenerate_output: unfinished_line"
