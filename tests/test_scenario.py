"""Scenarios: the shipped ones load; names and paths resolve; errors list what exists."""

from __future__ import annotations

import pytest

from tests.conftest import write
from simgen.errors import ConfigError
from simgen.scenario import list_scenarios, load_scenario

USER_SCENARIO = """
scenario: tiny
templates: {user: my_user.j2, assistant: chitchat/assistant.j2}
profile:
  variables:
    name: {type: categorical, values: [Ann]}
intent_model:
  intents: {HI: {description: say hi}, BYE: {description: leave, terminal: true}}
  start: {HI: 1}
  transitions: {HI: {HI: 0.5, BYE: 0.5}}
"""


@pytest.mark.parametrize("name", ["movie-recommendation", "chitchat"])
def test_shipped_scenarios_load(name):
    sc = load_scenario(name)
    assert sc.name == name and sc.reference and len(sc.fingerprint) == 64
    assert any(i.terminal for i in sc.intents.intents)
    assert sc.describe()["templates"]["user"]["sha256"] == sc.user_template.sha256


def test_movie_recommendation_follows_iard_intents():
    sc = load_scenario("movie-recommendation")
    assert {"IQU", "PRO", "ACC", "REJ", "SEE", "INQ", "BYE"} <= set(sc.intents.names)
    assert sc.intents.get("BYE").terminal


def test_list_scenarios():
    assert {"movie-recommendation", "chitchat"} <= set(list_scenarios())


def test_unknown_name_suggests_and_lists():
    with pytest.raises(ConfigError) as e:
        load_scenario("movie-recomendation")
    assert "Did you mean 'movie-recommendation'?" in str(e.value) and "'chitchat'" in str(e.value)


def test_user_scenario_path_with_own_and_shipped_templates(tmp_path):
    write(tmp_path / "my_user.j2", "{% block system %}I am {{ name }}{% endblock %}{% block turn %}{{ intent_description }}{% endblock %}")
    sc = load_scenario(write(tmp_path / "tiny.yaml", USER_SCENARIO))
    assert sc.name == "tiny" and sc.user_template.path == tmp_path / "my_user.j2"
    assert sc.assistant_template.id == "chitchat/assistant.j2"


def test_template_naming_a_missing_profile_variable_fails_at_load(tmp_path):
    write(tmp_path / "my_user.j2", "{% block system %}I am {{ name }},\n{{ age }}{% endblock %}{% block turn %}{% endblock %}")
    with pytest.raises(Exception) as e:
        load_scenario(write(tmp_path / "tiny.yaml", USER_SCENARIO))
    assert "my_user.j2:2: undefined variable 'age'" in str(e.value)


def test_the_assistant_template_reads_a_profile_variable_only_when_the_profile_shares_it(tmp_path):
    """The assistant never sees the user's profile, except variables marked `shared: true` (a topic both
    people were given): reading any other is an error at load that says how to share it; `shared` must
    be a boolean."""
    write(tmp_path / "my_user.j2", "{% block system %}I am {{ name }}{% endblock %}{% block turn %}{{ intent_description }}{% endblock %}")
    write(tmp_path / "bot.j2", "{% block system %}You chat with\na user about {{ name }}.{% endblock %}")
    own = USER_SCENARIO.replace("assistant: chitchat/assistant.j2", "assistant: bot.j2")
    with pytest.raises(Exception) as e:
        load_scenario(write(tmp_path / "tiny.yaml", own))
    assert "bot.j2:2: 'name' is the user's, which the assistant side does not know" in str(e.value)
    assert "`shared: true`" in str(e.value)
    write(tmp_path / "bot.j2", "{% block system %}You chat about {{ backstory }}.{% endblock %}")
    with pytest.raises(Exception, match="'backstory' is the user's"):
        load_scenario(write(tmp_path / "tiny.yaml", own.replace("variables:", "backstory: '{{ name }}'\n  variables:")))
    write(tmp_path / "bot.j2", "{% block system %}You chat about {{ name }}.{% endblock %}")
    shared = load_scenario(write(tmp_path / "tiny.yaml", own.replace("values: [Ann]}", "values: [Ann], shared: true}")))
    assert shared.profile.shared == ("name",)
    with pytest.raises(ConfigError, match=r"profile.variables.name.shared: expected true or false .* got 'yes'"):
        load_scenario(write(tmp_path / "tiny.yaml", own.replace("values: [Ann]}", "values: [Ann], shared: 'yes'}")))


