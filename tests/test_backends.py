"""The transformers backend on a tiny random Llama: batching, seeding, greedy, stop handling."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simgen.config import SamplingConfig
from simgen.errors import ConfigError

CHATS = [
    [{"role": "system", "content": "You are Ann."}, {"role": "user", "content": "Hi there, what do you like?"}],
    [{"role": "user", "content": "Tell me about movies."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer opening message, so the batch needs left padding to line up."}],
]
# trimming off: these test the decoding machinery on a random model, whose lines seldom end a sentence
GREEDY = SamplingConfig(temperature=0, max_new_tokens=12, repetition_penalty=1.0, trim=False)
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=12, trim=False)


class Stateless:
    """The same backend, but every call starts from an empty cache: the reference path."""

    def __init__(self, inner):
        self.inner, self.name = inner, "stateless"

    def session(self):
        return self.inner.session(reuse_cache=False)

    def encode(self, chat):
        return self.inner.encode(chat)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from simgen.backends.transformers import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), dtype="float32")


def test_generates_one_line_per_chat(backend):
    out = backend.generate(CHATS, SAMPLED, [1, 2, 3])
    assert len(out) == 3
    for g in out:
        assert 0 < g.n_tokens <= 12 and g.finish_reason in ("stop", "length") and g.error is None


def test_batched_greedy_equals_one_at_a_time_and_hf_generate(backend):
    """Left padding, masks and positions are right: a batched row decodes as if it were alone."""
    import torch

    batched = backend.generate(CHATS, GREEDY, [0, 0, 0])
    alone = [backend.generate([c], GREEDY, [0])[0] for c in CHATS]
    assert [g.text for g in batched] == [g.text for g in alone]
    for chat, g in zip(CHATS, alone):  # the same tokens as transformers' own generate
        ids = torch.tensor([backend.encode(chat)])
        ref = backend.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                     eos_token_id=sorted(backend.stop_ids), pad_token_id=backend.pad_id)
        new = [t for t in ref[0, ids.shape[1]:].tolist() if t not in backend.stop_ids]
        assert backend.tokenizer.decode(new, skip_special_tokens=True) == g.text


def test_sampling_is_seeded_per_row(backend):
    a = backend.generate(CHATS, SAMPLED, [11, 22, 33])
    b = backend.generate(CHATS, SAMPLED, [11, 22, 33])
    assert [g.text for g in a] == [g.text for g in b]
    # a row's draws come from its own seed: the same chat and seed give the same line in any batch
    alone = backend.generate([CHATS[1]], SAMPLED, [22])[0]
    assert alone.text == a[1].text
    c = backend.generate(CHATS, SAMPLED, [12, 23, 34])
    assert [g.text for g in c] != [g.text for g in a]


def test_repetition_penalty_changes_greedy_output(backend):
    plain = backend.generate(CHATS, SamplingConfig(temperature=0, max_new_tokens=24, repetition_penalty=1.0), [0] * 3)
    penalised = backend.generate(CHATS, SamplingConfig(temperature=0, max_new_tokens=24, repetition_penalty=2.0), [0] * 3)
    assert [g.text for g in plain] != [g.text for g in penalised]


def test_top_p_keeps_only_the_nucleus():
    import torch

    from simgen.backends.transformers import pick_tokens

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    cfg = SamplingConfig(temperature=1.0, top_p=0.8, max_new_tokens=1)
    gens = [torch.Generator().manual_seed(0)]
    picks = {int(pick_tokens(logits, cfg, [torch.Generator().manual_seed(s)])[0]) for s in range(300)}
    assert picks == {0, 1}
    greedy = SamplingConfig(temperature=0, max_new_tokens=1)
    assert int(pick_tokens(logits, greedy, gens)[0]) == 0


def test_callable_backend_turns_failures_into_data():
    from simgen.backends.callable import CallableBackend

    def flaky(messages):
        if "boom" in messages[-1]["content"]:
            raise ValueError("boom")
        return 42 if "num" in messages[-1]["content"] else "ok: " + messages[-1]["content"]

    chats = [[{"role": "user", "content": c}] for c in ("hi", "boom", "num")]
    out = CallableBackend(flaky).generate(chats, SAMPLED, [0, 0, 0])
    assert out[0].text == "ok: hi" and out[0].error is None
    assert out[1].error == "ValueError: boom"
    assert "returned int, not str" in out[2].error


def test_kv_session_reuses_the_cache_and_matches_the_stateless_path(backend):
    """Greedy dialogues are identical whether each turn re-encodes the chat or reuses the KV cache."""
    from simgen.scenario import load_scenario
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    sc = load_scenario("chitchat")
    jobs = [plan(sc, 0, i, 4) for i in range(4)]
    greedy = SamplingConfig(temperature=0, max_new_tokens=6, repetition_penalty=1.3, trim=False)
    fast = simulate(jobs, sc, backend, backend, greedy, greedy, 0, 4)
    slow = simulate(jobs, sc, Stateless(backend), Stateless(backend), greedy, greedy, 0, 4)
    assert [[t.text for t in d.turns] for d in fast] == [[t.text for t in d.turns] for d in slow]
    assert sum(len(d.turns) for d in fast) >= 8

    # the cache really is reused: a second turn prefills only the new tokens
    session = backend.session()
    chat = [{"role": "user", "content": "Hello there, friend."}]
    first = session.generate([chat], greedy, [0], keys=["a"])[0]
    cached = len(session.hist[0])
    chat = chat + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And then?"}]
    prompt = backend.encode(chat)
    session.generate([chat], greedy, [0], keys=["a"])
    reused = sum(1 for a, b in zip(session.hist[0], prompt) if a == b)
    assert reused > cached // 2 and session.mask.shape[1] < cached + len(prompt)


@pytest.mark.parametrize("sampling", [SAMPLED, SamplingConfig(temperature=0.8, top_p=1.0, max_new_tokens=8, repetition_penalty=1.2, trim=False)],
                         ids=["top_p", "penalty"])
def test_kv_reuse_and_growing_cache_match_the_reference_path_under_sampling(backend, sampling, monkeypatch):
    """Under sampling the optimised path draws the very same tokens as the reference path (no KV
    reuse, transformers' own DynamicCache): same logits, same per-row generators. So the output
    distribution is unchanged, not merely close."""
    import simgen.backends.transformers as tb
    from transformers import DynamicCache

    from simgen.scenario import load_scenario
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    sc = load_scenario("movie-recommendation")
    jobs = [plan(sc, 3, i, 4) for i in range(5)]
    fast = simulate(jobs, sc, backend, backend, sampling, sampling, 3, 4)
    monkeypatch.setattr(tb, "growing_cache_class", lambda: DynamicCache)
    slow = simulate(jobs, sc, Stateless(backend), Stateless(backend), sampling, sampling, 3, 4)
    assert [[t.text for t in d.turns] for d in fast] == [[t.text for t in d.turns] for d in slow]
    assert sum(len(d.turns) for d in fast) >= 10


def test_a_context_budget_draws_the_same_tokens_on_the_cached_and_the_reference_path(backend):
    """With a `context` budget a chat loses its oldest exchanges between turns, so it is no longer
    an extension of what the session cached: the stale tokens are masked out and the window is
    prefilled again. The cached session still draws what the stateless reference draws (sampled,
    redraws on), and the budget did drop exchanges."""
    from simgen.scenario import load_scenario
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    sc = load_scenario("chitchat")
    jobs = [plan(sc, 3, i, 6) for i in range(4)]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=12, context=200)
    fast = simulate(jobs, sc, backend, backend, sampling, sampling, 3, 6, redraws=1, early_stop=False)
    slow = simulate(jobs, sc, Stateless(backend), Stateless(backend), sampling, sampling, 3, 6, redraws=1, early_stop=False)
    assert [[t.text for t in d.turns] for d in fast] == [[t.text for t in d.turns] for d in slow]
    whole = simulate(jobs, sc, backend, backend, replace(sampling, context=0), replace(sampling, context=0), 3, 6, redraws=1,
                     early_stop=False)
    assert [[t.text for t in d.turns] for d in whole] != [[t.text for t in d.turns] for d in fast]  # the budget changed the prompts


def test_growing_cache_appends_in_place_and_adopts_replaced_tensors():
    import torch

    from simgen.backends.transformers import growing_cache_class

    cache = growing_cache_class()()
    layer_updates, buffers = [], set()
    for step in range(500):
        k = torch.full((2, 3, 1 if step else 5, 4), float(step))
        keys, values = cache.update(k, k.clone(), 0)
        layer_updates.append(keys.shape[-2])
        buffers.add(cache.layers[0]._kbuf.data_ptr())
    assert layer_updates[-1] == 504 and cache.get_seq_length() == 504
    assert len(buffers) <= 5  # geometric growth: a handful of reallocations for 500 appends (+64 each time would take 8)
    assert torch.equal(keys[:, :, 5:, 0], torch.arange(1, 500).float().expand(2, 3, -1))
    # a row selection (what KVSession does when dialogues end) replaces keys; appending continues from it
    cache.batch_select_indices(torch.tensor([1]))
    keys, _ = cache.update(torch.full((1, 3, 1, 4), -1.0), torch.full((1, 3, 1, 4), -1.0), 0)
    assert keys.shape == (1, 3, 505, 4) and keys[0, 0, -1, 0] == -1 and keys[0, 0, -2, 0] == 499



def test_a_redraw_reuses_the_cache_and_leaves_the_session_as_it_was(backend):
    """`KVSession.redraw` draws some rows again on a copy of their cache: it prefills one token per
    row (the prompt is cached), draws what a fresh stateless call draws with the same seed, and the
    session's rows, cache and mask are untouched afterwards."""
    import torch

    session = backend.session()
    session.generate(CHATS, SAMPLED, [1, 2, 3], keys=list("abc"))
    before = (list(session.keys), [list(h) for h in session.hist], session.mask.clone(),
              [(layer.keys.clone(), layer.values.clone()) for layer in session.cache.layers])
    prefilled = backend.stats["prefill_tokens"]
    again = session.redraw([CHATS[2], CHATS[0]], SAMPLED, [7, 8], keys=["c", "a"])
    assert backend.stats["prefill_tokens"] - prefilled == 2
    assert [g.text for g in again] == [g.text for g in backend.generate([CHATS[2], CHATS[0]], SAMPLED, [7, 8])]
    assert session.keys == before[0] and session.hist == before[1] and torch.equal(session.mask, before[2])
    for layer, (keys, values) in zip(session.cache.layers, before[3]):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)


