"""The metric arithmetic, checked with a rule judge (no model): per line, per dialogue, drift, errors."""

from __future__ import annotations

import polars as pl
import pytest
from tests.consistency.conftest import AGE, PRIYA, RETIRED, STEAK, STUDENT, VEGETARIAN, VEGGIE, RuleJudge, dialogue_frame, fill

from simgen.consistency.check import first_user_lines, score_dialogues
from simgen.consistency.metrics import (
    COLUMNS,
    ConsistencyConfig,
    attribute_values,
    dialogues_from_turns,
    mentioned,
    persona_text,
    score_lines,
)
from simgen.errors import ConfigError, DataError


def _frame():
    return dialogue_frame({
        "steak": (PRIYA, fill(VEGETARIAN, dinner=STEAK)),
        "veggie": (PRIYA, fill(VEGETARIAN, dinner=VEGGIE)),
        "retired": (PRIYA, fill(AGE, line=RETIRED)),
        "student": (PRIYA, fill(AGE, line=STUDENT)),
    })


def test_sidecar_has_one_row_per_user_line_keyed_by_dialogue_and_turn(rule_judge):
    frame = _frame()
    lines = score_lines(dialogues_from_turns(frame), rule_judge)
    assert list(lines.columns) == list(COLUMNS)
    users = frame.filter(pl.col("role") == "user").select("dialogue_id", "turn").sort("dialogue_id", "turn")
    assert lines.select("dialogue_id", "turn").sort("dialogue_id", "turn").equals(users.cast({"turn": pl.Int32}))
    assert lines.filter(pl.col("dialogue_id") == "steak")["user_turn"].to_list() == [0, 1, 2]


def test_line_scores_follow_the_definitions(rule_judge):
    lines = score_lines(dialogues_from_turns(_frame()), rule_judge).filter(pl.col("dialogue_id") == "steak")
    assert lines["p2l_contradiction"].to_list() == pytest.approx([0.1, 0.1, 0.9])  # the steak line
    assert lines["p2l_conflict"].to_list() == [False, False, True]
    assert lines["l2l_compared"].to_list() == [0, 1, 2]
    assert lines["l2l_score"].to_list()[0] is None
    assert lines["l2l_score"].to_list()[1:] == pytest.approx([0.9, 0.9])  # 1 - mean P over earlier lines
    assert lines["l2l_conflicts"].to_list() == [0, 0, 0]
    # the judge saw the assistant line each user line answers
    p2l = {p.line: p for p in rule_judge.calls[0] if p.kind == "prompt_to_line"}
    assert p2l[STEAK].context == "How about Paddington 2? What are you having for dinner?"
    assert p2l["hi! i want a funny movie for tonight"].context is None


def test_planted_contradictions_score_lower_than_their_clean_twins(rule_judge):
    scored = score_dialogues(_frame(), rule_judge)
    by = {d["dialogue_id"]: d for d in scored.report["dialogues"]}
    assert by["steak"]["prompt_to_line"] < by["veggie"]["prompt_to_line"]
    assert by["retired"]["prompt_to_line"] < by["student"]["prompt_to_line"]
    assert by["steak"]["prompt_to_line"] == pytest.approx(1 - (0.1 + 0.1 + 0.9) / 3)
    assert by["steak"]["prompt_to_line_thresholded"] == pytest.approx(2 / 3)
    assert by["veggie"]["prompt_to_line_thresholded"] == 1.0


def test_line_to_line_counts_conflicts_with_earlier_lines():
    judge = RuleJudge(rules=(("comedy", "hate comedies"),))
    frame = dialogue_frame({"d": (PRIYA, [("user", "i want a comedy"), ("assistant", "ok"), ("user", "something short"),
                                          ("assistant", "ok"), ("user", "honestly i hate comedies")])})
    lines = score_lines(dialogues_from_turns(frame), judge)
    last = lines.row(2, named=True)
    assert (last["l2l_compared"], last["l2l_conflicts"]) == (2, 1)
    assert last["l2l_score"] == pytest.approx(1 - (0.9 + 0.1) / 2)
    assert last["l2l_max_contradiction"] == pytest.approx(0.9)
    d = score_dialogues(frame, judge).report["dialogues"][0]
    assert d["line_to_line_thresholded"] == pytest.approx(1 - 1 / 3)


