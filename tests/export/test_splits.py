"""Splits are deterministic and by dialogue; exact and near duplicates are found and dropped."""

from __future__ import annotations

import random

import polars as pl
import pytest

from simgen.errors import ConfigError
from simgen.export.splits import SplitConfig, find_duplicates, near_duplicates, normalise, parse_splits, select, split_of
from simgen.generation.run import dialogue_spans

WORDS = ("movie comedy night friend popcorn drama actor scene watch love hate funny sad long short classic new old "
         "animation horror thriller family weekend cinema ticket director sequel plot twist ending music").split()


def frame(dialogues: dict[str, list[str]]) -> pl.LazyFrame:
    """{dialogue_id: [line, ...]} -> a turns frame (alternating user/assistant)."""
    rows = [{"dialogue_id": d, "turn": i, "role": ("user", "assistant")[i % 2], "text": t}
            for d, lines in dialogues.items() for i, t in enumerate(lines)]
    return pl.DataFrame(rows).lazy()


def random_dialogue(rnd: random.Random, lines: int = 4, words: int = 12) -> list[str]:
    return [" ".join(rnd.choice(WORDS) for _ in range(words)) for _ in range(lines)]


def jaccard(a: str, b: str) -> float:
    def grams(t: str) -> set[str]:
        w = normalise(t).split()
        return {" ".join(w[i:i + 3]) for i in range(len(w) - 2)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def test_splits_are_deterministic_by_dialogue_and_follow_the_fractions():
    ids = [f"d{i:07d}" for i in range(4000)]
    cfg = SplitConfig(fractions=(0.8, 0.1, 0.1), seed=7)
    a, b = split_of(ids, cfg), split_of(list(reversed(ids)), cfg)
    assert a == list(reversed(b))  # a dialogue's split depends on (seed, id) only, not on its neighbours
    assert split_of(ids[:100], cfg) == a[:100]  # ... so it keeps its split when the run grows
    share = {s: a.count(s) / len(a) for s in ("train", "validation", "test")}
    assert share["train"] == pytest.approx(0.8, abs=0.03) and share["validation"] == pytest.approx(0.1, abs=0.02)
    other = split_of(ids, SplitConfig(fractions=(0.8, 0.1, 0.1), seed=8))
    assert sum(x != y for x, y in zip(a, other)) > 400  # another seed, another assignment
    assert set(split_of(ids, SplitConfig(fractions=(1.0, 0.0, 0.0)))) == {"train"}


def test_exact_and_near_duplicates_are_dropped_and_counted():
    rnd = random.Random(0)
    dialogues = {f"d{i:07d}": random_dialogue(rnd) for i in range(40)}
    base = dialogues["d0000003"]
    dialogues["d0000040"] = [line.upper() + "!!" for line in base]  # exact after normalisation
    near = list(base)
    near[2] = near[2].rsplit(" ", 1)[0] + " twist"  # one word changed
    dialogues["d0000041"] = near
    far = list(base)
    far[0], far[1] = random_dialogue(rnd, 2)  # half the dialogue rewritten: below the threshold
    dialogues["d0000042"] = far
    text = {d: "\n".join(f"{('user', 'assistant')[i % 2]}: {t}" for i, t in enumerate(v)) for d, v in dialogues.items()}
    assert jaccard(text["d0000003"], text["d0000041"]) >= 0.85 > jaccard(text["d0000003"], text["d0000042"])

    sel = select(frame(dialogues), SplitConfig(seed=1))
    dropped = {r["dialogue_id"]: r for r in sel.dropped.to_dicts()}
    assert set(dropped) == {"d0000040", "d0000041"}
    assert dropped["d0000040"]["kind"] == "exact" and dropped["d0000040"]["duplicate_of"] == "d0000003"
    assert dropped["d0000041"]["kind"] == "near" and dropped["d0000041"]["duplicate_of"] == "d0000003"
    assert dropped["d0000041"]["jaccard"] == pytest.approx(jaccard(text["d0000003"], text["d0000041"]), abs=1e-4)
    counts = sel.counts
    assert counts == {"dialogues": 43, "kept": 41, "exact_duplicates": 1, "near_duplicates": 1,
                      "splits": {s: sel.assignments.filter(pl.col("split") == s).height for s in ("train", "validation", "test")}}
    assert "d0000042" in sel.assignments["dialogue_id"].to_list()

    loose = select(frame(dialogues), SplitConfig(near_dup_threshold=0.3))
    assert "d0000042" in loose.dropped["dialogue_id"].to_list()  # the threshold is honoured
    nodedup = select(frame(dialogues), SplitConfig(dedup=False))
    assert nodedup.dropped.height == 0 and nodedup.assignments.height == 43

    # read a few dialogues at a time (a run on disk, in row ranges, and a shuffled frame, by id
    # filters), the duplicates found are the same as reading every text at once
    turns = frame(dialogues).collect()
    for lazy in (turns.lazy(), turns.sample(fraction=1.0, shuffle=True, seed=2).lazy()):
        spans = dialogue_spans(lazy)
        whole = find_duplicates(lazy, spans, SplitConfig(seed=1), chunk=10_000)
        assert find_duplicates(lazy, spans, SplitConfig(seed=1), chunk=3) == whole
        assert {spans["dialogue_id"][i] for i in whole} == {"d0000040", "d0000041"}


def test_near_duplicates_find_every_pair_above_the_threshold():
    """LSH recall: planted pairs at Jaccard ~0.9 are all found; unrelated random texts never pair."""
    rnd = random.Random(1)
    texts, planted = [], []
    for _ in range(30):
        words = [rnd.choice(WORDS) for _ in range(60)]
        twin = list(words)
        twin[rnd.randrange(60)] = "zebra"
        texts += [" ".join(words), " ".join(twin)]
        planted.append((len(texts) - 2, len(texts) - 1))
    found = near_duplicates(texts, 0.85, seed=0)
    assert {(i, j) for i, j, _ in found} == set(planted)
    assert all(jac >= 0.85 for _, _, jac in found)


def test_chains_keep_a_twin_for_every_dropped_dialogue():
    # A ~ B and B ~ C but A !~ C: B goes, C stays (its only twin was dropped)
    rnd = random.Random(2)
    a = [rnd.choice(WORDS) for _ in range(40)]
    b = a[:34] + [rnd.choice(WORDS) for _ in range(6)]
    c = b[:28] + b[34:] + [rnd.choice(WORDS) for _ in range(6)]
    sel = select(frame({"d0": [" ".join(a)], "d1": [" ".join(b)], "d2": [" ".join(c)]}), SplitConfig(near_dup_threshold=0.6))
    j = {(x, y): jaccard(" ".join(p), " ".join(q)) for (x, p), (y, q) in [(("d0", a), ("d1", b)), (("d1", b), ("d2", c)), (("d0", a), ("d2", c))]}
    assert j[("d0", "d1")] >= 0.6 and j[("d1", "d2")] >= 0.6 and j[("d0", "d2")] < 0.6
    assert sel.dropped["dialogue_id"].to_list() == ["d1"] and sel.assignments["dialogue_id"].to_list() == ["d0", "d2"]


@pytest.mark.parametrize("text, match", [
    ("0.9,0.1", "expected three fractions"),
    ("a,b,c", "comma-separated fractions"),
])
def test_parse_splits_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_splits(text)


@pytest.mark.parametrize("kwargs, match", [
    ({"fractions": (0.9, 0.2, 0.05)}, "sum to 1.15, not 1"),
    ({"fractions": (1.2, -0.1, -0.1)}, "non-negative"),
    ({"near_dup_threshold": 0.0}, "near-dup-threshold must be in"),
    ({"seed": -1}, "--seed must be a non-negative integer"),
])
def test_split_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SplitConfig(**kwargs)
