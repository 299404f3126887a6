"""Packed scoring (simgen.backends.packing + scoring): the trie layout, its tree masks, and that a
packed pass gives what each sequence gives alone, on the real transformers path (tiny model, fp32)."""

from __future__ import annotations

import numpy as np
import pytest

from simgen.backends.packing import pack

# fp32 on the tiny model: packed and alone differ only by float summation order
ATOL = 1e-5
RTOL = 1e-6  # whole-vocabulary log-probs reach -60, where 1e-5 is three fp32 ulps


def _random_sequences(rng: np.random.Generator, n: int) -> list[list[int]]:
    """Sequences that share prefixes the way the checks' do: chains, branches, duplicates, strangers."""
    out: list[list[int]] = []
    for _ in range(n):
        if out and rng.random() < 0.7:
            base = out[int(rng.integers(len(out)))]
            cut = int(rng.integers(0, len(base) + 1))
            out.append(base[:cut] + rng.integers(0, 5, int(rng.integers(0, 6))).tolist())
        else:
            out.append(rng.integers(0, 5, int(rng.integers(1, 12))).tolist())
    return out


@pytest.mark.parametrize("seed", range(5))
def test_every_slot_sees_exactly_its_own_path(seed):
    rng = np.random.default_rng(seed)
    sequences = _random_sequences(rng, 30)
    trie = pack(sequences)
    assert len(trie) <= sum(len(s) for s in sequences)
    for seq, path in zip(sequences, trie.paths):
        assert trie.ids[path].tolist() == seq and trie.positions[path].tolist() == list(range(len(seq)))
    # each distinct prefix gets one slot: the slots are the distinct non-empty prefixes
    assert len(trie) == len({tuple(s[:k]) for s in sequences for k in range(1, len(s) + 1)})
    parents = {}
    for path in trie.paths:
        for k, slot in enumerate(path):
            parents[int(slot)] = path[:k + 1].tolist()
    for size in (1, 3, 7, 1000):
        held = set()
        for c in trie.chunks(size):
            assert set(c.cached.tolist()) == held  # the cache holds what the last chunk kept
            keys = [*c.cached.tolist(), *range(c.start, c.stop)]
            for row, slot in enumerate(range(c.start, c.stop)):
                seen = {keys[col] for col in np.flatnonzero(c.mask[row])}
                assert seen == set(parents[slot]), (size, slot)
            assert c.keep.tolist() == [keys[k] for k in c.kept]
            held = set(c.keep.tolist())


def test_shared_prefixes_run_once():
    chat = list(range(100))
    trie = pack([chat + [7, 8], chat + [7, 9], chat + [5], chat])
    assert len(trie) == 100 + 4
    assert pack([[1, 2], [1, 2]]).paths[0].tolist() == pack([[1, 2], [1, 2]]).paths[1].tolist()
    assert pack([[], [3]]).paths[0].tolist() == []


@pytest.fixture
def profile(movie_scenario):
    from simgen.rng import generator

    return movie_scenario.profile.sample(generator(0, 3, 0)).values


@pytest.fixture(params=["sdpa", "eager"])
def backend(request, tiny_backend):
    before = tiny_backend.model.config._attn_implementation
    tiny_backend.model.set_attn_implementation(request.param)
    yield tiny_backend
    tiny_backend.model.set_attn_implementation(before)


def _dialogue_items(scenario, profile):
    from simgen.consistency.metrics import dialogues_from_turns
    from simgen.generation.chats import job_of, user_chat
    from tests.consistency.conftest import dialogue_frame

    lines = [("user", "hi, I want a film for tonight"), ("assistant", "Sure! What genre do you like?"),
             ("user", "something funny, not too long"), ("assistant", "How about a comedy from the nineties?"),
             ("user", "sounds good, thanks"), ("assistant", "Enjoy!"), ("user", "bye")]
    d = dialogues_from_turns(dialogue_frame({"d0": (profile, lines)}))[0]
    job = job_of(scenario, d)
    users = [t for t in d.turns if t.role == "user"]
    return d, [(user_chat(scenario, job, d.turns, k, 6), t.text) for k, t in enumerate(users)]


@pytest.mark.parametrize("pass_tokens", [7, 64, 4096])
def test_one_pass_activations_equal_per_line_activations(backend, movie_scenario, profile, pass_tokens):
    from simgen.consistency.axis import line_activations

    d, items = _dialogue_items(movie_scenario, profile)
    alone = backend.continuation_activations(items, 1, shared=False)
    backend.stats.clear()
    packed = backend.continuation_activations(items, 1, pass_tokens=pass_tokens)
    np.testing.assert_allclose(packed, alone, atol=ATOL, rtol=0)
    # the lines of one dialogue are one chain: every token after the first line's chat runs once
    assert backend.stats["packed_tokens"] == max(len(backend.encode(c)) + len(backend.tokenizer.encode(t, add_special_tokens=False))
                                                 for c, t in items)
    keys, persona, assistant = line_activations(backend, movie_scenario, [d], 6, 1, pass_tokens)
    np.testing.assert_allclose(persona, alone, atol=ATOL, rtol=0)
    assert keys == [("d0", k) for k in range(4)] and assistant.shape == (3, backend.model.config.hidden_size)


@pytest.mark.parametrize("pass_tokens", [5, 512])
def test_shared_prefix_option_scores_equal_independent_scoring(backend, movie_scenario, profile, pass_tokens):
    from simgen.consistency.qa import option_probabilities, profile_questions

    _, items = _dialogue_items(movie_scenario, profile)
    questions = profile_questions(movie_scenario.profile, profile, seed=0)[:3]
    asked = [([*chat, {"role": "user", "content": q.question}], q.options) for chat, _ in items for q in questions]
    flat = [(chat, o) for chat, options in asked for o in options]
    alone = backend.continuation_logprobs(flat, shared=False)
    packed = backend.continuation_logprobs(flat, pass_tokens=pass_tokens)
    assert [n for _, n in packed] == [n for _, n in alone]
    np.testing.assert_allclose([v for v, _ in packed], [v for v, _ in alone], atol=1e-4, rtol=0)
    np.testing.assert_allclose(option_probabilities(backend, asked, pass_tokens), option_probabilities(backend, asked, shared=False),
                               atol=ATOL, rtol=0)


def test_packed_next_token_logprobs_equal_independent(backend):
    system = {"role": "system", "content": "You are a careful fact checker."}
    chats = [[system, {"role": "user", "content": f"Is {x} consistent? Answer yes or no."}] for x in ("this", "that", "this")]
    chats.append([{"role": "user", "content": "hi"}])
    alone = backend.next_token_logprobs(chats, shared=False)
    for pass_tokens in (3, 512):
        packed = backend.next_token_logprobs(chats, pass_tokens=pass_tokens)
        assert packed.shape == alone.shape
        np.testing.assert_allclose(packed.numpy(), alone.numpy(), atol=ATOL, rtol=RTOL)
