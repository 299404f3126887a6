"""`--schedule lines` (simgen/backends/lines.py): lines scheduled one by one on a batch of rows
whose caches are independent, both sides in one batch. Tiny random Llama, float32."""

from __future__ import annotations

import pytest

from simgen.config import SamplingConfig
from simgen.errors import ConfigError


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from simgen.backends.transformers import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), dtype="float32")


@pytest.fixture(scope="module")
def movie():
    from simgen.scenario import load_scenario

    return load_scenario("movie-recommendation")


SAMPLINGS = {
    "greedy_penalty": SamplingConfig(temperature=0, max_new_tokens=8, repetition_penalty=1.2, trim=False),
    "sampled": SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=8, trim=False),
    "sampled_budget_floor": SamplingConfig(temperature=1.0, top_p=0.9, min_p=0.05, max_new_tokens=8, trim=False, context=230,
                                           length_floor=0.5),
}


@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_lines_write_the_dialogues_the_default_schedule_writes(backend, movie, name, monkeypatch):
    """7 dialogues through 3 rows, redraws on: each line as the one before it ends, both sides in one
    batch, gives the very dialogues (byte-identical turns) that one call per side and turn gives;
    and it really interleaved: some step fed the two sides together, a row started a line while
    others decoded (prefill beside decoding), and dialogues ended out of order."""
    import simgen.backends.lines as lines
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    sampling = SAMPLINGS[name]
    mixed, beside = [], []
    forward = lines.LineEngine._forward

    def spy(self, feeds):  # noqa: ANN001, ANN202  (did rows decoding and rows starting a line share this pass?)
        beside.append(any(len(t) == 1 for _, t in feeds) and any(len(t) > 1 for _, t in feeds))
        return forward(self, feeds)

    take = lines.LineEngine._take

    def take_spy(self, row, req):  # noqa: ANN001, ANN202  (the side of each line a row took)
        mixed.append(req.key[1])
        return take(self, row, req)

    monkeypatch.setattr(lines.LineEngine, "_forward", spy)
    monkeypatch.setattr(lines.LineEngine, "_take", take_spy)
    jobs = [plan(movie, 4, i, 8) for i in range(7)]
    assert 0 < sum(j.opens for j in jobs) < 7  # dialogues the assistant opens beside ones the user does
    finished = []
    backend.stats.pop("shared_tokens", None)
    by_line = simulate(jobs, movie, backend, backend, sampling, sampling, 4, 8, redraws=2, slots=3, schedule="lines",
                       on_done=finished.append)
    shared = backend.stats.get("shared_tokens", 0)
    by_call = simulate(jobs, movie, backend, backend, sampling, sampling, 4, 8, redraws=2, slots=3)
    assert by_line == by_call
    assert shared > 0  # first lines started from another dialogue's cached prefix (the assistant's system prompt)
    assert any(t.redraws for d in by_line for t in d.turns)
    assert any(beside)  # a line's prompt was prefilled in the pass that decoded other rows
    assert {"user", "assistant"} <= set(mixed)
    assert sorted(d.index for d in finished) == list(range(7)) and [d.index for d in finished] != list(range(7))


