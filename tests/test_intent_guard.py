"""The intent guard (simgen/intent_guard.py): fitted on real labelled lines, it passes real lines of
their own intent and refuses them under another; the shipped file is what the script fits on
IARD's train split; a scenario names it; with redraws, a user line off its intent is drawn again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from simgen.errors import ConfigError, DataError
from simgen.intent_guard import QUANTILE, IntentGuard, labelled_user_lines
from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "profiles" / "movie-recommendation.intent-guard.npz"


@pytest.fixture(scope="module")
def fitted(iard_dir, tmp_path_factory) -> IntentGuard:
    """The guard scripts/fit_intent_guard.py fits on IARD's train split, into a temporary file."""
    script = load_script("fit_intent_guard")
    out = tmp_path_factory.mktemp("guard") / "g.npz"
    assert script.main(["--scenario", "movie-recommendation", "--corpus", str(iard_dir), "--out", str(out)]) == 0
    return IntentGuard.load(out)


def _lines(iard: Path, split: str):
    from simgen.corpora import CLOSING_ACTS, load_corpus
    from simgen.scenario import load_scenario

    corpus = load_corpus(iard, split=split)
    return corpus, labelled_user_lines(corpus.turns, load_scenario("movie-recommendation").intents.label_of,
                                       closing="BYE", closing_acts=CLOSING_ACTS)


def _passes(guard: IntentGuard, lines) -> tuple[list[bool], list[bool]]:
    """Whether each labelled line (text, label) passes the guard with its own intent, and whether
    each passes with another: its label shuffled among the lines (seeded), where that differs."""
    texts, labels = lines["text"].to_list(), lines["label"].to_list()
    own = [not guard.misses(t, y) for t, y in zip(texts, labels)]
    shuffled = np.random.default_rng(0).permutation(labels)
    other = [not guard.misses(t, y) for t, y, s in zip(texts, shuffled, labels) if y != s]
    return own, other


def test_the_shipped_guard_is_what_the_script_fits_on_the_train_split(fitted, iard_dir):
    shipped = IntentGuard.load(SHIPPED)
    assert shipped.classes == fitted.classes and shipped.meta == fitted.meta
    assert np.array_equal(shipped.columns, fitted.columns)  # the same hashed features, exactly
    # the same fit, up to float rounding: another numpy, scipy or BLAS build moves the last bits
    # (coef by 4e-9 of weights up to 5 under scikit-learn 1.9.1 / numpy 2.4.6), never the decisions
    for name in ("idf", "coef", "intercept"):
        assert np.allclose(getattr(shipped, name), getattr(fitted, name), rtol=1e-6, atol=1e-6), name
    assert shipped.thresholds.keys() == fitted.thresholds.keys()
    assert all(shipped.thresholds[k] == pytest.approx(fitted.thresholds[k], rel=1e-6, abs=1e-9) for k in shipped.thresholds)
    train, lines = _lines(iard_dir, "train")  # only train-split dialogues: validation and test stay unseen
    assert fitted.meta["dialogues"] == train.n_dialogues and fitted.meta["lines"] == lines.height
    assert "train split" in fitted.meta["source"]


def test_real_unseen_lines_pass_with_their_own_intent_and_miss_under_another(fitted, iard_dir):
    """Thresholds are the out-of-fold QUANTILE of real lines' p(own intent): on the validation split
    (never fitted on) about three lines in four pass with their own intent, and far fewer with an
    intent shuffled among the lines."""
    _, lines = _lines(iard_dir, "validation")
    own, other = _passes(fitted, lines)
    assert len(own) > 150 and len(other) > 100
    assert abs(np.mean(own) - (1 - QUANTILE)) < 0.12
    assert np.mean(other) < 0.35


def test_save_load_round_trip_and_bad_files(tmp_path):
    groups = [f"d{i}" for i in range(40)]
    texts = [f"hi there friend {i}" if i % 2 else f"what films do you like {i}?" for i in range(40)]
    labels = ["OTH" if i % 2 else "IQU" for i in range(40)]
    guard = IntentGuard.fit(texts, labels, groups)
    guard.save(tmp_path / "g.npz")
    again = IntentGuard.load(tmp_path / "g.npz")
    probe = ["hello there", "any good films?"]
    assert np.allclose(again.probabilities(probe), guard.probabilities(probe))
    assert again.probability("any good films?", "IQU") > again.probability("any good films?", "OTH")
    assert again.probability("hello", "NOPE") is None and not again.misses("hello", "NOPE") and not again.misses("hello", None)
    (tmp_path / "bad.npz").write_text("not a guard")
    with pytest.raises(DataError, match="bad.npz: not an intent guard file"):
        IntentGuard.load(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="at least two intents"):
        IntentGuard.fit(texts[:12], ["IQU"] * 12, groups[:12])
    import polars as pl

    with pytest.raises(DataError, match="no `intent` column"):
        labelled_user_lines(pl.DataFrame({"dialogue_id": ["a"], "turn": [0], "role": ["user"], "text": ["hi"]}), str)