@pytest.mark.parametrize("name", ["movie-recommendation", "chitchat"])
def test_a_shipped_scenarios_turn_cap_rarely_binds(name):
    """Dialogue lengths come from the real corpus (the length model's `dialogues` row, fitted on the
    train split); the cap on user turns may cut at most 1% of them, or the long real dialogues have
    no simulated peers (their late lines alone give a discriminator the turn's position)."""
    scenario = load_scenario(name)
    counts, probs = scenario.lengths.dialogues
    cut = sum(p for n, p in zip(counts, probs) if n > scenario.max_turns)
    assert cut <= 0.01 and max(counts) > scenario.max_turns >= 10


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "scenario: x\nprofile: {variables: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+, column \d+: malformed YAML"):
        load_scenario(path)


def test_unknown_top_level_key_is_named(tmp_path):
    path = write(tmp_path / "bad.yaml", USER_SCENARIO + "\ntemplate_dir: x\n")
    with pytest.raises(ConfigError, match="unknown field 'template_dir'"):
        load_scenario(path)


def test_max_turns_comes_from_the_scenario_unless_given(tmp_path):
    from simgen.config import GenerateConfig

    write(tmp_path / "my_user.j2", "{% block system %}I am {{ name }}{% endblock %}{% block turn %}{{ intent_description }}{% endblock %}")
    assert load_scenario(write(tmp_path / "a.yaml", USER_SCENARIO)).max_turns == 6
    assert load_scenario(write(tmp_path / "b.yaml", USER_SCENARIO + "max_turns: 3\n")).max_turns == 3
    assert load_scenario("movie-recommendation").max_turns == 14 and GenerateConfig().max_turns is None
    with pytest.raises(ConfigError, match=r"c\.yaml: max_turns: expected a positive integer.*'many'"):
        load_scenario(write(tmp_path / "c.yaml", USER_SCENARIO + "max_turns: many\n"))


@pytest.mark.parametrize("card", ["{not json", '{"roles": "both"}', "[1, 2]"])
def test_an_unreadable_tuning_card_is_an_error_naming_the_key_and_the_card(tmp_path, card):
    """Every reader of a `simgen tune` card (a scenario's `simulator`, `--model`, `--init`) reads it
    through `simgen.models.read_card`: a broken card, or one without its base model, is an error that
    names what pointed at the folder and the card file, never a traceback."""
    from simgen.errors import ModelError
    from simgen.models import resolve_model
    from simgen.tune import init_adapter

    write(tmp_path / "my_user.j2", "{% block system %}I am {{ name }}{% endblock %}{% block turn %}{{ intent_description }}{% endblock %}")
    write(tmp_path / "sim" / "simgen_tune.json", card)
    with pytest.raises(ConfigError) as e:
        load_scenario(write(tmp_path / "tiny.yaml", USER_SCENARIO + "simulator: sim\n"))
    assert "tiny.yaml: simulator:" in str(e.value) and "sim/simgen_tune.json is not a readable tuning card" in str(e.value)
    with pytest.raises(ModelError, match=r"model '.*sim'.*simgen_tune.json is not a readable tuning card"):
        resolve_model(str(tmp_path / "sim"))
    with pytest.raises(ConfigError, match=r"--init .*sim: .*simgen_tune.json is not a readable tuning card"):
        init_adapter(str(tmp_path / "sim"), base=None)
