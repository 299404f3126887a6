"""Persona-consistency scores as RL reward functions, in TRL's signature.

    reward = make_reward("prompt_to_line", judge="llm")
    reward(prompts, completions, profile=[...]) -> list[float]     # one reward per completion

TRL's trainers (GRPOTrainer, RLOOTrainer) call each reward function as
`f(prompts=..., completions=..., completion_ids=..., **columns)`, where `columns` are the dataset's
other columns, one list entry per sample; unknown keyword arguments are ignored here. Completions
are strings, or, for conversational data, lists of messages whose last `content` is the line.

The profile latent travels through the kwargs: a dataset column (default `profile`) holding each
sample's profile dict, e.g. the `profile` struct of turns.parquet (with its `backstory`). Earlier
lines of the persona come from a `history` column (a list of strings) or, for conversational prompts
built the simulator's way (roles flipped), from the prompt's `assistant` messages.

    prompt_to_line   1 - P(the completion contradicts the persona)
    line_to_line     1 - mean P(it contradicts an earlier persona line); 1.0 when there is none
    consistency      the mean of both, plus `specificity_weight` x min(attributes mentioned, 3) / 3

Why the specificity term: a reward that only punishes visible contradictions is maximised by a
persona that commits to nothing. With `specificity_weight > 0` the policy also gains by stating
profile facts, which the judge then checks. Q&A is not a reward here: it needs the policy's own
likelihoods, not its completions. Rewards are deterministic for a given judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simgen.consistency.judges import Judge, Pair, load_judge
from simgen.consistency.metrics import attribute_values, mentioned, persona_text
from simgen.errors import ConfigError, DataError

REWARDS = ("prompt_to_line", "line_to_line", "consistency")
SPECIFICITY_CAP = 3


def line_reward(kind: str, empty: bool, p2l_contradiction: float | None, l2l_score: float | None, specificity: int,
                specificity_weight: float = 0.0) -> float:
    """One line's reward from its parts: the one combination (reward functions, `export rl`'s rewards from the sidecar).

    An empty line earns nothing; a line with nothing earlier to compare scores line-to-line 1
    (`l2l_score` None); `specificity` counts the profile attributes it mentions (capped).
    """
    parts = []
    if kind in ("prompt_to_line", "consistency"):
        parts.append(0.0 if empty or p2l_contradiction is None else 1.0 - p2l_contradiction)
    if kind in ("line_to_line", "consistency"):
        parts.append(0.0 if empty else (1.0 if l2l_score is None else l2l_score))
    return sum(parts) / len(parts) + specificity_weight * min(specificity, SPECIFICITY_CAP) / SPECIFICITY_CAP


def _text(message: Any) -> str:
    """A completion or prompt as text: a string, or the last message's content of a conversation."""
    if isinstance(message, str):
        return message
    if isinstance(message, Sequence) and message and isinstance(message[-1], dict):
        return str(message[-1].get("content", ""))
    if isinstance(message, dict):
        return str(message.get("content", ""))
    raise DataError(f"a completion must be a string or a list of chat messages, got {type(message).__name__}.")


def _earlier(prompt: Any, history: Any) -> list[str]:
    if history is not None:
        return [str(h) for h in history if str(h).strip()]
    if isinstance(prompt, Sequence) and not isinstance(prompt, str):
        return [str(m.get("content", "")) for m in prompt if isinstance(m, dict) and m.get("role") == "assistant" and str(m.get("content", "")).strip()]
    return []


class ConsistencyReward:
    """A TRL reward function: `__call__(prompts, completions, **kwargs) -> list[float]`."""

    def __init__(self, kind: str = "consistency", judge: Judge | str | None = None, profile_key: str = "profile",
                 history_key: str = "history", specificity_weight: float = 0.0) -> None:
        if kind not in REWARDS:
            raise ConfigError(f"unknown reward {kind!r}; choose one of {', '.join(REWARDS)}.")
        if specificity_weight < 0:
            raise ConfigError(f"specificity_weight must be >= 0, got {specificity_weight}.")
        self.kind = kind
        self.judge = load_judge(judge)
        self.profile_key = profile_key
        self.history_key = history_key
        self.specificity_weight = specificity_weight
        self.__name__ = f"simgen_{kind}"  # TRL logs rewards under their function's __name__

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        profiles = kwargs.get(self.profile_key)
        if profiles is None:
            raise DataError(f"the reward needs each sample's profile latent: add a {self.profile_key!r} column to the dataset "
                            "(a dict with the profile's values and its 'backstory', as in turns.parquet's profile column).")
        if len(profiles) != len(completions) or len(prompts) != len(completions):
            raise DataError(f"got {len(prompts)} prompts, {len(completions)} completions and {len(profiles)} profiles; they must match one to one.")
        histories = kwargs.get(self.history_key) or [None] * len(completions)
        lines = [_text(c).strip() for c in completions]
        pairs: list[Pair] = []
        p2l: list[int | None] = []
        l2l: list[list[int]] = []
        for prompt, profile, history, line in zip(prompts, profiles, histories, lines):
            p2l.append(None)
            l2l.append([])
            if not line:
                continue
            if self.kind in ("prompt_to_line", "consistency"):
                p2l[-1] = len(pairs)
                pairs.append(Pair("prompt_to_line", persona_text(profile), line))
            if self.kind in ("line_to_line", "consistency"):
                for earlier in _earlier(prompt, history):
                    l2l[-1].append(len(pairs))
                    pairs.append(Pair("line_to_line", earlier, line))
        probs = self.judge.contradiction(pairs) if pairs else []
        out = []
        for i, (profile, line) in enumerate(zip(profiles, lines)):
            ps = [probs[k] for k in l2l[i]]
            specificity = len(mentioned(line, attribute_values(profile))) if self.specificity_weight else 0
            out.append(float(line_reward(self.kind, not line, probs[p2l[i]] if p2l[i] is not None else None,
                                         1.0 - sum(ps) / len(ps) if ps else None, specificity, self.specificity_weight)))
        return out


def make_reward(kind: str = "consistency", judge: Judge | str | None = None, **options: Any) -> ConsistencyReward:
    """A reward function for TRL: `kind` is prompt_to_line, line_to_line or consistency (see the module doc)."""
    return ConsistencyReward(kind, judge, **options)
