"""Intent models: transition statistics, profile-dependent modifiers, validation errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from simgen.data import ProfileLatent
from simgen.errors import ConfigError
from simgen.intents import load_intent_model, transition_counts

MODEL = {
    "intents": {"ASK": {"description": "ask"}, "TELL": {"description": "tell"}, "BYE": {"description": "bye", "terminal": True}},
    "start": {"ASK": 0.7, "TELL": 0.3},
    "transitions": {"ASK": {"ASK": 0.2, "TELL": 0.6, "BYE": 0.2}, "TELL": {"ASK": 0.5, "TELL": 0.3, "BYE": 0.2}},
    "modifiers": [{"when": "patience < 0.3", "scale": {"BYE": 4.0}}],
}
CALM, IMPATIENT = ProfileLatent({"patience": 0.9}), ProfileLatent({"patience": 0.1})


def paths(model, profile, n=10_000, max_turns=50):
    rng = np.random.default_rng(0)
    return [model.sample_path(profile, rng, max_turns) for _ in range(n)]


def test_start_and_transition_frequencies_match_declared():
    model = load_intent_model(MODEL, "m.yaml", ("patience",))
    sampled = paths(model, CALM)
    starts = [sum(p[0] == i for p in sampled) for i in ("ASK", "TELL")]
    assert stats.chisquare(starts, [7_000, 3_000]).pvalue > 0.001
    counts = transition_counts(sampled, model.names)
    for source, row in MODEL["transitions"].items():
        observed = [counts[source][t] for t in row]
        expected = np.array(list(row.values())) * sum(observed)
        assert stats.chisquare(observed, expected).pvalue > 0.001, source
    assert all(p[-1] == "BYE" for p in sampled)  # max_turns 50 is never reached in practice


def test_impatient_users_leave_sooner():
    model = load_intent_model(MODEL, "m.yaml", ("patience",))
    calm = np.mean([len(p) for p in paths(model, CALM, 4_000)])
    impatient = np.mean([len(p) for p in paths(model, IMPATIENT, 4_000)])
    # expected lengths: 1 + 1/0.2 = 6 turns for calm, 1 + 1/(0.8/1.6) = 3 for impatient
    assert calm == pytest.approx(6, rel=0.05) and impatient == pytest.approx(3, rel=0.05)
    matrix = model.matrix_for(IMPATIENT)
    assert matrix[0, 2] == pytest.approx(0.8 / 1.6) and np.allclose(matrix[:2].sum(axis=1), 1)


def test_paths_respect_max_turns_and_are_seeded():
    model = load_intent_model(MODEL, "m.yaml", ("patience",))
    assert max(len(p) for p in paths(model, CALM, 500, max_turns=3)) == 3
    assert paths(model, CALM, 20) == paths(model, CALM, 20)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"transitions": {"ASK": {"ASKK": 1}, "TELL": {"BYE": 1}}}, "transition to undefined intent 'ASKK'. Did you mean 'ASK'?"),
        ({"transitions": {"ASK": {"TELL": 1}, "TELL": {"ASK": 1}}}, "no terminal intent can be reached from 'ASK', 'TELL'"),
        ({"transitions": {"ASK": {"BYE": 1}}}, "no row for non-terminal intent 'TELL'"),
        ({"transitions": {"ASK": {"BYE": 1}, "TELL": {"BYE": 1}, "BYE": {"ASK": 1}}}, "BYE is terminal"),
        ({"transitions": {"ASK": {"BYE": 1}, "TELL": {"BYE": 1}, "HELLO": {"BYE": 1}}}, "transition from undefined intent 'HELLO'"),
        ({"start": {"ASK": 0.5, "TELL": 0.45}}, "probabilities sum to 0.95, not 1"),
        ({"start": {"ASK": -1, "TELL": 2}}, "probability must be a finite number >= 0"),
        ({"modifiers": [{"when": "patiense < 1", "scale": {"BYE": 2}}]}, "reads 'patiense', which the profile space does not declare"),
        ({"modifiers": [{"when": "patience < 1", "scale": {"BYE": 0}}]}, "factor must be a finite number > 0"),
    ],
)
def test_bad_intent_models_are_clear_errors(patch, message):
    with pytest.raises(ConfigError) as e:
        load_intent_model({**MODEL, **patch}, "m.yaml", ("patience",))
    assert message in str(e.value) and "m.yaml" in str(e.value)


def test_no_terminal_intent_is_an_error():
    raw = {**MODEL, "intents": {k: {"description": "x"} for k in ("ASK", "TELL", "BYE")},
           "transitions": {"ASK": {"TELL": 1}, "TELL": {"BYE": 1}, "BYE": {"ASK": 1}}}
    with pytest.raises(ConfigError, match="no intent is terminal"):
        load_intent_model(raw, "m.yaml")


def test_a_path_of_given_length_is_the_chain_conditioned_on_ending_there():
    """Exact conditioning (backward messages) against rejection sampling from the free chain: the same law."""
    model = load_intent_model(MODEL, "m.yaml", ("patience",))
    rng = np.random.default_rng(1)
    conditioned = [model.sample_path(IMPATIENT, rng, 50, length=4) for _ in range(6000)]
    assert all(len(p) == 4 and p[-1] == "BYE" and "BYE" not in p[:-1] for p in conditioned)
    free = [p for p in paths(model, IMPATIENT, n=40_000) if len(p) == 4]
    assert len(free) > 1000
    for position in range(3):  # the intent at each position: same frequencies either way
        observed = [sum(p[position] == i for p in conditioned) for i in ("ASK", "TELL")]
        reference = np.array([sum(p[position] == i for p in free) for i in ("ASK", "TELL")], dtype=float)
        assert stats.chisquare(observed, reference / reference.sum() * len(conditioned)).pvalue > 1e-3, position


def test_a_length_the_cap_or_the_chain_cannot_give_is_capped_or_runs_free():
    model = load_intent_model(MODEL, "m.yaml", ("patience",))
    rng = np.random.default_rng(2)
    capped = [model.sample_path(CALM, rng, 3, length=9) for _ in range(200)]
    assert all(len(p) == 3 and p[-1] == "BYE" for p in capped)  # min(length, max_turns), still closing
    # the start row has no terminal intent, so no path ends on turn 1: the chain runs free instead
    assert any(len(model.sample_path(CALM, rng, 50, length=1)) > 1 for _ in range(50))


# ---------------------------------------------------------------- label rules (a corpus without act labels)

RULES = {**MODEL, "aliases": {"Q": "ASK"}, "label_rules": [
    {"intent": "BYE", "when": "last and lines > 1"},
    {"intent": "ASK", "when": "question"},
    {"intent": "TELL", "matches": r"^\s*(i|my)\b", "when": "words >= 2"},
]}


def frame(rows):
    import polars as pl

    return pl.DataFrame(rows, schema={"dialogue_id": pl.String, "turn": pl.Int64, "role": pl.String, "text": pl.String, "intent": pl.String},
                        orient="row")


def test_label_rules_name_each_user_line_by_the_first_rule_that_holds():
    model = load_intent_model(RULES, "m.yaml", ("patience",))
    turns = frame([
        ("b", 1, "assistant", "and you?", None),       # out of order on purpose: rules read turn order
        ("a", 0, "user", "hey, what's up?", None),
        ("a", 1, "assistant", "not much", None),
        ("a", 2, "user", "My dog ate my homework", None),
        ("a", 3, "user", "ok", None),                  # nothing holds: stays unlabelled
        ("a", 4, "user", "gotta go, bye?", None),      # last beats question: the first rule wins
        ("b", 2, "user", "I", "Q"),                    # its own label, through the aliases, wins over rules
        ("b", 0, "user", "i like tea", None),
        ("c", 0, "user", "Only line?", None),          # lines == 1: not BYE
    ])
    got = {(r["dialogue_id"], r["turn"]): r["intent"] for r in model.label_lines(turns).iter_rows(named=True)}
    assert got == {("a", 0): "ASK", ("a", 1): None, ("a", 2): "TELL", ("a", 3): None, ("a", 4): "BYE",
                   ("b", 0): "TELL", ("b", 1): None, ("b", 2): "ASK", ("c", 0): "ASK"}


def test_without_rules_only_known_labels_are_kept():
    model = load_intent_model({**MODEL, "aliases": {"Q": "ASK"}}, "m.yaml", ("patience",))
    turns = frame([("a", 0, "user", "x?", "Q"), ("a", 1, "user", "y", "OTHER"), ("a", 2, "user", "z", None)])
    assert model.label_lines(turns)["intent"].to_list() == ["ASK", None, None]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"intent": "ASKK"}], "label_rules[0].intent: 'ASKK' is not a declared intent. Did you mean 'ASK'?"),
        ([{"intent": "ASK", "when": "qestion"}], "label_rules[0].when: 'qestion' reads 'qestion'; a rule can read first, last"),
        ([{"intent": "ASK", "when": "words >"}], "label_rules[0].when: 'words >' is not a valid expression"),
        ([{"intent": "BYE"}, {"intent": "ASK", "matches": "(unclosed"}], "label_rules[1].matches: '(unclosed' is not a valid regular expression"),
        ([{"intent": "ASK", "if": "question"}], "label_rules[0]: unknown field 'if'"),
        ({"intent": "ASK"}, "label_rules: expected a list"),
    ],
)
def test_bad_label_rules_are_clear_errors(rules, message):
    with pytest.raises(ConfigError) as e:
        load_intent_model({**MODEL, "label_rules": rules}, "m.yaml", ("patience",))
    assert message in str(e.value) and "m.yaml" in str(e.value)
