"""The scenario fingerprint: every file that shapes a prompt or the lines kept, checked by whatever rebuilds a run's chats.

A copy of the shipped movie-recommendation scenario (YAML, intent model, lengths, intent guard, both
templates) lives in a temporary folder; a run is generated from it on the tiny model, then one file
is edited and resume, the consistency check (Q&A, axis) and `export rl` must refuse, naming the file
that changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import simgen
from simgen.config import SamplingConfig
from simgen.errors import ScenarioChanged
from simgen.scenario import builtin_dir, load_scenario

FILES = {  # Scenario.files key -> path inside the copied scenario folder
    "scenario": "movie-recommendation.yaml",
    "intent_model": "movie-recommendation.intents.yaml",
    "lengths": "movie-recommendation.lengths.yaml",
    "intent_guard": "movie-recommendation.intent-guard.npz",
    "realism_guard_user": "movie-recommendation.realism-guard.user.npz",
    "realism_guard_assistant": "movie-recommendation.realism-guard.assistant.npz",
    "dialogue_guard": "movie-recommendation.dialogue-guard.npz",
    "user_template": "movie-recommendation/user.j2",
    "assistant_template": "movie-recommendation/assistant.j2",
}


def copy_scenario(folder: Path) -> Path:
    (folder / "movie-recommendation").mkdir(parents=True)
    for name in ("movie-recommendation.yaml", "movie-recommendation.intents.yaml", "movie-recommendation.lengths.yaml",
                 "movie-recommendation.intent-guard.npz", "movie-recommendation.realism-guard.user.npz",
                 "movie-recommendation.realism-guard.assistant.npz", "movie-recommendation.dialogue-guard.npz"):
        shutil.copyfile(builtin_dir("profiles") / name, folder / name)
    for name in ("user.j2", "assistant.j2"):
        shutil.copyfile(builtin_dir("templates") / "movie-recommendation" / name, folder / "movie-recommendation" / name)
    simulator = builtin_dir("profiles") / "movie-recommendation.simulator"  # the tuned simulator the scenario names, if shipped
    if simulator.is_dir():
        shutil.copytree(simulator, folder / simulator.name)
    return folder / "movie-recommendation.yaml"


def edit(path: Path) -> None:
    """A change that keeps the file valid: a comment (YAML), trailing text in the system block (jinja)
    or a byte after the end of the archive (npz, which still loads)."""
    if path.suffix == ".npz":
        path.write_bytes(path.read_bytes() + b"\0")
        return
    text = path.read_text()
    if path.suffix == ".j2":
        path.write_text(text.replace("{% endblock %}", " Edited.{% endblock %}", 1))
    else:
        path.write_text(text + "\n# edited\n")


@pytest.mark.parametrize("key", sorted(FILES))
def test_the_fingerprint_covers_every_file_and_names_the_one_that_changed(tmp_path, key):
    yaml_path = copy_scenario(tmp_path)
    before = load_scenario(yaml_path)
    assert set(before.files) == set(FILES) and before.changes_since(before.describe()) == []
    edit(tmp_path / FILES[key])
    after = load_scenario(yaml_path)
    assert after.fingerprint != before.fingerprint
    changed = after.changes_since(before.describe())
    assert len(changed) == 1 and str(tmp_path / FILES[key]) in changed[0]


def test_values_a_profile_variable_reads_off_a_corpus_are_in_the_fingerprint(tmp_path):
    """A variable with `values_from` samples what the corpus says: the corpus changing changes the scenario's
    prompts as an edited file would, so the fingerprint holds the values' digest and names the variable."""
    yaml_path = copy_scenario(tmp_path)
    chats = tmp_path / "chats.jsonl"

    def write_corpus(topics: list[str]) -> None:
        rows = [{"dialogue_id": f"d{i}", "turn": j, "role": role, "text": "hi", "topic": t}
                for i, t in enumerate(topics) for j, role in enumerate(("user", "assistant"))]
        chats.write_text("".join(json.dumps(r) + "\n" for r in rows))

    write_corpus(["unicorns"] * 40 + ["flying cars"] * 20)
    text = yaml_path.read_text()
    yaml_path.write_text(text.replace("  variables:\n", "  variables:\n    topic: {type: categorical, values_from: {corpus: chats.jsonl, column: topic}}\n", 1))
    before = load_scenario(yaml_path)
    assert before.files["values_topic"]["path"].startswith("chats.jsonl: column topic")
    write_corpus(["unicorns"] * 20 + ["flying cars"] * 40)
    after = load_scenario(yaml_path)
    assert after.fingerprint != before.fingerprint
    assert after.changes_since(before.describe()) == [f"profile variable topic's values, read from {after.files['values_topic']['path']}"]


