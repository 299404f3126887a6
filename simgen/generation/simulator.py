"""The simulator loop: a batch of dialogues advances together, one side at a time.

For every dialogue of the batch the simulator keeps two chats that only ever grow, one per side
(their shape is in chats.py: the user side's roles are flipped, so a chat model speaks as the user).
Each step sends the chats of all active dialogues to the backend in ONE call (so a batched backend
runs one forward pass for all of them), then records the lines and applies the stop rules.
A user turn with a length latent (`target_words`) ends at the sentence end nearest its target
(`simgen.lengths.cut_to_target`); the session is told so it may stop that row as soon as the cut
is known. Then the stop rules:
terminal intent, max turns, empty output, degenerate output (a repeated line, an echo of the other
side, a looping line), or a generation error. Every stop is recorded with its reason. The intents
of a dialogue are drawn before it starts (plan.py), from the dialogue's own seed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from simgen import rng
from simgen.backends import Backend, Session
from simgen.config import SamplingConfig
from simgen.data import Chat, Dialogue, Generation, Turn, dialogue_id
from simgen.generation.chats import assistant_system, user_message, user_system
from simgen.generation.plan import DialogueJob
from simgen.lengths import cut_to_target, sentence_ends, target_reached
from simgen.scenario import Scenario


@dataclass
class _State:
    job: DialogueJob
    user_chat: Chat
    assistant_chat: Chat
    turns: list[Turn] = field(default_factory=list)
    stop_reason: str | None = None
    pending_assistant_line: str | None = None  # the assistant line the next user message answers


def simulate(
    jobs: Sequence[DialogueJob],
    scenario: Scenario,
    user_backend: Backend,
    assistant_backend: Backend,
    user_sampling: SamplingConfig,
    assistant_sampling: SamplingConfig,
    seed: int,
    max_turns: int,
    on_step: Callable[[int, int], None] | None = None,
    early_stop: bool = True,
) -> list[Dialogue]:
    """Run `jobs` to completion as one batch; `on_step(lines, tokens)` reports progress.

    `early_stop=False` keeps every dialogue going through empty and degenerate lines (only a
    generation error or the end of its intent path stops it): benchmarks use it so that every
    row does the same number of turns, whatever text the model writes.
    """
    states = [_State(job, [user_system(scenario, job, max_turns)], [assistant_system(scenario, max_turns)]) for job in jobs]

    with user_backend.session() as user_session, assistant_backend.session() as assistant_session:
        _loop(states, scenario, user_session, assistant_session, user_backend, assistant_backend,
              user_sampling, assistant_sampling, seed, max_turns, on_step, early_stop)
    for s in states:  # a path that ended without a terminal intent within max_turns
        if s.stop_reason is None:
            s.stop_reason = "max_turns"
    return [Dialogue(dialogue_id(s.job.index), s.job.index, s.job.profile, tuple(s.turns), s.stop_reason) for s in states]


def _loop(states: list[_State], scenario: Scenario, user_session: Session, assistant_session: Session,
          user_backend: Backend, assistant_backend: Backend, user_sampling: SamplingConfig,
          assistant_sampling: SamplingConfig, seed: int, max_turns: int,
          on_step: Callable[[int, int], None] | None, early_stop: bool = True) -> None:
    for k in range(max_turns):
        active = [s for s in states if s.stop_reason is None]
        if not active:
            break
        # user step: (active dialogue) -> user chat ending in this turn's instruction
        for s in active:
            s.user_chat.append(user_message(scenario, s.job, k, max_turns, s.pending_assistant_line))
        seeds = [rng.derive(seed, s.job.index, rng.USER, k) for s in active]
        targets = [s.job.target(k) for s in active]
        until = [None if t is None else functools.partial(_cut_known, target=t) for t in targets]
        gens = user_session.generate([s.user_chat for s in active], user_sampling, seeds, [s.job.index for s in active],
                                     until if any(targets) else None)
        _check_count(user_backend, active, gens)
        for s, g, target in zip(active, gens, targets):
            intent = s.job.intents[k]
            text, finish = finished_line(g, user_sampling, target)
            s.turns.append(Turn(len(s.turns), "user", text, intent, g.n_tokens, finish, target))
            s.user_chat.append({"role": "assistant", "content": text})
            s.assistant_chat.append({"role": "user", "content": text})
            s.stop_reason = _stop_reason(s, g, text, early_stop, user_sampling.trim)
            if s.stop_reason is None and scenario.intents.get(intent).terminal:
                s.stop_reason = "terminal_intent"
        if on_step:
            on_step(len(active), sum(g.n_tokens for g in gens))

        # assistant step
        active = [s for s in active if s.stop_reason is None]
        if not active:
            break
        seeds = [rng.derive(seed, s.job.index, rng.ASSISTANT, k) for s in active]
        gens = assistant_session.generate([s.assistant_chat for s in active], assistant_sampling, seeds, [s.job.index for s in active])
        _check_count(assistant_backend, active, gens)
        for s, g in zip(active, gens):
            text, finish = finished_line(g, assistant_sampling)
            s.turns.append(Turn(len(s.turns), "assistant", text, None, g.n_tokens, finish))
            s.assistant_chat.append({"role": "assistant", "content": text})
            s.pending_assistant_line = text
            s.stop_reason = _stop_reason(s, g, text, early_stop, assistant_sampling.trim)
            if s.stop_reason is None and k == max_turns - 1:
                s.stop_reason = "max_turns"
        if on_step:
            on_step(len(active), sum(g.n_tokens for g in gens))


def _check_count(backend: Backend, active: list, gens: list[Generation]) -> None:
    if len(gens) != len(active):
        raise RuntimeError(f"backend {backend.name!r} returned {len(gens)} lines for {len(active)} chats")


_ROLE_PREFIX = re.compile(r"^\s*(?:user|assistant|me|you|human|ai|bot|system)\s*:\s*", re.IGNORECASE)


def clean_line(text: str) -> str:
    """Trim whitespace, a leading speaker label ("User: ...") and wrapping quotes."""
    text = _ROLE_PREFIX.sub("", text.strip())
    if len(text) >= 2 and text[0] == text[-1] == '"' and text.count('"') == 2:
        text = text[1:-1]
    return text.strip()


def _cut_known(text: str, target: int) -> bool:
    """`target_reached` on a line still being written, counted as `clean_line` will count it (no speaker label)."""
    return target_reached(_ROLE_PREFIX.sub("", text.lstrip()), target)


def trim_to_sentence(text: str) -> str | None:
    """`text` up to and including its last complete sentence, or None when it has no sentence end."""
    ends = sentence_ends(text)
    return text[:ends[-1]].rstrip() if ends else None


def finished_line(g: Generation, sampling: SamplingConfig, target: int | None = None) -> tuple[str, str | None]:
    """The line to store and its finish reason: the cleaned text
    - with a length `target`: cut at the sentence end nearest it ("target"; the end of a line the
      model finished itself counts as an end);
    - else, when it hit the token cap and `sampling.trim` is on: cut back to its last sentence end
      ("trimmed").
    A capped line with no sentence end stays whole and "length", and with trimming on ends its
    dialogue as `degenerate_output: unfinished_line`, so no line that a dialogue goes on from, or
    that an export keeps, ends mid-sentence."""
    text = clean_line(g.text)
    if g.error:
        return text, "error"
    if target is not None:
        cut = cut_to_target(text, target, finished=g.finish_reason == "stop")
        if cut is not None and (cut != text or g.finish_reason == "until"):
            return cut, "target"
        if g.finish_reason == "until":  # the test held on the raw text but the cleaned one has no end: keep it whole
            return text, "stop"
    if sampling.trim and g.finish_reason == "length" and (trimmed := trim_to_sentence(text)):
        return trimmed, "trimmed"
    return text, g.finish_reason


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def degenerate(text: str, same_side: Sequence[str], other_side: str | None) -> str | None:
    """Why `text` is degenerate (`repeated_line`, `echo`, `looping`), or None."""
    norm = _normal(text)
    if norm and any(norm == _normal(prev) for prev in same_side):
        return "repeated_line"
    if norm and other_side is not None and norm == _normal(other_side):
        return "echo"
    words = norm.split()
    if len(words) >= 12:
        trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        if len(set(trigrams)) / len(trigrams) < 0.4:
            return "looping"
    return None


def _stop_reason(state: _State, gen: Generation, text: str, early_stop: bool = True, trim: bool = False) -> str | None:
    if gen.error:
        return f"generation_error: {gen.error}"
    if not early_stop:
        return None
    if not text:
        return "empty_output"
    if trim and state.turns[-1].finish_reason == "length":  # cut mid-sentence with no sentence end to trim back to
        return "degenerate_output: unfinished_line"
    role = state.turns[-1].role
    same = [t.text for t in state.turns[:-1] if t.role == role]
    other = next((t.text for t in reversed(state.turns[:-1]) if t.role != role), None)
    why = degenerate(text, same, other)
    return f"degenerate_output: {why}" if why else None
