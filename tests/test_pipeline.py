"""End to end on the tiny random model: run folder, schema, manifest, determinism, resume, errors."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

import simgen
from simgen.config import PersonaCapConfig, SamplingConfig
from simgen.errors import ConfigError, RunError
from simgen.generation.pipeline import resume


def gen(tiny_model_dir, out, persona_cap=None, persona_axis=None, **kw):
    # short lines keep the tiny model fast; the code path is the same at any length
    args = dict(scenario="movie-recommendation", n=5, seed=3, model=str(tiny_model_dir), out=out, max_turns=3,
                batch_size=2, dtype="float32", progress=False, user=SamplingConfig(max_new_tokens=8),
                assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=10))
    args.update(kw)
    if persona_cap is not None:
        args["persona"] = PersonaCapConfig(cap=persona_cap, axis=persona_axis)
    return simgen.generate(**args)


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return gen(tiny_model_dir, tmp_path_factory.mktemp("runs") / "a")


def test_run_folder_follows_the_contract(run):
    t = run.turns
    assert t.columns[:8] == ["dialogue_id", "turn", "role", "text", "intent", "n_tokens", "finish_reason", "stop_reason"]
    assert isinstance(t.schema["profile"], pl.Struct) and "backstory" in t.schema["profile"].to_schema()
    assert t["dialogue_id"].n_unique() == 5
    from simgen.generation.plan import plan
    from simgen.scenario import load_scenario

    sc = load_scenario("movie-recommendation")
    opened = []
    for i, (_, d) in enumerate(t.group_by("dialogue_id", maintain_order=True)):
        assert d["turn"].to_list() == list(range(d.height))
        opened.append(plan(sc, 3, i, 3).opens)  # the assistant opens where the plan says, and the sides alternate
        assert d["role"].to_list() == (["assistant"] * opened[-1] + ["user", "assistant"] * 6)[: d.height]
        assert d.filter(pl.col("role") == "user")["intent"].null_count() == 0
        assert d.filter(pl.col("role") == "assistant")["intent"].null_count() == d.filter(pl.col("role") == "assistant").height
        assert d["profile"].n_unique() == 1  # one profile latent per dialogue
        assert d["stop_reason"].null_count() == d.height - 1 and d["stop_reason"][-1] is not None
    assert 0 < sum(opened) < 5
    assert not (run.path / "shards").exists()


def test_profiles_and_intents_are_the_planned_latents(run):
    from simgen.scenario import load_scenario
    from simgen.generation.plan import plan

    sc = load_scenario("movie-recommendation")
    for i, (_, d) in enumerate(run.turns.group_by("dialogue_id", maintain_order=True)):
        job = plan(sc, 3, i, 3)
        assert d["profile"][0] == job.profile.values
        assert d.filter(pl.col("role") == "user")["intent"].to_list() == list(job.intents[: d.filter(pl.col("role") == "user").height])


def test_manifest_records_what_made_the_run(run):
    m = json.loads((run.path / "manifest.json").read_text())
    assert m["status"] == "complete" and m["seed"] == 3 and m["n"] == 5
    assert m["scenario"]["name"] == "movie-recommendation" and len(m["scenario"]["fingerprint"]) == 64
    assert set(m["scenario"]["templates"]) == {"user", "assistant"}
    assert m["backend"]["user"]["model"]["fingerprint"] and m["backend"]["user"]["dtype"] == "float32"
    assert {"torch", "transformers", "polars", "simgen"} <= set(m["versions"])
    assert m["counts"]["dialogues"] == 5 and m["counts"]["turns"] == run.turns.height
    assert m["counts"]["tokens"] == run.turns["n_tokens"].sum() > 0
    assert sum(m["counts"]["stop_reasons"].values()) == 5
    assert m["timings"]["tokens_per_s"] > 0 and m["progress"]["dialogues_done"] == 5
    assert [s["dialogues"] for s in m["progress"]["shards"]] == [[0, 1], [2, 3], [4, 4]]


def test_a_runs_max_turns_is_the_recorded_horizon_else_its_longest_dialogue(run, tmp_path):
    # rebuilding the chats a run's simulator saw (RL exports, consistency, rehearsal) needs this horizon
    assert run.max_turns == 3
    import shutil

    copy = tmp_path / "no-horizon"
    shutil.copytree(run.path, copy)
    m = json.loads((copy / "manifest.json").read_text())
    del m["config"]["max_turns"]
    (copy / "manifest.json").write_text(json.dumps(m))
    longest = run.turns.filter(pl.col("role") == "user").group_by("dialogue_id").len()["len"].max()
    assert simgen.load_run(copy).max_turns == longest and 1 <= longest <= 3


def test_same_seed_gives_byte_identical_turns(run, tiny_model_dir, tmp_path):
    again = gen(tiny_model_dir, tmp_path / "b")
    assert (again.path / "turns.parquet").read_bytes() == (run.path / "turns.parquet").read_bytes()
    other = gen(tiny_model_dir, tmp_path / "c", seed=4)
    assert not other.turns["text"].equals(run.turns["text"])


@pytest.mark.parametrize("refill", [1, 4], ids=["shard_by_shard", "mid_refilled_stream"])
def test_resume_after_an_interrupted_run_matches_an_uninterrupted_one(run, tiny_model_dir, tmp_path, monkeypatch, refill):
    """Interrupted as its second shard is done (with --refill 4: inside a stream whose batch refills,
    its last dialogue still running); the resumed run reruns what is missing and matches."""
    from tests.conftest import interrupt_second_shard

    interrupt_second_shard(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        gen(tiny_model_dir, tmp_path / "r", refill=refill)
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    (first, last), = [s["dialogues"] for s in m["progress"]["shards"]]  # one shard written; with refilling, whichever ended first
    assert m["status"] == "interrupted" and m["progress"]["dialogues_done"] == last - first + 1 and (refill > 1 or first == 0)
    with pytest.raises(RunError, match="not complete"):
        simgen.load_run(tmp_path / "r")
    monkeypatch.undo()
    resumed = resume(tmp_path / "r", progress=False)
    assert (resumed.path / "turns.parquet").read_bytes() == (run.path / "turns.parquet").read_bytes()


def test_a_run_interrupted_before_redraws_existed_resumes_without_them(tiny_model_dir, tmp_path, monkeypatch):
    """Its manifest has no `redraws` and its shard no `redraws` column: the rest is written without
    redraws, and the shards merge, the missing column read as null."""
    import polars as pl

    from tests.conftest import interrupt_second_shard

    interrupt_second_shard(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        gen(tiny_model_dir, tmp_path / "old")
    monkeypatch.undo()
    manifest = tmp_path / "old" / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["config"]["redraws"]
    manifest.write_text(json.dumps(m))
    (shard,) = (tmp_path / "old" / "shards").glob("*.parquet")
    pl.read_parquet(shard).drop("redraws").write_parquet(shard)
    resumed = resume(tmp_path / "old", progress=False)
    assert resumed.turns["dialogue_id"].n_unique() == 5 and resumed.turns["redraws"].null_count() == resumed.turns.height


def test_a_resumed_run_keeps_the_precision_auto_chose_when_it_started(tiny_model_dir, tmp_path, monkeypatch):
    """Started with `--dtype auto` where auto meant bf16, resumed where it means fp32 (another
    machine, or a simgen that chooses otherwise): the rest is written in bf16, as its first shards were."""
    import simgen.models
    from tests.conftest import interrupt_second_shard

    monkeypatch.setattr(simgen.models, "native_bf16_cpu", lambda: True)
    whole = gen(tiny_model_dir, tmp_path / "whole", dtype="auto")
    assert json.loads((whole.path / "manifest.json").read_text())["backend"]["user"]["dtype"] == "bfloat16"
    interrupt_second_shard(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        gen(tiny_model_dir, tmp_path / "r", dtype="auto")
    monkeypatch.undo()
    monkeypatch.setattr(simgen.models, "native_bf16_cpu", lambda: False)
    resumed = resume(tmp_path / "r", progress=False)
    m = json.loads((resumed.path / "manifest.json").read_text())
    assert m["backend"]["user"]["dtype"] == "bfloat16" and m["config"]["dtype"] == "auto"
    assert (resumed.path / "turns.parquet").read_bytes() == (whole.path / "turns.parquet").read_bytes()



@pytest.mark.parametrize(("edit", "field"), [
    (lambda m: m["progress"]["shards"][0].update(shard="one"), "progress.shards[0].shard is 'one'"),
    (lambda m: m["progress"]["shards"][0].update(shard=7), "progress.shards[0].shard is 7, expected an integer from 0 to 2"),
    (lambda m: m["progress"]["shards"][0].update(dialogues=[1, 0]), "progress.shards[0].dialogues"),
    (lambda m: m["progress"]["shards"][0].pop("tokens"), "progress.shards[0].tokens"),
    (lambda m: m["progress"]["shards"].append(dict(m["progress"]["shards"][0])), "each shard listed once"),
    (lambda m: m["progress"].update(batch_size=0), "progress.batch_size is 0"),
    (lambda m: m["progress"].update(shards={"0": 1}), "progress.shards is {'0': 1}, expected a list"),
    (lambda m: m["scenario"].pop("fingerprint"), "scenario.fingerprint"),
    (lambda m: m["scenario"]["files"].update(user_template="edited"), "scenario.files"),
    (lambda m: m["config"].update(user=None), "config.user"),
    (lambda m: m["config"].update(colour="blue"), "does not match this simgen's settings"),
])
def test_a_damaged_manifest_is_a_clear_error_naming_the_field(run, tmp_path, edit, field):
    m = json.loads((run.path / "manifest.json").read_text())
    m["status"] = "interrupted"
    m["progress"]["shards"] = m["progress"]["shards"][:1]
    edit(m)
    out = tmp_path / "r"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match=re.escape(field)) as err:
        resume(out, progress=False)
    assert str(out / "manifest.json") in str(err.value)
    (out / "manifest.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="unreadable manifest"):
        resume(out, progress=False)

def test_own_assistant_callable(tiny_model_dir, tmp_path):
    seen = []

    def echo_bot(messages):
        seen.append(messages)
        return f"You said {len(messages[-1]['content'])} characters."

    # a context budget prompts the model side with the last exchanges only; your function gets the whole history
    r = gen(tiny_model_dir, tmp_path / "cb", n=2, assistant=echo_bot, user=SamplingConfig(max_new_tokens=8, context=150),
            assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=10, context=150))
    lines = r.turns.filter(pl.col("role") == "assistant")["text"].to_list()
    assert lines and all(line.startswith("You said") for line in lines)
    assert r.manifest["backend"]["assistant"]["backend"] == "callable"
    assert r.manifest["config"]["user"]["context"] == 150 and r.manifest["config"]["assistant"]["context"] == 0
    assert seen[0][0]["role"] == "system" and seen[0][1]["role"] == "user"
    assert max(len(m) for m in seen) == 1 + r.turns.filter(pl.col("role") == "assistant")["turn"].max()  # system + every turn before


def test_refuses_to_overwrite_and_bad_values(tiny_model_dir, run, tmp_path):
    with pytest.raises(RunError, match="already holds a run. Resume it with"):
        gen(tiny_model_dir, run.path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        gen(tiny_model_dir, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="n must be a positive integer, got 0"):
        gen(tiny_model_dir, tmp_path / "z", n=0)
    assert not (tmp_path / "z").exists()  # nothing half-written


def test_unwritable_output_folder(tiny_model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot write there|not a folder"):
        gen(tiny_model_dir, blocker / "run")


def test_persona_cap_flag_hooks_only_the_user_side(tiny_model_dir, run, tmp_path):
    import numpy as np

    from simgen.backends.steering import PersonaAxis

    direction = np.random.default_rng(0).normal(size=32)
    axis = PersonaAxis(layer=1, direction=tuple(float(x) for x in direction / np.linalg.norm(direction)),
                       persona_mean=-1.0, assistant_mean=1.0, n_persona=1, n_assistant=1)
    axis_path = axis.save(tmp_path / "persona_axis.json")
    capped = gen(tiny_model_dir, tmp_path / "capped", persona_cap="1:-50", persona_axis=str(axis_path))
    assert capped.manifest["backend"]["user"]["persona_cap"] == {"layer": 1, "threshold": -50.0, "axis_model": ""}
    user = pl.col("role") == "user"
    assert not capped.turns.filter(user)["text"].equals(run.turns.filter(user)["text"])
    with pytest.raises(ConfigError, match="go together"):
        PersonaCapConfig(cap="1:0")
    with pytest.raises(ConfigError, match="fitted at layer 1; cap that layer"):
        gen(tiny_model_dir, tmp_path / "bad", persona_cap="0:1", persona_axis=str(axis_path))


def test_config_round_trips_through_the_manifest_and_reads_the_flat_layout_of_older_runs():
    from simgen.config import GenerateConfig, ServerConfig

    config = GenerateConfig(n=3, backend="openai", model="m", server=ServerConfig(base_url="http://h/v1", concurrency=4),
                            persona=PersonaCapConfig(cap="1:2", axis="a.json"))
    assert GenerateConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    flat = {k: v for k, v in config.to_dict().items() if k not in ("server", "persona")}
    flat |= {"base_url": "http://h/v1", "api_key_env": "OPENAI_API_KEY", "concurrency": 4, "request_timeout": 120.0,
             "max_retries": 4, "persona_cap": "1:2", "persona_axis": "a.json"}
    assert GenerateConfig.from_dict(flat) == config
    with pytest.raises(TypeError, match="colour"):
        GenerateConfig.from_dict({**flat, "colour": "blue"})


def test_persona_cap_on_a_backend_that_cannot_steer_fails_before_the_run_folder(tmp_path):
    from simgen.config import ServerConfig

    with pytest.raises(ConfigError, match="the openai backend cannot. Use --backend transformers"):
        simgen.generate(backend="openai", model="m", server=ServerConfig(base_url="http://127.0.0.1:9/v1"),
                        persona=PersonaCapConfig(cap="1:0", axis="axis.json"), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("temperature", [0.0, None], ids=["greedy", "sampled"])
def test_a_refilled_run_writes_what_each_dialogue_writes_alone(tiny_model_dir, tmp_path, temperature):
    """Continuous batching (--refill 4: 3 shards of 2 as one stream through 2 slots, n=5 not a
    multiple of the batch) writes byte for byte the turns.parquet of a run whose every dialogue ran
    alone (a batch of 1, no refilling), greedy or sampled with each dialogue's own seeds."""
    kw = dict(max_turns=6, temperature=temperature)
    refilled = gen(tiny_model_dir, tmp_path / "refilled", refill=4, **kw)
    alone = gen(tiny_model_dir, tmp_path / "alone", batch_size=1, refill=1, **kw)
    assert json.loads((refilled.path / "manifest.json").read_text())["config"]["refill"] == 4
    assert (refilled.path / "turns.parquet").read_bytes() == (alone.path / "turns.parquet").read_bytes()
    turns = refilled.turns.group_by("dialogue_id").len()["len"]
    assert turns.n_unique() > 1  # the dialogues ended at different turns: slots were refilled


