"""The simulator loop with scripted backends: chats, roles, stop rules, failures as data."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from simgen.backends import Backend, Session
from simgen.config import SamplingConfig
from simgen.data import Generation
from simgen.errors import ConfigError
from simgen.scenario import load_scenario
from simgen.generation.plan import DialogueJob, plan
from simgen.generation.simulator import clean_line, degenerate, simulate

S = SamplingConfig()


class Scripted(Backend):
    """Answers from a function of (chat, call number); records every chat it saw."""

    name = "scripted"
    batched = True

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def generate(self, chats: Sequence, sampling, seeds) -> list[Generation]:
        self.calls.append([list(c) for c in chats])
        return [Generation(self.fn(chat, len(self.calls)), n_tokens=3) for chat in chats]


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("chitchat")


def job(scenario, intents, index=0):
    return DialogueJob(index, plan(scenario, 0, index, 6).profile, tuple(intents))


def run(scenario, jobs, user_fn, assistant_fn, max_turns=6):
    user, assistant = Scripted(user_fn), Scripted(assistant_fn)
    return simulate(jobs, scenario, user, assistant, S, S, 0, max_turns), user, assistant


def test_roles_are_flipped_for_the_user_side_and_chats_only_grow(scenario):
    j = job(scenario, ["GREET", "ASK", "BYE"])
    (d,), user, assistant = run(scenario, [j], lambda c, k: f"user line {k}", lambda c, k: f"assistant line {k}")
    assert [t.role for t in d.turns] == ["user", "assistant", "user", "assistant", "user"]
    assert [t.intent for t in d.turns if t.role == "user"] == ["GREET", "ASK", "BYE"]
    assert d.stop_reason == "terminal_intent"
    last_user_chat = user.calls[-1][0]
    assert last_user_chat[0]["role"] == "system" and j.profile["name"] in last_user_chat[0]["content"]
    # the simulated user's own lines are "assistant" messages; the assistant's lines arrive as "user"
    assert [m["role"] for m in last_user_chat] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last_user_chat[2]["content"] == "user line 1"
    assert last_user_chat[3]["content"].startswith("assistant line 1\n\n")
    assert last_user_chat[-1]["content"].endswith(scenario.intents.get("BYE").description)  # this turn's intent
    assert user.calls[0][0] == last_user_chat[:2]  # append-only: earlier chats are prefixes
    # the assistant side sees natural roles and never the profile latent
    assert [m["role"] for m in assistant.calls[-1][0]] == ["system", "user", "assistant", "user"]
    assert j.profile["name"] not in assistant.calls[-1][0][0]["content"]


class Counted(Scripted):
    """A Scripted backend that counts a chat's tokens as its words (what a `context` budget reads)."""

    def encode(self, chat):  # noqa: ANN001, ANN201
        return [0] * sum(len(m["content"].split()) for m in chat)


