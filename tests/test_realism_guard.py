"""The realism guard (simgen/realism_guard.py): fitted per side on a real corpus's train split
against a run of the scenario's simulator, it passes about three unseen real lines in four and
refuses the simulator's own; the shipped files were fitted against the shipped simulator; a
scenario names them per side; with redraws, a line that reads like the simulator's is drawn again."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simgen.errors import ConfigError, DataError
from simgen.realism_guard import HUMAN, QUANTILE, SIDES, SIMULATOR, RealismGuard
from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {side: REPO / "profiles" / f"movie-recommendation.realism-guard.{side}.npz" for side in SIDES}

# hand-written lines: how people type in a recommendation chat, and a stiff model's way of saying it
PEOPLE = ["hi! im looking for a good comedy", "have you seen it?", "lol yes i loved that one", "nope not really",
          "ok cool, anything scary?", "yeah i saw that last year", "hmm maybe something older", "thanks!! bye",
          "i liked it a lot", "not a fan of horror tbh", "what about something with will ferrell?", "oh nice ill check it out"]
STIFF = ["I would greatly appreciate a recommendation for a film of the comedy genre.",
         "As a passionate cinephile, I am delighted to share my preferences with you.",
         "Furthermore, I would be grateful if you could suggest a compelling thriller.",
         "I am particularly interested in films that explore profound human themes.",
         "Thank you kindly for your thoughtful and comprehensive assistance today.",
         "Indeed, the cinematography of that film is truly remarkable and captivating.",
         "Could you kindly provide additional recommendations of a similar nature?",
         "I must express my sincere gratitude for your exceptional suggestions.",
         "Additionally, I find historical dramas to be exceptionally engaging.",
         "Certainly, I shall consider your recommendation with great enthusiasm.",
         "Moreover, I appreciate films that feature intricate and compelling narratives.",
         "Consequently, I would be delighted to explore further cinematic options."]


def _script():
    return load_script("fit_realism_guard")


@pytest.fixture(scope="module")
def hand_guard() -> RealismGuard:
    return RealismGuard.fit(PEOPLE, [f"p{i}" for i in range(len(PEOPLE))], STIFF, [f"s{i}" for i in range(len(STIFF))])


def _tiny_run(tiny_model_dir: Path, out: Path, seed: int, **kw):
    import simgen
    from simgen.config import SamplingConfig

    return simgen.generate(scenario="movie-recommendation", n=8, seed=seed, model=str(tiny_model_dir), max_turns=3, batch_size=8,
                           dtype="float32", progress=False, out=out, user=SamplingConfig(max_new_tokens=12),
                           assistant_sampling=SamplingConfig(max_new_tokens=12), **kw)


@pytest.fixture(scope="module")
def tiny_runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Runs of the tiny random model as the simulator: one to fit on (guard off), one to judge
    (another seed, guard off) and one written with the guard on."""
    root = tmp_path_factory.mktemp("realism-runs")
    return {"fit": _tiny_run(tiny_model_dir, root / "fit", 1, realism_guard=False).path,
            "fresh": _tiny_run(tiny_model_dir, root / "fresh", 2, realism_guard=False).path,
            "guarded": _tiny_run(tiny_model_dir, root / "guarded", 2).path}


@pytest.fixture(scope="module")
def fitted(iard_dir, tiny_runs, tmp_path_factory) -> dict[str, RealismGuard]:
    """The guards scripts/fit_realism_guard.py fits on IARD's train split against the tiny model's run."""
    out = tmp_path_factory.mktemp("realism-guard")
    assert _script().main(["--scenario", "movie-recommendation", "--corpus", str(iard_dir), "--run", str(tiny_runs["fit"]),
                           "--out-dir", str(out)]) == 0
    return {side: RealismGuard.load(out / f"movie-recommendation.realism-guard.{side}.npz") for side in SIDES}


def test_unseen_real_lines_pass_three_in_four_and_the_simulators_fresh_lines_miss(fitted, iard_dir, tiny_runs):
    """The threshold is the out-of-fold QUANTILE of real lines' p(human): on IARD's validation split
    (never fitted on) about three lines in four pass the shipped guards. A guard fitted against the
    tiny random model refuses nearly every line of a run of it that it never saw, and passes most real ones."""
    from simgen.corpora import load_corpus

    validation = load_corpus(iard_dir, split="validation").turns
    fresh = pl.read_parquet(tiny_runs["fresh"] / "turns.parquet")
    for side in SIDES:
        real = [t for t in validation.filter(pl.col("role") == side)["text"].to_list() if t.strip()]
        mine = [t for t in fresh.filter(pl.col("role") == side)["text"].to_list() if t.strip()]
        assert len(real) > 150 and len(mine) >= 8
        shipped = RealismGuard.load(SHIPPED[side])
        assert abs(np.mean([not shipped.misses(t) for t in real]) - (1 - QUANTILE)) < 0.12, side
        guard = fitted[side]
        assert np.mean([guard.misses(t) for t in mine]) > 0.8 and np.mean([not guard.misses(t) for t in real]) > 0.5, side
        assert guard.meta["side"] == side and guard.meta["run_seed"] == 1 and guard.meta["lowercase"] is False