def test_a_first_line_starts_from_the_longest_prefix_another_cache_holds(backend, movie, monkeypatch):
    """Prefix sharing: a chat with no cache yet copies the longest prefix of its prompt that a row or
    a stashed cache holds, instead of prefilling it. The dialogues are the same as without sharing,
    and the copied tokens are no longer prefilled; the keys and values copied are the ones a
    prefill computes."""
    import torch

    import simgen.backends.lines as lines
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    sampling = SAMPLINGS["sampled"]
    jobs = [plan(movie, 5, i, 4) for i in range(5)]
    runs = {}
    for share in (False, True):
        monkeypatch.setattr(lines, "SHARE_PREFIXES", share)
        backend.stats.update(prefill_tokens=0, shared_tokens=0)
        runs[share] = (simulate(jobs, movie, backend, backend, sampling, sampling, 5, 4, slots=2, schedule="lines"),
                       backend.stats["prefill_tokens"], backend.stats["shared_tokens"])
    (unshared, prefilled_unshared, none), (shared, prefilled, copied) = runs[False], runs[True]
    assert shared == unshared and none == 0
    # exactly the copied tokens are no longer prefilled, but for the last token of a prompt shared
    # whole (an opening line's: the assistant's system prompt), which goes in as a one-token step
    openings = sum(j.opens for j in jobs)
    assert copied > 0 and openings > 0 and prefilled_unshared - copied - openings <= prefilled <= prefilled_unshared - copied

    # the copy is the prefill: a second chat's first line on an engine that holds the first one
    chats = [[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": text}]
             for text in ("Hi there, any films?", "What should I watch tonight?")]
    prompts = [backend.encode(c) for c in chats]
    common = lines._common(prompts[0], prompts[1], len(prompts[1]) - 1)
    assert common > 1
    quiet = SamplingConfig(temperature=0, max_new_tokens=1, trim=False)
    engine = lines.LineEngine(backend, 2)
    queue = [lines.LineRequest("a", prompts[0], 1, quiet)]
    engine.run(lambda: queue.pop() if queue else None, lambda req, g: None)
    fresh = lines.LineEngine(backend, 1)
    with torch.inference_mode():  # the engine's caches are inference tensors
        rest = engine._take(1, lines.LineRequest("b", prompts[1], 2, quiet))
        monkeypatch.setattr(lines, "SHARE_PREFIXES", False)
        fresh._forward([(0, fresh._take(0, lines.LineRequest("b", prompts[1], 2, quiet)))])
    assert len(rest) == len(prompts[1]) - common
    for layer in range(len(engine.k)):
        torch.testing.assert_close(engine.k[layer][1, :, :common], fresh.k[layer][0, :, :common], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(engine.v[layer][1, :, :common], fresh.v[layer][0, :, :common], rtol=1e-5, atol=1e-6)


def test_a_line_redrawn_starts_over_from_its_cached_prompt(backend, movie):
    """Every draw of a line is what a fresh engine writes for that prompt and seed alone: a redraw
    cut back to the prompt leaves nothing of the rejected draw in the cache."""
    from simgen.backends.lines import LineEngine, LineRequest

    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=6, trim=False, repetition_penalty=1.3)
    chats = [[{"role": "system", "content": f"You are person {i}."}, {"role": "user", "content": "Hi there, what do you like?" * (i + 1)}]
             for i in range(3)]
    prompts = [backend.encode(c) for c in chats]
    seeds = {0: [11, 12, 13], 1: [21], 2: [31, 32]}  # row i's draws

    def alone(prompt, seed):  # noqa: ANN001, ANN202
        out = []
        e = LineEngine(backend, 1)
        queue = [LineRequest("k", prompt, seed, sampling)]
        e.run(lambda: queue.pop() if queue else None, lambda req, g: out.append(g.text))
        return out[0]

    drawn: dict[int, list[str]] = {i: [] for i in range(3)}
    queue = [LineRequest(i, p, seeds[i][0], sampling, tag=i) for i, p in enumerate(prompts)]

    def ended(req, g):  # noqa: ANN001, ANN202
        drawn[req.tag].append(g.text)
        n = len(drawn[req.tag])
        return seeds[req.tag][n] if n < len(seeds[req.tag]) else None

    LineEngine(backend, 3).run(lambda: queue.pop(0) if queue else None, ended)
    assert drawn == {i: [alone(prompts[i], s) for s in seeds[i]] for i in range(3)}


def test_the_line_schedule_needs_one_plain_model_for_both_sides(backend, movie, tiny_model_dir):
    from simgen.backends.transformers import TransformersBackend
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    other = TransformersBackend(str(tiny_model_dir), dtype="float32")
    s = SamplingConfig(max_new_tokens=4)
    with pytest.raises(ConfigError, match="same model.*--schedule calls"):
        simulate([plan(movie, 0, 0, 4)], movie, backend, other, s, s, 0, 4, schedule="lines")


def _gen(tiny_model_dir, out, **kw):  # noqa: ANN001, ANN003, ANN202
    import simgen

    args = dict(scenario="movie-recommendation", n=5, seed=3, model=str(tiny_model_dir), out=out, max_turns=3, batch_size=2, refill=3,
                dtype="float32", progress=False, user=SamplingConfig(max_new_tokens=8),
                assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=10))
    return simgen.generate(**{**args, **kw})


