"""The simulator loop: a batch of dialogues advances together, one side at a time; a finished
dialogue's slot takes the next one (continuous batching). Or, with `schedule="lines"` (what
`simgen generate` runs where it can: one local Llama-style model writing both sides), each
dialogue's next line starts as soon as its last one ends, both sides in one batch
(`_loop_lines`, simgen/backends/lines.py); every rule below is the same, and so are the lines.

For every dialogue of the batch the simulator keeps two chats that only ever grow, one per side
(their shape is in chats.py: the user side's roles are flipped, so a chat model speaks as the user).
Each step sends the chats of all active dialogues to the backend in ONE call (so a batched backend
runs one forward pass for all of them), then records the lines and applies the stop rules. A side
with a `context` budget sends each chat without the oldest exchanges that do not fit it
(`chats.fit_exchanges`, as `simgen tune` fitted the simulator's training chats); the chats kept
here still hold everything.
A user turn with a length latent (`target_words`; an assistant line too, where the length model has an
`assistant` row) ends at the sentence end nearest its target
(`simgen.lengths.cut_to_target`); the session is told so it may stop that row as soon as the cut
is known, and, with `reach_target` (off by default), that the line may not end before the target
(`hold`: a model that would stop at 5 words of a 20-word target writes on; `length_floor` holds it
to a share of the target only, and lets the model end it anywhere past that). With `end_nudge` (off by
default) a line is not cut at its target: past it, the session makes the end-of-turn token more
likely with every word, so the model ends the line where it would end one, and the line is kept
as written (only a line that hits the token cap is trimmed). Then the stop rules:
terminal intent (after the assistant's answer to the closing line, when the dialogue's `reply`
latent says it gets one: plan.py), max turns, empty output, degenerate output (a repeated line, an
echo of the other side, a looping line), or a generation error. Every stop is recorded with its reason. The intents
of a dialogue are drawn before it starts (plan.py), from the dialogue's own seed.

Redraws (`redraws` > 0, `simgen generate --redraws`): before the stop rules, a line that would give
the dialogue away (`misfit`: empty, unfinished, degenerate, a goodbye before the user's closing
turn, a closing turn that does not close, a near-copy of a line the tuned simulator was trained
on, or a user line that does not read like its intent by the scenario's intent guard) is drawn again
with the next seed of its own sequence, up to `redraws` times, and the turn records how many
redraws it took. This is rejection sampling: the kept line is the model's own, conditioned on not
failing those tests (when no draw passes, the least faulty is kept), and dialogue i stays a
function of (seed, i).

Dialogue redraws (`dialogue_redraws` > 0 with a `dialogue_guard`, `--dialogue-redraws`): a finished
dialogue that reads like the simulator's is written again from its first line, as the same job
(profile, intents, lengths) with seeds of its own (`rng.derive`'s `take`), next in line for the
batch; the take that reads most like people's is kept and records which it was.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from simgen import rng
from simgen.backends import Backend, Hold, Session, Until
from simgen.config import SamplingConfig
from simgen.copies import CopyIndex, normal
from simgen.data import Chat, Dialogue, Generation, Turn, dialogue_id
from simgen.dialogue_guard import DialogueGuard, as_lines
from simgen.endings import closes, farewell
from simgen.errors import ConfigError
from simgen.generation.chats import assistant_system, fit_exchanges, user_message, user_system
from simgen.generation.plan import DialogueJob
from simgen.intent_guard import IntentGuard
from simgen.realism_guard import RealismGuard
from simgen.lengths import cut_to_target, sentence_ends, target_reached, words
from simgen.scenario import Scenario


@dataclass
class _State:
    job: DialogueJob
    user_chat: Chat
    assistant_chat: Chat
    turns: list[Turn] = field(default_factory=list)
    stop_reason: str | None = None
    pending_assistant_line: str | None = None  # the assistant line the next user message answers
    k: int = 0  # the user turn the dialogue is at
    closed: bool = False  # the user has said its closing (terminal-intent) line; only the assistant's answer may follow
    take: int = 0  # which writing of the dialogue this is (the dialogue guard's redraws; 0: the first)


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
    redraws: int = 0,
    copy_guard: Mapping[str, CopyIndex | None] | None = None,
    intent_guard: IntentGuard | None = None,
    realism_guard: Mapping[str, RealismGuard] | None = None,
    dialogue_guard: DialogueGuard | None = None,
    dialogue_redraws: int = 0,
    slots: int | None = None,
    on_done: Callable[[Dialogue], None] | None = None,
    schedule: str = "calls",
) -> list[Dialogue]:
    """Run `jobs` to completion, `slots` of them at a time (default: all as one batch); the
    dialogues in job order. `on_step(lines, tokens)` reports progress, `on_done(dialogue)` each
    dialogue as it ends.

    With fewer slots than jobs the batch refills (continuous batching): the slot of a dialogue that
    ends takes the next job at the next user step, so the batch stays full until the jobs run out.
    Dialogues at different turns share a step; each draws from its own seeds (seed, index, turn, side).
    A dialogue whose job `opens` starts on an assistant line written from the system prompt alone
    (its own seed stream, `rng.OPENING`); user turn 0 answers it.

    `early_stop=False` keeps every dialogue going through empty and degenerate lines (only a
    generation error or the end of its intent path stops it): benchmarks use it so that every
    row does the same number of turns, whatever text the model writes. `redraws`: how many times
    a line that would give the dialogue away is drawn again (`misfit`; 0 = never, the first draw
    is kept); each turn then records its count. `copy_guard` maps a side ("user", "assistant") to
    the index of the real lines its model was trained on: with redraws, a line that near-copies
    one of them (`simgen.copies`) is drawn again too, and so, with `intent_guard`, is a user line
    that does not read like its turn's intent (`simgen.intent_guard`), and with `realism_guard`
    (side -> guard), a line of that side that reads like the simulator's (`simgen.realism_guard`).
    `dialogue_redraws` with `dialogue_guard`: a finished dialogue that reads like the simulator's
    (`simgen.dialogue_guard`) is written again from its first line, same job, seeds of its own
    (`take`), up to that many times; the take that reads most like people's is kept and recorded.

    `schedule`: "calls" (one decoding call per side and turn, `_loop`), "lines" (each line as
    soon as the one before it ends, both sides in one batch, `_loop_lines`: one transformers
    model for both sides; `line_schedule_problem` says when it cannot) or "auto" (lines where
    they can run).
    """
    def fresh(job: DialogueJob, take: int = 0) -> _State:
        return _State(job, [user_system(scenario, job, max_turns)], [assistant_system(scenario, job.profile, max_turns)], take=take)

    states = [fresh(job) for job in jobs]
    finished: dict[int, Dialogue] = {}
    judged = dialogue_guard is not None and dialogue_redraws > 0
    first_of: dict[int, _State] = {}  # id(a later take's state) -> the job's first state
    takes: dict[int, list[tuple[float, Dialogue]]] = {}  # id(first state) -> (score, dialogue) of each take so far

    def done(s: _State) -> _State | None:
        """Dialogue `s` has ended: keep it, or (the dialogue guard) return its next take to run instead."""
        first = first_of.pop(id(s), s)
        d = Dialogue(dialogue_id(s.job.index), s.job.index, s.job.profile, tuple(s.turns), s.stop_reason, s.take if judged else None)
        if judged:
            assert dialogue_guard is not None
            score = float(dialogue_guard.scores([as_lines(d)])[0])
            tried = takes.setdefault(id(first), [])
            tried.append((score, d))
            if score < dialogue_guard.threshold and s.take < dialogue_redraws:
                again = fresh(s.job, s.take + 1)
                first_of[id(again)] = first
                return again
            d = max(tried, key=lambda t: t[0])[1]  # the take most like people's (ties: the earliest)
            del takes[id(first)]
        finished[id(first)] = d
        if on_done:
            on_done(d)
        return None

    why = line_schedule_problem(user_backend, assistant_backend) if schedule != "calls" else None
    if schedule == "lines" and why:
        raise ConfigError(f"--schedule lines: {why}; use --schedule calls.")
    if schedule != "calls" and not why:  # lines, or auto where they can run
        _loop_lines(states, scenario, user_backend, user_sampling, assistant_sampling, seed, max_turns, on_step, early_stop, redraws,
                    copy_guard, intent_guard, realism_guard or {}, slots or len(states), done)
        return [finished[id(s)] for s in states]
    with user_backend.session() as user_session, assistant_backend.session() as assistant_session:
        _loop(states, scenario, user_session, assistant_session, user_backend, assistant_backend, user_sampling,
              assistant_sampling, seed, max_turns, on_step, early_stop, redraws, copy_guard, intent_guard, realism_guard or {},
              slots or len(states), done)
    return [finished[id(s)] for s in states]


def line_schedule_problem(user_backend: Backend, assistant_backend: Backend) -> str | None:
    """Why `--schedule lines` cannot run with these sides, or None."""
    from simgen.backends.lines import supports

    if user_backend is not assistant_backend:
        return "both sides must be written by the same model (no --assistant-model, --assistant or --persona-cap)"
    return supports(user_backend)


def _loop(states: list[_State], scenario: Scenario, user_session: Session, assistant_session: Session,
          user_backend: Backend, assistant_backend: Backend, user_sampling: SamplingConfig,
          assistant_sampling: SamplingConfig, seed: int, max_turns: int,
          on_step: Callable[[int, int], None] | None, early_stop: bool, redraws: int,
          guard: Mapping[str, CopyIndex | None] | None, intent_guard: IntentGuard | None,
          realism: Mapping[str, RealismGuard], slots: int,
          done: Callable[[_State], _State | None]) -> None:
    guard = guard or {}
    queue, active = deque(states), []

    def assistant_step(writing: list[_State], opening: bool) -> None:
        """One assistant line in each of the dialogues `writing`: the line that opens it (`opening`,
        no length target, its own seed stream), or the answer to its user's last line."""
        misfits = [_assistant_misfit(s, assistant_sampling, guard, realism) for s in writing]
        targets = [None if opening else s.job.assistant_target(s.k) for s in writing]
        stream = rng.OPENING if opening else rng.ASSISTANT
        until, hold = _length_tests(targets, assistant_sampling)
        sent = _windowed([s.assistant_chat for s in writing], assistant_backend, assistant_sampling)
        lines, tokens = _draw(assistant_session, assistant_backend, writing, sent, assistant_sampling,
                              lambda s, n: rng.derive(seed, s.job.index, stream, s.k, n, s.take),
                              targets, until, lambda i, text, finish: misfits[i](text, finish), redraws, hold)
        for s, line, target in zip(writing, lines, targets):
            _record_assistant(s, line, target, redraws, early_stop, assistant_sampling.trim, max_turns, opening)
        if on_step:
            on_step(len(writing), tokens)

    while True:
        for s in active:
            if s.stop_reason is not None and (again := done(s)) is not None:
                queue.appendleft(again)  # the dialogue guard's next take of it, at once
        active = [s for s in active if s.stop_reason is None]
        while queue and len(active) < slots:
            active.append(queue.popleft())
        if not active:
            break
        # opening step: the assistant's first line, in the dialogues it opens (`DialogueJob.opens`)
        opening = [s for s in active if s.job.opens and not s.turns]
        if opening:
            assistant_step(opening, opening=True)
        writing = [s for s in active if s.stop_reason is None]  # an opening line may have ended its dialogue
        if not writing:
            continue

        # user step: (active dialogue) -> user chat ending in its turn's instruction
        opened = [_open_user(s, scenario, max_turns) for s in writing]
        targets = [target for target, _ in opened]
        until, hold = _length_tests(targets, user_sampling)
        misfits = [_user_misfit(s, closing, user_sampling, guard, intent_guard, realism) for s, (_, closing) in zip(writing, opened)]
        sent = _windowed([s.user_chat for s in writing], user_backend, user_sampling)
        lines, tokens = _draw(user_session, user_backend, writing, sent, user_sampling,
                              lambda s, n: rng.derive(seed, s.job.index, rng.USER, s.k, n, s.take), targets,
                              until, lambda i, text, finish: misfits[i](text, finish), redraws, hold)
        for s, line, (target, closing) in zip(writing, lines, opened):
            _record_user(s, line, target, closing, redraws, early_stop, user_sampling.trim)
        if on_step:
            on_step(len(writing), tokens)

        # assistant step, for the dialogues the user step did not end
        answering = [s for s in writing if s.stop_reason is None]
        if answering:
            assistant_step(answering, opening=False)