def test_the_shipped_guards_were_fitted_on_the_train_split_against_the_shipped_simulator(iard_dir):
    """The shipped files name the simulator they judge by its card's hash: retraining the simulator
    without refitting them fails here. They read IARD's train split only, and a run whose seed is
    not the sim-to-real benchmark's (0)."""
    from simgen.corpora import load_corpus

    card = REPO / "profiles" / "movie-recommendation.simulator" / "simgen_tune.json"
    train = load_corpus(iard_dir, split="train")
    for side, path in SHIPPED.items():
        guard = RealismGuard.load(path)
        assert guard.meta["side"] == side and guard.meta["kind"] == "realism" and guard.meta["quantile"] == QUANTILE
        assert guard.meta["simulator_card_sha256"] == hashlib.sha256(card.read_bytes()).hexdigest()
        assert guard.meta["run_seed"] != 0
        lines = train.turns.filter((pl.col("role") == side) & (pl.col("text").str.strip_chars() != "")).height
        assert guard.meta["lines_per_intent"][HUMAN] == lines and "iard train split" in guard.meta["source"]


def test_the_script_refuses_a_run_that_cannot_be_the_simulators_side(iard_dir, tiny_runs, tmp_path, capsys):
    script = _script()
    args = ["--scenario", "movie-recommendation", "--corpus", str(iard_dir), "--out-dir", str(tmp_path)]
    assert script.main([*args, "--run", str(tiny_runs["guarded"])]) == 1
    assert "written with the realism guard on" in capsys.readouterr().err
    assert script.main([*args, "--run", str(tmp_path)]) == 1
    assert "not a simgen run folder" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(tiny_runs["fit"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["scenario"]["name"] = "chitchat"
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert script.main([*args, "--run", str(other)]) == 1
    assert "a run of scenario 'chitchat', not 'movie-recommendation'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.npz"))  # nothing written


def test_the_script_fits_on_several_runs_of_one_simulator(iard_dir, tiny_runs, tmp_path, capsys):
    """`--run A --run B`: the guard reads both runs' lines (their dialogue ids kept apart) and names
    both; a run written by another simulator is refused before anything is written."""
    script = _script()
    args = ["--scenario", "movie-recommendation", "--corpus", str(iard_dir), "--out-dir", str(tmp_path / "new"), "--sides", "user"]
    assert script.main([*args, "--run", str(tiny_runs["fit"]), "--run", str(tiny_runs["fresh"])]) == 0  # --out-dir is made
    guard = RealismGuard.load(tmp_path / "new" / "movie-recommendation.realism-guard.user.npz")
    lines = sum(pl.read_parquet(tiny_runs[k] / "turns.parquet").filter(pl.col("role") == "user").height for k in ("fit", "fresh"))
    assert guard.meta["lines_per_intent"][SIMULATOR] == lines and guard.meta["run_seed"] == [1, 2]
    dialogues = sum(json.loads((tiny_runs[k] / "manifest.json").read_text())["counts"]["dialogues"] for k in ("fit", "fresh"))
    assert guard.meta["run"] == f"{tiny_runs['fit']},{tiny_runs['fresh']}" and guard.meta["run_dialogues"] == dialogues
    other = tmp_path / "other"
    shutil.copytree(tiny_runs["fresh"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["backend"]["user"]["model"]["id"] = "/somewhere/another-simulator"
    (other / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "new" / "movie-recommendation.realism-guard.user.npz").unlink()
    assert script.main([*args, "--run", str(tiny_runs["fit"]), "--run", str(other)]) == 1
    assert "written by another simulator" in capsys.readouterr().err and not list((tmp_path / "new").glob("*.npz"))


def test_save_load_round_trip_and_bad_files(hand_guard, tmp_path):
    hand_guard.save(tmp_path / "g.npz")
    again = RealismGuard.load(tmp_path / "g.npz")
    probe = ["lol yes", "I would greatly appreciate your assistance."]
    assert np.allclose(again.p_human(probe), hand_guard.p_human(probe)) and again.threshold == hand_guard.threshold
    assert again.p_human(["haha ok cool"])[0] > again.p_human(["I shall furthermore express my gratitude."])[0]
    with pytest.raises(DataError, match=r"intent-guard.npz: not a realism guard file \(kind 'intent', expected 'realism'\)"):
        RealismGuard.load(REPO / "profiles" / "movie-recommendation.intent-guard.npz")
    (tmp_path / "bad.npz").write_text("not a guard")
    with pytest.raises(DataError, match="bad.npz: not a realism guard file.*fit_realism_guard.py"):
        RealismGuard.load(tmp_path / "bad.npz")


def _scenario_with(tmp_path: Path, block: str) -> Path:
    from tests.test_intent_guard import without_block

    for f in ("movie-recommendation.intents.yaml", "movie-recommendation.lengths.yaml"):
        shutil.copy(REPO / "profiles" / f, tmp_path / f)
    text = without_block((REPO / "profiles" / "movie-recommendation.yaml").read_text(), "realism_guard")
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("intent_guard:", "simulator:", "dialogue_guard:")))
    (tmp_path / "movie-recommendation.yaml").write_text(text + "\n" + block + "\n")
    return tmp_path / "movie-recommendation.yaml"