@pytest.mark.parametrize("sampling", [SAMPLED, SamplingConfig(temperature=0.9, top_p=0.95, max_new_tokens=10, repetition_penalty=1.3, trim=False)],
                         ids=["sampled", "penalty"])
def test_a_line_drawn_again_inside_its_call_is_what_a_fresh_draw_of_its_seed_writes(backend, sampling):
    """`again` starts a row over inside the call: each of its draws is what a call of that chat alone,
    with that draw's seed, writes (the penalty's seen tokens reset to the prompt's, the length floor
    too); the rows beside it write what they write without it; and the session's cache is right for
    the next turn (it writes what the stateless reference does)."""
    session = backend.session()
    seen: list[tuple[int, str]] = []
    redraw_seeds = iter([100, 101])
    hold = [lambda text: len(text.split()) < 3, None, None]  # row 0 may not end before its third word

    def again(i, g):
        seen.append((i, g.text))
        return next(redraw_seeds, None) if i == 0 else None

    out = session.generate(CHATS, sampling, [1, 2, 3], keys=list("abc"), hold=hold, again=again)
    alone = lambda chat, seed, h=None: backend.session().generate([chat], sampling, [seed], keys=["x"], hold=[h])[0].text  # noqa: E731
    assert [t for i, t in seen if i == 0] == [alone(CHATS[0], 1, hold[0]), alone(CHATS[0], 100, hold[0]), alone(CHATS[0], 101, hold[0])]
    assert [g.text for g in out] == [alone(CHATS[0], 101, hold[0]), alone(CHATS[1], 2), alone(CHATS[2], 3)]
    assert sorted(i for i, _ in seen) == [0, 0, 0, 1, 2]  # every draw shown once, as it ended
    nxt = [chat + [{"role": "assistant", "content": g.text}, {"role": "user", "content": "And then?"}] for chat, g in zip(CHATS, out)]
    assert ([g.text for g in session.generate(nxt, sampling, [4, 5, 6], keys=list("abc"))]
            == [g.text for g in Stateless(backend).session().generate(nxt, sampling, [4, 5, 6], keys=list("abc"))])