def _loop_lines(states: list[_State], scenario: Scenario, backend: Backend, user_sampling: SamplingConfig,
                assistant_sampling: SamplingConfig, seed: int, max_turns: int,
                on_step: Callable[[int, int], None] | None, early_stop: bool, redraws: int,
                guard: Mapping[str, CopyIndex | None] | None, intent_guard: IntentGuard | None,
                realism: Mapping[str, RealismGuard], slots: int,
                done: Callable[[_State], _State | None]) -> None:
    """`_loop`'s dialogues, scheduled by line (`--schedule lines`, simgen/backends/lines.py): one
    model writes both sides on `slots` rows; as a line ends it is judged (redraws), recorded and
    the stop rules applied at once, and the dialogue's next line, or the next dialogue's first,
    is queued for the next free row. Each line draws from the seeds `_loop` gives it, so the
    dialogues are the same whichever schedule wrote them (in float32; tests/test_lines.py)."""
    from simgen.backends.lines import LineEngine, LineRequest

    guard = guard or {}
    engine = LineEngine(backend, min(slots, len(states)))
    queue: deque[_State] = deque(states)
    ready: deque[LineRequest] = deque()
    flying = [0]  # dialogues started and not yet done

    def request(s: _State, side: str, opening: bool = False) -> LineRequest:
        """The next line of dialogue `s` on `side` (`opening`: the assistant line that opens it)."""
        if side == "user":
            target, closing = _open_user(s, scenario, max_turns)
            wrong = _user_misfit(s, closing, user_sampling, guard, intent_guard, realism)
            sampling, chat, tag = user_sampling, s.user_chat, rng.USER
        else:
            target, closing = (None, False) if opening else (s.job.assistant_target(s.k), s.closed)
            wrong = _assistant_misfit(s, assistant_sampling, guard, realism)
            sampling, chat, tag = assistant_sampling, s.assistant_chat, rng.OPENING if opening else rng.ASSISTANT
        until, hold = _length_tests([target], sampling)
        index, k, take = s.job.index, s.k, s.take  # an opening line's k is 0: the user has not spoken yet
        seed_of = lambda n: rng.derive(seed, index, tag, k, n, take)  # noqa: E731
        prompt = _prompt_ids(chat, backend, sampling)
        return LineRequest((index, side), prompt, seed_of(0), sampling, until[0] if until else None, hold[0] if hold else None,
                           tag=(s, side, _Pick(sampling, target, wrong, redraws), target, closing, seed_of, opening))

    def next_line() -> LineRequest | None:
        if not ready and queue and flying[0] < slots:
            flying[0] += 1
            s = queue.popleft()
            ready.append(request(s, "assistant", opening=True) if s.job.opens else request(s, "user"))
        return ready.popleft() if ready else None

    def ended(req: LineRequest, g: Generation) -> int | None:
        s, side, pick, target, closing, seed_of, opening = req.tag
        if pick.judge(g):
            return seed_of(pick.drawn)
        if side == "user":
            _record_user(s, pick.result(), target, closing, redraws, early_stop, user_sampling.trim)
        else:
            _record_assistant(s, pick.result(), target, redraws, early_stop, assistant_sampling.trim, max_turns, opening)
        if on_step:
            on_step(1, pick.tokens)
        if s.stop_reason is None:
            ready.append(request(s, "assistant" if side == "user" else "user"))
        else:
            engine.forget((s.job.index, "user"))
            engine.forget((s.job.index, "assistant"))
            flying[0] -= 1
            if (again := done(s)) is not None:
                queue.appendleft(again)  # the dialogue guard's next take of it, next in line
        return None

    engine.run(next_line, ended)


