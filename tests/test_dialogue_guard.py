"""The dialogue guard (simgen/dialogue_guard.py): fitted on a real corpus's train split against a
run of the scenario's simulator, it passes most unseen real dialogues and refuses the simulator's
own; its trees score as sklearn's; the shipped file was fitted on the train split against the
shipped simulator; with `--dialogue-redraws`, a dialogue that reads like the simulator's is written
again with the same latents and the take most like people's is kept, recorded and reproducible."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simgen.dialogue_guard import QUANTILE, DialogueGuard, _Trees, dialogues_of
from simgen.errors import ConfigError, DataError
from tests.conftest import load_script
from tests.test_realism_guard import PEOPLE, STIFF  # hand-written lines: how people type, and a stiff model's way of saying it

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "profiles" / "movie-recommendation.dialogue-guard.npz"


def _dialogues(lines: list[str], n: int = 12) -> list[list[tuple[str, str]]]:
    """n dialogues of four lines each, user and assistant in turn, rotating through `lines`."""
    return [[("user" if k % 2 == 0 else "assistant", lines[(i + 5 * k) % len(lines)]) for k in range(4)] for i in range(n)]


@pytest.fixture(scope="module")
def hand_guard() -> DialogueGuard:
    return DialogueGuard.fit(_dialogues(PEOPLE), _dialogues(STIFF), source="hand-written")


def _script():
    return load_script("fit_dialogue_guard")


def _tiny_run(tiny_model_dir: Path, out: Path, seed: int, n: int = 12, **kw):
    import simgen
    from simgen.config import SamplingConfig

    return simgen.generate(scenario="movie-recommendation", n=n, seed=seed, model=str(tiny_model_dir), max_turns=3, batch_size=4,
                           dtype="float32", progress=False, out=out, user=SamplingConfig(max_new_tokens=10),
                           assistant_sampling=SamplingConfig(max_new_tokens=10), **kw)


@pytest.fixture(scope="module")
def tiny_runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Tiny-model runs: one to fit on, and one seed written three ways: without the dialogue guard's
    redraws, with one, and with one again (determinism)."""
    root = tmp_path_factory.mktemp("dialogue-runs")
    return {"fit": _tiny_run(tiny_model_dir, root / "fit", 1).path,
            "off": _tiny_run(tiny_model_dir, root / "off", 2, n=6).path,
            "on": _tiny_run(tiny_model_dir, root / "on", 2, n=6, dialogue_redraws=1).path,
            "again": _tiny_run(tiny_model_dir, root / "again", 2, n=6, dialogue_redraws=1).path}


def test_its_trees_score_as_sklearns_with_missing_values_too():
    """The style member is kept as arrays, not a pickle: the arrays' raw score equals sklearn's
    decision function, NaN features (sent left or right as fitted) included."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    X[rng.random(X.shape) < 0.1] = np.nan
    model = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=15, random_state=0).fit(X, y)
    assert np.allclose(_Trees.of(model).raw(X), model.decision_function(X), atol=1e-9)


def test_a_guard_passes_unseen_real_dialogues_and_refuses_the_simulators(iard_dir, tiny_runs, tmp_path):
    """Fitted by the script on IARD's train split against a tiny-model run, it passes most of the
    validation split's dialogues (never fitted on; the threshold passes 3 in 4 out of fold) and
    refuses every dialogue of another run of the same model."""
    from simgen.corpora import load_corpus

    script = _script()
    assert script.main(["--scenario", "movie-recommendation", "--corpus", str(iard_dir), "--run", str(tiny_runs["fit"]),
                        "--out-dir", str(tmp_path)]) == 0
    guard = DialogueGuard.load(tmp_path / "movie-recommendation.dialogue-guard.npz")
    validation = dialogues_of(load_corpus(iard_dir, split="validation").turns)
    fresh = dialogues_of(pl.read_parquet(tiny_runs["off"] / "turns.parquet"))
    assert len(validation) > 25
    assert np.mean([not guard.misses(d) for d in validation]) > 0.6
    assert all(guard.misses(d) for d in fresh)
    train = load_corpus(iard_dir, split="train")
    assert guard.meta["dialogues"] == {"human": train.n_dialogues, "simulated": 12} and guard.meta["run_seed"] == 1


def test_the_shipped_guard_was_fitted_on_the_train_split_against_the_shipped_simulator(iard_dir):
    """The shipped file names the simulator it judges by its card's hash (retraining the simulator
    without refitting it fails here), read IARD's train split only and a run whose seed is not the
    sim-to-real benchmark's (0); on the validation split about three dialogues in four pass."""
    from simgen.corpora import load_corpus

    guard = DialogueGuard.load(SHIPPED)
    card = REPO / "profiles" / "movie-recommendation.simulator" / "simgen_tune.json"
    assert guard.meta["simulator_card_sha256"] == hashlib.sha256(card.read_bytes()).hexdigest()
    assert guard.meta["run_seed"] != 0 and guard.meta["quantile"] == QUANTILE
    assert guard.meta["dialogues"]["human"] == load_corpus(iard_dir, split="train").n_dialogues
    assert "iard train split" in guard.meta["source"]
    validation = dialogues_of(load_corpus(iard_dir, split="validation").turns)
    assert abs(np.mean([not guard.misses(d) for d in validation]) - (1 - QUANTILE)) < 0.2