def test_a_manifest_from_before_the_fingerprint_still_compares(tmp_path):
    """Runs written before `files`/`fingerprint` recorded the YAML+intents digest as `sha256` and each template's hash."""
    from simgen.scenario import _legacy_digest

    yaml_path = copy_scenario(tmp_path)
    sc = load_scenario(yaml_path)
    legacy = {k: v for k, v in sc.describe().items() if k not in ("files", "fingerprint")} | {"sha256": _legacy_digest(sc)}
    assert sc.changes_since(legacy) == []
    edit(tmp_path / FILES["user_template"])
    assert load_scenario(yaml_path).changes_since(legacy) == [f"the user template {tmp_path / FILES['user_template']}"]


def generate(tiny_model_dir: Path, scenario: Path, out: Path) -> simgen.Run:
    return simgen.generate(scenario=str(scenario), n=4, seed=3, model=str(tiny_model_dir), out=out, max_turns=2, batch_size=2,
                           dtype="float32", progress=False, user=SamplingConfig(max_new_tokens=8),
                           assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=8))


def test_resume_refuses_a_run_whose_template_changed(tiny_model_dir, tmp_path, monkeypatch):
    from simgen.generation import pipeline
    from tests.conftest import interrupt_second_shard

    yaml_path = copy_scenario(tmp_path / "scenario")
    interrupt_second_shard(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_model_dir, yaml_path, tmp_path / "r")
    monkeypatch.undo()
    manifest = (tmp_path / "r" / "manifest.json").read_bytes()
    edit(tmp_path / "scenario" / FILES["user_template"])
    with pytest.raises(ScenarioChanged, match=r"the user template .*user\.j2 changed since the run was generated") as e:
        pipeline.resume(tmp_path / "r", progress=False)
    assert "other prompts than its finished dialogues" in str(e.value)
    assert (tmp_path / "r" / "manifest.json").read_bytes() == manifest  # nothing was touched
    (tmp_path / "scenario" / FILES["user_template"]).write_bytes((builtin_dir("templates") / FILES["user_template"]).read_bytes())
    assert pipeline.resume(tmp_path / "r", progress=False).manifest["status"] == "complete"  # restored: it resumes


@pytest.fixture
def edited_run(tiny_model_dir, tmp_path):
    """A complete run whose assistant template was edited afterwards."""
    yaml_path = copy_scenario(tmp_path / "scenario")
    run = generate(tiny_model_dir, yaml_path, tmp_path / "r")
    edit(tmp_path / "scenario" / FILES["assistant_template"])
    return run


def test_consistency_refuses_to_rebuild_chats_from_a_changed_template(edited_run, tiny_model_dir):
    from simgen.consistency import ConsistencyConfig, check_run

    with pytest.raises(ScenarioChanged, match=r"the assistant template .*assistant\.j2 changed.*--no-qa --no-axis"):
        check_run(edited_run.path, f"llm:{tiny_model_dir}", config=ConsistencyConfig(qa=True, axis=False))
    assert not (edited_run.path / "consistency.parquet").exists()
    # prompt-to-line and line-to-line read only the recorded lines and the profile: they still run
    report = check_run(edited_run.path, f"llm:{tiny_model_dir}", config=ConsistencyConfig(qa=False, axis=False))
    assert report["overall"] and (edited_run.path / "consistency.parquet").is_file()


def test_export_rl_refuses_to_rebuild_chats_from_a_changed_template(edited_run, tmp_path):
    from click.testing import CliRunner

    from simgen.cli import cli

    res = CliRunner().invoke(cli, ["export", "rl", str(edited_run.path), "--format", "sft", "--to", str(tmp_path / "sft")])
    assert res.exit_code == 1 and "the assistant template" in res.output and "changed since the run was generated" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "sft").exists()
    assert json.loads((edited_run.path / "manifest.json").read_text())["status"] == "complete"