def test_a_context_budget_drops_the_oldest_exchanges_as_tuning_does(scenario):
    """With `context` N each side sends its chat without the fewest oldest exchanges that keep it
    within N tokens (`fit_exchanges`, the rule `simgen tune` fits its examples by): the system
    message and the last message stay, the roles still alternate, and the lines written are
    recorded as always. Without it the chats only grow."""
    from simgen.generation.chats import assistant_chat, fit_exchanges, user_chat

    j = job(scenario, ["GREET", "ASK", "SHARE", "ASK", "SHARE", "BYE"])
    line = lambda side: lambda c, k: f"{side} line {k}: " + " ".join(f"{side[0]}{k}w{i}" for i in range(10)) + "."  # noqa: E731
    budget = SamplingConfig(context=120)
    user, assistant = Counted(line("user")), Counted(line("assistant"))
    (d,) = simulate([j], scenario, user, assistant, budget, budget, 0, 6)
    sent = [call[0] for call in user.calls]
    assert len(d.turns) == 11 and d.stop_reason == "terminal_intent"
    for k, chat in enumerate(sent):
        full = user_chat(scenario, j, d.turns, k, 6)
        assert chat == fit_exchanges(full, lambda c: len(user.encode(c)), 120)
        assert chat[0] == full[0] and chat[-1] == full[-1] and len(user.encode(chat)) <= 120
        assert [m["role"] for m in chat[1:]] == ["user", "assistant"] * ((len(chat) - 2) // 2) + ["user"]
    assert len(sent[-1]) < len(user_chat(scenario, j, d.turns, 5, 6))  # the budget dropped exchanges by the last turn
    answered = [call[0] for call in assistant.calls]
    assert all(len(assistant.encode(c)) <= 120 for c in answered)
    assert len(answered[-1]) < len(assistant_chat(scenario, j.profile, d.turns[:9], 6))
    (again,) = simulate([j], scenario, Counted(line("user")), Counted(line("assistant")), S, S, 0, 6)
    assert [t.text for t in again.turns] == [t.text for t in d.turns]  # the scripted lines do not read the history


def test_a_context_budget_needs_a_backend_that_counts_tokens(scenario):
    j = job(scenario, ["GREET", "BYE"])
    with pytest.raises(ConfigError, match="context 50: backend 'scripted' cannot count a prompt's tokens"):
        simulate([j], scenario, Scripted(lambda c, k: "hi."), Scripted(lambda c, k: "hello."), SamplingConfig(context=50), S, 0, 6)
    for bad in (-1, 1.5, True, "100"):
        with pytest.raises(ConfigError, match="context must be a whole number"):
            SamplingConfig(context=bad)


def test_user_chat_rebuilds_what_the_simulator_sent(scenario):
    from simgen.generation.chats import user_chat

    j = job(scenario, ["GREET", "ASK", "SHARE", "BYE"])
    (d,), user, _ = run(scenario, [j], lambda c, k: f"user line {k}", lambda c, k: f"assistant line {k}")
    for k, sent in enumerate(user.calls):
        assert user_chat(scenario, j, d.turns, k, 6) == sent[0]


def test_the_assistant_sees_the_variables_the_profile_shares_and_nothing_else_of_it():
    """A variable marked `shared: true` (chitchat-topic-shared's `topic`: the starter both strangers were
    shown) reaches the assistant template: each dialogue's assistant chat holds its own value, and
    `assistant_chat` rebuilds what was sent. The rest of the profile (name, backstory) never does."""
    from pathlib import Path

    from simgen.generation.chats import assistant_chat

    shared = load_scenario(Path(__file__).parents[1] / "benchmarks" / "scenarios" / "chitchat-topic-shared.yaml")
    assert shared.profile.shared == ("topic",)
    jobs = [job(shared, ["GREET", "ASK", "BYE"], index=i) for i in range(4)]
    assert len({j.profile["topic"] for j in jobs}) > 1
    dialogues, _, assistant = run(shared, jobs, lambda c, k: f"user line {k}", lambda c, k: f"assistant line {k}")
    rebuilt = []
    for d, j in zip(dialogues, jobs):
        for i in (i for i, t in enumerate(d.turns) if t.role == "assistant"):
            chat = assistant_chat(shared, j.profile, d.turns[:i], 6)
            assert f'"{j.profile["topic"]}"' in chat[0]["content"]
            assert j.profile["name"] not in chat[0]["content"] and j.profile["backstory"] not in chat[0]["content"]
            rebuilt.append(chat)
    sent = [chat for call in assistant.calls for chat in call]
    assert len(sent) >= len(jobs) and sorted(map(repr, sent)) == sorted(map(repr, rebuilt))


def test_max_turns_stop(scenario):
    (d,), _, _ = run(scenario, [job(scenario, ["ASK", "SHARE"])], lambda c, k: f"u{k}", lambda c, k: f"a{k}", max_turns=2)
    assert len(d.turns) == 4 and d.stop_reason == "max_turns"


@pytest.mark.parametrize(
    ("user_fn", "assistant_fn", "reason", "n_turns"),
    [
        (lambda c, k: "   ", lambda c, k: "a", "empty_output", 1),
        (lambda c, k: "same thing", lambda c, k: f"a{k}", "degenerate_output: repeated_line", 3),
        (lambda c, k: f"u{k}", lambda c, k: c[-1]["content"], "degenerate_output: echo", 2),
    ],
)
def test_stop_rules_record_the_row_and_the_reason(scenario, user_fn, assistant_fn, reason, n_turns):
    (d,), _, _ = run(scenario, [job(scenario, ["ASK", "SHARE", "ASK", "BYE"])], user_fn, assistant_fn)
    assert d.stop_reason == reason and len(d.turns) == n_turns


def test_without_early_stop_degenerate_lines_run_to_the_end_of_the_path(scenario):
    """What the throughput benchmark relies on: every dialogue runs its whole path."""
    jobs = [job(scenario, ["ASK", "SHARE", "ASK", "SHARE"])]
    user, assistant = Scripted(lambda c, k: "same thing"), Scripted(lambda c, k: "   ")
    (d,) = simulate(jobs, scenario, user, assistant, S, S, 0, 4, early_stop=False)
    assert len(d.turns) == 8 and d.stop_reason == "max_turns"
    (d,), _, _ = run(scenario, jobs, lambda c, k: "same thing", lambda c, k: "   ", max_turns=4)
    assert d.stop_reason == "empty_output"


def test_a_failing_dialogue_does_not_stop_the_batch(scenario):
    class FailsOnFirstCall(Scripted):
        """The first chat of the first call fails, as a broken server or assistant would."""

        def generate(self, chats, sampling, seeds):
            out = super().generate(chats, sampling, seeds)
            if len(self.calls) == 1:
                out[0] = Generation("", error="RuntimeError: server fell over")
            return out

    jobs = [job(scenario, ["ASK", "SHARE", "BYE"], i) for i in range(3)]
    dialogues = simulate(jobs, scenario, Scripted(lambda c, k: f"u{k}"), FailsOnFirstCall(lambda c, k: f"a{k}"), S, S, 0, 6)
    assert dialogues[0].stop_reason == "generation_error: RuntimeError: server fell over"
    assert dialogues[0].turns[-1].finish_reason == "error" and len(dialogues[0].turns) == 2
    assert [d.stop_reason for d in dialogues[1:]] == ["terminal_intent", "terminal_intent"]
    assert [len(d.turns) for d in dialogues[1:]] == [5, 5]


def test_batch_calls_carry_every_active_dialogue(scenario):
    jobs = [job(scenario, ["ASK"] * k + ["BYE"], i) for i, k in enumerate((0, 1, 2))]
    dialogues, user, _ = run(scenario, jobs, lambda c, k: f"u{k}-{len(c)}", lambda c, k: f"a{k}-{len(c)}")
    assert [len(batch) for batch in user.calls] == [3, 2, 1]  # one call per step, shrinking as dialogues end
    assert [len(d.turns) for d in dialogues] == [1, 3, 5]


def test_clean_line_and_degenerate():
    assert clean_line('  User: "hello there"  ') == "hello there"
    assert degenerate("I like it I like it I like it I like it I like it", [], None) == "looping"
    assert degenerate("Hello!", ["hello"], None) == "repeated_line"
    assert degenerate("a fine line", ["another"], "something else") is None


def test_redraws_replace_giveaway_lines_and_record_how_many_draws_it_took(scenario):
    """A goodbye before the closing turn, a closing turn that does not close and a repeated line are
    drawn again (each draw with its own seed); a line still bad after the last redraw is kept."""
    from simgen import rng

    j = job(scenario, ["GREET", "ASK", "ASK", "BYE"])
    first_seeds = {rng.derive(0, 0, stream, k) for stream in (rng.USER, rng.ASSISTANT) for k in range(4)}

    def user(chat, seed):
        turn = sum(m["role"] == "assistant" for m in chat)
        if turn == 0:  # a goodbye in the opening line: the first draw only
            return "Hi, bye!" if seed in first_seeds else "Hi there, how are you?"
        if turn == 1:  # a line the user already said: every draw, so the last one is kept and stops the dialogue
            return "Hi there, how are you?"
        return "Thanks so much, bye!"

    class Seeded(Scripted):
        def generate(self, chats, sampling, seeds):
            self.calls.append([list(c) for c in chats])
            return [Generation(self.fn(chat, seed), n_tokens=3) for chat, seed in zip(chats, seeds)]

    u, a = Seeded(user), Seeded(lambda chat, seed: "Sure, goodbye." if seed in first_seeds else "Sure, tell me more.")
    (d,) = simulate([j], scenario, u, a, S, S, 0, 6, redraws=2)
    assert [(t.role, t.text, t.redraws) for t in d.turns] == [
        ("user", "Hi there, how are you?", 1),
        ("assistant", "Sure, tell me more.", 1),
        ("user", "Hi there, how are you?", 2),
    ]
    assert d.stop_reason == "degenerate_output: repeated_line"
    # one call per redraw, each with a seed of its own: turn 0 takes one redraw, turn 1 both
    assert [len(c) for c in u.calls] == [1, 1, 1, 1, 1]

    (d,) = simulate([j], scenario, Seeded(lambda chat, seed: "Okay."), Seeded(lambda chat, seed: "Sure."), S, S, 0, 6)
    assert [t.redraws for t in d.turns] == [None] * len(d.turns)  # redraws off: nothing is recorded


def test_the_closing_turn_is_drawn_again_until_it_closes(scenario):
    from simgen.generation.simulator import misfit

    j = job(scenario, ["GREET", "BYE"])
    state = type("S", (), {"turns": []})()
    assert misfit(state, "user", "ok see you tomorrow", "stop", True) == "farewell"
    assert misfit(state, "user", "ok see you tomorrow", "stop", True, closing=True) is None
    assert misfit(state, "user", "Thanks a lot!", "stop", True, closing=True) is None
    assert misfit(state, "user", "What about horror?", "stop", True, closing=True) == "no_closing"
    assert misfit(state, "user", "What about", "length", True) == "unfinished"
    assert misfit(state, "user", "What about", "length", False) is None
    assert misfit(state, "assistant", "", "stop", True) == "empty"

    draws = iter(["What about horror?", "Thanks, that's all, bye!"])
    (d,), _, _ = run(scenario, [j], lambda c, k: "Hello!" if k == 1 else next(draws), lambda c, k: "Hi, what's up?")
    assert d.turns[-1].text == "What about horror?"  # redraws are off by default in `simulate`

    draws = iter(["What about horror?", "Thanks, that's all, bye!", "Bye then.", "Cheers!"])
    u, a = Scripted(lambda c, k: "Hello!" if k == 1 else next(draws)), Scripted(lambda c, k: "Hi, what's up?")
    (d,) = simulate([j], scenario, u, a, S, S, 0, 6, redraws=3)
    assert (d.turns[-1].text, d.turns[-1].redraws, d.stop_reason) == ("Thanks, that's all, bye!", 1, "terminal_intent")


def test_a_run_recorded_before_redraws_resumes_without_them_and_bad_values_are_refused():
    from simgen.config import GenerateConfig
    from simgen.errors import ConfigError

    assert GenerateConfig.from_dict({"n": 2}).redraws == 0 and GenerateConfig().redraws == 3
    assert GenerateConfig.from_dict({"n": 2}).copy_guard is False and GenerateConfig().copy_guard is True
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="redraws must be a non-negative integer"):
            GenerateConfig(redraws=bad)


