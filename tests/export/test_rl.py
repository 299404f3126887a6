"""`simgen export rl`: each TRL format's rows, checked against the run they came from."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from simgen.cli import cli
from simgen.data import ProfileLatent
from simgen.errors import ConfigError, RunError
from simgen.export.rl import Format, RLConfig, export_rl
from simgen.scenario import load_scenario
from simgen.generation.chats import user_context
from simgen.generation.plan import DialogueJob


def load(path):
    from datasets import load_dataset

    ds = load_dataset(str(path))
    return [r for s in ds for r in ds[s]]


def test_a_second_export_under_the_same_name_loads_its_own_rows(run, tmp_path):
    """datasets caches a local folder by its name and its card's patterns: the shards' content tag keeps
    two exports named `rw` apart (they shared one cache entry, and the second load read the first's rows)."""
    from simgen.export.splits import SplitConfig

    whole = export_rl(run, tmp_path / "a" / "rw", "prompt", split=SplitConfig(fractions=(1.0, 0.0, 0.0)))
    half = export_rl(run, tmp_path / "b" / "rw", "prompt", split=SplitConfig(fractions=(0.5, 0.5, 0.0), seed=0))
    assert whole["files"]["train"]["rows"] != half["files"]["train"]["rows"]
    assert whole["files"]["train"]["tag"] != half["files"]["train"]["tag"]
    for summary in (whole, half):
        assert len(load(summary["to"])) == sum(f["rows"] for f in summary["files"].values())


def dialogue(run, did):
    return run.turns.filter(pl.col("dialogue_id") == did).sort("turn")


def usable(d: pl.DataFrame) -> pl.DataFrame:
    """The dialogue without a last line that stopped it for a bad reason."""
    stop = d["stop_reason"][-1]
    return d.head(d.height - 1) if stop.split(":")[0] in ("empty_output", "degenerate_output", "generation_error") else d


def test_sft_user_policy_is_the_simulators_own_chat(run, tmp_path):
    rows = load(export_rl(run, tmp_path / "sft", "sft")["to"])
    sc = load_scenario("movie-recommendation")
    assert rows and len(rows) <= run.manifest["counts"]["dialogues"]
    for r in rows:
        d = usable(dialogue(run, r["dialogue_id"]))
        m = r["messages"]
        profile = d["profile"][0]
        job = DialogueJob(0, ProfileLatent(profile), tuple(d["intent"].drop_nulls()))
        assert m[0] == {"role": "system", "content": sc.user_template.render("system", user_context(sc, job, 0, 3))}
        # roles flipped: the simulated user's lines are the assistant messages, in order
        assert [x["content"] for x in m if x["role"] == "assistant"] == d.filter(pl.col("role") == "user")["text"].to_list()
        assistant_lines = d.filter(pl.col("role") == "assistant")["text"].to_list()
        users = [x["content"] for x in m if x["role"] == "user"]
        opens = int(d["role"][0] == "assistant")  # an opening line leads the user's first message
        assert all(users[i + 1 - opens].startswith(line + "\n\n") for i, line in enumerate(assistant_lines[:len(users) - 1 + opens]))
        assert m[-1]["role"] == "assistant" and r["profile"] == profile


def test_sft_assistant_policy_is_the_natural_chat(run, tmp_path):
    rows = load(export_rl(run, tmp_path / "sft-a", "sft", policy="assistant")["to"])
    for r in rows:
        d = usable(dialogue(run, r["dialogue_id"]))
        m = r["messages"]
        assert m[0]["role"] == "system" and "recommend" in m[0]["content"].lower()
        last = max(i for i, role in enumerate(d["role"]) if role == "assistant")
        assert [(x["role"], x["content"]) for x in m[1:]] == list(zip(d["role"][:last + 1], d["text"][:last + 1]))


def test_prompt_rows_carry_the_profile_and_work_with_make_reward(run, tmp_path):
    from tests.consistency.conftest import RuleJudge

    from simgen.consistency import make_reward

    rows = load(export_rl(run, tmp_path / "prompt", "prompt")["to"])
    n_user = sum(usable(dialogue(run, d)).filter(pl.col("role") == "user").height for d in run.turns["dialogue_id"].unique())
    assert len(rows) == n_user
    for r in rows:
        d = usable(dialogue(run, r["dialogue_id"]))
        lines = d.filter(pl.col("role") == "user")["text"].to_list()
        assert r["prompt"][-1]["role"] == "user"  # the turn's instruction: the policy speaks next
        assert r["history"] == lines[:r["user_turn"]]
        assert [m["content"] for m in r["prompt"] if m["role"] == "assistant"] == r["history"]
        assert r["profile"] == d["profile"][0]
    judge = RuleJudge(rules=(("student", "retired"),))
    reward = make_reward("prompt_to_line", judge)
    completions = [[{"role": "assistant", "content": "since i retired i watch movies"}]] * len(rows)
    scores = reward([r["prompt"] for r in rows], completions, profile=[r["profile"] for r in rows], history=[r["history"] for r in rows])
    want = [0.1 if "student" in r["profile"]["backstory"].lower() else 0.9 for r in rows]
    assert scores == pytest.approx(want)


def test_rewards_from_the_judge_are_make_rewards(run, tiny_judge_spec, tmp_path):
    """Without consistency.parquet the rewards are simgen's reward function on each (prompt, line)."""
    from simgen.consistency import make_reward

    summary = export_rl(run, tmp_path / "rw", "rewards", specificity_weight=0.3, judge=tiny_judge_spec)
    assert summary["rewards"]["source"] == "computed" and summary["rewards"]["judge"]["judge"] == "llm"
    rows = load(tmp_path / "rw")
    reward = make_reward("consistency", tiny_judge_spec, specificity_weight=0.3)
    direct = reward([r["prompt"] for r in rows], [r["completion"] for r in rows], profile=[r["profile"] for r in rows],
                    history=[r["history"] for r in rows])
    # the export scores prompt-to-line and line-to-line in separate judge batches: padding moves the tiny judge by ~1e-4
    assert [r["reward"] for r in rows] == pytest.approx(direct, abs=1e-3)
    assert {r["completion"][0]["role"] for r in rows} == {"assistant"}
    for did in {r["dialogue_id"] for r in rows}:
        own = sorted((r for r in rows if r["dialogue_id"] == did), key=lambda r: r["user_turn"])
        assert [r["done"] for r in own] == [False] * (len(own) - 1) + [True]
        assert [r["completion"][0]["content"] for r in own] == usable(dialogue(run, did)).filter(pl.col("role") == "user")["text"].to_list()


def test_rewards_from_the_sidecar(scored_run, tmp_path):
    """With consistency.parquet the rewards are its per-line scores, combined as make_reward combines them."""
    summary = export_rl(scored_run, tmp_path / "rw", "rewards", specificity_weight=0.3)
    assert summary["rewards"]["source"].endswith("consistency.parquet") and summary["rewards"]["judge"]["judge"] == "llm"
    sidecar = pl.read_parquet(scored_run.path / "consistency.parquet")
    rows = load(tmp_path / "rw")
    assert len(rows) == sidecar.height
    for r in rows:
        s = sidecar.filter((pl.col("dialogue_id") == r["dialogue_id"]) & (pl.col("turn") == r["turn"])).row(0, named=True)
        l2l = 1.0 if s["l2l_score"] is None else s["l2l_score"]
        assert r["prompt_to_line"] == pytest.approx(1 - s["p2l_contradiction"])
        assert r["reward"] == pytest.approx((1 - s["p2l_contradiction"] + l2l) / 2 + 0.3 * min(s["specificity"], 3) / 3)


def test_dpo_pairs_are_ranked_by_the_consistency_reward(run, tiny_model_dir, tiny_judge_spec, tmp_path):
    from simgen.consistency import make_reward

    summary = export_rl(run, tmp_path / "dpo", "dpo", model=str(tiny_model_dir), judge=tiny_judge_spec, candidates=3,
                        margin=0.0, max_prompts=4, dtype="float32")
    rows = load(tmp_path / "dpo")
    assert len(rows) + summary["skipped"]["fewer_than_2_distinct_candidates"] + summary["skipped"]["margin_below_threshold"] == 4
    reward = make_reward("consistency", tiny_judge_spec)
    for r in rows:
        assert r["chosen"][0]["content"] != r["rejected"][0]["content"]
        got = reward([r["prompt"]] * 2, [r["chosen"], r["rejected"]], profile=[r["profile"]] * 2, history=[r["history"]] * 2)
        assert got == pytest.approx([r["chosen_reward"], r["rejected_reward"]], abs=1e-4)
        assert r["margin"] == pytest.approx(r["chosen_reward"] - r["rejected_reward"]) and r["margin"] >= 0
    with pytest.raises(RunError, match="no rows to write") as e:
        export_rl(run, tmp_path / "dpo2", "dpo", model=str(tiny_model_dir), judge=tiny_judge_spec, candidates=2,
                  margin=2.0, max_prompts=2, dtype="float32")  # rewards lie in [0, 1]: no pair reaches a margin of 2
    assert "margin_below_threshold" in str(e.value) and not (tmp_path / "dpo2").exists()
    assert json.loads((tmp_path / "dpo" / "export.json").read_text())["candidates"]["judge"]["judge"] == "llm"


def test_bad_format_and_policy(run, tmp_path):
    res = CliRunner().invoke(cli, ["export", "rl", str(run.path), "--format", "stf", "--to", str(tmp_path / "a")])
    assert res.exit_code == 1 and "unknown format 'stf'. Did you mean 'sft'?" in res.output and "'dpo', 'prompt'" in res.output
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="trains the user simulator: use --policy user"):
        RLConfig(format="dpo", policy="assistant")
    with pytest.raises(ConfigError, match="unknown policy 'bot'"):
        RLConfig(format="sft", policy="bot")
    res = CliRunner().invoke(cli, ["export", "rl", str(tmp_path / "missing"), "--format", "sft", "--to", str(tmp_path / "b")])
    assert res.exit_code == 1 and "no such run folder" in res.output