def test_a_scenario_names_its_guards_per_side_and_bad_ones_are_refused_naming_the_field(hand_guard, tmp_path):
    from simgen.scenario import load_scenario

    assert set(load_scenario("movie-recommendation").realism_guards) == {"user", "assistant"}
    assert load_scenario("chitchat").realism_guards == {}
    hand_guard.save(tmp_path / "u.npz")
    sc = load_scenario(_scenario_with(tmp_path, "realism_guard: {user: u.npz}"))
    assert set(sc.realism_guards) == {"user"} and sc.describe()["realism_guard"]["user"].endswith("u.npz")
    assert sc.files["realism_guard_user"]["path"].endswith("u.npz")
    for block, match in (("realism_guard: u.npz", "realism_guard: expected a mapping of side"),
                         ("realism_guard: {caller: u.npz}", "realism_guard: expected a mapping of side"),
                         ("realism_guard: {user: missing.npz}", "realism_guard: user: .*missing.npz' does not exist"),
                         ("realism_guard: {assistant: movie-recommendation.intents.yaml}",
                          "realism_guard: assistant: .*not a realism guard file")):
        with pytest.raises(ConfigError, match=match):
            load_scenario(_scenario_with(tmp_path, block))


def test_a_line_that_reads_like_the_simulators_is_a_misfit_on_either_side_but_a_closing_line_is_judged_by_closes(hand_guard):
    from simgen.generation.simulator import misfit

    state = type("S", (), {"turns": []})()
    people, stiff = "oh nice, anything scary?", "I would be delighted to explore further cinematic options."
    for role in SIDES:
        assert misfit(state, role, people, "stop", True, realism=hand_guard) is None
        assert misfit(state, role, stiff, "stop", True, realism=hand_guard) == "unreal"
        assert misfit(state, role, stiff, "stop", True) is None  # no guard, no check
    assert misfit(state, "user", "Thank you kindly for your assistance, goodbye.", "stop", True, closing=True, realism=hand_guard) is None


def test_with_redraws_a_line_that_reads_like_the_simulators_is_drawn_again(hand_guard):
    from simgen.config import SamplingConfig
    from simgen.generation.simulator import simulate
    from simgen.scenario import load_scenario
    from tests.test_simulator import Scripted, job

    scenario = load_scenario("chitchat")
    j = job(scenario, ["GREET", "ASK", "BYE"])
    S = SamplingConfig()

    def run(**kw):
        draws = iter(["hi there!", "Furthermore, I would be grateful for a compelling thriller.", "ok cool, anything scary?", "thanks, bye!"])
        answers = iter(["Moreover, I appreciate films with intricate narratives.", "yeah i saw that last year",
                        "lol yes i loved that one", "nope not really", "bye!"])
        (d,) = simulate([j], scenario, Scripted(lambda c, k: next(draws)), Scripted(lambda c, k: next(answers)), S, S, 0, 6, redraws=2, **kw)
        return [(t.role, t.text, t.redraws) for t in d.turns]

    guarded = run(realism_guard={"user": hand_guard, "assistant": hand_guard})
    assert guarded[:3] == [("user", "hi there!", 0), ("assistant", "yeah i saw that last year", 1),
                           ("user", "ok cool, anything scary?", 1)]
    user_only = run(realism_guard={"user": hand_guard})
    assert user_only[1] == ("assistant", "Moreover, I appreciate films with intricate narratives.", 0)  # a side without a guard keeps its draw
    assert run()[2] == ("user", "Furthermore, I would be grateful for a compelling thriller.", 0)


def test_a_run_records_the_guard_and_one_from_before_it_resumes_without(tiny_runs):
    from simgen.config import GenerateConfig

    on, off = (json.loads((tiny_runs[k] / "manifest.json").read_text()) for k in ("guarded", "fresh"))
    assert on["config"]["realism_guard"] is True and off["config"]["realism_guard"] is False
    assert set(on["scenario"]["realism_guard"]) == {"user", "assistant"}
    redrawn = [pl.read_parquet(tiny_runs[k] / "turns.parquet")["redraws"].sum() for k in ("guarded", "fresh")]
    assert redrawn[0] > redrawn[1]  # same seed and plans: the tiny model's noise reads like no person's
    assert GenerateConfig.from_dict({"n": 2}).realism_guard is False and GenerateConfig().realism_guard is True
