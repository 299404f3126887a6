"""benchmarks/bench_tail.py times simgen's decoding calls without changing what they write (tiny model)."""

from __future__ import annotations

import polars as pl

import simgen
from simgen.config import GenerateConfig, SamplingConfig
from tests.conftest import load_benchmark


def load_bench():
    return load_benchmark("bench_tail")


def test_the_tail_profile_times_every_call_and_writes_the_runs_dialogues(tiny_model_dir, tmp_path):
    bench = load_bench()
    config = GenerateConfig(scenario="movie-recommendation", n=5, seed=3, model=str(tiny_model_dir), max_turns=3, batch_size=2,
                            dtype="float32", user=SamplingConfig(max_new_tokens=8), assistant=SamplingConfig(temperature=0.7, max_new_tokens=10))
    frames, calls, tokens, _ = bench.profile_run(config)
    run = simgen.generate(config=config, out=tmp_path / "run", progress=False)
    columns = ["dialogue_id", "turn", "role", "text", "intent", "n_tokens", "finish_reason", "stop_reason", "redraws"]
    assert pl.concat(frames).select(columns).equals(run.turns.select(columns))  # timing changes nothing it writes
    assert tokens == run.manifest["counts"]["tokens"]
    assert {c["side"] for c in calls} == {"user", "assistant"} and all(1 <= c["rows"] <= 2 for c in calls)
    redraws = run.turns["redraws"].sum()
    assert redraws > 0  # the tiny model's gibberish is redrawn, inside the call that drew it (transformers draws again in a call)
    assert sum(c["redrawn"] for c in calls) == redraws and not any(c["kind"] == "redraw" for c in calls)  # each one counted
    table = bench.occupancy_table(calls, batch_size=2)
    assert abs(sum(r["share"] for r in table) - 1) < 1e-9 and sum(r["calls"] for r in table) == len(calls)
    assert {r["occupancy"] for r in table} <= {"25-50%", "75-100%"}  # 1 or 2 rows of a batch of 2
    assert all(c["rows"] <= c["fed"] <= c["rows"] * (c["steps"] + 1) for c in calls)  # the rows the backend really fed
    idle = bench.idle_rows(calls, batch_size=2)
    assert idle["tokens_drawn"] == sum(c["tokens"] for c in calls) and 0 < idle["drawn_share"] <= 1
    costs = bench.step_costs(calls)
    assert sorted(c["rows"] for c in costs) == sorted({c["rows"] for c in calls if c["steps"]})


def test_the_ablation_times_six_ways_of_running_the_same_dialogues(tiny_model_dir, capsys):
    """Before #15, + top-p among the top tokens, + parking, + redraws inside the call, + refilling, +
    the compiled sampler: the tiny model in fp32 draws the same tokens in any batch company, and
    each sampler (the whole vocabulary sorted, the top tokens, the kernel) keeps the same tokens and
    draws the same one from them, so all six write the same turns; parking feeds fewer idle
    row-steps; redrawing in the call makes no redraw pass, and the same redraws."""
    bench = load_bench()
    config = GenerateConfig(scenario="movie-recommendation", n=5, seed=3, model=str(tiny_model_dir), max_turns=4, batch_size=2,
                            refill=4, dtype="float32", user=SamplingConfig(max_new_tokens=8, trim=False),
                            assistant=SamplingConfig(temperature=0.7, top_p=0.5, max_new_tokens=10, trim=False))
    rows = bench.ablation(config)
    assert len(rows) == 6 and all(r["frame"].equals(rows[0]["frame"]) for r in rows)
    assert len({r["tokens"] for r in rows}) == 1 and rows[2]["drawn_share"] > rows[1]["drawn_share"]
    assert rows[2]["redraw_calls"] > 0 and rows[3]["redraw_calls"] == 0 and rows[3]["redrawn"] == rows[2]["redrawn"] > 0
    assert "| + refilling (--refill 4) |" in capsys.readouterr().out and rows[5]["row"].endswith("shipped")
    assert [r["row"] for r in bench.ablation(config, ["before", "parking"])] == [rows[0]["row"], rows[2]["row"]]


def test_the_shared_prefix_is_what_every_first_user_prompt_starts_with(tiny_model_dir):
    from transformers import AutoTokenizer

    bench = load_bench()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = bench.shared_prefix(GenerateConfig(scenario="movie-recommendation"), tokenizer, n=6)
    lo, hi = out["user_prompt_tokens"]
    assert 0 < out["user_shared_prefix"] < lo <= hi  # the persona comes first, so the prompts part early
    assert out["assistant_system_tokens"] > 0
    one = bench.shared_prefix(GenerateConfig(scenario="movie-recommendation"), tokenizer, n=1)
    assert one["user_shared_prefix"] == one["user_prompt_tokens"][0]  # a single prompt shares all of itself