def test_the_assistant_answers_the_closing_line_when_the_dialogue_draws_a_reply(scenario):
    """A dialogue whose `reply` latent is set ends on the assistant's answer to the user's closing
    line; that answer must close too (thanks, welcome or goodbye), or it is drawn again."""
    from dataclasses import replace

    j = replace(job(scenario, ["GREET", "BYE"]), reply=True)
    answers = iter(["Hi! How are you?", "Sure.", "You're welcome, bye!", "Okay."])
    u, a = Scripted(lambda c, k: "Hello!" if k == 1 else "Thanks, bye!"), Scripted(lambda c, k: next(answers))
    (d,) = simulate([j], scenario, u, a, S, S, 0, 6, redraws=2)
    assert [(t.role, t.text, t.redraws) for t in d.turns] == [
        ("user", "Hello!", 0), ("assistant", "Hi! How are you?", 0), ("user", "Thanks, bye!", 0),
        ("assistant", "You're welcome, bye!", 1)]
    assert d.stop_reason == "terminal_intent"
    (d,), _, _ = run(scenario, [job(scenario, ["GREET", "BYE"])], lambda c, k: f"Line {k}, bye!", lambda c, k: "Hi.")
    assert d.turns[-1].role == "user" and d.stop_reason == "terminal_intent"  # no reply drawn: the user has the last word