def test_cli_rl_prints_counts(run, tmp_path):
    res = CliRunner().invoke(cli, ["export", "rl", str(run.path), "--format", "prompt", "--to", str(tmp_path / "p"),
                                   "--splits", "0.5,0.5,0", "--seed", "4"])
    assert res.exit_code == 0, res.output
    assert "dropped 0 exact and 0 near duplicates" in res.output and "prompt: " in res.output
    card = (tmp_path / "p" / "README.md").read_text()
    assert "config_name: prompt" in card


class Lines(Format):
    """A format made outside simgen: one row per user line, text only (what a new format looks like)."""

    name = "lines"
    columns = ("line", "dialogue_id", "split")
    messages = ()
    policies = ("user",)
    why_policies = "exports the user's lines"

    def rows(self, chats, dialogues, base, skipped):  # noqa: ANN001, ANN201
        return [{"line": t.text, **base[d.dialogue_id]} for d in dialogues for t in d.turns if t.role == "user"]


def test_every_registered_format_meets_the_contract(run, tmp_path):
    from simgen.export.rl import FORMATS, Format, format_class

    for name in FORMATS:
        fmt = format_class(name)
        assert issubclass(fmt, Format) and fmt.name == name, name
        assert {"dialogue_id", "split"} <= set(fmt.columns) and set(fmt.messages) <= set(fmt.columns), name
        assert set(fmt.policies) <= {"user", "assistant"} and fmt.example, name
        assert all(c.endswith(".parquet") for c in fmt.consumes), name
        assert fmt.records is None or fmt.records not in ("format", "policy", "run", "to", "config", "files", "skipped", "recipe"), name
    for name in ("sft", "prompt"):  # dpo and rewards need a judge: their rows are checked above
        summary = export_rl(run, tmp_path / name, name)
        written = pl.read_parquet(next((tmp_path / name / "data").glob("train-*.parquet")))
        # the split becomes the shard's name: every other declared column is written, in order
        assert tuple(written.columns) == tuple(c for c in format_class(name).columns if c != "split") and summary["format"] == name
    help_text = CliRunner().invoke(cli, ["export", "rl", "--help"]).output
    assert " | ".join(FORMATS) in " ".join(help_text.split())


def test_a_new_format_is_one_class_and_one_registry_line(run, tmp_path, monkeypatch):
    from simgen.export import rl

    monkeypatch.setitem(rl.FORMATS, "lines", f"{__name__}:Lines")
    summary = export_rl(run, tmp_path / "lines", "lines")
    rows = load(tmp_path / "lines")
    users = run.turns.filter(pl.col("role") == "user")
    assert sorted(r["line"] for r in rows) == sorted(users["text"].to_list()) and summary["files"]
    with pytest.raises(ConfigError, match="--format lines exports the user's lines: use --policy user"):
        RLConfig(format="lines", policy="assistant")
