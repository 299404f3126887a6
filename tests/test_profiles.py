"""Profile spaces: parsing, every variable kind, seeded sampling statistics, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy import stats

from simgen.errors import ConfigError
from simgen.profiles import parse_profile_space

SPACE = yaml.safe_load("""
variables:
  group: {type: categorical, values: {a: 1, b: 3, c: 6}}
  job:
    type: categorical
    given: group
    cases:
      a: {values: [student]}
      b: {values: {nurse: 1, cook: 1}}
      c: {values: {retired: 1}}
  age:
    type: int
    given: group
    cases:
      a: {dist: uniform, low: 18, high: 22}
      b: {dist: normal, mean: 40, std: 3}
      c: {dist: truncnormal, mean: 70, std: 10, low: 65, high: 80}
  patience: {type: float, dist: uniform, low: 0, high: 1, round: 3}
  liked: {type: list, values: [x, y, z, w], k: [1, 2]}
  disliked: {type: list, values: [x, y, z, w], k: 2, exclude: liked}
constraints:
  - "age != 20"
backstory: "{{ job }} aged {{ age }} likes {{ liked | join(' and ') }}"
""")


def sample(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [space.sample(rng).values for _ in range(n)]


def test_categorical_frequencies_match_declared_weights():
    space = parse_profile_space(SPACE, "t.yaml")
    draws = sample(space, 10_000)
    observed = [sum(d["group"] == g for d in draws) for g in "abc"]
    # a's rejected draws (age 20) are redrawn, so compare b:c only for the unconditioned ratio,
    # and a against its post-rejection expectation 0.1 * 4/5 / (1 - 0.1/5)
    p_a = 0.1 * 0.8 / (1 - 0.1 * 0.2)
    expected = np.array([p_a, (1 - p_a) * 0.3 / 0.9, (1 - p_a) * 0.6 / 0.9]) * 10_000
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_conditionals_numeric_lists_constraints_and_backstory():
    space = parse_profile_space(SPACE, "t.yaml")
    for d in sample(space, 2_000):
        if d["group"] == "a":
            assert d["job"] == "student" and 18 <= d["age"] <= 22
        if d["group"] == "c":
            assert d["job"] == "retired" and 65 <= d["age"] <= 80
        assert d["age"] != 20  # the constraint
        assert isinstance(d["age"], int) and isinstance(d["patience"], float)
        assert d["patience"] == round(d["patience"], 3)
        assert 1 <= len(d["liked"]) <= 2 and len(d["disliked"]) == 2
        assert not set(d["liked"]) & set(d["disliked"])  # exclude keeps them disjoint
        assert d["backstory"] == f"{d['job']} aged {d['age']} likes {' and '.join(d['liked'])}"
    ages_b = [d["age"] for d in sample(space, 5_000) if d["group"] == "b"]
    assert abs(np.mean(ages_b) - 40) < 0.3 and abs(np.std(ages_b) - 3) < 0.3


def test_list_k_of_n_inclusion_rates():
    space = parse_profile_space({"variables": {"l": {"type": "list", "values": ["p", "q", "r", "s"], "k": 2}}}, "t")
    draws = sample(space, 8_000)
    counts = [sum(v in d["l"] for d in draws) for v in "pqrs"]
    assert stats.chisquare(counts, [4_000] * 4).pvalue > 0.001  # each value in half of the draws


def test_same_seed_same_profiles_other_seed_differs():
    space = parse_profile_space(SPACE, "t.yaml")
    assert sample(space, 50, seed=1) == sample(space, 50, seed=1)
    assert sample(space, 50, seed=1) != sample(space, 50, seed=2)


def test_schema_matches_samples():
    import polars as pl

    space = parse_profile_space(SPACE, "t.yaml")
    series = pl.Series("profile", sample(space, 10), dtype=space.polars_schema())
    assert series.struct.field("liked").dtype == pl.List(pl.String)
    assert series.struct.fields == ["group", "job", "age", "patience", "liked", "disliked", "backstory"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"group": {"type": "categoricl", "values": ["a"]}}, "unknown variable type 'categoricl'. Did you mean 'categorical'?"),
        ({"group": {"type": "categorical", "values": {"a": -1, "b": 2}}}, "group.values.a: weight must be a finite number >= 0"),
        ({"group": {"type": "categorical", "values": {"a": 0, "b": 0}}}, "all weights are zero"),
        ({"group": {"type": "categorical", "values": ["a"], "colour": 1}}, "unknown field 'colour'"),
        ({"age": {"type": "int", "dist": "uniform", "low": 5, "high": 1}}, "low (5) must not exceed high (1)"),
        ({"age": {"type": "int", "dist": "gaussian", "mean": 1, "std": 1}}, "unknown distribution 'gaussian'"),
        ({"job": {"type": "categorical", "given": "grup", "cases": {"a": {"values": ["x"]}}}}, "undefined variable 'grup'. Did you mean 'group'?"),
        ({"job": {"type": "categorical", "given": "group", "cases": {"a": {"values": ["x"]}}}}, "no case for group = 'b'"),
        ({"liked": {"type": "list", "values": ["x"], "k": 3}}, "need 0 <= min <= max <= 1"),
        ({"intent": {"type": "categorical", "values": ["x"]}}, "reserved"),
        ({"group": {"type": "categorical", "values": ["a"], "stated": "i am (?P<value>[a-z+)"}}, "group.stated[0]: 'i am (?P<value>[a-z+)' is not a regular expression"),
        ({"group": {"type": "categorical", "values": ["a"], "stated": ["i am ([a-z]+)"]}}, "group.stated[0]: 'i am ([a-z]+)' has no group named `value`"),
        ({"group": {"type": "categorical", "values": ["a"], "stated": {"x": 1}}}, "group.stated: expected a regular expression or a list"),
        ({"patience": {"type": "float", "dist": "uniform", "low": 0, "high": 1, "stated": "(?P<value>x)"}}, "unknown field 'stated'"),
    ],
)
def test_bad_variables_are_clear_errors(patch, message):
    raw = yaml.safe_load(yaml.safe_dump(SPACE))
    raw["variables"].update(patch)
    with pytest.raises(ConfigError) as e:
        parse_profile_space(raw, "bad.yaml")
    assert message in str(e.value)
    assert str(e.value).startswith("bad.yaml: profile")


def test_cycles_constraints_and_backstory_errors():
    cyc = {"variables": {"a": {"type": "list", "values": ["x"], "k": 1, "exclude": "b"},
                         "b": {"type": "list", "values": ["x"], "k": 1, "exclude": "a"}}}
    with pytest.raises(ConfigError, match="circular dependency a -> b -> a"):
        parse_profile_space(cyc, "c.yaml")
    with pytest.raises(ConfigError, match="reads undefined variable 'agee'"):
        parse_profile_space({**SPACE, "constraints": ["agee > 3"]}, "c.yaml")
    with pytest.raises(ConfigError, match=r"backstory: line 2: undefined variable 'hobby'"):
        parse_profile_space({**SPACE, "backstory": "{{ age }}\n{{ hobby }}"}, "c.yaml")
    impossible = parse_profile_space({**SPACE, "constraints": ["age > 200"]}, "c.yaml")
    with pytest.raises(ConfigError, match="unsatisfiable"):
        impossible.sample(np.random.default_rng(0))


def _topic_corpus(folder, rows_per_topic: dict[str, int]):
    """A corpus file of two-turn dialogues, `rows_per_topic[t]` of them per topic (None: no topic), and
    the expected train-split shares counted here by `split_of`, not by the code under test."""
    import json

    from simgen.corpora import split_of

    rows, train = [], {}
    n = 0
    for topic, count in rows_per_topic.items():
        for _ in range(count):
            did = f"d{n}"
            n += 1
            rows += [{"dialogue_id": did, "turn": 0, "role": "user", "text": "hi", "topic": topic},
                     {"dialogue_id": did, "turn": 1, "role": "assistant", "text": "hello", "topic": topic}]
            if split_of(did) == "train" and topic:
                train[topic] = train.get(topic, 0) + 1
    path = folder / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, {t: c / sum(train.values()) for t, c in train.items()}


def test_values_from_a_corpus_column_sample_at_its_train_shares(tmp_path):
    """`values_from` reads a categorical variable's values off a corpus column, each at its share of the
    train split's dialogues (dialogues without one left out), resolved against the scenario's folder;
    draws follow those shares (chi-square), and the values carry a digest the scenario fingerprint reads."""
    from simgen.profiles import values_from

    _, expected = _topic_corpus(tmp_path, {"pets talking": 300, "flying cars": 150, "unicorns": 50, None: 40})
    raw = {"variables": {"topic": {"type": "categorical", "values_from": {"corpus": "chats.jsonl", "column": "topic"}}}}
    space = parse_profile_space(raw, str(tmp_path / "s.yaml"))
    var = space.variables[0]
    assert dict(zip(var.base.values, var.base.weights)) == pytest.approx(expected)
    assert var.values_from.values == ("pets talking", "flying cars", "unicorns")  # most common first
    draws = [d["topic"] for d in sample(space, 5000)]
    observed = [draws.count(t) for t in var.base.values]
    assert stats.chisquare(observed, [expected[t] * 5000 for t in var.base.values]).pvalue > 0.001
    _topic_corpus(tmp_path, {"pets talking": 150, "flying cars": 300, "unicorns": 50})
    again = values_from("w", {"corpus": str(tmp_path / "chats.jsonl"), "column": "topic"})
    assert again.sha256 != var.values_from.sha256 and again.values[0] == "flying cars"


@pytest.mark.parametrize(("spec", "message"), [
    ({"corpus": "chats.jsonl", "column": "mood"}, "has no column 'mood' (its other columns: 'topic')"),
    ({"corpus": "chats.jsonl", "column": "text"}, "column 'text' is one of the turn columns"),
    ({"corpus": "missing.jsonl", "column": "topic"}, "missing.jsonl"),
    ({"corpus": "chats.jsonl"}, "missing required field 'column'"),
    ("chats.jsonl", "expected a mapping {corpus: <a corpus name or path>, column: <its column>}"),
])
def test_values_from_errors_name_the_variable_and_what_is_wrong(tmp_path, spec, message):
    _topic_corpus(tmp_path, {"unicorns": 30})
    raw = {"variables": {"topic": {"type": "categorical", "values_from": spec}}}
    with pytest.raises(ConfigError) as e:
        parse_profile_space(raw, str(tmp_path / "s.yaml"))
    assert str(e.value).startswith(f"{tmp_path / 's.yaml'}: profile.variables.topic.values_from")
    assert message in str(e.value)
    raw["variables"]["topic"]["values"] = ["a"]
    with pytest.raises(ConfigError, match="drop `values`, `given` and `cases`"):
        parse_profile_space(raw, str(tmp_path / "s.yaml"))
