"""Fixtures for the realism tests: a private embedding cache, hand-made corpora, real corpora.

Hand-made corpora are generated from fixed seeds: `human_like` mimics casual chat (lower case,
slang, short turns), `llm_like` mimics a stilted simulator (capitalised, formal, long, always
asking). Real corpora come from chitchat-dataset and ../shared/data/iard (skipped if absent).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

HUMAN_USER = [
    "lol yeah i know", "hey whats up", "not much tbh", "haha that's funny", "i dunno, maybe",
    "omg no way", "yeah i saw that one", "cool", "nah not really", "i like comedies more",
    "ugh mondays", "sounds good", "what about you", "idk man", "thats pretty cool lol",
]
HUMAN_ASSISTANT = ["yeah", "haha", "same here", "oh nice", "really?", "i guess so", "ok cool", "lol true"]
LLM_USER = [
    "Certainly! I would greatly appreciate a recommendation for a thought-provoking film.",
    "Could you please suggest an engaging movie that explores complex themes?",
    "Thank you for your suggestion. However, I am looking for something more uplifting.",
    "That sounds wonderful! Could you tell me more about its plot and themes?",
    "I appreciate your help. What other options would you recommend?",
    "As someone who enjoys science fiction, I am curious about your recommendations.",
]
LLM_ASSISTANT = [
    "Of course! I would recommend Inception, a thought-provoking film.",
    "Absolutely. Here are some options you might enjoy.",
    "Great question! This movie explores themes of identity and memory.",
]


def make_corpus(kind: str, n_dialogues: int, seed: int, *, prefix: str = "d", intents: bool = False) -> pl.DataFrame:
    """A turns frame of `n_dialogues` dialogues in one of two styles (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    users, assistants = (HUMAN_USER, HUMAN_ASSISTANT) if kind == "human" else (LLM_USER, LLM_ASSISTANT)
    rows = []
    for d in range(n_dialogues):
        n_turns = int(rng.integers(4, 9)) if kind == "human" else 8
        for t in range(n_turns):
            role = "user" if t % 2 == 0 else "assistant"
            pool = users if role == "user" else assistants
            text = pool[int(rng.integers(len(pool)))]
            rows.append({
                "dialogue_id": f"{prefix}{d:04d}", "turn": t, "role": role, "text": text,
                "intent": (["ask", "accept", "reject"][int(rng.integers(3))] if role == "user" else None)
                if intents else None,
            })
    df = pl.DataFrame(rows, schema={"dialogue_id": pl.String, "turn": pl.Int64, "role": pl.String,
                                    "text": pl.String, "intent": pl.String})
    return df if intents else df.drop("intent")


@pytest.fixture(name="make_corpus", scope="session")
def make_corpus_fixture():  # noqa: ANN201
    """The `make_corpus` builder, as a fixture (test modules here are not a package)."""
    return make_corpus


@pytest.fixture(scope="session", autouse=True)
def simgen_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every realism test uses one private embedding cache (shared across tests, so it warms up)."""
    path = tmp_path_factory.mktemp("simgen-cache")
    old = os.environ.get("SIMGEN_CACHE")
    os.environ["SIMGEN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SIMGEN_CACHE", None)
    else:
        os.environ["SIMGEN_CACHE"] = old


@pytest.fixture(scope="session")
def iard(shared_dir: Path) -> pl.DataFrame:
    """Both IARD files (336 real dialogues with user-intent labels) as one turns frame."""
    from simgen.corpora import load_corpus

    files = sorted((shared_dir / "data" / "iard").glob("formatted_IARD_annotated_*.json"))
    assert len(files) == 2, files
    return pl.concat([load_corpus(f).turns for f in files]).sort("dialogue_id", "turn")


@pytest.fixture(scope="session")
def chitchat_sample() -> pl.DataFrame:
    """600 chitchat dialogues (seeded), each cut to its first 10 turns to keep embedding time low."""
    from simgen.corpora import load_corpus

    turns = load_corpus("chitchat").turns
    ids = turns["dialogue_id"].unique().sort().sample(600, seed=0, shuffle=True)
    return turns.filter(pl.col("dialogue_id").is_in(ids.implode()) & (pl.col("turn") < 10))