def _open_user(s: _State, scenario: Scenario, max_turns: int) -> tuple[int | None, bool]:
    """Add dialogue `s`'s user-turn instruction to its user chat: (the line's length target, whether it closes the dialogue)."""
    s.user_chat.append(user_message(scenario, s.job, s.k, max_turns, s.pending_assistant_line))
    return s.job.target(s.k), scenario.intents.get(s.job.intents[s.k]).terminal


def _user_misfit(s: _State, closing: bool, sampling: SamplingConfig, guard: Mapping[str, CopyIndex | None],
                 intent_guard: IntentGuard | None, realism: Mapping[str, RealismGuard]) -> Callable[[str, str | None], str | None]:
    intent = s.job.intents[s.k]
    return lambda text, finish: misfit(s, "user", text, finish, sampling.trim, closing=closing, trained=guard.get("user"),
                                       intent=intent, intent_guard=intent_guard, realism=realism.get("user"))


def _assistant_misfit(s: _State, sampling: SamplingConfig, guard: Mapping[str, CopyIndex | None],
                      realism: Mapping[str, RealismGuard]) -> Callable[[str, str | None], str | None]:
    closing = s.closed
    return lambda text, finish: misfit(s, "assistant", text, finish, sampling.trim, closing=closing, trained=guard.get("assistant"),
                                       realism=realism.get("assistant"))