def test_auto_runs_lines_and_both_schedules_write_the_same_run(tiny_model_dir, tmp_path):
    """`auto` (the default) settles on lines for one local Llama-style model writing both sides and
    the manifest records it; a run scheduled by calls writes the same bytes (float32)."""
    import json

    auto = _gen(tiny_model_dir, tmp_path / "auto")
    calls = _gen(tiny_model_dir, tmp_path / "calls", schedule="calls")
    assert json.loads((tmp_path / "auto" / "manifest.json").read_text())["config"]["schedule"] == "lines"
    assert json.loads((tmp_path / "calls" / "manifest.json").read_text())["config"]["schedule"] == "calls"
    assert (tmp_path / "auto" / "turns.parquet").read_bytes() == (tmp_path / "calls" / "turns.parquet").read_bytes()
    assert auto.dialogues().height == calls.dialogues().height == 5


def test_lines_that_cannot_run_are_refused_before_the_folder_and_auto_falls_back(tiny_model_dir, tmp_path):
    import json

    with pytest.raises(ConfigError, match="--schedule lines: both sides must be written by the same model"):
        _gen(tiny_model_dir, tmp_path / "x", schedule="lines", assistant=lambda messages: "Sure, try Heat.")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="schedule must be auto, calls or lines"):
        _gen(tiny_model_dir, tmp_path / "y", schedule="sometimes")
    _gen(tiny_model_dir, tmp_path / "fn", n=2, assistant=lambda messages: "Sure, try Heat.")
    assert json.loads((tmp_path / "fn" / "manifest.json").read_text())["config"]["schedule"] == "calls"


def test_which_models_the_line_schedule_runs():
    """One judgement of a model's config.json, read by `auto` before the model loads and by the engine after."""
    from simgen.backends.lines import model_problem

    assert model_problem({"model_type": "llama"}) is None
    assert model_problem({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}) is None
    assert model_problem({"model_type": "mistral", "sliding_window": None}) is None
    assert "sliding attention window" in model_problem({"model_type": "mistral", "sliding_window": 4096})
    assert "'gemma' is not one it runs" in model_problem({"model_type": "gemma"})


def test_fused_projections_and_the_glue_kernels_write_what_the_modules_write(backend, movie, monkeypatch):
    """Each layer's q/k/v and gate/up projections run as one matmul each, and the element-wise work
    around them (residual adds, norms, rotary, cache writes, the MLP's activation) in simgen's
    kernels: the same dialogues as the modules one by one (float32, sampled, redraws on). The fused
    matrices hold the modules' weights, which are now views into them (no extra memory), and
    fusing again finds them."""
    import torch

    import simgen.backends.lines as lines
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    layer = backend.model.model.layers[0]
    before = {name: m.weight.detach().clone() for name, m in (("q", layer.self_attn.q_proj), ("v", layer.self_attn.v_proj),
                                                                      ("up", layer.mlp.up_proj))}
    engine = lines.LineEngine(backend, 2)
    assert engine.glue and all(f is not None for f in engine.fused)
    fused = engine.fused[0]
    assert lines.fuse_projections(layer) is fused
    assert torch.equal(layer.self_attn.q_proj.weight, before["q"]) and torch.equal(layer.self_attn.v_proj.weight, before["v"])
    assert torch.equal(layer.mlp.up_proj.weight, before["up"])
    assert layer.self_attn.v_proj.weight.untyped_storage().data_ptr() == fused.qkv.untyped_storage().data_ptr()
    assert layer.mlp.up_proj.weight.untyped_storage().data_ptr() == fused.gate_up.untyped_storage().data_ptr()

    sampling = SAMPLINGS["sampled"]
    jobs = [plan(movie, 6, i, 6) for i in range(4)]
    runs = {}
    for on in (True, False):
        monkeypatch.setattr(lines, "FUSED_GEMMS", on)
        runs[on] = simulate(jobs, movie, backend, backend, sampling, sampling, 6, 6, redraws=2, slots=3, schedule="lines")
    assert runs[True] == runs[False]


def test_a_projection_that_is_not_a_plain_linear_is_not_fused():
    """An unmerged adapter (here a module wrapping the Linear) keeps the modules' own calls."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import simgen.backends.lines as lines

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2)
    layer = LlamaForCausalLM(config).model.layers[0]
    layer.self_attn.k_proj = torch.nn.Sequential(layer.self_attn.k_proj)
    assert lines.fuse_projections(layer) is None