def test_redraws_draw_the_same_dialogues_on_the_cached_and_the_reference_path(backend, monkeypatch):
    """With redraws on (and trimming, so the random model's unfinished lines are drawn again), the
    cached session and the stateless reference write the same dialogues and count the same redraws;
    and so do redraws in passes of their own (`session.redraw`, what a session that cannot draw
    again inside a call gets) and redraws inside the call that drew the line (the default here)."""
    from simgen.backends.transformers import KVSession
    from simgen.scenario import load_scenario
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    sc = load_scenario("movie-recommendation")
    jobs = [plan(sc, 3, i, 4) for i in range(5)]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=8)
    fast = simulate(jobs, sc, backend, backend, sampling, sampling, 3, 4, redraws=2)
    slow = simulate(jobs, sc, Stateless(backend), Stateless(backend), sampling, sampling, 3, 4, redraws=2)
    monkeypatch.setattr(KVSession, "draws_again", False)
    passes = simulate(jobs, sc, backend, backend, sampling, sampling, 3, 4, redraws=2)
    rows = [[(t.text, t.redraws) for t in d.turns] for d in fast]
    assert rows == [[(t.text, t.redraws) for t in d.turns] for d in slow]
    assert rows == [[(t.text, t.redraws) for t in d.turns] for d in passes]
    counts = [t.redraws for d in fast for t in d.turns]
    assert all(c in (0, 1, 2) for c in counts) and any(counts)
    assert [d.stop_reason for d in fast] == [d.stop_reason for d in slow]


