"""Templates: sandboxing, strict variables with file and line, required blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write
from simgen.errors import TemplateError
from simgen.templates import load_template

KNOWN = ("name", "intent", "intent_description", "turn")


def load(tmp_path: Path, text: str, side: str = "user"):
    write(tmp_path / "t.j2", text)
    return load_template("t.j2", [tmp_path], side, KNOWN)


def test_renders_blocks_and_tidies_whitespace(tmp_path):
    t = load(tmp_path, "{% block system %}\nHi {{ name }}.\n\n\n\nBye.\n{% endblock %}{% block turn %}{{ intent }}{% endblock %}")
    assert t.render("system", {"name": "Ann"}) == "Hi Ann.\n\nBye."
    assert t.render("turn", {"intent": "ASK"}) == "ASK"
    assert len(t.sha256) == 64


def test_undefined_variable_names_file_line_and_variable(tmp_path):
    with pytest.raises(TemplateError) as e:
        load(tmp_path, "{% block system %}\nHi {{ name }}\nyou like {{ genre }}\n{% endblock %}{% block turn %}{% endblock %}")
    assert f"{tmp_path / 't.j2'}:3: undefined variable 'genre'" in str(e.value)


def test_locally_bound_names_are_not_undefined(tmp_path):
    t = load(tmp_path, "{% block system %}{% set x = 2 %}{% for g in [1, 2] %}{{ g }}{{ x }}{% endfor %}{% endblock %}{% block turn %}{% endblock %}")
    assert t.render("system", {}) == "1222"


def test_syntax_error_names_file_and_line(tmp_path):
    with pytest.raises(TemplateError, match=r"t\.j2:2: template syntax error"):
        load(tmp_path, "{% block system %}\n{{ name | }}\n{% endblock %}")


@pytest.mark.parametrize("escape", ["{{ ''.__class__.__mro__ }}", "{{ name.__class__.__init__.__globals__ }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}"])
def test_sandbox_blocks_python_internals(tmp_path, escape):
    t = load(tmp_path, "{% block system %}" + escape + "{% endblock %}{% block turn %}{% endblock %}")
    with pytest.raises(TemplateError) as e:
        t.render("system", {"name": "Ann"})
    assert "t.j2" in str(e.value) and ("unsafe" in str(e.value) or "sandbox" in str(e.value))


def test_missing_block_and_missing_file(tmp_path):
    with pytest.raises(TemplateError, match=r"must define `\{% block turn %\}"):
        load(tmp_path, "{% block system %}x{% endblock %}")
    with pytest.raises(TemplateError, match="template 'nope.j2' .* not found"):
        load_template("nope.j2", [tmp_path], "user", KNOWN)


ESCAPE = "''.__class__.__mro__[1].__subclasses__()"


def test_sandbox_also_guards_backstories_constraints_and_intent_modifiers():
    """Every user-written jinja2 text renders in the same sandbox: the escape is a ConfigError
    naming the file and field, never a result."""
    import numpy as np

    from simgen.data import ProfileLatent
    from simgen.errors import ConfigError
    from simgen.intents import load_intent_model
    from simgen.profiles import parse_profile_space

    variables = {"patience": {"type": "float", "dist": "uniform", "low": 0, "high": 1}}
    for raw, field in [({"variables": variables, "backstory": "{{ " + ESCAPE + " }}"}, "profile.backstory"),
                       ({"variables": variables, "constraints": [ESCAPE]}, "profile.constraints")]:
        with pytest.raises(ConfigError, match=rf"f\.yaml: {field}.*unsafe"):
            parse_profile_space(raw, "f.yaml").sample(np.random.default_rng(0))
    model = load_intent_model({
        "intents": {"ASK": {"description": "ask"}, "BYE": {"description": "bye", "terminal": True}},
        "start": {"ASK": 1.0}, "transitions": {"ASK": {"ASK": 0.5, "BYE": 0.5}},
        "modifiers": [{"when": ESCAPE, "scale": {"BYE": 2.0}}],
    }, "f.yaml", ("patience",))
    with pytest.raises(ConfigError, match=r"f\.yaml: modifiers: .*unsafe"):
        model.sample_path(ProfileLatent({"patience": 0.5}), np.random.default_rng(0), 3)