def test_the_assistant_opens_the_dialogues_that_draw_it_and_user_turn_0_answers_its_line(scenario):
    """A dialogue whose `opens` latent is set starts on the assistant's line, written from the
    system prompt alone and judged like any other (an early goodbye is drawn again); user turn 0
    then answers it: the opening line leads the user's first message, as `user_chat` rebuilds it,
    and the assistant's next chat holds it. An opening line that fails the stop rules ends the dialogue."""
    from dataclasses import replace

    from simgen.config import GenerateConfig
    from simgen.generation.chats import job_of, user_chat

    assert GenerateConfig.from_dict({"n": 2}).opening is False and GenerateConfig().opening is True  # a run from before it resumes without
    j = replace(job(scenario, ["GREET", "BYE"]), opens=True)
    answers = iter(["Hi there, bye!", "Hey! What's new with you?", "Sure, have fun."])
    user, assistant = Scripted(lambda c, k: "Hello! Not much." if k == 1 else "Thanks, bye!"), Scripted(lambda c, k: next(answers))
    (d,) = simulate([j], scenario, user, assistant, S, S, 0, 6, redraws=2)
    assert [(t.role, t.text, t.redraws) for t in d.turns] == [
        ("assistant", "Hey! What's new with you?", 1), ("user", "Hello! Not much.", 0), ("assistant", "Sure, have fun.", 0),
        ("user", "Thanks, bye!", 0)]
    assert d.stop_reason == "terminal_intent" and [t.intent for t in d.turns if t.role == "user"] == ["GREET", "BYE"]
    assert [m["role"] for m in assistant.calls[0][0]] == ["system"]  # the opening line is written from the system prompt
    first = user.calls[0][0]
    assert first[-1]["content"].startswith("Hey! What's new with you?\n\n") and first == user_chat(scenario, j, d.turns, 0, 6)
    assert [m["content"] for m in assistant.calls[-1][0][1:]] == ["Hey! What's new with you?", "Hello! Not much."]
    assert job_of(scenario, d) == j  # what the checks and exports rebuild the chats from


    (d,) = simulate([j], scenario, Scripted(lambda c, k: "Hi."), Scripted(lambda c, k: ""), S, S, 0, 6)
    assert [t.role for t in d.turns] == ["assistant"] and d.stop_reason == "empty_output"
    (d,), _, _ = run(scenario, [job(scenario, ["GREET", "BYE"])], lambda c, k: "Hi, bye!", lambda c, k: "Hey.")
    assert d.turns[0].role == "user"  # no opening drawn: the user speaks first