def test_the_script_refuses_a_run_written_with_the_guards_redraws(iard_dir, tiny_runs, tmp_path, capsys):
    script = _script()
    args = ["--scenario", "movie-recommendation", "--corpus", str(iard_dir), "--out-dir", str(tmp_path)]
    assert script.main([*args, "--run", str(tiny_runs["on"])]) == 1
    assert "written with the dialogue guard's redraws on" in capsys.readouterr().err
    assert script.main([*args, "--run", str(tmp_path)]) == 1
    assert "not a simgen run folder" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.npz"))


def test_too_few_dialogues_save_load_and_bad_files(hand_guard, tmp_path):
    with pytest.raises(DataError, match="at least 10 dialogues on each side; got 3 real"):
        DialogueGuard.fit(_dialogues(PEOPLE, 3), _dialogues(STIFF), source="few")
    hand_guard.save(tmp_path / "g.npz")
    again = DialogueGuard.load(tmp_path / "g.npz")
    probe = [*_dialogues(PEOPLE, 2), *_dialogues(STIFF, 2)]
    assert np.allclose(again.scores(probe), hand_guard.scores(probe)) and again.threshold == hand_guard.threshold
    s = again.scores(probe)
    assert min(s[:2]) > max(s[2:])  # people's dialogues read more like people's
    with pytest.raises(DataError, match=r"realism-guard.user.npz: not a dialogue guard file"):
        DialogueGuard.load(REPO / "profiles" / "movie-recommendation.realism-guard.user.npz")
    (tmp_path / "bad.npz").write_text("not a guard")
    with pytest.raises(DataError, match="bad.npz: not a dialogue guard file.*fit_dialogue_guard.py"):
        DialogueGuard.load(tmp_path / "bad.npz")


def test_a_scenario_names_its_guard_and_a_bad_one_is_refused_naming_the_field(tmp_path):
    from simgen.config import GenerateConfig
    from simgen.scenario import load_scenario
    from tests.test_realism_guard import _scenario_with

    assert load_scenario("movie-recommendation").dialogue_guard is not None and load_scenario("chitchat").dialogue_guard is None
    (tmp_path / "d.npz").write_bytes(SHIPPED.read_bytes())
    sc = load_scenario(_scenario_with(tmp_path, "dialogue_guard: d.npz"))
    assert sc.describe()["dialogue_guard"].endswith("d.npz") and sc.files["dialogue_guard"]["path"].endswith("d.npz")
    for block, match in (("dialogue_guard: missing.npz", "dialogue_guard: .*missing.npz' does not exist"),
                         ("dialogue_guard: movie-recommendation.intents.yaml", "dialogue_guard: .*not a dialogue guard file")):
        with pytest.raises(ConfigError, match=match):
            load_scenario(_scenario_with(tmp_path, block))
    with pytest.raises(ConfigError, match="dialogue_redraws must be a non-negative integer"):
        GenerateConfig(dialogue_redraws=-1)
    assert GenerateConfig.from_dict({"n": 2}).dialogue_redraws == 0


