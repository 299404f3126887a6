"""Fuzzing the scenario loaders: any input loads or raises ConfigError, never another exception."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simgen.errors import ConfigError
from simgen.intents import load_intent_model
from simgen.profiles import parse_profile_space
from simgen.scenario import load_scenario

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["categorical", "int", "float", "list", "uniform", "normal", "truncnormal", "a", "b", "x", "BYE", "ASK"]),
                    st.text(max_size=8))
keys = st.sampled_from(["type", "values", "given", "cases", "dist", "low", "high", "mean", "std", "k", "exclude", "round",
                        "a", "b", "x", "variables", "constraints", "backstory", "intents", "start", "transitions",
                        "modifiers", "when", "scale", "from", "description", "terminal", "ASK", "BYE"])
trees = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=5)), max_leaves=25)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(trees)
def test_profile_space_loader_raises_only_config_errors(raw):
    try:
        space = parse_profile_space(raw, "fuzz.yaml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml")
        return
    import numpy as np

    try:
        space.sample(np.random.default_rng(0))
    except ConfigError:
        pass


@FUZZ
@given(trees)
def test_intent_model_loader_raises_only_config_errors(raw):
    try:
        load_intent_model(raw, "fuzz.yaml", ("a", "b"))
    except ConfigError as e:
        assert "fuzz.yaml" in str(e)


@FUZZ
@given(st.text(max_size=200))
def test_scenario_file_of_any_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "s.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_scenario(path)
    except ConfigError:
        pass
    except Exception as e:  # TemplateError is a SimgenError too, but no template is named here
        pytest.fail(f"{type(e).__name__}: {e}")


def test_non_utf8_and_deep_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"scenario: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_scenario(path)
    path.write_text("a: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError):
        load_scenario(path)
    path.write_text(yaml.safe_dump({"profile": {"variables": {}}, "templates": {}, "intent_model": {}}))
    with pytest.raises(ConfigError, match="non-empty mapping"):
        load_scenario(path)


def test_yaml_python_tags_are_refused_not_run(tmp_path):
    """YAML is loaded with safe_load: a tag that would build a Python object or call a function
    is a ConfigError, and nothing runs."""
    marker = tmp_path / "ran"
    path = tmp_path / "s.yaml"
    path.write_text(f"scenario: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_scenario(path)
    assert not marker.exists()
