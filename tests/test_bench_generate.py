"""benchmarks/bench_generate.py's default-workload naive loop does simgen's work, one `model.generate`
per line: under greedy decoding it writes simgen's very lines, stopped where simgen stops them (tiny
model, fp32)."""

from __future__ import annotations

import functools

from simgen.backends.transformers import TransformersBackend
from simgen.config import SamplingConfig
from simgen.generation.simulator import _cut_known, _end_weight
from tests.conftest import load_benchmark


def load_bench():
    return load_benchmark("bench_generate")


def test_the_naive_loop_writes_simgens_lines_and_stops_where_simgen_stops(tiny_model_dir):
    bench = load_bench()
    backend = TransformersBackend(str(tiny_model_dir), "float32")
    chats = [[{"role": "system", "content": f"You are user {i}. Say something."}, {"role": "user", "content": "Hi there" + "!" * i}]
             for i in range(3)]
    until = [functools.partial(_cut_known, target=t) for t in (2, 3, 4)] + [None]  # the simulator's length targets
    chats.append(chats[0])
    greedy = SamplingConfig(temperature=0, max_new_tokens=12, repetition_penalty=1.0)
    seeds, keys = [1, 2, 3, 4], [0, 1, 2, 3]
    with backend.session() as session:
        batched = session.generate(chats, greedy, seeds, keys, until)
    naive = bench.NaiveSession(backend).generate(chats, greedy, seeds, keys, until)
    assert [(g.text, g.n_tokens, g.finish_reason) for g in naive] == [(g.text, g.n_tokens, g.finish_reason) for g in batched]
    assert "until" in {g.finish_reason for g in naive[:3]}  # a length target stopped a line early, in both
    assert naive[3].finish_reason != "until" and naive[3].n_tokens >= naive[0].n_tokens

    sampled = SamplingConfig(temperature=1.0, max_new_tokens=12, repetition_penalty=1.15)
    first = bench.NaiveSession(backend).generate(chats, sampled, seeds, keys)
    again = bench.NaiveSession(backend).generate(chats, sampled, seeds, keys)
    other = bench.NaiveSession(backend).generate(chats, sampled, [5, 6, 7, 8], keys)
    assert [g.text for g in first] == [g.text for g in again] != [g.text for g in other]  # seeded, per line


def test_the_naive_loop_weighs_line_ends_as_simgen_does(tiny_model_dir):
    """`--end-nudge` and `--reach-target` reach the naive loop through the same `hold` tests: its
    lines match simgen's under greedy decoding, and the nudge ends them where the unweighed lines ran on."""
    bench = load_bench()
    backend = TransformersBackend(str(tiny_model_dir), "float32")
    chats = [[{"role": "system", "content": f"You are user {i}. Say something."}, {"role": "user", "content": "Hi there" + "!" * i}]
             for i in range(3)]
    greedy = SamplingConfig(temperature=0, max_new_tokens=12, repetition_penalty=1.0)
    seeds, keys = [1, 2, 3], [0, 1, 2]
    hold = [functools.partial(_end_weight, target=t, floor=1.0, nudge=50.0) for t in (1, 2, 3)]
    with backend.session() as session:
        batched = session.generate(chats, greedy, seeds, keys, None, hold)
    naive = bench.NaiveSession(backend).generate(chats, greedy, seeds, keys, None, hold)
    free = bench.NaiveSession(backend).generate(chats, greedy, seeds, keys)
    assert [(g.text, g.n_tokens, g.finish_reason) for g in naive] == [(g.text, g.n_tokens, g.finish_reason) for g in batched]
    assert all(g.finish_reason == "stop" for g in naive)
    assert sum(g.n_tokens for g in naive) < sum(g.n_tokens for g in free)