def without_block(text: str, key: str) -> str:
    """YAML `text` without the top-level `key:` and the indented lines under it."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            inside = True
            continue
        if inside and line.startswith((" ", "\t")):
            continue
        inside = False
        out.append(line)
    return "\n".join(out) + "\n"


def _scenario_copy(tmp_path: Path, guard: str | None) -> Path:
    src = REPO / "profiles"
    for f in ("movie-recommendation.yaml", "movie-recommendation.intents.yaml", "movie-recommendation.lengths.yaml"):
        shutil.copy(src / f, tmp_path / f)
    text = (tmp_path / "movie-recommendation.yaml").read_text()
    text = "\n".join(line for line in without_block(text, "realism_guard").splitlines()  # the guard under test only
                     if not line.startswith(("intent_guard:", "simulator:", "dialogue_guard:")))
    if guard is not None:
        text += f"\nintent_guard: {guard}\n"
    (tmp_path / "movie-recommendation.yaml").write_text(text)
    return tmp_path / "movie-recommendation.yaml"


def test_a_scenario_names_its_guard_and_bad_ones_are_refused_naming_the_field(tmp_path):
    from simgen.scenario import load_scenario

    assert load_scenario("movie-recommendation").intent_guard is not None
    assert load_scenario("chitchat").intent_guard is not None  # fitted on rule-labelled lines (below)
    with pytest.raises(ConfigError, match="intent_guard: .*missing.npz' does not exist"):
        load_scenario(_scenario_copy(tmp_path, "missing.npz"))
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(ConfigError, match="intent_guard: .*junk.npz: not an intent guard file"):
        load_scenario(_scenario_copy(tmp_path, "junk.npz"))
    IntentGuard.fit([f"line {i}" for i in range(20)], ["GREET", "NOT_HERE"] * 10, [str(i) for i in range(20)]).save(tmp_path / "o.npz")
    with pytest.raises(ConfigError, match=r"intent_guard: .*knows intents the intent model does not have \(GREET, NOT_HERE\)"):
        load_scenario(_scenario_copy(tmp_path, "o.npz"))
    shutil.copy(SHIPPED, tmp_path / "g.npz")
    sc = load_scenario(_scenario_copy(tmp_path, "g.npz"))
    assert sc.files["intent_guard"]["path"].endswith("g.npz") and sc.describe()["intent_guard"].endswith("g.npz")
    before = sc.fingerprint
    (tmp_path / "g.npz").write_bytes(SHIPPED.read_bytes() + b"\0")  # a changed guard changes the scenario's fingerprint
    assert load_scenario(tmp_path / "movie-recommendation.yaml").fingerprint != before


@pytest.fixture(scope="module")
def chitchat_guard() -> IntentGuard:
    """A guard for chitchat's GREET / ASK / SHARE fitted on hand-written lines."""
    greet = ["hi there", "hello!", "hey, how's it going?", "good morning", "hi, nice to meet you", "hey hey", "hello friend",
             "hi! how are you doing?", "hey there, what's up", "morning!", "hello, good to see you", "hiya"]
    ask = ["what do you do for work?", "where do you live?", "do you have any hobbies?", "what are you reading lately?",
           "how was your weekend?", "do you like cooking?", "what music do you listen to?", "have you travelled much?",
           "what's your favourite food?", "do you play any sports?", "where did you grow up?", "any plans for tonight?"]
    share = ["I work as a nurse at the hospital.", "I just got back from a long run.", "I love baking bread on sundays.",
             "my cat kept me up all night.", "I'm learning to play the guitar.", "we moved to a new flat last month.",
             "I spent the day gardening.", "I'm reading a great mystery novel.", "I teach maths at a high school.",
             "I cooked pasta for my family tonight.", "I finally finished my thesis.", "I went hiking with my dog."]
    texts = greet + ask + share
    labels = ["GREET"] * len(greet) + ["ASK"] * len(ask) + ["SHARE"] * len(share)
    return IntentGuard.fit(texts, labels, [str(i) for i in range(len(texts))])