def test_an_old_run_without_refill_resumes_one_shard_at_a_time_in_index_order():
    from simgen.config import REFILL, GenerateConfig
    from simgen.generation.pipeline import settle, streams
    from simgen.scenario import load_scenario

    raw = GenerateConfig(n=5, batch_size=2).to_dict()
    del raw["refill"], raw["order"]
    old = GenerateConfig.from_dict(raw)
    assert old.refill == 1 and old.order == "index" and streams(old) == [[0], [1], [2]]
    assert GenerateConfig().refill is None and GenerateConfig().order == "longest"  # settled when the run starts
    assert settle(GenerateConfig(n=5, batch_size=2), load_scenario("movie-recommendation")).refill == REFILL == 4
    assert streams(GenerateConfig(n=5, batch_size=2, refill=4)) == [[0, 1, 2]] and streams(GenerateConfig(n=9, batch_size=1, refill=4)) == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8]]
    with pytest.raises(ConfigError, match="refill"):
        GenerateConfig(refill=0)
    with pytest.raises(ConfigError, match="order must be longest or index"):
        GenerateConfig(order="shortest")


def test_a_refilling_stream_starts_its_longest_planned_dialogues_first(tiny_model_dir, tmp_path, monkeypatch):
    """--order longest hands the batch's slots to the dialogues with the most planned user turns
    (then words) first, and writes the same bytes as --order index (fp32: a dialogue's tokens do not
    depend on its batch company); the manifest records the order. A stream that fits its batch, and
    --order index, start in index order."""
    from simgen.generation import pipeline
    from simgen.generation.plan import longest_first, plan
    from simgen.scenario import load_scenario

    started: list[list[int]] = []
    real = pipeline.simulate
    monkeypatch.setattr(pipeline, "simulate", lambda jobs, *a, **k: (started.append([j.index for j in jobs]), real(jobs, *a, **k))[1])
    kw = dict(n=7, max_turns=6, refill=4, temperature=0.0)
    longest = gen(tiny_model_dir, tmp_path / "longest", **kw)
    index = gen(tiny_model_dir, tmp_path / "index", order="index", **kw)
    sc = load_scenario("movie-recommendation")
    jobs = [plan(sc, 3, i, 6) for i in range(7)]
    assert started[0] == [j.index for j in longest_first(jobs)] != list(range(7)) and started[1] == list(range(7))
    turns = [len(jobs[i].intents) for i in started[0]]
    assert turns == sorted(turns, reverse=True) and len(set(turns)) > 1
    assert json.loads((longest.path / "manifest.json").read_text())["config"]["order"] == "longest"
    assert (longest.path / "turns.parquet").read_bytes() == (index.path / "turns.parquet").read_bytes()
    started.clear()
    gen(tiny_model_dir, tmp_path / "fits", n=2, max_turns=6)  # one shard that fits the batch: nothing to order
    assert started == [[0, 1]]