def _record_user(s: _State, line: tuple[Generation, str, str | None, int], target: int | None, closing: bool, redraws: int,
                 early_stop: bool, trim: bool) -> None:
    """Store dialogue `s`'s user line and apply the stop rules (a closing line with no answer to come ends it)."""
    g, text, finish, again = line
    s.turns.append(Turn(len(s.turns), "user", text, s.job.intents[s.k], g.n_tokens, finish, target, again if redraws else None))
    s.user_chat.append({"role": "assistant", "content": text})
    s.assistant_chat.append({"role": "user", "content": text})
    s.stop_reason = _stop_reason(s, g, text, early_stop, trim)
    if s.stop_reason is None and closing:
        s.closed = True
        if not s.job.reply:  # else the assistant answers the closing line first
            s.stop_reason = "terminal_intent"


def _record_assistant(s: _State, line: tuple[Generation, str, str | None, int], target: int | None, redraws: int,
                      early_stop: bool, trim: bool, max_turns: int, opening: bool = False) -> None:
    """Store dialogue `s`'s assistant line, apply the stop rules and move it to its next user turn
    (`opening`: the line that opens the dialogue, which user turn 0 answers)."""
    g, text, finish, again = line
    s.turns.append(Turn(len(s.turns), "assistant", text, None, g.n_tokens, finish, target, again if redraws else None))
    s.assistant_chat.append({"role": "assistant", "content": text})
    s.pending_assistant_line = text
    s.stop_reason = _stop_reason(s, g, text, early_stop, trim)
    if opening:
        return
    if s.stop_reason is None and s.closed:
        s.stop_reason = "terminal_intent"
    elif s.stop_reason is None and s.k == max_turns - 1:  # a path that ended without a terminal intent within max_turns
        s.stop_reason = "max_turns"
    s.k += 1


