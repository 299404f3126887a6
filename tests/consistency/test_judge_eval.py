"""`simgen judge-eval`: accuracy, ROC-AUC and confusion per kind on the labelled dev set; malformed files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tests.consistency.conftest import RuleJudge

from simgen.cli.consistency import judge_eval as judge_eval_cli
from simgen.consistency.evaluate import judge_eval, read_labelled, roc_auc
from simgen.errors import DataError


@pytest.fixture(scope="module")
def dev(shared_dir):
    return shared_dir / "data" / "consistency" / "dev.jsonl"


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    y = [0, 1, 1, 0, 1, 0, 0, 1]
    s = [0.1, 0.8, 0.4, 0.4, 0.9, 0.3, 0.7, 0.2]
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert roc_auc([1, 1], [0.2, 0.3]) is None


def test_dev_set_reports_every_kind(dev):
    report = judge_eval(dev, RuleJudge(rules=(("vegetarian", "ribeye"), ("vegetarian", "steak"))))
    assert set(report["kinds"]) == {"prompt_to_line", "line_to_line", "qa"}
    n = {k: v["n"] for k, v in report["kinds"].items()}
    assert n == {"prompt_to_line": 25, "line_to_line": 20, "qa": 15}
    for kind, s in report["kinds"].items():
        c = s["confusion"]
        assert 0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["roc_auc"] <= 1.0
        units = s["n"] * (4 if kind == "qa" else 1)
        assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == units
        assert set(s["accuracy_by_difficulty"]) <= {"easy", "hard"}
    p2l = report["kinds"]["prompt_to_line"]
    # the rule fires on dev-p2l-02 (a vegetarian grilling a ribeye), a true contradiction
    assert p2l["confusion"]["tp"] >= 1 and p2l["confusion"]["fp"] == 0
    assert p2l["accuracy"] == pytest.approx((p2l["confusion"]["tp"] + p2l["confusion"]["tn"]) / 25)
    assert report["judge"] == {"judge": "rule"}


def test_the_judge_never_sees_the_note(dev):
    judge = RuleJudge()
    judge_eval(dev, judge)
    notes = [json.loads(line)["note"] for line in dev.read_text().splitlines()]
    seen = " ".join(p.premise + " " + p.line + " " + (p.context or "") for call in judge.calls for p in call)
    assert not any(note in seen for note in notes if len(note) > 20)


def test_cli_writes_json_and_prints_the_table(dev, tmp_path, tiny_model_dir):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(judge_eval_cli, [str(dev), "--judge", f"llm:{tiny_model_dir}", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "| prompt_to_line | 25 |" in result.output and "| qa | 15 |" in result.output
    saved = json.loads(out.read_text())
    assert saved["judge"]["model"] == str(tiny_model_dir)
    assert len(saved["items"]) == 60


@pytest.mark.parametrize("line, match", [
    ("{not json", r"bad\.jsonl:2: not valid JSON"),
    ('{"kind": "vibes"}', r"bad\.jsonl:2: 'kind' must be one of"),
    ('{"kind": "prompt_to_line", "persona": {"backstory": "x"}, "line": "y"}', r"bad\.jsonl:2: .*needs the field 'label'"),
    ('{"kind": "prompt_to_line", "persona": {"backstory": "x"}, "line": "y", "label": 3}', r"bad\.jsonl:2: 'label' must be 0 or 1"),
    ('{"kind": "qa", "persona": {"backstory": "x"}, "question": "q", "options": ["a", "b"], "answer": 5}', r"bad\.jsonl:2: 'options'"),
    ('{"kind": "line_to_line", "context": [{"role": "assistant", "text": "hi"}], "line": "y", "label": 0}', r"bad\.jsonl:2: .*earlier user line"),
    ('[1, 2]', r"bad\.jsonl:2: expected a JSON object"),
])
def test_malformed_lines_are_named(tmp_path, line, match):
    good = '{"kind": "prompt_to_line", "persona": {"backstory": "x"}, "line": "y", "label": 0}'
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=match):
        read_labelled(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_labelled(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no items"):
        read_labelled(tmp_path / "empty.jsonl")
