"""`simgen consistency` on a real run of the tiny model: sidecar, reports, CLI, turns.parquet untouched, errors."""

from __future__ import annotations

import hashlib
import json
import shutil

import polars as pl
import pytest
from click.testing import CliRunner

import simgen
from simgen.cli import cli
from simgen.cli.consistency import consistency
from simgen.config import SamplingConfig
from simgen.consistency.check import SIDECAR, check_run
from simgen.consistency.metrics import COLUMNS, ConsistencyConfig
from simgen.errors import DataError, RunError


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return simgen.generate(scenario="movie-recommendation", n=3, seed=3, model=str(tiny_model_dir), out=tmp_path_factory.mktemp("runs") / "a",
                           max_turns=3, batch_size=3, dtype="float32", progress=False, user=SamplingConfig(max_new_tokens=8),
                           assistant_sampling=SamplingConfig(temperature=0.7, max_new_tokens=10))


@pytest.fixture(scope="module")
def checked(run, tiny_model_dir):
    before = hashlib.sha256((run.path / "turns.parquet").read_bytes()).hexdigest()
    report = check_run(run, f"llm:{tiny_model_dir}", config=ConsistencyConfig(qa_max_questions=2, axis_layer=1))
    return report, before


def test_sidecar_is_keyed_by_dialogue_and_turn_and_turns_are_untouched(run, checked):
    report, before = checked
    assert hashlib.sha256((run.path / "turns.parquet").read_bytes()).hexdigest() == before
    side = pl.read_parquet(run.path / SIDECAR)
    assert side.columns == list(COLUMNS)
    users = run.turns.filter(pl.col("role") == "user").select("dialogue_id", "turn")
    assert side.select("dialogue_id", "turn").sort("dialogue_id", "turn").equals(users.sort("dialogue_id", "turn"))
    judged = side.filter(pl.col("skipped").is_null())
    assert judged["p2l_contradiction"].is_between(0, 1).all()
    assert (judged["qa_asked"] == 2).all() and (judged["qa_correct"] <= 2).all()
    assert judged["persona_projection"].is_not_null().all()


def test_report_names_the_judge_and_has_drift_curves(run, checked, tiny_model_dir):
    report, _ = checked
    saved = json.loads((run.path / "reports" / "consistency.json").read_text())
    assert saved["judge"]["judge"] == "llm" and saved["judge"]["model"] == str(tiny_model_dir)
    assert saved["simulator"]["model"]["path"] == str(tiny_model_dir)
    assert saved["overall"]["dialogues"] == 3
    for key in ("prompt_to_line", "line_to_line", "qa", "specificity"):
        assert key in saved["overall"]
    assert [r["user_turn"] for r in saved["drift"]] == sorted(r["user_turn"] for r in saved["drift"])
    assert saved["not_computed"] == {}
    assert saved["axis"]["layer"] == 1 and "direction" not in saved["axis"]
    assert json.loads((run.path / "reports" / "persona_axis.json").read_text())["layer"] == 1
    assert any("says nothing" in n for n in saved["notes"])
    html = (run.path / "reports" / "consistency.html").read_text()
    assert "data-plot='drift'" in html and "data-plot='specificity'" in html and "data-plot='axis'" in html
    assert str(tiny_model_dir) in html and "<script" not in html


def test_cli_writes_to_out_and_reports_what_was_skipped(run, tiny_model_dir, tmp_path):
    result = CliRunner().invoke(consistency, [str(run.path), "--judge", f"llm:{tiny_model_dir}", "--out", str(tmp_path / "rep"),
                                              "--no-qa", "--no-axis", "--max-dialogues", "2"])
    assert result.exit_code == 0, result.output
    assert "judge: llm" in result.output and "prompt_to_line" in result.output
    saved = json.loads((tmp_path / "rep" / "consistency.json").read_text())
    assert saved["overall"]["dialogues"] == 2
    assert saved["not_computed"] == {"qa": "turned off (qa=False)", "axis": "turned off (axis=False)"}


