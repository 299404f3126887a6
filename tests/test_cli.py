"""The CLI through click's CliRunner: the happy path and every user error's message and exit code."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.conftest import write
from simgen.cli import cli


@pytest.fixture()
def runner():
    return CliRunner()


def test_help_lists_commands_without_importing_torch(runner):
    import subprocess
    import sys

    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "generate" in result.output and "profiles" in result.output
    code = "import sys, simgen, simgen.cli; simgen.cli.cli(['--help'], standalone_mode=False); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_profiles_sample_prints_a_table(runner):
    result = runner.invoke(cli, ["profiles", "sample", "movie-recommendation", "-n", "5", "--intents", "--backstory"])
    assert result.exit_code == 0, result.output
    assert "liked_genres" in result.output and "patience" in result.output and "#4:" in result.output
    from simgen.generation.plan import plan
    from simgen.scenario import load_scenario

    sc = load_scenario("movie-recommendation")
    table = result.output.split("#0:")[0]  # the table, before the backstories
    assert "first" in table and table.count("assistant") == sum(plan(sc, 0, i, 14).opens for i in range(5)) > 0
    again = runner.invoke(cli, ["profiles", "sample", "movie-recommendation", "-n", "5", "--intents", "--backstory"])
    assert again.output == result.output


def test_scenarios_lists_shipped(runner):
    result = runner.invoke(cli, ["scenarios"])
    assert result.exit_code == 0 and "movie-recommendation" in result.output and "chitchat" in result.output


def test_generate_then_show(runner, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["generate", "-n", "3", "--model", str(tiny_model_dir), "--max-turns", "2", "-b", "2",
                                 "--dtype", "float32", "--out", str(out), "--seed", "1", "-q",
                                 "--user-max-new-tokens", "8", "--assistant-max-new-tokens", "8", "--length-floor", "0.5", "--min-p", "0.05"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 dialogues" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_turns"] == 2 and manifest["config"]["batch_size"] == 2
    assert manifest["config"]["user"]["length_floor"] == manifest["config"]["assistant"]["length_floor"] == 0.5
    assert manifest["config"]["user"]["min_p"] == manifest["config"]["assistant"]["min_p"] == 0.05
    shown = runner.invoke(cli, ["show", str(out), "-n", "2"])
    assert shown.exit_code == 0 and "=== d0000000" in shown.output and "USER [" in shown.output and "backstory:" in shown.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--scenario", "movie-recomendation"], "unknown scenario 'movie-recomendation'. Did you mean 'movie-recommendation'?"),
        (["generate", "-n", "0"], "n must be a positive integer, got 0"),
        (["generate", "--model", "/no/such/model", "-n", "1"], "no such folder"),
        (["generate", "--temperature", "-1"], "temperature must be >= 0"),
        (["generate", "--length-floor", "2"], "length_floor must be a share of the target in [0, 1]"),
        (["generate", "--min-p", "1"], "min_p must be in [0, 1)"),
        (["generate", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--context", "100"],
         "--context 100 (user side): the openai backend cannot count a prompt's tokens"),
        (["generate", "--assistant", "nocolon"], "expected MODULE:FUNCTION"),
        (["profiles", "sample", "nope"], "unknown scenario 'nope'"),
        (["show", "/no/such/run"], "no such run folder"),
        (["generate", "--resume", "/no/such/run"], "nothing to resume"),
    ],
)
def test_user_errors_are_one_clear_line(runner, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.startswith("error: ")
    assert not (tmp_path / "outputs").exists()  # nothing half-written


def test_bad_scenario_file_fails_before_generation(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "s.yaml", "templates: {user: chitchat/user.j2, assistant: chitchat/assistant.j2}\n"
                 "intent_model: {intents: {BYE: {description: bye, terminal: true}}, start: {BYE: 1}}\n"
                 "profile:\n  variables:\n    age: {type: integer}\n")
    result = runner.invoke(cli, ["generate", "--scenario", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown variable type 'integer'" in result.output
    assert not (tmp_path / "o").exists()


def test_unknown_command_suggests(runner):
    result = runner.invoke(cli, ["generat"])
    assert result.exit_code == 2 and "Did you mean 'generate'?" in result.output


def test_generate_flags_are_made_from_the_config_fields():
    """Every scalar GenerateConfig field is a flag with the field's default, help and choices; nothing is said twice."""
    from dataclasses import MISSING, fields

    from simgen.backends import REGISTRY
    from simgen.cli.generate import SAMPLING, generate
    from simgen.config import GenerateConfig

    from simgen.config import PersonaCapConfig, ServerConfig

    params = {p.name: p for p in generate.params}
    scalar = [(f.name, f) for f in fields(GenerateConfig) if f.name not in (*SAMPLING, "server", "persona")]
    nested = [(f"{outer}__{f.name}", f) for outer, cls in (("server", ServerConfig), ("persona", PersonaCapConfig)) for f in fields(cls)]
    for name, f in scalar + nested:
        p = params[name]
        assert p.help == f.metadata["help"] and p.default == (f.default if f.default is not MISSING else None), name
    assert params["persona__cap"].opts == ["--persona-cap"] and params["server__base_url"].opts == ["--base-url"]
    assert list(params["backend"].type.choices) == sorted(REGISTRY)
    assert list(params["dtype"].type.choices) == ["auto", "bfloat16", "float32"]
    assert params["user_max_new_tokens"].default == GenerateConfig().user.max_new_tokens
    assert params["assistant_max_new_tokens"].default == GenerateConfig().assistant.max_new_tokens
    assert "-n" in params["n"].opts and "-s" in params["scenario"].opts and params["trust_remote_code"].is_flag


def test_generate_settings_override_a_config_and_unknown_ones_are_named(tmp_path):
    import simgen
    from simgen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown setting 'max_turn'\. Did you mean 'max_turns'\?"):
        simgen.generate(n=2, max_turn=3, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="n must be a positive integer"):  # settings go through the config's checks
        simgen.generate(config=simgen.GenerateConfig(n=5), n=0, out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