def _windowed(chats: list[Chat], backend: Backend, sampling: SamplingConfig, count: Callable[[Chat], int] | None = None) -> list[Chat]:
    """The chats a side sends: with a `sampling.context` budget, each without the oldest exchanges
    that do not fit it (`fit_exchanges`, counted by the backend's tokenizer, or `count`; a chat
    whose last message alone is over keeps just that and its system message); else as they are."""
    if not sampling.context:
        return chats
    encode = getattr(backend, "encode", None)
    if encode is None:
        raise ConfigError(f"context {sampling.context}: backend {backend.name!r} cannot count a prompt's tokens; "
                          "a context budget needs the transformers backend (leave --context at 0 with this one).")
    count = count or (lambda chat: len(encode(chat)))
    return [fit_exchanges(chat, count, sampling.context) or [chat[0], chat[-1]] for chat in chats]


def _prompt_ids(chat: Chat, backend: Backend, sampling: SamplingConfig) -> list[int]:
    """The token ids of the chat a side sends (`_windowed`): the window's ids as counted while it was
    fitted, rather than encoding it once more."""
    if not sampling.context:
        return backend.encode(chat)
    counted: dict[int, list[int]] = {}  # the windows differ in length: len(window) -> its ids

    def count(window: Chat) -> int:
        counted[len(window)] = backend.encode(window)
        return len(counted[len(window)])

    window = _windowed([chat], backend, sampling, count)[0]
    return counted.get(len(window)) or backend.encode(window)