def test_a_line_that_near_copies_a_trained_line_is_drawn_again_and_short_lines_are_not(scenario):
    """With a copy index for a side (its tuned model's training lines), a line of 4+ words equal to
    one of them after normalising, or with >= 80% of its 4-grams in one, is a misfit and drawn again."""
    from simgen.copies import CopyIndex
    from simgen.generation.simulator import misfit

    trained = CopyIndex.from_lines(["Thanks so much for your help tonight!", "I loved The Big Sick (2017), any more like it?"])
    state = type("S", (), {"turns": []})()
    assert misfit(state, "user", "thanks so much for your help tonight", "stop", True, trained=trained) == "copy"
    assert misfit(state, "user", "I loved The Big Sick (2017), any more like that?", "stop", True, trained=trained) == "copy"
    assert misfit(state, "user", "I loved The Big Sick, what else?", "stop", True, trained=trained) is None  # 1 of 4 grams
    assert misfit(state, "user", "Thanks so much!", "stop", True, trained=trained) is None  # under 4 words: people repeat those
    assert misfit(state, "user", "thanks so much for your help tonight", "stop", True) is None  # no index: no guard

    j = job(scenario, ["GREET", "BYE"])
    draws = iter(["Thanks so much for your help tonight!", "Thanks a lot, I will watch it tonight, bye!"])
    u, a = Scripted(lambda c, k: "Hello there!" if k == 1 else next(draws)), Scripted(lambda c, k: "Hi, what's up?")
    (d,) = simulate([j], scenario, u, a, S, S, 0, 6, redraws=2, copy_guard={"user": trained})
    assert (d.turns[-1].text, d.turns[-1].redraws) == ("Thanks a lot, I will watch it tonight, bye!", 1)


