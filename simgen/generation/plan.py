"""Plan a dialogue before any model speaks: its profile latent and its path of intent latents.

Dialogue i of a run is a function of (seed, i) alone: its profile comes from the profile space, its
intents from the intent model and, where the scenario has a length model, each user turn's target
length (and, with `assistant_lengths` and an `assistant` row, each assistant line's), (if it has dialogue lengths) the number of user lines and (if it has `last_word`) whether the
assistant answers the closing line and (if it has `first_word`) whether the assistant opens the dialogue, each from its own seeded
generator (simgen.rng). So a run split into shards, resumed, or run on many machines plans the same
dialogues.
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
    target_words: tuple[int | None, ...] = ()  # each user turn's length latent (words); () without a length model
    reply: bool = False  # the assistant answers the user's closing line (the length model's `last_word`)
    assistant_words: tuple[int | None, ...] = ()  # each assistant line's length latent; () without an `assistant` row
    opens: bool = False  # the assistant says the first line, and user turn 0 answers it (the length model's `first_word`)

    def target(self, turn: int) -> int | None:
        return self.target_words[turn] if turn < len(self.target_words) else None

    def assistant_target(self, turn: int) -> int | None:
        """The target of the assistant line that answers user turn `turn`."""
        return self.assistant_words[turn] if turn < len(self.assistant_words) else None


def longest_first(jobs: list[DialogueJob]) -> list[DialogueJob]:
    """`jobs` in the order a refilling stream starts them (`--order longest`): the most planned user
    turns first, then the most planned words, then by index. A stream's rows finish together only
    if its last dialogues to start are short ones; started in index order, a long dialogue that
    starts last runs on alone at a few rows a pass (README, "Generation speed"). Planned lengths are
    a function of (seed, index), so the order, and the batch company each dialogue meets, is too."""
    return sorted(jobs, key=lambda j: (-len(j.intents), -sum(w or 0 for w in j.target_words), j.index))


def plan(scenario: Scenario, seed: int, index: int, max_turns: int, lengths: bool = True, assistant_lengths: bool = False,
         opening: bool = True) -> DialogueJob:
    """Sample dialogue `index`'s profile, intent path, line lengths and who opens it; depends only on (seed, index)."""
    profile = scenario.profile.sample(rng.generator(seed, index, rng.PROFILE))
    n_lines = scenario.lengths.sample_turns(rng.generator(seed, index, rng.TURNS)) if lengths and scenario.lengths else None
    path = scenario.intents.sample_path(profile, rng.generator(seed, index, rng.INTENT), max_turns, length=n_lines)
    targets: tuple[int | None, ...] = ()
    answers: tuple[int | None, ...] = ()
    reply = opens = False
    if lengths and scenario.lengths is not None:
        draw = rng.generator(seed, index, rng.LENGTH)
        targets = tuple(scenario.lengths.sample(intent, draw) for intent in path)
        reply = scenario.lengths.sample_reply(rng.generator(seed, index, rng.REPLY))
        opens = opening and scenario.lengths.sample_opens(rng.generator(seed, index, rng.OPENS))
        if assistant_lengths and scenario.lengths.assistant is not None:
            draw = rng.generator(seed, index, rng.ASSISTANT_LENGTH)
            answers = tuple(scenario.lengths.sample_assistant(draw) for _ in path)
    return DialogueJob(index, profile, tuple(path), targets, reply, answers, opens)
