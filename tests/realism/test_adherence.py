"""Intent adherence and dialogue shape (simgen.realism.adherence) on real IARD lines."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from simgen.corpora import split_of
from simgen.endings import closes
from simgen.realism.adherence import intent_adherence, jsd, shape
from simgen.realism.features import build_units
from simgen.scenario import load_scenario

ALIASES = dict(load_scenario("movie-recommendation").intents.aliases)


def _split(iard: pl.DataFrame, split: str) -> pl.DataFrame:
    return iard.filter(pl.col("dialogue_id").map_elements(split_of, return_dtype=pl.String) == split)


def test_real_held_out_lines_score_at_the_ceiling(iard):
    """Real test-split lines, scored as if they were synthetic, adhere as well as cross-validation
    on the reference says real lines can: the ratio is ~1 (the measure's own calibration)."""
    reference = _split(iard, "train")
    real = _split(iard, "test").with_columns(pl.col("intent").replace(ALIASES))
    block = intent_adherence(build_units(reference, real), ALIASES, None)
    assert block is not None and {"IQU", "ACC", "SEE"} <= set(block["intents"])
    assert block["synthetic"]["accuracy"] == pytest.approx(block["ceiling"]["accuracy"], abs=0.08)
    assert 0.9 < block["ratio"]["accuracy"] < 1.15
    assert block["ceiling"]["accuracy"] > 0.4  # intents are readable from real lines at all


def test_lines_that_ignore_their_intent_score_far_below(iard):
    reference = _split(iard, "train")
    real = _split(iard, "test").with_columns(pl.col("intent").replace(ALIASES))
    labels = real["intent"].to_numpy().copy()
    user = (real["role"] == "user").to_numpy() & (real["intent"].is_not_null().to_numpy())
    labels[user] = np.random.default_rng(0).permutation(labels[user])
    shuffled = real.with_columns(pl.Series("intent", labels, dtype=pl.String))
    block = intent_adherence(build_units(reference, shuffled), ALIASES, None)
    assert block["ratio"]["accuracy"] < 0.6


def test_no_shared_intents_gives_no_block(iard):
    other = iard.with_columns(pl.lit("SOMETHING").alias("intent"))
    assert intent_adherence(build_units(iard, other), {}, None) is None


def test_shape_of_real_against_itself_and_against_long_lines(iard):
    train, test = _split(iard, "train"), _split(iard, "test")
    same = shape(build_units(train, test))
    assert same["words_per_user_line"]["jsd"] < 0.05 and same["user_lines_per_dialogue"]["jsd"] < 0.15
    assert 0.2 < same["closing_endings"]["reference"] < 0.9
    long = test.with_columns(pl.when(pl.col("role") == "user").then(pl.col("text").str.replace_all(r"(.+)", "$1 " * 6))
                             .otherwise(pl.col("text")).alias("text"))
    assert shape(build_units(train, long))["words_per_user_line"]["jsd"] > 0.3


def test_midway_goodbyes_are_rare_in_real_dialogues_and_counted_where_planted(iard):
    """Real people say goodbye at the end: ~1% of lines before their role's last. A corpus whose
    every line says bye scores 1 on the lines before the last, whatever the role."""
    train, test = _split(iard, "train"), _split(iard, "test")
    real = shape(build_units(train, test))["midway_goodbyes"]
    assert real["reference"] < 0.03 and real["synthetic"] < 0.03
    byes = test.with_columns((pl.col("text") + " Bye!").alias("text"))
    assert shape(build_units(train, byes))["midway_goodbyes"]["synthetic"] == 1.0


def test_late_greetings_are_rare_in_real_dialogues_and_counted_where_planted(iard):
    """Real people greet in their first line only: under 0.5% of a role's later lines open with a
    greeting. A corpus whose every line opens with "Hi" scores 1 on the later lines, and 0.8 of
    real first lines do greet (the rule reads people's greetings)."""
    from simgen.endings import greeting

    train, test = _split(iard, "train"), _split(iard, "test")
    real = shape(build_units(train, test))["late_greetings"]
    assert real["reference"] < 0.005 and real["synthetic"] < 0.005
    hi = test.with_columns(("Hi, " + pl.col("text")).alias("text"))
    assert shape(build_units(train, hi))["late_greetings"]["synthetic"] == 1.0
    first = train.sort("dialogue_id", "turn").group_by("dialogue_id", "role", maintain_order=True).agg(pl.col("text").first())
    assert np.mean([greeting(t) for t in first["text"]]) > 0.7
    assert greeting("hello!") and greeting("Good evening, any thrillers?") and not greeting("This is hilarious") and not greeting("Okay hi")


def test_closing_rule_and_jsd_bounds():
    assert closes("Thanks so much, bye!") and closes("have a great night") and not closes("I like thrillers")
    a = np.array([1, 2, 3, 4])
    assert jsd(a, a, (1, 2, 3, 4)) == 0 and jsd(a, a + 100, (1, 2, 3, 4, 50)) == pytest.approx(1.0)


def test_habits_spread_as_wide_in_real_dialogues_and_narrow_where_lines_are_drawn_alone(iard):
    """People keep their typing habits through a dialogue: per dialogue, the share of user lines
    starting with a capital (or ending in punctuation, ...) varies across real dialogues about as
    much in the train split as in the test split. The same real lines dealt to dialogues at random,
    as a simulator that draws each line's style afresh would, keep the mean and lose the spread."""
    train, test = _split(iard, "train"), _split(iard, "test")
    same = shape(build_units(train, test))["habits_per_dialogue"]
    assert set(same) == {"starts_upper", "ends_punct", "all_lower", "exclaims", "words"}
    for name in ("starts_upper", "ends_punct", "words"):
        assert 0.6 < same[name]["spread_ratio"] < 1.6, name
    user = (train["role"] == "user").to_numpy()
    texts = train["text"].to_numpy().copy()
    texts[user] = np.random.default_rng(0).permutation(texts[user])
    dealt = shape(build_units(train, train.with_columns(pl.Series("text", texts))))["habits_per_dialogue"]
    for name in ("starts_upper", "ends_punct", "words"):
        ref, syn = dealt[name]["reference"]["mean"], dealt[name]["synthetic"]["mean"]
        assert syn == pytest.approx(ref, rel=0.03)
        assert dealt[name]["spread_ratio"] < (0.9 if name == "words" else 0.75), (name, dealt[name])  # long lines stay long


def test_habits_probe_gives_dealt_lines_back_the_real_spread(iard):
    """benchmarks/habits_probe.py restyles each dialogue's user lines after one real train dialogue's
    habits: on real lines dealt to dialogues at random (the spread lost, as in the test above), the
    donated habits bring the spread of capitals and end punctuation back near the real one, and
    leave every line's words as they were."""
    from tests.conftest import load_benchmark

    probe = load_benchmark("habits_probe")
    assert probe.restyle("hi there!", True, False) == "Hi there" and probe.restyle("Hi there", False, True) == "hi there."
    train = _split(iard, "train")
    user = (train["role"] == "user").to_numpy()
    texts = train["text"].to_numpy().copy()
    texts[user] = np.random.default_rng(0).permutation(texts[user])
    dealt = train.with_columns(pl.Series("text", texts))
    donated = probe.donate(dealt, probe.donor_habits(train), seed=0)

    def words(texts: pl.Series) -> list[str]:
        return [re.sub(r"[.!?]+$", "", t.strip()).rstrip().lower() for t in texts]

    assert words(donated["text"]) == words(dealt["text"])
    # the verbosity habit: real dialogues hold lines of like length a little (IARD train: 0.08), dealt ones not at all
    assert probe.length_icc(train) > 0.04 and abs(probe.length_icc(dealt)) < 0.03
    before = shape(build_units(train, dealt))["habits_per_dialogue"]
    after = shape(build_units(train, donated))["habits_per_dialogue"]
    for name in ("starts_upper", "ends_punct"):
        assert before[name]["spread_ratio"] < 0.75 and after[name]["spread_ratio"] > 0.85, (name, before[name], after[name])


def test_a_reference_without_act_labels_is_labelled_by_the_runs_scenarios_rules(tmp_path):
    """chitchat-dataset has no act labels: `compare` labels it with the run's scenario's `label_rules`, so a
    chitchat run gets an adherence block; real held-out lines, given the intents those rules name, score
    at the ceiling (the measure's calibration on rule labels)."""
    from simgen.corpora import Corpus, load_corpus
    from simgen.realism.config import RealismConfig
    from simgen.realism.report import compare
    from simgen.scenario import resolve_scenario_path

    rules = load_scenario("chitchat").intents
    train = load_corpus("chitchat", split="train", max_dialogues=60, seed=0)
    test = load_corpus("chitchat", split="test", max_dialogues=60, seed=0)
    assert "intent" not in train.turns.columns or train.turns["intent"].null_count() == train.turns.height
    run = Corpus("run", str(tmp_path / "run"), rules.label_lines(test.turns), kind="run",
                 manifest={"scenario": {"name": "chitchat", "path": str(resolve_scenario_path("chitchat"))}})
    cfg = RealismConfig(use_embeddings=False, discriminators=("tfidf", "style"), n_boot=50, n_perm=50, mauve_seeds=1, attributes=False)
    block = compare(run, train, config=cfg)["intent_adherence"]
    assert block is not None and {"ASK", "SHARE", "REACT"} <= set(block["intents"])
    assert 0.85 < block["ratio"]["accuracy"] < 1.15
    assert block["per_intent"]["ASK"]["ceiling_recall"] > 0.6  # a question mark is easy to read
    # the same run with its intents shuffled among its lines adheres far less
    user = run.turns["role"] == "user"
    shuffled = run.turns.with_columns(pl.when(user).then(pl.col("intent").shuffle(seed=1)).otherwise(pl.col("intent")).alias("intent"))
    worse = compare(Corpus("run", str(tmp_path / "run"), shuffled, kind="run", manifest=run.manifest), train, config=cfg)["intent_adherence"]
    assert worse["ratio"]["accuracy"] < block["ratio"]["accuracy"] - 0.2