def test_drift_is_by_user_turn(rule_judge):
    scored = score_dialogues(_frame(), rule_judge)
    drift = {r["user_turn"]: r for r in scored.report["drift"]}
    assert sorted(drift) == [0, 1, 2]
    assert drift[0]["lines"] == 4 and drift[2]["lines"] == 2
    # turn 2 holds the steak (0.9) and the veggie (0.1) lines
    assert drift[2]["prompt_to_line"] == pytest.approx(1 - (0.9 + 0.1) / 2)
    assert drift[1]["prompt_to_line"] == pytest.approx(1 - (0.1 + 0.1 + 0.9 + 0.1) / 4)
    assert scored.report["judge"] == {"judge": "rule"}
    assert scored.report["not_computed"].keys() == {"qa", "axis"}


def test_specificity_counts_profile_attributes_mentioned():
    values = attribute_values(PRIYA)
    assert "backstory" not in values
    assert mentioned("I'm Priya, 19, and I love comedy", values) == ["name", "age", "liked_genres"]
    assert mentioned("hello there", values) == []
    assert mentioned("I'm 190 cm tall", values) == []  # whole numbers only
    assert attribute_values({"patience": 0.3, "x": True, "backstory": "b"}) == {}
    frame = dialogue_frame({"d": (PRIYA, [("user", "i'm a student and a vegetarian"), ("assistant", "ok"), ("user", "ok")])})
    lines = score_lines(dialogues_from_turns(frame), RuleJudge())
    assert lines["specificity"].to_list() == [2, 0]
    assert lines["attributes_mentioned"].to_list()[0] == ["occupation", "diet"]


def test_persona_text_falls_back_to_attributes():
    assert persona_text(PRIYA).startswith("Priya is 19")
    text = persona_text({"name": "Sam", "liked_genres": ["drama", "horror"], "backstory": None})
    assert text == "name: Sam\nliked genres: drama, horror"


def test_empty_lines_are_kept_as_rows_with_a_reason(rule_judge):
    frame = dialogue_frame({"d": (PRIYA, [("user", "hi"), ("assistant", "hello"), ("user", "")])})
    lines = score_lines(dialogues_from_turns(frame), rule_judge)
    assert lines["skipped"].to_list() == [None, "empty line"]
    assert lines["p2l_contradiction"].to_list() == [pytest.approx(0.1), None]


def test_bad_input_is_a_clear_error(rule_judge):
    frame = _frame()
    with pytest.raises(DataError, match="no profile latents"):
        dialogues_from_turns(frame.drop("profile"))
    with pytest.raises(DataError, match="no profile latents"):
        dialogues_from_turns(frame.with_columns(pl.lit(None).alias("profile")))
    with pytest.raises(DataError, match="dialogues are empty"):
        dialogues_from_turns(dialogue_frame({"d": (PRIYA, [("user", ""), ("assistant", "hi")])}))
    with pytest.raises(DataError, match="'text'"):
        dialogues_from_turns(frame.drop("text"))
    with pytest.raises(ConfigError, match="threshold"):
        ConsistencyConfig(threshold=1.5)
    with pytest.raises(ConfigError, match="qa_every"):
        ConsistencyConfig(qa_every=0)


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_chunked_scoring_matches_scoring_all_at_once(rule_judge, order):
    """Chunks are row ranges when each dialogue's rows sit together in dialogue order (a run), and
    id filters otherwise (here: rows shuffled); either way the scores match one chunk of all."""
    frame = _frame().sort("dialogue_id", "turn")
    if order == "shuffled":
        frame = frame.sample(fraction=1.0, shuffle=True, seed=1)
    whole = score_dialogues(frame, RuleJudge()).lines
    chunked = score_dialogues(frame.lazy(), rule_judge, config=ConsistencyConfig(chunk_dialogues=1))
    assert chunked.lines.equals(whole)
    assert len(rule_judge.calls) == 4  # one judge call per dialogue
    first_two = score_dialogues(frame, RuleJudge(), config=ConsistencyConfig(max_dialogues=2, chunk_dialogues=1))
    assert first_two.lines["dialogue_id"].unique().sort().to_list() == ["retired", "steak"]


