"""`simgen realism` through click's CliRunner: output, files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from simgen.cli import cli

FAST = ["-d", "tfidf,style", "--no-embeddings", "--n-boot", "100"]


@pytest.fixture()
def files(tmp_path: Path, make_corpus) -> tuple[Path, Path]:  # noqa: ANN001
    syn, ref = tmp_path / "syn.jsonl", tmp_path / "ref.parquet"
    syn.write_text("\n".join(json.dumps(r) for r in make_corpus("llm", 20, seed=1, intents=True).to_dicts()))
    make_corpus("human", 20, seed=2).write_parquet(ref)
    return syn, ref


def test_cli_writes_report_and_summarises(files: tuple[Path, Path], tmp_path: Path) -> None:
    syn, ref = files
    res = CliRunner().invoke(cli, ["realism", str(syn), "--reference", str(ref), "--out", str(tmp_path / "rep"), *FAST])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("realism: AUC ")
    assert "ensemble" in res.output and "intent" in res.output and "MAUVE-style" in res.output
    assert "habits per dialogue, spread against real" in res.output and "starts_upper " in res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["auc"] > 0.9 and len(report["auc_ci"]) == 2
    assert set(report["shape"]["habits_per_dialogue"]) >= {"starts_upper", "words"}
    html = (tmp_path / "rep" / "report.html").read_text()
    assert len(html) > 5000 and "Habits per dialogue" in html


def test_cli_json_flag(files: tuple[Path, Path]) -> None:
    syn, ref = files
    res = CliRunner().invoke(cli, ["realism", str(syn), "-r", str(ref), "--json", "--no-attributes", *FAST])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["attributes"] == {} and report["mauve"] is None
    assert report["config"]["discriminators"] == ["tfidf", "style"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--reference", "missing.jsonl"], "error: corpus file 'missing.jsonl' does not exist"),
        (["--reference", "chitchatt"], "Did you mean 'chitchat'"),
        (["-d", "tfidf,bert"], "unknown discriminator"),
    ],
)
def test_cli_errors_are_one_line(files: tuple[Path, Path], args: list[str], needle: str) -> None:
    syn, _ = files
    res = CliRunner().invoke(cli, ["realism", str(syn), *args])
    assert res.exit_code == 1
    assert needle in res.output
    assert "Traceback" not in res.output


def test_cli_help_has_examples() -> None:
    res = CliRunner().invoke(cli, ["realism", "--help"])
    assert res.exit_code == 0 and "simgen realism outputs/demo" in res.output


def test_importing_the_check_stays_cheap() -> None:
    import subprocess
    import sys

    code = ("import sys, simgen.realism, simgen.corpora, simgen.cli.realism; "
            "heavy = [m for m in ('torch', 'sklearn', 'sentence_transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