@pytest.mark.parametrize("sampling", [GREEDY, SamplingConfig(temperature=0.9, top_p=0.95, max_new_tokens=16, repetition_penalty=1.3, trim=False)],
                         ids=["greedy", "sampled_penalty"])
def test_rows_that_finish_leave_the_forward_batch_without_changing_a_token(backend, sampling, monkeypatch):
    """Rows whose line ends early are parked out of the decoding batch (their keys/values kept aside)
    and put back when the call ends: every line, and the next turn's lines on the reused cache, are
    the tokens drawn with no parking and on the stateless reference path; fewer row-steps are fed."""
    import simgen.backends.transformers as tb

    chats = CHATS + [[{"role": "user", "content": "One more row, to park several at once."}]]
    until = [lambda text: len(text) >= 3, lambda text: len(text) >= 12, None, lambda text: len(text) >= 6]

    def two_turns(session):
        first = session.generate(chats, sampling, [5, 6, 7, 8], keys=list("abcd"), until=until)
        follow = [chat + [{"role": "assistant", "content": g.text}, {"role": "user", "content": "Go on."}]
                  for chat, g in zip(chats, first)]
        second = session.generate(follow, sampling, [9, 10, 11, 12], keys=list("abcd"), until=until[::-1])
        return [(g.text, g.finish_reason) for g in first + second]

    backend.stats.update(decode_steps=0, decoded_rows=0)
    parked = two_turns(backend.session())
    fed = backend.stats["decoded_rows"]
    monkeypatch.setattr(tb, "COMPACT_AT", 0.0)  # never park: every row is fed until the call's longest line ends
    backend.stats.update(decode_steps=0, decoded_rows=0)
    assert two_turns(backend.session()) == parked
    assert fed < backend.stats["decoded_rows"]
    assert two_turns(backend.session(reuse_cache=False)) == parked
    assert {reason for _, reason in parked} >= {"until"}


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=0, max_new_tokens=8, repetition_penalty=1.2, trim=False),
                                      SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=8, trim=False),
                                      SamplingConfig(temperature=1.0, top_p=0.9, min_p=0.05, max_new_tokens=8, trim=False, context=230)],
                         ids=["greedy", "sampled", "sampled_in_a_context_budget"])