def test_the_copy_index_matches_the_benchmarks_measure_and_round_trips(tmp_path):
    from simgen.copies import CopyIndex
    from simgen.errors import DataError

    real = ["Hi, looking for a good comedy.", "I haven't seen that one yet", "ok"]
    index = CopyIndex.from_lines(real)
    lines = ["hi looking for a good comedy", "I have not seen that one yet", "ok", "Something else entirely, thanks"]
    assert [index.copies(t, min_words=0) for t in lines] == [True, False, True, False]
    assert index.rate(lines) == 0.5 and index.rate(lines, min_words=4) == 1 / 3
    index.save(tmp_path / "ix.npz")
    again = CopyIndex.load(tmp_path / "ix.npz")
    assert [again.copies(t, min_words=0) for t in lines] == [True, False, True, False]
    (tmp_path / "bad.npz").write_text("not an index")
    with pytest.raises(DataError, match="bad.npz: not a copy index"):
        CopyIndex.load(tmp_path / "bad.npz")


class Writer(Scripted):
    """A model without a model, keeping the transformers session's contract: its session writes each
    row's line with `line(hold)`, given that row's `hold` test (None when it has none)."""

    def session(self):
        backend = self

        class Writing(Session):
            def generate(self, chats, sampling, seeds, keys, until=None, hold=None):  # noqa: ANN001, ANN201
                backend.calls.append([list(c) for c in chats])
                return [backend.line(hold[row] if hold else None) for row in range(len(chats))]

        return Writing()


class Terse(Writer):
    """Ends every line after one word unless its `hold` test holds, when it writes on, a word at a
    time, until the test lets it end."""

    def line(self, hold):  # noqa: ANN001, ANN201
        word = f"w{len(self.calls)}."
        text = word
        while hold is not None and hold(text):
            text += " " + word
        return Generation(text, n_tokens=len(text.split()))


