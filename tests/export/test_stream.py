"""DialogueStream: the same dialogues as `simgen generate` with that seed, split across workers, bounded."""

from __future__ import annotations

import itertools
from dataclasses import replace

import polars as pl
import pytest

from simgen.errors import ConfigError
from simgen.export.splits import SplitConfig
from simgen.export.stream import DialogueStream
from tests.export.conftest import GEN


def stream(tiny_model_dir, **kw):
    args = dict(scenario=GEN["scenario"], model=str(tiny_model_dir), seed=GEN["seed"], batch_size=GEN["batch_size"],
                max_turns=GEN["max_turns"], user=GEN["user"], assistant=GEN["assistant"], dtype=GEN["dtype"])
    return DialogueStream(**{**args, **kw})


def as_run(run, did):
    d = run.turns.filter(pl.col("dialogue_id") == did).sort("turn")
    return [{"role": r, "content": t} for r, t in zip(d["role"], d["text"])], d["profile"][0]


def test_stream_yields_the_runs_dialogues(run, tiny_model_dir):
    rows = list(itertools.islice(iter(stream(tiny_model_dir)), 4))  # no limit: the stream would go on
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        messages, profile = as_run(run, r["dialogue_id"])
        assert r["messages"] == messages and r["profile"] == profile


@pytest.mark.slow  # two spawned workers each load torch and the model (~20 s)
def test_workers_take_disjoint_indices_and_match_the_run(run, tiny_model_dir):
    from torch.utils.data import DataLoader

    s = stream(tiny_model_dir, limit=6)
    assert list(s.indices(0, 2)) == [0, 2, 4] and list(s.indices(1, 2)) == [1, 3, 5]
    loader = DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    rows = list(loader)
    assert sorted(r["index"] for r in rows) == list(range(6))  # each dialogue once, from one worker
    for r in rows:
        assert r["messages"] == as_run(run, r["dialogue_id"])[0]


def test_prompt_stream_rows_are_the_prompt_exports(run, tiny_model_dir, tmp_path):
    from datasets import load_dataset

    from simgen.export.rl import export_rl

    export_rl(run, tmp_path / "p", "prompt", split=SplitConfig(fractions=(1.0, 0.0, 0.0)))
    exported = {(r["dialogue_id"], r["user_turn"]): r for r in load_dataset(str(tmp_path / "p"))["train"]}
    rows = list(stream(tiny_model_dir, kind="prompts", limit=3))
    assert rows and {r["dialogue_id"] for r in rows} <= {"d0000000", "d0000001", "d0000002"}
    for r in rows:
        want = exported[(r["dialogue_id"], r["user_turn"])]
        assert r["prompt"] == want["prompt"] and r["history"] == want["history"] and r["profile"] == want["profile"]


def test_stream_holds_no_history(tiny_model_dir, monkeypatch):
    """Generation goes batch by batch: after k rows only ceil(k / batch_size) batches were simulated."""
    from simgen.generation import simulator

    sizes = []
    real = simulator.simulate

    def counted(jobs, *args, **kwargs):
        sizes.append(len(jobs))
        return real(jobs, *args, **kwargs)

    monkeypatch.setattr(simulator, "simulate", counted)
    it = iter(stream(tiny_model_dir, start=10))
    first = [next(it) for _ in range(3)]
    assert [r["index"] for r in first] == [10, 11, 12] and sizes == [2, 2]
    assert "_backend" not in {k for k, v in stream(tiny_model_dir).__getstate__().items() if v is not None}


@pytest.mark.parametrize("kw, match", [({"kind": "dialogs"}, "unknown kind 'dialogs'. Did you mean 'dialogues'?"),
                                       ({"batch_size": 0}, "batch_size must be a positive integer"),
                                       ({"scenario": "movie-recomendation"}, "Did you mean 'movie-recommendation'"),
                                       ({"limit": -1}, "limit must be None or an integer >= 0")])
def test_bad_arguments(tiny_model_dir, kw, match):
    with pytest.raises(ConfigError, match=match):
        stream(tiny_model_dir, **kw)


def test_the_stream_runs_the_redraws_guards_generate_runs(tiny_model_dir, monkeypatch):
    """The scenario's intent guard (and the model's copy index, None for an untuned model) reach
    `simulate` as they do in `simgen generate`; `intent_guard=False` turns the guard off."""
    from simgen.generation import simulator

    seen, real = [], simulator.simulate

    def spy(*args, **kw):
        seen.append((kw.get("intent_guard"), kw.get("copy_guard")))
        return real(*args, **kw)

    monkeypatch.setattr(simulator, "simulate", spy)
    next(iter(stream(tiny_model_dir, limit=1, batch_size=1)))
    guard, copies = seen[-1]
    assert guard is not None and "IQU" in guard.classes and copies == {"user": None, "assistant": None}
    s = stream(tiny_model_dir, limit=1, batch_size=1)
    s.config = replace(s.config, intent_guard=False)
    next(iter(s))
    assert seen[-1][0] is None