def test_a_refilled_batch_writes_each_dialogue_as_if_it_ran_alone(backend, sampling, monkeypatch):
    """Continuous batching: 7 dialogues through 3 slots (a finished dialogue's slot takes the next
    one, whose whole prompt is prefilled in a pass of its own beside the others' new tokens) write
    the very dialogues each writes alone, redraws included; and the batch really was refilled.
    With a context budget too (the default for a tuned side), where a row's cache is cut back to its window."""
    import simgen.backends.transformers as tb
    import simgen.generation.simulator as sim
    from simgen.scenario import load_scenario
    from simgen.generation.plan import plan
    from simgen.generation.simulator import simulate

    splits = []
    groups = tb.prefill_groups
    # the tiny model's prompts are short: split whenever it feeds fewer pads, so the split pass is exercised
    monkeypatch.setattr(tb, "prefill_groups", lambda lengths: splits.append(out := groups(lengths, pass_cost=0)) or out)
    dropped, windowed = [], sim._windowed

    def spy(chats, b, s):  # noqa: ANN001, ANN202
        sent = windowed(chats, b, s)
        dropped.append(any(len(x) < len(c) for x, c in zip(sent, chats)))
        return sent

    monkeypatch.setattr(sim, "_windowed", spy)
    sc = load_scenario("movie-recommendation")
    jobs = [plan(sc, 4, i, 8) for i in range(7)]
    finished = []
    refilled = simulate(jobs, sc, backend, backend, sampling, sampling, 4, 8, redraws=2, slots=3, on_done=finished.append)
    alone = [simulate([job], sc, backend, backend, sampling, sampling, 4, 8, redraws=2)[0] for job in jobs]
    assert refilled == alone
    assert sorted(d.index for d in finished) == list(range(7)) and [d.index for d in refilled] == list(range(7))
    assert [d.index for d in finished] != list(range(7))  # dialogues ended out of order: slots were refilled mid-run
    assert any(long and short for short, long in splits)  # a new dialogue's prompt was prefilled apart from the others
    assert any(t.redraws for d in refilled for t in d.turns)
    assert any(dropped) == bool(sampling.context)  # with a budget, later lines were prompted without their oldest exchanges


# (NUCLEUS_FIRST, NUCLEUS_WIDE, the compiled kernel): where the kept set of test p (5 tokens for top-p 0.8) is
# found: torch's path in each of its tiers, or the kernel (`kernels.pick`)
TIERS = {"kept_in_the_top_k": (256, 4096, False), "found_among_the_wider_top": (3, 8, False),
         "wider_still_sorted_in_full": (3, 4, False), "whole_vocabulary": (1 << 30, 4096, False), "compiled_kernel": (256, 4096, True)}


def _tiers(monkeypatch, tiers) -> None:  # noqa: ANN001
    import simgen.backends.transformers as tb
    from simgen.backends import kernels

    if tiers[2] and kernels.decode_attention() is None:
        pytest.skip("no C compiler here: the kernel cannot be built")
    monkeypatch.setattr(tb, "NUCLEUS_FIRST", tiers[0])
    monkeypatch.setattr(tb, "NUCLEUS_WIDE", tiers[1])
    monkeypatch.setattr(tb, "PICK_KERNEL", tiers[2])


@pytest.mark.parametrize("tiers", TIERS.values(), ids=TIERS.keys())
def test_top_p_draws_each_token_of_the_nucleus_at_its_renormalised_probability(tiers, monkeypatch):
    """The nucleus is looked for among the most likely tokens first, then among more of them; whether
    it is found there or the row is sorted in full, the draws follow the renormalised nucleus (a
    chi-square test), and no token outside it is ever drawn."""
    import torch
    from scipy.stats import chisquare

    import simgen.backends.transformers as tb

    _tiers(monkeypatch, tiers)
    p = torch.tensor([0.30, 0.20, 0.15, 0.12, 0.08, 0.05] + [0.10 / 994] * 994)
    cfg = SamplingConfig(temperature=1.0, top_p=0.8, max_new_tokens=1)  # nucleus: the first 5 tokens (0.85)
    logits = torch.log(p)[None].repeat(8, 1)
    counts = torch.zeros(1000)
    for draw in range(250):
        picks = tb.pick_tokens(logits, cfg, [torch.Generator().manual_seed(draw * 8 + r) for r in range(8)])
        counts += torch.bincount(picks, minlength=1000)
    assert counts[5:].sum() == 0
    expected = (p[:5] / p[:5].sum() * counts.sum()).numpy()
    assert chisquare(counts[:5].numpy(), expected).pvalue > 0.001


@pytest.mark.parametrize("tiers", TIERS.values(), ids=TIERS.keys())
@pytest.mark.parametrize(("top_p", "min_p", "kept"), [(1.0, 0.3, 4), (0.8, 0.45, 3), (0.6, 0.3, 3)],
                         ids=["min_p_alone", "min_p_shorter", "top_p_shorter"])