def _draw(session: Session, backend: Backend, active: list[_State], chats: list[Chat], sampling: SamplingConfig,
          seed_of: Callable[[_State, int], int], targets: Sequence[int | None], until: Until,
          misfit_of: Callable[[int, str, str | None], str | None], redraws: int, hold: Hold = None
          ) -> tuple[list[tuple[Generation, str, str | None, int]], int]:
    """One line per active dialogue: (generation, stored text, finish reason, redraws made), and the
    tokens generated in all (redrawn lines included).

    Draw n of a line is seeded by `seed_of(state, n)`; a line `misfit_of` finds fault with is drawn
    again, up to `redraws` times, and the first draw that passes is kept. When none does, the least
    faulty one is (`SEVERITY`; the earliest among equals), so a line that only misses its intent is
    never traded for an unfinished or repeated one; the stop rules then judge it as usual.

    A session that `draws_again` (transformers) draws a line again inside the call that drew it, as
    soon as it ends, beside the rows still writing; any other through `session.redraw` passes of the
    rows at fault (the rows that are fine keep their cache untouched). Both draw the same lines.
    (Drawing all of a line's redraws at once instead was measured no faster:
    benchmarks/bench_redraws.py, README "Sim-to-real".)
    """
    keys = [s.job.index for s in active]
    picks = [_Pick(sampling, targets[i], functools.partial(misfit_of, i), redraws) for i in range(len(active))]
    first = [seed_of(s, 0) for s in active]
    if redraws and getattr(session, "draws_again", False):
        def again(i: int, g: Generation) -> int | None:
            return seed_of(active[i], picks[i].drawn) if picks[i].judge(g) else None

        _check_count(backend, active, session.generate(chats, sampling, first, keys, until, hold, again=again))
    else:
        gens = session.generate(chats, sampling, first, keys, until, hold)
        _check_count(backend, active, gens)
        for p, g in zip(picks, gens):
            p.judge(g)
        for n in range(1, redraws + 1):
            bad = [i for i, p in enumerate(picks) if p.fault is not None]
            if not bad:
                break
            again_ = session.redraw([chats[i] for i in bad], sampling, [seed_of(active[i], n) for i in bad], [keys[i] for i in bad],
                                    [until[i] for i in bad] if until else None, [hold[i] for i in bad] if hold else None)
            _check_count(backend, bad, again_)
            for i, g in zip(bad, again_):
                picks[i].judge(g)
    return [p.result() for p in picks], sum(p.tokens for p in picks)


