"""Plan a dialogue before any model speaks: its profile latent and its path of intent latents.

Dialogue i of a run is a function of (seed, i) alone: its profile comes from the profile space and
its intents from the intent model, each from its own seeded generator (simgen.rng). So a run split
into shards, resumed, or run on many machines plans the same dialogues.
"""

from __future__ import annotations

from dataclasses import dataclass

from simgen import rng
from simgen.data import ProfileLatent
from simgen.scenario import Scenario


@dataclass(frozen=True)
class DialogueJob:
    """Everything that determines one dialogue before any model speaks."""

    index: int
    profile: ProfileLatent
    intents: tuple[str | None, ...]  # the intent of each user turn, drawn up front


def plan(scenario: Scenario, seed: int, index: int, max_turns: int) -> DialogueJob:
    """Sample dialogue `index`'s profile and intent path; depends only on (seed, index)."""
    profile = scenario.profile.sample(rng.generator(seed, index, rng.PROFILE))
    path = scenario.intents.sample_path(profile, rng.generator(seed, index, rng.INTENT), max_turns)
    return DialogueJob(index, profile, tuple(path))