def test_min_p_draws_only_tokens_near_the_likeliest_at_their_renormalised_probability(tiers, top_p, min_p, kept, monkeypatch):
    """min-p keeps the tokens at least `min_p` times as likely as the likeliest (0.30 x 0.3 = 0.09:
    the first 4 here); with top-p as well, the shorter of the two sets. Wherever the set is found
    (the top tokens, a full sort, the whole vocabulary), the draws follow it renormalised (chi-square)
    and nothing outside it is drawn."""
    import torch
    from scipy.stats import chisquare

    import simgen.backends.transformers as tb

    _tiers(monkeypatch, tiers)
    p = torch.tensor([0.30, 0.20, 0.15, 0.12, 0.08, 0.05] + [0.10 / 994] * 994)
    cfg = SamplingConfig(temperature=1.0, top_p=top_p, min_p=min_p, max_new_tokens=1)
    logits = torch.log(p)[None].repeat(8, 1)
    counts = torch.zeros(1000)
    for draw in range(250):
        picks = tb.pick_tokens(logits, cfg, [torch.Generator().manual_seed(draw * 8 + r) for r in range(8)])
        counts += torch.bincount(picks, minlength=1000)
    assert counts[kept:].sum() == 0 and (counts[:kept] > 0).all()
    expected = (p[:kept] / p[:kept].sum() * counts.sum()).numpy()
    assert chisquare(counts[:kept].numpy(), expected).pvalue > 0.001


def _reference_draws(logits, top_p, min_p, penalty, seen, heat, generators):  # noqa: ANN001, ANN202
    """pick_tokens' draws written out plainly: the whole row sorted (ties by id), top-p and min-p
    cut, one uniform from the row's generator, the kept set's cumulative mass in id order."""
    import torch

    picks = []
    for row in range(logits.shape[0]):
        x = logits[row].float()
        if seen is not None:
            x = torch.where(seen[row], torch.where(x > 0, x / penalty, x * penalty), x)
        p = torch.softmax(x / heat, -1).double()
        u = torch.rand(1, generator=generators[row], dtype=torch.float64)
        p_sorted, order = p.sort(descending=True, stable=True)  # stable: tied tokens in id order
        keep = ((p_sorted.cumsum(0) - p_sorted) < top_p) & (p_sorted >= min_p * p_sorted[0])
        kept = order[keep].sort().values
        mass = p[kept].cumsum(0)
        picks.append(int(kept[min(int(torch.searchsorted(mass, u * mass[-1], right=True)), kept.numel() - 1)]))
    return picks


@pytest.mark.parametrize("tiers", TIERS.values(), ids=TIERS.keys())
def test_draws_are_the_plain_reference_draw_for_draw(tiers, monkeypatch):
    """Row by row and seed by seed, pick_tokens draws what the plainly written sampler above draws,
    in each of torch's tiers and in the kernel: top-p alone (min_p=0 is off), with min-p, with the
    repetition penalty, top-p 1, float32 and bfloat16 logits (bfloat16's many ties: id order); a
    banned (-inf) token never. Float rounding could move a draw at a token's boundary (a few in
    10,000 rows): none does on these rows."""
    import torch

    from simgen.backends.transformers import pick_tokens

    _tiers(monkeypatch, tiers)
    logits = torch.randn(8, 5000, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 4, 8)[:, None]
    logits[:, :3] = float("-inf")
    seen = torch.rand(8, 5000, generator=torch.Generator().manual_seed(1)) < 0.1
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype)
        for top_p, min_p, penalty, heat in ((0.9, 0.0, 1.0, 1.0), (0.5, 0.0, 1.0, 0.8), (0.9, 0.2, 1.0, 1.0), (0.95, 0.0, 1.3, 0.7),
                                            (1.0, 0.0, 1.0, 1.0), (1.0, 0.1, 1.15, 1.0)):
            cfg = SamplingConfig(temperature=heat, top_p=top_p, min_p=min_p, repetition_penalty=penalty)
            mark = seen if penalty != 1.0 else None
            for draw in range(4):
                picked = pick_tokens(x, cfg, [torch.Generator().manual_seed(draw * 8 + r) for r in range(8)], mark).tolist()
                gens = [torch.Generator().manual_seed(draw * 8 + r) for r in range(8)]
                assert picked == _reference_draws(x, top_p, min_p, penalty, mark, heat, gens), (dtype, top_p, min_p, penalty)
                assert min(picked) >= 3
    picked = pick_tokens(logits, SamplingConfig(temperature=1.0, top_p=0.9, min_p=0.2), [torch.Generator().manual_seed(r) for r in range(8)])
    probs = torch.softmax(logits, -1)
    assert (probs.gather(1, picked[:, None])[:, 0] >= 0.2 * probs.max(-1).values).all()