class _Pick:
    """The draws of one line: the first draw, one that passes `misfit` (text, finish reason), or else
    the least faulty (`SEVERITY`; the earliest among equals)."""

    def __init__(self, sampling: SamplingConfig, target: int | None, misfit: Callable[[str, str | None], str | None],
                 redraws: int) -> None:
        self.sampling, self.target, self.misfit, self.redraws = sampling, target, misfit, redraws
        self.line: tuple[Generation, str, str | None] | None = None
        self.fault: str | None = None
        self.drawn = 0  # draws judged so far
        self.tokens = 0  # tokens generated, redrawn lines included

    def judge(self, g: Generation) -> bool:
        """Record the next draw (kept if it is the first, passes, or is less faulty than the kept
        one); whether the line is to be drawn again."""
        self.tokens += g.n_tokens
        line = (g, *finished_line(g, self.sampling, self.target))
        fault = None if g.error else self.misfit(line[1], line[2])
        if self.line is None or g.error or fault is None or SEVERITY.get(fault, HARD) < SEVERITY.get(self.fault, HARD):
            self.line, self.fault = line, fault
        self.drawn += 1
        return self.fault is not None and self.drawn <= self.redraws

    def result(self) -> tuple[Generation, str, str | None, int]:
        """(generation, stored text, finish reason, redraws made)."""
        return (*self.line, self.drawn - 1)


HARD = 3  # `_fault`'s reasons: empty, unfinished, repeated_line, echo, looping
SEVERITY = {"off_intent": 1, "unreal": 1, "copy": 2, "farewell": 2, "no_closing": 2}  # how much a kept misfit gives away; lower is kept


def misfit(state: _State, role: str, text: str, finish: str | None, trim: bool, closing: bool = False,
           trained: CopyIndex | None = None, intent: str | None = None, intent_guard: IntentGuard | None = None,
           realism: RealismGuard | None = None) -> str | None:
    """Why the line `text` of `role` would give the dialogue away, or None: empty, unfinished (cut
    mid-sentence where trimming is on), degenerate (`degenerate`), a near-copy of a line the model
    was trained on (`trained`, `simgen.copies`), a goodbye before the user's closing turn
    (`simgen.endings.farewell`), for a closing line (`closing`: the user's closing turn, or the
    assistant's answer to it) a line that does not close (`simgen.endings.closes`), or another line
    that does not read like its `intent` (`intent_guard.misses`) or like a person's (`realism`, the
    side's `RealismGuard`: "unreal"). The redraws draw such a line again."""
    if why := _fault(state.turns, role, text, finish, trim):
        return why
    if trained is not None and trained.copies(text):
        return "copy"
    if closing:  # its check is `closes`, whatever the guard would say
        return None if closes(text) else "no_closing"
    if farewell(text):
        return "farewell"
    if intent_guard is not None and intent_guard.misses(text, intent):
        return "off_intent"
    if realism is not None and realism.misses(text):
        return "unreal"
    return None


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


def _as_stored(text: str) -> str:
    """A line still being written as `clean_line` will count its words: without a speaker label."""
    return _ROLE_PREFIX.sub("", text.lstrip())


def _cut_known(text: str, target: int) -> bool:
    """`target_reached` on a line still being written (`_as_stored`)."""
    return target_reached(_as_stored(text), target)