def test_a_user_line_off_its_intent_is_a_misfit_and_the_closing_line_is_judged_by_closes_alone(chitchat_guard):
    from simgen.generation.simulator import misfit

    state = type("S", (), {"turns": []})()
    line = "what do you do for work?"
    assert misfit(state, "user", line, "stop", True, intent="ASK", intent_guard=chitchat_guard) is None
    assert misfit(state, "user", line, "stop", True, intent="SHARE", intent_guard=chitchat_guard) == "off_intent"
    assert misfit(state, "user", line, "stop", True, intent="SHARE") is None  # no guard, no check
    assert misfit(state, "user", line, "stop", True, intent="JOKE", intent_guard=chitchat_guard) is None  # an intent it has no class for
    assert misfit(state, "user", "Thanks, bye!", "stop", True, closing=True, intent="BYE", intent_guard=chitchat_guard) is None


def test_with_redraws_a_line_off_its_intent_is_drawn_again(chitchat_guard):
    from simgen.config import SamplingConfig
    from simgen.generation.simulator import simulate
    from simgen.scenario import load_scenario
    from tests.test_simulator import Scripted, job

    scenario = load_scenario("chitchat")
    j = job(scenario, ["GREET", "ASK", "BYE"])

    def user_lines():
        draws = iter(["Hello there!", "I spent the day gardening.", "Where did you grow up?", "Thanks, bye!"])
        return Scripted(lambda c, k: next(draws))

    S = SamplingConfig()
    (d,) = simulate([j], scenario, user_lines(), Scripted(lambda c, k: f"Oh nice, number {k}."), S, S, 0, 6, redraws=2, intent_guard=chitchat_guard)
    users = [(t.text, t.redraws) for t in d.turns if t.role == "user"]
    assert users == [("Hello there!", 0), ("Where did you grow up?", 1), ("Thanks, bye!", 0)]
    (d,) = simulate([j], scenario, user_lines(), Scripted(lambda c, k: f"Oh nice, number {k}."), S, S, 0, 6, redraws=2)
    assert [t.text for t in d.turns if t.role == "user"][1] == "I spent the day gardening."  # no guard: the first draw stays

    # no draw passes: the line only off its intent is kept, not a later one that repeats an earlier line
    draws = iter(["Hello there!", "I spent the day gardening.", "Hello there!", "hello there", "Thanks, bye!"])
    (d,) = simulate([j], scenario, Scripted(lambda c, k: next(draws)), Scripted(lambda c, k: f"Oh nice, number {k}."), S, S, 0, 6, redraws=2,
                    intent_guard=chitchat_guard)
    users = [(t.text, t.redraws) for t in d.turns if t.role == "user"]
    assert users == [("Hello there!", 0), ("I spent the day gardening.", 2), ("Thanks, bye!", 0)]
    assert d.stop_reason == "terminal_intent"


def test_a_run_records_the_guard_and_one_from_before_it_resumes_without(tiny_model_dir, tmp_path):
    import json

    import simgen
    from simgen.config import GenerateConfig, SamplingConfig

    kw = dict(scenario="movie-recommendation", n=3, seed=2, model=str(tiny_model_dir), max_turns=3, batch_size=3, dtype="float32",
              progress=False, user=SamplingConfig(max_new_tokens=8), assistant_sampling=SamplingConfig(max_new_tokens=8))
    on = simgen.generate(out=tmp_path / "on", **kw)
    off = simgen.generate(out=tmp_path / "off", intent_guard=False, **kw)
    assert json.loads((on.path / "manifest.json").read_text())["config"]["intent_guard"] is True
    assert json.loads((off.path / "manifest.json").read_text())["config"]["intent_guard"] is False
    u_on, u_off = (r.turns.filter(r.turns["role"] == "user") for r in (on, off))
    assert u_on["redraws"].sum() > u_off["redraws"].sum()  # the tiny model's noise seldom reads like its intent
    assert GenerateConfig.from_dict({"n": 2}).intent_guard is False and GenerateConfig().intent_guard is True