def test_a_dialogue_that_reads_like_the_simulators_is_written_again_and_the_most_human_take_kept(hand_guard):
    """Seeded scripted sides: the first and third takes of the dialogue are stiff, the second
    casual. Off, the first take is kept; on, writing stops at the first take that passes; with a
    guard nothing passes, every take runs and the one that reads most like people's is kept."""
    from simgen import rng
    from simgen.data import Generation
    from simgen.generation.simulator import simulate
    from simgen.scenario import load_scenario
    from tests.test_simulator import S, Scripted, job

    scenario = load_scenario("chitchat")
    j = job(scenario, ["GREET", "ASK", "BYE"])
    take_of = {rng.derive(0, 0, stream, k, 0, t): t for stream in (rng.USER, rng.ASSISTANT) for k in range(3) for t in range(3)}
    take_of |= {rng.derive(0, 0, stream, k): 0 for stream in (rng.USER, rng.ASSISTANT) for k in range(3)}

    class Seeded(Scripted):
        def generate(self, chats, sampling, seeds):
            self.calls.append([list(c) for c in chats])
            return [Generation(self.fn(chat, seed), n_tokens=3) for chat, seed in zip(chats, seeds)]

    def line(chat, seed):
        turn = sum(m["role"] == "assistant" for m in chat)
        if turn == 2:
            return "thanks!! bye" if take_of[seed] == 1 else "Thank you kindly for your thoughtful assistance, goodbye."
        return (PEOPLE if take_of[seed] == 1 else STIFF)[turn]

    def run(**kw):
        u, a = Seeded(line), Seeded(line)
        (d,) = simulate([j], scenario, u, a, S, S, 0, 6, **kw)
        return d, len(u.calls)

    off, calls_off = run()
    assert off.take is None and off.turns[0].text == STIFF[0]
    d, calls = run(dialogue_guard=hand_guard, dialogue_redraws=0)
    assert d == off  # no redraws: the guard is not asked
    d, calls = run(dialogue_guard=hand_guard, dialogue_redraws=2)
    assert d.take == 1 and d.turns[0].text == PEOPLE[0] and calls == 2 * calls_off  # the second take passed: no third
    assert [t.intent for t in d.turns] == [t.intent for t in off.turns] and d.profile == off.profile
    strict = DialogueGuard(hand_guard.blocks, hand_guard.coef, hand_guard.intercept, hand_guard.trees, hand_guard.style_names,
                           math.inf, hand_guard.meta)
    d, calls = run(dialogue_guard=strict, dialogue_redraws=2)
    assert d.take == 1 and calls == 3 * calls_off  # every take ran; the casual one was kept


def test_a_tiny_model_run_keeps_its_latents_records_the_take_and_is_reproducible(tiny_runs):
    """The shipped guard refuses the tiny random model's dialogues, so each is written twice: the
    kept take is the one that reads more like people's, with the same profile, intents and length
    targets as the first; take 0 is the run without redraws, line for line; the run is
    byte-identical when repeated, and the manifest records the guard and the setting."""
    from simgen.data import frame_to_dialogues

    guard = DialogueGuard.load(SHIPPED)
    off, on = (frame_to_dialogues(pl.read_parquet(tiny_runs[k] / "turns.parquet")) for k in ("off", "on"))
    assert all(d.take is None for d in off) and {d.take for d in on} <= {0, 1}
    assert any(d.take == 1 for d in on)
    lines = lambda d: [(t.role, t.text) for t in d.turns]  # noqa: E731
    for a, b in zip(off, on):
        assert a.profile == b.profile
        user = lambda d: [(t.intent, t.target_words) for t in d.turns if t.role == "user"]  # noqa: E731
        n = min(len(user(a)), len(user(b)))
        assert user(a)[:n] == user(b)[:n]
        if b.take == 0:
            assert lines(a) == lines(b)
        else:
            assert lines(a) != lines(b) and guard.scores([lines(b)])[0] >= guard.scores([lines(a)])[0]
    assert (tiny_runs["on"] / "turns.parquet").read_bytes() == (tiny_runs["again"] / "turns.parquet").read_bytes()
    m = json.loads((tiny_runs["on"] / "manifest.json").read_text())
    assert m["config"]["dialogue_redraws"] == 1 and m["scenario"]["dialogue_guard"].endswith("dialogue-guard.npz")