def test_the_kernel_refuses_what_it_cannot_read():
    """kernels.pick reads raw pointers: a wrong layout or dtype is refused before the call, and a
    row with no finite logit is a ValueError rather than a token."""
    import torch

    from simgen.backends import kernels

    if kernels.decode_attention() is None:
        pytest.skip("no C compiler here: the kernel cannot be built")
    logits, u = torch.randn(4, 100), torch.rand(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        kernels.pick(logits, None, 1.0, 1.0, 0.9, 0.0, u.float())
    with pytest.raises(ValueError, match="bool tensor"):
        kernels.pick(logits, torch.zeros(4, 100), 1.15, 1.0, 0.9, 0.0, u)
    with pytest.raises(ValueError, match="strided"):
        kernels.pick(logits.t().contiguous().t(), None, 1.0, 1.0, 0.9, 0.0, u)
    with pytest.raises(ValueError, match="rows"):
        kernels.pick(logits, None, 1.0, 1.0, 0.9, 0.0, u[:3])
    logits[2] = float("-inf")
    with pytest.raises(ValueError, match="no finite logit"):
        kernels.pick(logits, None, 1.0, 1.0, 0.9, 0.0, u)


def test_min_p_is_checked_and_sent_to_servers():
    """A min-p outside [0, 1) is refused naming the field; the OpenAI-compatible body carries `min_p`
    (vLLM, llama.cpp) only when it is on."""
    from simgen.backends.openai import OpenAIBackend

    for bad in (-0.1, 1.0, True):
        with pytest.raises(ConfigError, match="min_p"):
            SamplingConfig(min_p=bad)
    backend = OpenAIBackend.__new__(OpenAIBackend)
    backend.model = "m"
    chat = [{"role": "user", "content": "hi"}]
    assert "min_p" not in backend.body(chat, SamplingConfig(), 1)
    assert backend.body(chat, SamplingConfig(min_p=0.05), 1)["min_p"] == 0.05


def test_a_held_row_cannot_end_its_line_until_its_hold_test_lets_it(backend, monkeypatch):
    """`hold` (a length target not reached): while a row's test holds on its text so far, no
    end-of-turn token is drawn for it. Each row's first greedy token is made an end-of-turn token, so
    every line ends at once unheld; held rows write on past it, and an unheld row beside them is unchanged."""
    from simgen.backends.transformers import KVSession

    with backend.session(reuse_cache=False) as s:
        s._select(list("abc"))
        first, _ = KVSession._decode(s, [backend.encode(c) for c in CHATS], GREEDY, [1, 2, 3])
    monkeypatch.setattr(backend, "stop_ids", backend.stop_ids | {ids[0] for ids in first})
    free = backend.generate(CHATS, GREEDY, [1, 2, 3])
    assert [(g.n_tokens, g.finish_reason) for g in free] == [(0, "stop")] * 3

    floor = lambda text: len(text) < 8  # noqa: E731
    with backend.session() as s:
        held = s.generate(CHATS, GREEDY, [1, 2, 3], keys=list("abc"), hold=[floor, None, floor])
    assert (held[1].n_tokens, held[1].finish_reason) == (0, "stop")  # the unheld row ends as before
    for g in (held[0], held[2]):
        assert g.n_tokens > 0 and (g.finish_reason == "length" or len(g.text) >= 8), g


def test_a_positive_hold_weight_pushes_a_row_to_end_its_line(backend):
    """`hold` as a number (`end_nudge` past a length target): it is added to the row's end-of-turn
    logits. A weight of 100 from the first token on makes each line end right after it; a weight of
    0 changes nothing, beside it in the same batch."""
    free = backend.generate(CHATS, GREEDY, [1, 2, 3])
    assert all(g.n_tokens >= 2 for g in free)  # the tiny model does not end its lines by itself
    push = lambda text: 100.0 if text else 0.0  # noqa: E731
    with backend.session() as s:
        nudged = s.generate(CHATS, GREEDY, [1, 2, 3], keys=list("abc"), hold=[push, lambda text: 0.0, push])
    for g in (nudged[0], nudged[2]):
        assert (g.n_tokens, g.finish_reason) == (1, "stop"), g
    assert (nudged[1].text, nudged[1].n_tokens, nudged[1].finish_reason) == (free[1].text, free[1].n_tokens, free[1].finish_reason)
