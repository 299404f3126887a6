"""Each side's chat, built from a scenario's templates: the one place chats are made.

    user side (roles flipped, so a chat model speaks as the user):
      system:    the user template's `system` block (persona, backstory)
      user:      [the assistant's last line + "\\n\\n"] + the `turn` block (this turn's intent)
      assistant: the simulated user's line
      ...
    assistant side (natural roles):
      system:    the assistant template's `system` block (the profile's `shared` variables only)
      user:      the simulated user's line
      assistant: the assistant's line
      ...

The simulator grows both chats a message at a time with `user_system`, `user_message` and
`assistant_system`; everything that later needs a chat the simulator sent (the consistency check's
Q&A and persona axis, `export rl`) rebuilds it from the recorded turns with `user_chat` and
`assistant_chat`, which use the same pieces, so the two cannot drift apart. A side with a
`context` budget (a tuned simulator's, by default) was sent `fit_exchanges` of that whole chat, its
oldest exchanges dropped; the rebuilt chats are the whole ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from simgen.data import Chat, Dialogue, ProfileLatent, Turn
from simgen.generation.plan import DialogueJob
from simgen.scenario import Scenario


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
        "target_words": job.target(turn),
        "turn": turn,
        "max_turns": max_turns,
        "scenario": {"name": scenario.name, "description": scenario.description},
    }


def assistant_context(scenario: Scenario, profile: ProfileLatent, turn: int, max_turns: int) -> dict:
    """The variables the assistant template sees: of the profile, only what both sides know (`shared: true`)."""
    return {**{name: profile.values[name] for name in scenario.profile.shared},
            "scenario": {"name": scenario.name, "description": scenario.description}, "turn": turn, "max_turns": max_turns}


def user_system(scenario: Scenario, job: DialogueJob, max_turns: int) -> dict[str, str]:
    """The user side's system message: the persona."""
    return {"role": "system", "content": scenario.user_template.render("system", user_context(scenario, job, 0, max_turns))}


def user_message(scenario: Scenario, job: DialogueJob, k: int, max_turns: int, pending: str | None) -> dict[str, str]:
    """The message before user line `k`: the assistant's last line (`pending`, if any), then turn k's instruction."""
    instruction = scenario.user_template.render("turn", user_context(scenario, job, k, max_turns))
    return {"role": "user", "content": instruction if pending is None else f"{pending}\n\n{instruction}"}


def assistant_system(scenario: Scenario, profile: ProfileLatent, max_turns: int) -> dict[str, str]:
    """The assistant side's system message (the same for every dialogue unless the profile shares a variable)."""
    return {"role": "system", "content": scenario.assistant_template.render("system", assistant_context(scenario, profile, 0, max_turns))}


def user_chat(scenario: Scenario, job: DialogueJob, turns: Sequence[Turn], k: int, max_turns: int) -> Chat:
    """The user side's chat exactly as the simulator sent it before user line `k` (0-based).

    `turns` are the dialogue's turns so far (at least those before user line k).
    """
    chat: Chat = [user_system(scenario, job, max_turns)]
    pending: str | None = None
    user_index = 0
    for t in turns:
        if t.role == "user":
            if user_index == k:
                break
            chat.append(user_message(scenario, job, user_index, max_turns, pending))
            chat.append({"role": "assistant", "content": t.text})
            user_index += 1
        else:
            pending = t.text
    chat.append(user_message(scenario, job, k, max_turns, pending))
    return chat


def assistant_chat(scenario: Scenario, profile: ProfileLatent, turns: Sequence[Turn], max_turns: int) -> Chat:
    """The assistant side's chat over `turns` (natural roles), as the simulator sent it before the next assistant line."""
    return [assistant_system(scenario, profile, max_turns), *({"role": t.role, "content": t.text} for t in turns)]


def fit_exchanges(chat: Chat, n_tokens: Callable[[Chat], int], limit: int) -> Chat | None:
    """`chat` without its fewest oldest exchanges such that `n_tokens` of it is at most `limit`
    (None: not even with every exchange gone). The system message and the last message stay, and
    exchanges go two messages at a time, so the roles still alternate.

    `simgen tune` fits its examples so (chat + the line, within `--max-length`), and a side with a
    `context` budget fits the chat it sends the same way, so a tuned simulator is prompted with the
    history it learned from. The count falls as exchanges go, so the fewest is found by bisection: a
    few counts per chat instead of one per exchange dropped (long dialogues made that quadratic)."""
    def dropped(d: int) -> Chat:
        return [chat[0], *chat[1 + 2 * d:]]

    most = max(0, (len(chat) - 1) // 2)  # drop exchanges while more than the system message and the last message are left
    if n_tokens(dropped(most)) > limit:
        return None
    lo, hi = 0, most  # dropped(hi) fits; the fewest d that fits lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if n_tokens(dropped(mid)) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return dropped(lo)


def job_of(scenario: Scenario, dialogue: Dialogue) -> DialogueJob:
    """The `DialogueJob` of a recorded dialogue; an intent the scenario lacks becomes None."""
    known = set(scenario.intents.names)
    users = [t for t in dialogue.turns if t.role == "user"]
    targets = tuple(t.target_words for t in users) if any(t.target_words is not None for t in users) else ()
    opens = bool(dialogue.turns) and dialogue.turns[0].role == "assistant"
    answers = [t.target_words for t in dialogue.turns[int(opens):] if t.role == "assistant"]  # the lines that answer user turns
    return DialogueJob(dialogue.index, dialogue.profile, tuple(t.intent if t.intent in known else None for t in users), targets,
                       assistant_words=tuple(answers) if any(a is not None for a in answers) else (), opens=opens)
