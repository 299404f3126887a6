"""`simgen export hub`: the folder loads with the real `datasets`, and bad input is refused cleanly."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from simgen.cli import cli
from simgen.errors import ConfigError, RunError
from simgen.export.hub import export_hub, validate_repo_id
from simgen.export.splits import SplitConfig


@pytest.fixture(scope="module")
def hub_dir(scored_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "ds"
    export_hub(scored_run, out, split=SplitConfig(fractions=(0.5, 0.25, 0.25), seed=0), repo_id="my-org/movie-dialogues")
    return out


def test_folder_loads_with_datasets_in_every_config(hub_dir, scored_run):
    from datasets import load_dataset

    turns = scored_run.turns
    dialogues = load_dataset(str(hub_dir))  # the default config
    assert "messages" in dialogues[next(iter(dialogues))].column_names
    by_config = {c: load_dataset(str(hub_dir), c) for c in ("dialogues", "turns", "profiles")}
    ids = {c: {s: set(ds[s]["dialogue_id"]) for s in ds} for c, ds in by_config.items()}
    assert ids["dialogues"] == ids["turns"] == ids["profiles"]  # the same split of each dialogue in every config
    splits = list(ids["dialogues"].values())
    assert all(not (a & b) for i, a in enumerate(splits) for b in splits[i + 1:])  # split by dialogue, never by turn
    assert set().union(*splits) == set(turns["dialogue_id"])  # nothing dropped: the run has no duplicates

    for split in by_config["dialogues"].values():
        for row in split:
            d = turns.filter(pl.col("dialogue_id") == row["dialogue_id"]).sort("turn")
            assert [m["content"] for m in row["messages"]] == d["text"].to_list()
            assert [m["role"] for m in row["messages"]] == d["role"].to_list()
            assert row["profile"] == d["profile"][0]
            assert row["intents"] == d["intent"].drop_nulls().to_list()
    n_turns = sum(by_config["turns"][s].num_rows for s in by_config["turns"])
    assert n_turns == turns.height
    profile = by_config["profiles"][next(iter(by_config["profiles"]))][0]
    assert "backstory" in profile and "age" in profile  # one column per profile variable


def test_consistency_scores_travel_with_the_turns(hub_dir, scored_run):
    from datasets import load_dataset

    sidecar = pl.read_parquet(scored_run.path / "consistency.parquet")
    turns = load_dataset(str(hub_dir), "turns")
    rows = [r for s in turns for r in turns[s]]
    for r in rows:
        if r["role"] == "user":
            want = sidecar.filter((pl.col("dialogue_id") == r["dialogue_id"]) & (pl.col("turn") == r["turn"]))
            assert r["consistency"]["p2l_contradiction"] == pytest.approx(want["p2l_contradiction"][0])
        else:
            assert r["consistency"] is None
    dialogues = load_dataset(str(hub_dir), "dialogues")
    row = dialogues[next(iter(dialogues))][0]
    own = sidecar.filter(pl.col("dialogue_id") == row["dialogue_id"])
    assert row["consistency"]["prompt_to_line"] == pytest.approx((1 - own["p2l_contradiction"]).mean())


def test_reading_the_run_in_chunks_writes_the_same_data(hub_dir, scored_run, tmp_path, monkeypatch):
    """The run is read EXPORT_CHUNK dialogues at a time; two per chunk (three chunks of the six)
    gives the same rows, in the same order, in every config and split."""
    import simgen.export.hub as hub

    monkeypatch.setattr(hub, "EXPORT_CHUNK", 2)
    out = tmp_path / "ds"
    export_hub(scored_run, out, split=SplitConfig(fractions=(0.5, 0.25, 0.25), seed=0), repo_id="my-org/movie-dialogues")
    files = sorted(p.relative_to(hub_dir) for p in (hub_dir / "data").rglob("*.parquet"))
    assert files == sorted(p.relative_to(out) for p in (out / "data").rglob("*.parquet"))
    for f in files:
        assert pl.read_parquet(out / f).equals(pl.read_parquet(hub_dir / f)), f


def test_card_metadata_recipe_and_reports(hub_dir, scored_run):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(hub_dir / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "other"  # the tiny test model is not the embedded (Apache-2.0) one
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert set(configs) == {"dialogues", "turns", "profiles"} and configs["dialogues"].get("default") is True
    for c in configs.values():
        for f in c["data_files"]:
            assert list(hub_dir.glob(f["path"])), f"{f['path']} matches no file"
    assert "my-org/movie-dialogues" in card.text and "Persona consistency" in card.text

    recipe = json.loads((hub_dir / "recipe.json").read_text())
    m = scored_run.manifest
    assert recipe["seed"] == m["seed"] and recipe["scenario"]["fingerprint"] == m["scenario"]["fingerprint"]
    assert recipe["scenario"]["files_match_run"] is True
    assert recipe["model"]["user"]["model"]["fingerprint"] == m["backend"]["user"]["model"]["fingerprint"]
    for side in ("user", "assistant"):
        t = recipe["files"][f"{side}_template"]
        assert t["sha256"] == m["scenario"]["templates"][side]["sha256"] == hashlib.sha256(t["text"].encode()).hexdigest()
    assert "profile:" in recipe["files"]["scenario"]["text"]  # the profile space
    assert "transitions" in recipe["files"]["intent_model"]["text"]  # the intent model
    assert recipe["selection"]["counts"]["kept"] == m["counts"]["dialogues"]

    assert (hub_dir / "reports" / "consistency.json").read_bytes() == (scored_run.path / "reports" / "consistency.json").read_bytes()
    assert not (hub_dir / "reports" / "realism.json").exists()  # the run has no realism report


def test_profile_values_read_off_a_corpus_are_recorded_not_checked_as_files(run, tmp_path):
    """A scenario whose profile reads values off a corpus (`values_from`) records them in its files as
    `values_NAME` with no file behind them: the recipe keeps them as they are and still says whether the
    scenario's files match the run."""
    from simgen.export.hub import build_recipe
    from simgen.generation.run import load_run

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = {"path": "chitchat: column topic (train split, 3080 dialogues)", "sha256": "0" * 64}
    manifest["scenario"]["files"]["values_topic"] = entry
    (copy / "manifest.json").write_text(json.dumps(manifest))
    recipe = build_recipe(load_run(copy))
    assert recipe["scenario"]["files_match_run"] is True
    assert recipe["scenario"]["profile_values_from_corpora"] == {"topic": entry} and "values_topic" not in recipe["files"]