def test_the_line_to_line_window_compares_each_line_with_its_latest_lines_only():
    """A vegetarian's first line and a steak three lines later: every earlier line sees the conflict,
    a window of two does not reach back to it, and the pairs sent to the judge shrink to match."""
    lines = [("user", "i'm vegetarian"), ("assistant", "ok"), ("user", "i like films"), ("assistant", "ok"),
             ("user", "comedies mostly"), ("assistant", "ok"), ("user", "steak tonight")]
    frame = dialogue_frame({"d": (PRIYA, lines)})
    judges, scored = {}, {}
    for window in (0, 2):
        judges[window] = RuleJudge()
        scored[window] = score_lines(dialogues_from_turns(frame), judges[window], ConsistencyConfig(l2l_window=window))
    assert scored[0]["l2l_compared"].to_list() == [0, 1, 2, 3]
    assert scored[2]["l2l_compared"].to_list() == [0, 1, 2, 2]
    assert scored[0]["l2l_conflicts"].to_list() == [0, 0, 0, 1]
    assert scored[2]["l2l_conflicts"].to_list() == [0, 0, 0, 0]
    l2l = [[p.premise for p in judges[w].calls[0] if p.kind == "line_to_line"] for w in (0, 2)]
    assert len(l2l[0]) == 6 and l2l[1] == ["i'm vegetarian", "i'm vegetarian", "i like films", "i like films", "comedies mostly"]
    # prompt-to-line does not depend on the window
    assert scored[2]["p2l_contradiction"].to_list() == scored[0]["p2l_contradiction"].to_list()


def test_max_user_lines_scores_each_dialogue_up_to_its_nth_user_line(rule_judge):
    """Two user lines a dialogue: the steak line (its dialogue's third) leaves the score, 'since I
    retired' (its second) stays; the turns after the cut are not read, a shorter dialogue is read whole."""
    frame = _frame().with_columns(pl.col("turn").cast(pl.Int32))
    cut = first_user_lines(frame, 2)
    assert cut.filter(pl.col("dialogue_id") == "steak")["turn"].to_list() == [0, 1, 2]  # up to its 2nd user line
    assert cut.filter(pl.col("dialogue_id") == "retired")["turn"].to_list() == [0, 1, 2]  # its answer after the 2nd goes
    retired = frame.filter(pl.col("dialogue_id") == "retired")
    assert first_user_lines(retired, 3).equals(retired)  # two user lines: nothing to cut at three
    assert first_user_lines(frame, 0).equals(frame)
    scored = score_dialogues(frame, rule_judge, config=ConsistencyConfig(max_user_lines=2))
    assert scored.lines.group_by("dialogue_id").agg(pl.len())["len"].to_list() == [2, 2, 2, 2]
    assert scored.lines["user_turn"].max() == 1
    by = {d["dialogue_id"]: d for d in scored.report["dialogues"]}
    assert by["steak"]["prompt_to_line"] == pytest.approx(by["veggie"]["prompt_to_line"])  # the steak line is past the cut
    assert by["retired"]["prompt_to_line"] < by["student"]["prompt_to_line"]  # 'retired' is the 2nd user line: kept
    assert scored.report["config"]["max_user_lines"] == 2


@pytest.mark.parametrize("field", ["max_user_lines", "l2l_window", "max_dialogues"])
def test_negative_limits_are_clear_errors(field):
    with pytest.raises(ConfigError, match=f"{field} must be a non-negative integer"):
        ConsistencyConfig(**{field: -1})