def test_tfidf_picks_the_kept_columns_as_scipys_column_indexing_does(iard_dir):
    """`_tfidf` finds the kept columns among each row's nonzeros (`searchsorted`) instead of scipy's
    `counts[:, columns]`: the same matrix, byte for byte (values, column order, row pointers), on
    real lines one at a time and in a batch, and on an empty line and a made-up word."""
    from sklearn.preprocessing import normalize

    from simgen.intent_guard import _counts, _tfidf

    texts = _lines(iard_dir, "train")[1]["text"].to_list()
    shipped = IntentGuard.load(SHIPPED)

    def by_scipy(counts):  # noqa: ANN001, ANN202  (the code before)
        x = counts[:, shipped.columns].astype(np.float64)
        x.data = 1.0 + np.log(x.data)
        return normalize(x.multiply(shipped.idf).tocsr())

    batches = [list(texts[:300])] + [[t] for t in texts[300:340]] + [["zzqx"], ["", "a plain line"]]
    for batch in batches:
        counts = _counts(batch)
        ours, theirs = _tfidf(counts, shipped.columns, shipped.idf), by_scipy(counts)
        assert ours.shape == theirs.shape and np.array_equal(ours.indptr, theirs.indptr)
        assert np.array_equal(ours.indices, theirs.indices) and np.array_equal(ours.data, theirs.data)


def test_the_script_labels_a_corpus_without_labels_by_the_scenario_rules(tmp_path):
    """chitchat-dataset has no intent labels: the script labels its user lines by chitchat's
    `label_rules` (first line greeting -> GREET, a question -> ASK, <= 5 words -> REACT, else SHARE,
    the last line BYE), as `simgen realism` does, instead of refusing the corpus. Here a corpus
    written on the spot with no `intent` column; a question then passes as ASK and misses as SHARE."""
    import json

    rng = np.random.default_rng(0)
    greet = ["hi there", "hello!", "hey how are you", "hi, nice to meet you", "hello friend", "hey hey"]
    ask = ["what do you do for work?", "where do you live?", "do you have any hobbies?", "how was your weekend?",
           "do you like cooking?", "what music do you listen to?", "where did you grow up?", "any plans for tonight?"]
    share = ["I work as a nurse at the big hospital downtown.", "I just got back from a long run in the park.",
             "I love baking bread on sundays with my kids.", "my cat kept me up all night with her meowing.",
             "I am learning to play the guitar this year.", "we moved to a new flat near the river last month."]
    react = ["oh nice", "cool", "haha same", "that's great", "wow really", "sounds fun"]
    bye = ["well I have to go now, talk to you later", "bye for now, it was nice chatting"]
    rows = []
    for d in range(240):
        pools = [(ask, share, react)[rng.choice(3, p=[0.35, 0.4, 0.25])] for _ in range(4)]
        lines = [rng.choice(greet)] + [rng.choice(pool) for pool in pools]
        lines.append(rng.choice(bye))
        for k, text in enumerate(lines):
            rows.append({"dialogue_id": f"d{d}", "turn": 2 * k, "role": "user", "text": str(text)})
            rows.append({"dialogue_id": f"d{d}", "turn": 2 * k + 1, "role": "assistant", "text": "ok, tell me more"})
    corpus = tmp_path / "unlabelled.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    script = load_script("fit_intent_guard")
    out = tmp_path / "g.npz"
    assert script.main(["--scenario", "chitchat", "--corpus", str(corpus), "--out", str(out)]) == 0
    guard = IntentGuard.load(out)
    assert set(guard.classes) == {"GREET", "ASK", "SHARE", "REACT", "BYE"}
    assert guard.meta["lines_per_intent"]["GREET"] > 150  # every dialogue's first line, by the `first` rule
    question = "what kind of food do you like?"  # not a line of the corpus
    assert not guard.misses(question, "ASK") and guard.misses(question, "SHARE")


def test_chitchats_shipped_guard_passes_unseen_real_lines_with_their_own_intent():
    """chitchat's guard, fitted by the script on chitchat-dataset's train split labelled by the
    scenario's rules (refitting it takes minutes: `python scripts/fit_intent_guard.py --scenario
    chitchat --corpus chitchat`), on 3,000 lines of the validation split, never fitted on: about
    three in four pass with their own intent, far fewer with an intent shuffled among them."""
    from simgen.corpora import load_corpus
    from simgen.scenario import load_scenario

    guard = load_scenario("chitchat").intent_guard
    assert guard is not None and guard.meta["source"].startswith("chitchat train split: 3198 dialogues")
    intents = load_scenario("chitchat").intents
    lines = labelled_user_lines(intents.label_lines(load_corpus("chitchat", split="validation").turns), intents.label_of, closing="BYE")
    own, other = _passes(guard, lines.sample(3000, seed=0))
    assert abs(np.mean(own) - (1 - QUANTILE)) < 0.08
    assert np.mean(other) < 0.35