def test_duplicates_are_dropped_and_reported(run, tmp_path):
    """A run whose turns hold an exact and a near copy of dialogue 0: both go, the CLI says how many."""
    dup = tmp_path / "dup-run"
    shutil.copytree(run.path, dup)
    turns = pl.read_parquet(run.path / "turns.parquet")
    # dialogue 0, lengthened so one changed word leaves most shingles shared; an upper-cased copy; a copy with one word more
    long = " ".join(["we could watch a long classic film tonight with the whole family"] * 3)
    base = turns.filter(pl.col("dialogue_id") == "d0000000").with_columns(pl.col("text") + " " + long)
    exact = base.with_columns(pl.lit("d0000100").alias("dialogue_id"), pl.col("text").str.to_uppercase())
    near = base.with_columns(pl.lit("d0000101").alias("dialogue_id"),
                             pl.when(pl.col("turn") == 0).then(pl.col("text") + " yes").otherwise(pl.col("text")).alias("text"))
    frame = pl.concat([base, turns.filter(pl.col("dialogue_id") != "d0000000"), exact, near])
    frame.write_parquet(dup / "turns.parquet")
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli, ["export", "hub", str(dup), "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert "dropped 1 exact and 1 near duplicates" in result.output
    from datasets import load_dataset

    ds = load_dataset(str(out))
    kept = {i for s in ds for i in ds[s]["dialogue_id"]}
    assert "d0000000" in kept and not {"d0000100", "d0000101"} & kept
    recipe = json.loads((out / "recipe.json").read_text())
    assert {d["dialogue_id"]: d["kind"] for d in recipe["selection"]["dropped"]} == {"d0000100": "exact", "d0000101": "near"}
    assert "1 exact and 1 near-duplicate dialogues" in (out / "README.md").read_text()


def test_bad_input_is_refused_before_anything_is_written(run, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["export", "hub", str(tmp_path / "nope"), "--to", str(tmp_path / "a")])
    assert missing.exit_code == 1 and "no such run folder" in missing.output and not (tmp_path / "a").exists()

    partial = tmp_path / "partial"
    shutil.copytree(run.path, partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    (partial / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    (partial / "turns.parquet").unlink()
    res = runner.invoke(cli, ["export", "hub", str(partial), "--to", str(tmp_path / "b")])
    assert res.exit_code == 1 and "not complete" in res.output and "--resume" in res.output and not (tmp_path / "b").exists()

    for bad in ("movie-dialogues", "org/", "my org/name", "org/name/extra", "org/na--me"):
        res = runner.invoke(cli, ["export", "hub", str(run.path), "--to", str(tmp_path / "c"), "--repo-id", bad, "--push"])
        assert res.exit_code == 1 and "expected ORG/NAME" in res.output, (bad, res.output)
        assert not (tmp_path / "c").exists()
    res = runner.invoke(cli, ["export", "hub", str(run.path), "--to", str(tmp_path / "c"), "--push"])
    assert res.exit_code == 1 and "--push needs --repo-id" in res.output

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    res = runner.invoke(cli, ["export", "hub", str(run.path), "--to", str(full)])
    assert res.exit_code == 1 and "not empty" in res.output and "--overwrite" in res.output
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    res = runner.invoke(cli, ["export", "hub", str(run.path), "--to", str(run.path), "--overwrite"])
    assert res.exit_code == 1 and "holds" in res.output and (run.path / "turns.parquet").is_file()
    res = runner.invoke(cli, ["export", "hub", str(run.path), "--to", str(tmp_path / "d"), "--splits", "0.9,0.2,0.05"])
    assert res.exit_code == 1 and "sum to 1.15" in res.output and not (tmp_path / "d").exists()
    assert not list(tmp_path.glob(".*partial*"))  # no temporary folder left behind


def test_overwrite_replaces_the_folder_whole(run, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_hub(run, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "README.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # nothing written beside --to


def test_a_failed_export_leaves_no_folder(run, tmp_path, monkeypatch):
    from simgen.export import hub

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hub, "build_recipe", boom)
    with pytest.raises(OSError):
        export_hub(run, tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("good", ["my-org/movie-dialogues", "user_1/data.v2"])
def test_validate_repo_id_accepts_org_name(good):
    assert validate_repo_id(good) == good


def test_validate_repo_id_names_the_expected_form():
    with pytest.raises(ConfigError, match=r"--repo-id 'justaname': malformed; expected ORG/NAME"):
        validate_repo_id("justaname")


def test_export_refuses_a_file_as_target(run, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(RunError, match="not a folder"):
        export_hub(run, target)
    assert Path(target).read_text() == "x"


def test_realism_report_is_copied_and_summarised(run, tmp_path):
    with_realism = tmp_path / "run"
    shutil.copytree(run.path, with_realism)
    (with_realism / "reports").mkdir()
    report = {"check": "realism", "auc": 0.8125, "auc_ci": [0.71, 0.9], "verdict": "distinguishable", "reference": {"name": "iard"}}
    (with_realism / "reports" / "realism.json").write_text(json.dumps(report))
    export_hub(with_realism, tmp_path / "ds")
    assert json.loads((tmp_path / "ds" / "reports" / "realism.json").read_text()) == report
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "0.812 (95% CI 0.710-0.900)" in card and "`iard`" in card and "Persona consistency" not in card