def _length_tests(targets: Sequence[int | None], sampling: SamplingConfig) -> tuple[Until, Hold]:
    """The session's `until` and `hold` tests for lines with these targets (None where no line has
    one). `until` (the cut at the sentence end nearest the target is known) only without
    `sampling.end_nudge`, which lets the model end the line instead; `hold` only with a floor
    (`sampling.floor`: `reach_target` or `length_floor`) or `sampling.end_nudge`."""
    if not any(targets):
        return None, None
    nudge = sampling.end_nudge
    until = None if nudge else [None if t is None else functools.partial(_cut_known, target=t) for t in targets]
    if not (sampling.floor or nudge):
        return until, None
    weigh = functools.partial(_end_weight, floor=sampling.floor, nudge=nudge)
    return until, [None if t is None else functools.partial(weigh, target=t) for t in targets]


def _end_weight(text: str, target: int, floor: float, nudge: float) -> bool | float:
    """How a line still being written, its words counted as stored (`_as_stored`), may end
    (`backends.end_bias`): short of `floor` x `target` words (`sampling.floor`: 1 with `reach_target`,
    a share with `length_floor`), not at all; then freely up to the target; from the target's word
    on, `nudge` more per word on the end-of-turn logits (`end_nudge`)."""
    n = words(_as_stored(text))
    if n < target:
        return n < floor * target
    return nudge * (n - target + 1)


def trim_to_sentence(text: str) -> str | None:
    """`text` up to and including its last complete sentence, or None when it has no sentence end."""
    ends = sentence_ends(text)
    return text[:ends[-1]].rstrip() if ends else None


def finished_line(g: Generation, sampling: SamplingConfig, target: int | None = None) -> tuple[str, str | None]:
    """The line to store and its finish reason: the cleaned text
    - with a length `target`: cut at the sentence end nearest it ("target"; the end of a line the
      model finished itself counts as an end), unless `sampling.end_nudge` let the model end it;
    - else, when it hit the token cap and `sampling.trim` is on: cut back to its last sentence end
      ("trimmed").
    A capped line with no sentence end stays whole and "length", and with trimming on ends its
    dialogue as `degenerate_output: unfinished_line`, so no line that a dialogue goes on from, or
    that an export keeps, ends mid-sentence."""
    text = clean_line(g.text)
    if g.error:
        return text, "error"
    if target is not None and not sampling.end_nudge:  # with the nudge the model ends the line; only the cap is cut
        cut = cut_to_target(text, target, finished=g.finish_reason == "stop")
        if cut is not None and (cut != text or g.finish_reason == "until"):
            return cut, "target"
        if g.finish_reason == "until":  # the test held on the raw text but the cleaned one has no end: keep it whole
            return text, "stop"
    if sampling.trim and g.finish_reason == "length" and (trimmed := trim_to_sentence(text)):
        return trimmed, "trimmed"
    return text, g.finish_reason


def degenerate(text: str, same_side: Sequence[str], other_side: str | None) -> str | None:
    """Why `text` is degenerate (`repeated_line`, `echo`, `looping`), or None."""
    norm = normal(text)
    if norm and any(norm == normal(prev) for prev in same_side):
        return "repeated_line"
    if norm and other_side is not None and norm == normal(other_side):
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
    last = state.turns[-1]
    why = _fault(state.turns[:-1], last.role, text, last.finish_reason, trim)
    if why is None:
        return None
    return "empty_output" if why == "empty" else f"degenerate_output: {'unfinished_line' if why == 'unfinished' else why}"


def _fault(earlier: Sequence[Turn], role: str, text: str, finish: str | None, trim: bool) -> str | None:
    """What is wrong with a line of `role` after the turns `earlier`, wherever it stands: "empty",
    "unfinished" (cut mid-sentence with no sentence end to trim back to, where trimming is on), or
    `degenerate`'s reason. The stop rules and the redraws both ask it."""
    if not text:
        return "empty"
    if trim and finish == "length":
        return "unfinished"
    same = [t.text for t in earlier if t.role == role]
    other = next((t.text for t in reversed(earlier) if t.role != role), None)
    return degenerate(text, same, other)
