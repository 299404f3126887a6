"""The simulator loop: a batch of dialogues advances together, one side at a time.

For every dialogue of the batch the simulator keeps two chats that only ever grow:

    user side (roles flipped, so a chat model speaks as the user):
      system:    the user template's `system` block (persona, backstory)
      user:      [the assistant's last line + "\\n\\n"] + the `turn` block (this turn's intent)
      assistant: the simulated user's line
      ...
    assistant side (natural roles):
      system:    the assistant template's `system` block
      user:      the simulated user's line
      assistant: the assistant's line
      ...

Each step sends the chats of all active dialogues to the backend in ONE call (so a batched backend
runs one forward pass for all of them), then records the lines and applies the stop rules:
terminal intent, max turns, empty output, degenerate output (a repeated line, an echo of the other
side, a looping line), or a generation error. Every stop is recorded with its reason. The intents
of a dialogue are drawn before it starts (see intents.py), from the dialogue's own seed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from simgen import rng
from simgen.backends import Backend, Session
from simgen.config import SamplingConfig
from simgen.data import Chat, Dialogue, Generation, ProfileLatent, Turn, dialogue_id
from simgen.scenario import Scenario


@dataclass(frozen=True)
class DialogueJob:
    """Everything that determines one dialogue before any model speaks."""

    index: int
    profile: ProfileLatent
    intents: tuple[str, ...]  # the intent of each user turn, drawn up front


@dataclass
class _State:
    job: DialogueJob
    user_chat: Chat
    assistant_chat: Chat
    turns: list[Turn] = field(default_factory=list)
    stop_reason: str | None = None
    pending_assistant_line: str | None = None  # the assistant line the next user message answers


def plan(scenario: Scenario, seed: int, index: int, max_turns: int) -> DialogueJob:
    """Sample dialogue `index`'s profile and intent path; depends only on (seed, index)."""
    profile = scenario.profile.sample(rng.generator(seed, index, rng.PROFILE))
    path = scenario.intents.sample_path(profile, rng.generator(seed, index, rng.INTENT), max_turns)
    return DialogueJob(index, profile, tuple(path))


def user_context(scenario: Scenario, job: DialogueJob, turn: int, max_turns: int) -> dict:
    """The variables the user template sees for user turn `turn` (0-based)."""
    intent = job.intents[turn] if turn < len(job.intents) else None
    return {
        **job.profile.values,
        "profile": job.profile.values,
        "backstory": job.profile.backstory,
        "intent": intent,
        "intent_description": scenario.intents.get(intent).description if intent else "",
        "intents": {i.name: i.description for i in scenario.intents.intents},
        "turn": turn,
        "max_turns": max_turns,
        "scenario": {"name": scenario.name, "description": scenario.description},
    }


def assistant_context(scenario: Scenario, turn: int, max_turns: int) -> dict:
    return {"scenario": {"name": scenario.name, "description": scenario.description}, "turn": turn, "max_turns": max_turns}


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
    states = []
    for job in jobs:
        user_system = scenario.user_template.render("system", user_context(scenario, job, 0, max_turns))
        assistant_system = scenario.assistant_template.render("system", assistant_context(scenario, 0, max_turns))
        states.append(_State(job, [{"role": "system", "content": user_system}], [{"role": "system", "content": assistant_system}]))

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
            instruction = scenario.user_template.render("turn", user_context(scenario, s.job, k, max_turns))
            content = instruction if s.pending_assistant_line is None else f"{s.pending_assistant_line}\n\n{instruction}"
            s.user_chat.append({"role": "user", "content": content})
        seeds = [rng.derive(seed, s.job.index, rng.USER, k) for s in active]
        gens = user_session.generate([s.user_chat for s in active], user_sampling, seeds, [s.job.index for s in active])
        _check_count(user_backend, active, gens)
        for s, g in zip(active, gens):
            intent = s.job.intents[k]
            text = clean_line(g.text)
            s.turns.append(Turn(len(s.turns), "user", text, intent, g.n_tokens, g.finish_reason if not g.error else "error"))
            s.user_chat.append({"role": "assistant", "content": text})
            s.assistant_chat.append({"role": "user", "content": text})
            s.stop_reason = _stop_reason(s, g, text, early_stop)
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
            text = clean_line(g.text)
            s.turns.append(Turn(len(s.turns), "assistant", text, None, g.n_tokens, g.finish_reason if not g.error else "error"))
            s.assistant_chat.append({"role": "assistant", "content": text})
            s.pending_assistant_line = text
            s.stop_reason = _stop_reason(s, g, text, early_stop)
            if s.stop_reason is None and k == max_turns - 1:
                s.stop_reason = "max_turns"
        if on_step:
            on_step(len(active), sum(g.n_tokens for g in gens))


def user_chat(scenario: Scenario, job: DialogueJob, turns: Sequence[Turn], k: int, max_turns: int) -> Chat:
    """The user side's chat exactly as the simulator sent it before user turn `k` (0-based).

    `turns` are the dialogue's turns so far (at least those before user turn k). Checks use this
    to ask the simulator questions in its own context (Q&A consistency) or to score its lines.
    """
    chat: Chat = [{"role": "system", "content": scenario.user_template.render("system", user_context(scenario, job, 0, max_turns))}]
    pending: str | None = None
    user_index = 0
    for t in turns:
        if t.role == "user":
            if user_index == k:
                break
            instruction = scenario.user_template.render("turn", user_context(scenario, job, user_index, max_turns))
            chat.append({"role": "user", "content": instruction if pending is None else f"{pending}\n\n{instruction}"})
            chat.append({"role": "assistant", "content": t.text})
            user_index += 1
        else:
            pending = t.text
    instruction = scenario.user_template.render("turn", user_context(scenario, job, k, max_turns))
    chat.append({"role": "user", "content": instruction if pending is None else f"{pending}\n\n{instruction}"})
    return chat


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


def _stop_reason(state: _State, gen: Generation, text: str, early_stop: bool = True) -> str | None:
    if gen.error:
        return f"generation_error: {gen.error}"
    if not early_stop:
        return None
    if not text:
        return "empty_output"
    role = state.turns[-1].role
    same = [t.text for t in state.turns[:-1] if t.role == role]
    other = next((t.text for t in reversed(state.turns[:-1]) if t.role != role), None)
    why = degenerate(text, same, other)
    return f"degenerate_output: {why}" if why else None
