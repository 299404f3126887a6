"""Q&A consistency: multiple-choice questions about the persona, graded against the sampled profile.

simgen owns the ground truth, so no judge writes the questions: `profile_questions` builds them from
the structured profile latent and its declared profile space.

    categorical  "What is your occupation?"   the sampled value + other declared values
    list         "Which of these is one of your liked genres?"   one sampled item + items not sampled
    int          "How old are you?" / "What is your X?"   the value + values a step or more away
    float        skipped: latent traits (patience, sociability) are not facts a person states

Options are shuffled with a seed, so a dialogue gets the same questions at every checkpoint and its
drift is comparable turn by turn. `option_probabilities` answers by option likelihood under the
simulator model (transformers backend): the mean log-prob per token of each option as the persona's
next line, softmaxed over the options. It is deterministic and needs no text parsing. Grading is
against the profile, never against what the persona said earlier. Backends that cannot score text
(HTTP, callables) are left out here: the caller reports Q&A as not computed.
`qa_by_attribute` counts the same answers per profile variable (benchmarks/qa_by_attribute.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simgen.backends import Scorer
from simgen.data import Chat, Dialogue


@dataclass(frozen=True)
class ProfileQuestion:
    attribute: str  # the profile variable it tests
    question: str
    options: tuple[str, ...]
    answer: int  # index of the option true to the profile


def _label(var: Any) -> str:
    return var.description.strip().rstrip(".") if getattr(var, "description", "") else var.name.replace("_", " ")


def _declared_values(var: Any) -> list[str]:
    """Every value a categorical/list variable can take, over its base and all its cases, in order."""
    out: list[str] = []
    for dist in var.distributions:
        for v in dist.values:
            if str(v) not in out:
                out.append(str(v))
    return out


def _bounds(var: Any) -> tuple[float | None, float | None]:
    lows, highs = [], []
    for dist in var.distributions:
        if dist.low is not None:
            lows.append(dist.low)
        elif dist.mean is not None and dist.std is not None:
            lows.append(dist.mean - 3 * dist.std)
        if dist.high is not None:
            highs.append(dist.high)
        elif dist.mean is not None and dist.std is not None:
            highs.append(dist.mean + 3 * dist.std)
    return (min(lows) if lows else None, max(highs) if highs else None)


def profile_questions(space: Any, values: dict[str, Any], seed: int | Sequence[int] = 0, n_options: int = 4,
                      skip: Sequence[str] = ()) -> list[ProfileQuestion]:
    """Questions about one profile latent (`values`: variable -> sampled value), in declaration order."""
    rng = np.random.default_rng(seed)
    out: list[ProfileQuestion] = []
    for var in space.variables:
        if var.name in skip or var.name not in values or values[var.name] is None:
            continue
        label = _label(var)
        truth: str
        pool: list[str]
        if var.type == "categorical":
            truth = str(values[var.name])
            pool = [v for v in _declared_values(var) if v != truth]
            question = "What is your name?" if var.name == "name" else f"What is your {label}?"
        elif var.type == "list":
            sampled = [str(v) for v in values[var.name]]
            if not sampled:
                continue
            truth = sampled[int(rng.integers(len(sampled)))]
            pool = [v for v in _declared_values(var) if v not in sampled]
            question = f"Which of these is one of your {label}?"
        elif var.type == "int":
            value = int(values[var.name])
            truth = str(value)
            low, high = _bounds(var)
            span = (high - low) if low is not None and high is not None else max(abs(value), 10)
            step = max(1, int(round(span / 8)))
            pool = [str(value + k * step) for k in (-3, -2, -1, 1, 2, 3)
                    if (low is None or value + k * step >= low) and (high is None or value + k * step <= high)]
            question = "How old are you?" if var.name == "age" else f"What is your {label}?"
        else:
            continue
        if not pool:
            continue
        k = min(n_options - 1, len(pool))
        distractors = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
        options = [truth, *distractors]
        order = rng.permutation(len(options))
        shuffled = tuple(options[i] for i in order)
        out.append(ProfileQuestion(var.name, question, shuffled, int(np.flatnonzero(order == 0)[0])))
    return out


def option_probabilities(backend: Scorer, items: Sequence[tuple[Chat, Sequence[str]]], pass_tokens: int | None = None,
                         shared: bool = True) -> list[list[float]]:
    """For each (chat, options): softmax over options of the mean token log-prob of option-as-next-line.

    All options and questions go to the scorer at once, so what they share (a question's chat, the
    chat of successive checkpoints of one dialogue) is computed once.
    """
    flat = [(chat, str(o)) for chat, options in items for o in options]
    scores = iter(backend.continuation_logprobs(flat, pass_tokens=pass_tokens, shared=shared))
    out = []
    for _, options in items:
        means = []
        for _ in options:
            total, n = next(scores)
            means.append(total / n if n else -math.inf)
        m = max(means)
        w = [math.exp(v - m) if v > -math.inf else 0.0 for v in means]
        out.append([v / sum(w) for v in w])
    return out


def qa_scores(backend: Scorer, scenario: Any, dialogues: Sequence[Dialogue], max_turns: int, every: int = 1,
              max_questions: int = 8, n_options: int = 4, seed: int = 0, pass_tokens: int | None = None,
              skip: Sequence[str] = ()) -> dict[tuple[str, int], tuple[int, int]]:
    """(dialogue_id, user_turn) -> (asked, correct) at the checkpoint right after that user line.

    At a checkpoint the persona's own chat (as the simulator built it, `simgen.generation.chats.user_chat`)
    is cut after the line, and each question arrives as the other side's next message. Every
    `every`-th non-empty user line is a checkpoint; each dialogue gets the same questions at all its
    checkpoints (seeded by `seed` and the dialogue id).
    """
    graded = _graded(backend, scenario, dialogues, max_turns, every, max_questions, n_options, seed, pass_tokens, skip)
    return _tally((checkpoint, right) for checkpoint, _, right in graded)


def qa_by_attribute(backend: Scorer, scenario: Any, dialogues: Sequence[Dialogue], max_turns: int, every: int = 1,
                    max_questions: int = 8, n_options: int = 4, seed: int = 0, pass_tokens: int | None = None,
                    skip: Sequence[str] = ()) -> dict[str, tuple[int, int]]:
    """The same questions and answers as `qa_scores`, counted per profile variable: attribute -> (asked, correct).
    Which facts a simulator keeps: those its lines state (genres) or those only its persona block holds (a name)."""
    graded = _graded(backend, scenario, dialogues, max_turns, every, max_questions, n_options, seed, pass_tokens, skip)
    return _tally((attribute, right) for _, attribute, right in graded)


def _tally(answers: Iterable[tuple[Any, int]]) -> dict[Any, tuple[int, int]]:
    """(group, 1 if right else 0) pairs -> group -> (asked, correct), groups in first-seen order."""
    out: dict[Any, tuple[int, int]] = {}
    for group, right in answers:
        asked, correct = out.get(group, (0, 0))
        out[group] = (asked + 1, correct + right)
    return out


def asked(scenario: Any, dialogues: Sequence[Dialogue], max_turns: int, every: int = 1, max_questions: int = 8, n_options: int = 4,
          seed: int = 0, skip: Sequence[str] = ()) -> list[tuple[tuple[str, int], Chat, ProfileQuestion]]:
    """Every question Q&A asks, in order: ((dialogue_id, user_turn), the chat it is asked in, the question).
    The chat is the persona's own, cut after the user line, the question its last message."""
    import zlib

    from simgen.generation.chats import job_of, user_chat

    out: list[tuple[tuple[str, int], Chat, ProfileQuestion]] = []
    for d in dialogues:
        questions = profile_questions(scenario.profile, d.profile.values, [seed, zlib.crc32(d.dialogue_id.encode())], n_options, skip)[:max_questions]
        if not questions:
            continue
        turns, job = d.turns, job_of(scenario, d)
        users = [t for t in turns if t.role == "user"]
        for k, t in enumerate(users):
            if (k + 1) % every or not t.text.strip():
                continue
            chat = user_chat(scenario, job, turns, k + 1, max_turns)[:-1]  # cut after line k: drop the next instruction
            out += [((d.dialogue_id, k), [*chat, {"role": "user", "content": q.question}], q) for q in questions]
    return out


def _graded(backend: Scorer, scenario: Any, dialogues: Sequence[Dialogue], max_turns: int, every: int, max_questions: int,
            n_options: int, seed: int, pass_tokens: int | None, skip: Sequence[str]) -> list[tuple[tuple[str, int], str, int]]:
    """Every question asked, as ((dialogue_id, user_turn), attribute, 1 if answered right else 0)."""
    questions = asked(scenario, dialogues, max_turns, every, max_questions, n_options, seed, skip)
    probs = option_probabilities(backend, [(chat, q.options) for _, chat, q in questions], pass_tokens)
    return [(key, q.attribute, int(int(np.argmax(p)) == q.answer)) for (key, _, q), p in zip(questions, probs)]