@pytest.mark.parametrize("reach", [True, False])
def test_a_user_line_reaches_its_length_target_only_with_reach_target(scenario, reach):
    j = DialogueJob(0, plan(scenario, 0, 0, 6).profile, ("GREET", "ASK", "BYE"), target_words=(5, 1, 3))
    sampling = SamplingConfig(reach_target=reach)
    (d,) = simulate([j], scenario, Terse(lambda c, k: ""), Scripted(lambda c, k: f"assistant line {k}."), sampling, S, 0, 6)
    assert [len(t.text.split()) for t in d.turns if t.role == "user"] == ([5, 1, 3] if reach else [1, 1, 1])
    assert d.stop_reason == "terminal_intent"


@pytest.mark.parametrize(("floor", "expected"), [(0.0, [1, 1, 1, 1]), (0.5, [5, 3, 1, 2]), (1.0, [10, 6, 1, 3])])
def test_a_length_floor_holds_a_user_line_to_its_share_of_the_target(scenario, floor, expected):
    """`length_floor` F: a line may not end before it has F x its target's words (rounded up: 5 of
    10, 3 of 6, 1 of 1, 2 of 3 at F = 0.5), and past that the model ends it where it would (Terse
    ends at once); F = 1 is `reach_target`."""
    j = DialogueJob(0, plan(scenario, 0, 0, 6).profile, ("GREET", "ASK", "SHARE", "BYE"), target_words=(10, 6, 1, 3))
    (d,) = simulate([j], scenario, Terse(lambda c, k: ""), Scripted(lambda c, k: f"assistant line {k}."),
                    SamplingConfig(length_floor=floor), S, 0, 6)
    assert [len(t.text.split()) for t in d.turns if t.role == "user"] == expected
    assert d.stop_reason == "terminal_intent"


def test_length_floor_must_be_a_share_of_the_target():
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match="length_floor"):
            SamplingConfig(length_floor=bad)
    assert SamplingConfig(reach_target=True, length_floor=0.3).floor == 1.0  # --reach-target is the whole target


class Nudgeable(Writer):
    """Writes "so i went out. and then we ate ..." a word at a time and ends its line once its `hold`
    test weighs the end at 3 or more (a model whose end-of-turn token wins only when pushed); with no
    `hold` it writes the whole line. It records every weight it was given."""

    LINE = "so i went out. and then we ate pizza at the old place downtown".split()

    def line(self, hold):  # noqa: ANN001, ANN201
        n = len(self.LINE)
        for k in range(1, len(self.LINE) + 1):
            weight = hold(" ".join(self.LINE[:k])) if hold is not None else 0.0
            self.weights.append(weight)
            if weight is not True and weight >= 3:
                n = k
                break
        return Generation(" ".join(self.LINE[:n]), n_tokens=n, finish_reason="stop")


@pytest.mark.parametrize("nudge", [0.0, 1.0])
def test_end_nudge_lets_the_model_end_a_line_past_its_target_and_keeps_it_whole(scenario, nudge):
    """Without the nudge a line longer than its target is cut at the sentence end nearest it ("so i
    went out."); with it the session is told to push the end harder with every word past the target
    (1, 2, 3 at words 4, 5, 6 of a 4-word target), the model ends where it then would, and the line
    is kept as written, with no full stop."""
    j = DialogueJob(0, plan(scenario, 0, 0, 6).profile, ("GREET", "BYE"), target_words=(4, 4))
    user = Nudgeable(lambda c, k: "")
    user.weights = []
    (d,) = simulate([j], scenario, user, Scripted(lambda c, k: f"assistant line {k}."), SamplingConfig(end_nudge=nudge), S, 0, 6)
    first = d.turns[0]
    if nudge:
        assert first.text == "so i went out. and then"
        assert first.finish_reason == "stop"
        assert user.weights[:6] == [False, False, False, 1.0, 2.0, 3.0]
    else:
        assert first.text == "so i went out."
        assert first.finish_reason == "target"
        assert user.weights[:3] == [0.0, 0.0, 0.0]  # no hold test: nothing weighs the end


def test_end_nudge_must_be_a_finite_non_negative_number():
    for bad in (-1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ConfigError, match="end_nudge"):
            SamplingConfig(end_nudge=bad)