def test_missing_simulator_model_skips_qa_and_axis_with_a_reason(run, tiny_model_dir, tmp_path):
    from tests.consistency.conftest import RuleJudge

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["backend"]["user"]["model"] = {"id": str(tmp_path / "gone"), "path": str(tmp_path / "gone"), "fingerprint": "x"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = check_run(copy, RuleJudge())
    assert set(report["not_computed"]) == {"qa", "axis"}
    assert "cannot be loaded" in report["not_computed"]["qa"]
    assert report["judge"] == {"judge": "rule"}


def test_bad_runs_are_clear_errors(run, tmp_path, tiny_model_dir):
    from tests.consistency.conftest import RuleJudge

    with pytest.raises(RunError, match="no such run folder"):
        check_run(tmp_path / "nope", RuleJudge())
    copy = tmp_path / "noprofile"
    shutil.copytree(run.path, copy)
    pl.read_parquet(copy / "turns.parquet").with_columns(pl.lit(None).alias("profile")).write_parquet(copy / "turns.parquet")
    with pytest.raises(DataError, match="no profile latents"):
        check_run(copy, RuleJudge())
    result = CliRunner().invoke(consistency, [str(copy), "--judge", "bogus"])
    assert result.exit_code != 0 and "unknown judge 'bogus'" in str(result.exception)


def test_scores_do_not_depend_on_the_chunk_size(run, tiny_model_dir, tmp_path):
    """The run is read and scored a chunk of dialogues at a time: one dialogue per chunk gives the
    same sidecar and axis as all three in one (up to fp32 batch-neighbour noise of the tiny model)."""
    reports, sidecars = [], []
    for chunk in (1, 500):
        copy = tmp_path / f"run-{chunk}"
        shutil.copytree(run.path, copy)
        config = ConsistencyConfig(qa_max_questions=2, axis_layer=1, chunk_dialogues=chunk)
        reports.append(check_run(copy, f"llm:{tiny_model_dir}", config=config))
        sidecars.append(pl.read_parquet(copy / SIDECAR).sort("dialogue_id", "turn"))
    (one, report), (chunked, whole) = reports, sidecars
    exact = [c for c, t in COLUMNS.items() if not t.is_float()]
    assert chunked.select(exact).equals(whole.select(exact))
    for c in ("p2l_contradiction", "l2l_score", "persona_projection"):
        assert chunked[c].to_list() == pytest.approx(whole[c].to_list(), abs=1e-3, nan_ok=True)
    assert one["axis"]["n_persona"] == report["axis"]["n_persona"] and one["axis"]["n_assistant"] == report["axis"]["n_assistant"]
    assert one["axis"]["persona_mean"] == pytest.approx(report["axis"]["persona_mean"], abs=1e-3)
    assert one["overall"]["dialogues"] == 3


def test_the_judge_sees_one_chunk_at_a_time(run, tmp_path):
    """Lazy reading: with chunks of one dialogue, no judge call holds lines of two dialogues, and
    the worst lines still come back with their text, read from the run for those lines only."""
    from tests.consistency.conftest import RuleJudge

    judge = RuleJudge()
    report = check_run(run, judge, out=tmp_path / "rep", config=ConsistencyConfig(qa=False, axis=False, chunk_dialogues=1))
    personas = [{p.premise for p in call if p.kind == "prompt_to_line"} for call in judge.calls]
    assert len(judge.calls) == 3 and all(len(p) == 1 for p in personas)
    texts = {(d, t): x for d, t, x in run.turns.select("dialogue_id", "turn", "text").iter_rows()}
    assert report["worst_lines"] and all(w["text"] == texts[(w["dialogue_id"], w["turn"])] for w in report["worst_lines"])
    with pytest.raises(Exception, match="chunk_dialogues must be a positive integer"):
        ConsistencyConfig(chunk_dialogues=0)


def test_a_check_killed_between_chunks_resumes_and_gives_the_same_sidecar(run, tiny_model_dir, tmp_path, monkeypatch):
    from simgen.consistency import check

    config = ConsistencyConfig(qa_max_questions=2, axis_layer=1, chunk_dialogues=1)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for copy in (whole, killed):
        shutil.copytree(run.path, copy)
    check_run(whole, f"llm:{tiny_model_dir}", config=config)

    save = check.Parts.save

    def save_then_die(self, k, ids, chunk):  # noqa: ANN001, ANN202
        save(self, k, ids, chunk)
        if k == 0:
            raise KeyboardInterrupt  # Ctrl-C right after the first chunk was saved

    (killed / SIDECAR).unlink(missing_ok=True)
    monkeypatch.setattr(check.Parts, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        check_run(killed, f"llm:{tiny_model_dir}", config=config)
    assert not (killed / SIDECAR).exists() and (killed / check.PARTS / "00000.json").exists()
    monkeypatch.setattr(check.Parts, "save", save)

    judged = []
    score_lines = check.score_lines
    monkeypatch.setattr(check, "score_lines", lambda dialogues, *a, **k: judged.extend(d.dialogue_id for d in dialogues) or score_lines(dialogues, *a, **k))
    report = check_run(killed, f"llm:{tiny_model_dir}", config=config)
    assert len(judged) == 2  # the first chunk was read back, not scored again
    assert pl.read_parquet(killed / SIDECAR).equals(pl.read_parquet(whole / SIDECAR))
    assert report["overall"] == json.loads((whole / "reports" / "consistency.json").read_text())["overall"]
    assert not (killed / check.PARTS).exists()


def test_a_scoring_with_out_writes_its_own_sidecar_and_leaves_the_runs(run, checked, tiny_model_dir, tmp_path):
    """`--out DIR` (another reader, a subset): the run's sidecar and reports, which exports read, stay as they were."""
    from simgen.consistency import check

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    check.Parts(copy / check.PARTS, {"config": "an interrupted scoring of the run"})  # its saved chunks must survive too
    (copy / check.PARTS / "00000.json").write_text('{"ids": ["x"], "persona_keys": []}')
    kept = {p: (copy / p).read_bytes() for p in (SIDECAR, "reports/consistency.json", "reports/persona_axis.json", f"{check.PARTS}/00000.json")}
    report = check_run(copy, f"llm:{tiny_model_dir}", out=tmp_path / "subset",
                       config=ConsistencyConfig(qa_max_questions=1, axis_layer=1, max_dialogues=1))
    assert {p: (copy / p).read_bytes() for p in kept} == kept
    assert not (tmp_path / "subset" / check.PARTS).exists()  # its own chunks, removed once its sidecar is written
    assert report["sidecar"] == str(tmp_path / "subset" / SIDECAR)
    side = pl.read_parquet(tmp_path / "subset" / SIDECAR)
    assert side["dialogue_id"].n_unique() == 1 and pl.read_parquet(copy / SIDECAR)["dialogue_id"].n_unique() == 3
    assert json.loads((tmp_path / "subset" / "consistency.json").read_text())["overall"]["dialogues"] == 1


def test_parts_of_other_settings_are_not_reused(run, tiny_model_dir, tmp_path):
    from simgen.consistency import check

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    check.Parts(copy / check.PARTS, {"config": "other"})
    (copy / check.PARTS / "00000.json").write_text('{"ids": ["x"], "persona_keys": []}')
    check_run(copy, f"llm:{tiny_model_dir}", config=ConsistencyConfig(qa_max_questions=1, axis_layer=1, chunk_dialogues=2))
    assert pl.read_parquet(copy / SIDECAR).height == run.turns.filter(pl.col("role") == "user").height


def test_cli_http_judge_takes_its_model_name_and_key_variable(run, stub_url, tmp_path, monkeypatch):
    """The http judge against a local OpenAI-compatible stub (the protocol; a real llama.cpp server is in the slow tests)."""
    from tests.consistency.conftest import Stub

    monkeypatch.setenv("SIMGEN_JUDGE_KEY", "sk-judge")
    result = CliRunner().invoke(consistency, [str(run.path), "--judge", f"http:{stub_url}", "--judge-model", "qwen-judge",
                                              "--api-key-env", "SIMGEN_JUDGE_KEY", "--no-qa", "--no-axis", "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    sent = [r for r in Stub.requests if r["path"] == "/v1/chat/completions"]
    assert sent and all(r["body"]["model"] == "qwen-judge" and r["auth"] == "Bearer sk-judge" for r in sent)
    assert json.loads((tmp_path / "rep" / "consistency.json").read_text())["judge"]["model"] == "qwen-judge"


def test_cli_refuses_http_judge_settings_for_another_judge(run, tiny_model_dir):
    result = CliRunner().invoke(consistency, [str(run.path), "--judge", f"llm:{tiny_model_dir}", "--judge-model", "x"])
    assert result.exit_code == 2 and "--judge-model applies only to the http judge" in result.output


def test_max_user_lines_bounds_every_stage_on_the_tiny_model(run, tmp_path):
    """--max-user-lines 1: one sidecar row per dialogue (its first user line), asked its Q&A there; the
    report records the setting. Q&A runs the run's own (tiny) simulator."""
    from tests.consistency.conftest import RuleJudge

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    report = check_run(copy, RuleJudge(), config=ConsistencyConfig(max_user_lines=1, qa_max_questions=2, axis=False))
    sidecar = pl.read_parquet(copy / SIDECAR)
    users = pl.read_parquet(copy / "turns.parquet").filter(pl.col("role") == "user")
    assert users.height > users["dialogue_id"].n_unique()  # the run has lines to cut
    assert sidecar.height == users["dialogue_id"].n_unique() and sidecar["user_turn"].to_list() == [0] * sidecar.height
    assert (sidecar["qa_asked"] > 0).all()
    assert report["config"]["max_user_lines"] == 1 and report["not_computed"] == {"axis": "turned off (axis=False)"}


def test_simulator_model_reads_qa_for_a_run_whose_weights_are_not_here(run, tiny_model_dir, tmp_path):
    """A run written through a server records a user backend whose weights cannot be read here, so Q&A
    and the axis are not computed; `--simulator-model` names a local model that reads them instead, and
    the report says which. A model that does not load is an error naming it, before anything is written.
    (The served run is the tiny run with its manifest's user backend set to "openai", as a server-written
    run records it: a real server run is exercised in tests/test_openai_backend.py.)"""
    from simgen.models import resolve_model
    from tests.consistency.conftest import RuleJudge

    served = tmp_path / "served"
    shutil.copytree(run.path, served)
    manifest = json.loads((served / "manifest.json").read_text())
    manifest["backend"]["user"] = {"backend": "openai", "model": {"id": "served-model"}, "base_url": "http://127.0.0.1:1/v1"}
    (served / "manifest.json").write_text(json.dumps(manifest))
    config = ConsistencyConfig(max_user_lines=1, qa_max_questions=2, axis=False)
    report = check_run(served, RuleJudge(), config=config)
    assert "'openai' backend" in report["not_computed"]["qa"] and report["overall"]["qa"]["mean"] is None

    report = check_run(served, RuleJudge(), config=ConsistencyConfig(**{**config.__dict__, "simulator_model": str(tiny_model_dir)}))
    assert "qa" not in report["not_computed"] and report["overall"]["qa"]["mean"] is not None
    assert (pl.read_parquet(served / SIDECAR)["qa_asked"] == 2).all()
    assert report["simulator"]["model"]["fingerprint"] == resolve_model(str(tiny_model_dir)).fingerprint
    assert report["config"]["simulator_model"] == str(tiny_model_dir)

    (served / SIDECAR).unlink()
    result = CliRunner().invoke(cli, ["consistency", str(served), "--simulator-model", str(tmp_path / "no-such-model"), "--no-axis"])
    assert result.exit_code != 0 and "--simulator-model: model" in result.output and "no-such-model': no such folder" in result.output
    assert not (served / SIDECAR).exists()


def test_qa_skip_leaves_the_named_variables_out_and_refuses_an_unknown_one(run, tiny_model_dir, tmp_path):
    """`--qa-skip` asks nothing about the named profile variables (a run whose profile gained a variable,
    such as chitchat's topic, is then asked what a run without it was), and is recorded in the report; a
    name the scenario's profile lacks is an error naming it, before anything is written."""
    base = ["--judge", f"llm:{tiny_model_dir}", "--no-axis", "--max-dialogues", "2", "--max-user-lines", "1"]
    asked = {}
    for skip in ("", "age,liked_genres"):
        copy = tmp_path / f"run{len(asked)}"
        shutil.copytree(run.path, copy)
        (copy / SIDECAR).unlink(missing_ok=True)  # scored by another test of the module's run
        result = CliRunner().invoke(consistency, [str(copy), *base, *(["--qa-skip", skip] if skip else [])])
        assert result.exit_code == 0, result.output
        asked[skip] = pl.read_parquet(copy / SIDECAR)["qa_asked"].drop_nulls().to_list()
        assert json.loads((copy / "reports" / "consistency.json").read_text())["config"]["qa_skip"] == [n for n in skip.split(",") if n]
    from simgen.consistency.qa import profile_questions
    from simgen.scenario import load_scenario

    space = load_scenario("movie-recommendation").profile
    first = pl.read_parquet(run.path / "turns.parquet").sort("dialogue_id", "turn").group_by("dialogue_id", maintain_order=True).first()
    for skip, counts in asked.items():  # per dialogue: its questions without the skipped variables, at most 8 (the default)
        want = [min(8, len(profile_questions(space, p, skip=[n for n in skip.split(",") if n]))) for p in first["profile"].to_list()[:2]]
        assert sorted(set(counts)) == sorted(set(want)), skip
    assert max(asked["age,liked_genres"]) < max(asked[""])
    copy = tmp_path / "bad"
    shutil.copytree(run.path, copy)
    (copy / SIDECAR).unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["consistency", str(copy), *base, "--qa-skip", "agee"])
    assert result.exit_code != 0 and "--qa-skip agee" in result.output and "Did you mean 'age'" in result.output
    assert not (copy / SIDECAR).exists()


def test_qa_by_attribute_reads_the_lines_consistency_reads_under_max_user_lines(run, tmp_path, monkeypatch, capsys):
    """benchmarks/qa_by_attribute.py --max-user-lines 1 asks, and gets right, exactly the questions
    `simgen consistency --max-user-lines 1` asks of the same dialogues (the run's own tiny simulator):
    per-variable counts that add up to the sidecar's, and fewer than on whole dialogues."""
    from tests.conftest import load_benchmark
    from tests.consistency.conftest import RuleJudge

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / SIDECAR).unlink(missing_ok=True)
    check_run(copy, RuleJudge(), config=ConsistencyConfig(max_user_lines=1, axis=False))
    sidecar = pl.read_parquet(copy / SIDECAR)
    bench = load_benchmark("qa_by_attribute")
    totals = {}
    for lines in ("1", "0"):
        monkeypatch.setattr("sys.argv", ["qa_by_attribute.py", str(copy), "--max-user-lines", lines])
        bench.main()
        row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {copy} |"))
        all_cell = row.rstrip(" |").rsplit("|", 1)[1].strip()  # "0.417 (24 asked)"
        totals[lines] = (float(all_cell.split()[0]), int(all_cell.split("(")[1].split()[0]))
    asked, correct = int(sidecar["qa_asked"].sum()), int(sidecar["qa_correct"].sum())
    assert asked > 0 and totals["1"] == (round(correct / asked, 3), asked)
    assert totals["0"][1] > asked  # the whole dialogues hold more user lines, so more questions


def test_qa_answers_grades_the_q_and_a_checks_questions_three_ways(run, tmp_path, monkeypatch, capsys):
    """benchmarks/qa_answers.py on the tiny run: its option-likelihood column is the Q&A check's own answers
    (the same total as qa_by_attribute over every variable and checkpoint), and free answers are graded by
    whole words, a reply that also names another option counting as wrong."""
    from tests.conftest import load_benchmark

    answers, by_attribute = load_benchmark("qa_answers"), load_benchmark("qa_by_attribute")
    assert answers.free_grade("i'm 31-year-old", ("45", "31", "19"), 1) == (True, False)
    assert answers.free_grade("i'm 310", ("45", "31"), 1) == (False, False)
    assert answers.free_grade("31 or 45, who knows", ("45", "31"), 1) == (False, True)
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    every = ",".join(v.name for v in simgen.load_scenario("movie-recommendation").profile.variables)

    def all_cells(argv, module):
        monkeypatch.setattr("sys.argv", argv)
        module.main()
        return [r for r in capsys.readouterr().out.splitlines() if r.startswith("| all |") or r.startswith(f"| {copy} |")]

    row = all_cells(["qa_answers.py", str(copy), "--checkpoints", "all", "--attributes", every, "--max-new-tokens", "4"], answers)[0]
    n, likelihood, lift, free, other = (float(c) for c in row.strip(" |").split("|")[1:6])
    theirs = all_cells(["qa_by_attribute.py", str(copy)], by_attribute)[0].rstrip(" |").rsplit("|", 1)[1].split()
    assert (likelihood, int(n)) == (float(theirs[0]), int(theirs[1].strip("(")))
    assert 0 <= free + other <= 2 and 0 <= lift <= 1
    last = all_cells(["qa_answers.py", str(copy), "--attributes", "age,name", "--max-new-tokens", "4"], answers)[0]
    assert int(last.split("|")[2]) == 2 * 3  # two questions after each of the 3 dialogues' last user line
