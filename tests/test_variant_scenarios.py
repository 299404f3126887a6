"""The variant scenarios in benchmarks/scenarios (levers measured in the README and left off): they load and
render with today's schema, and the chitchat-campus variant samples the population it says it does."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simgen.scenario import load_scenario
from tests.conftest import load_benchmark

REPO = Path(__file__).parents[1]
VARIANTS = sorted((REPO / "benchmarks" / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", VARIANTS, ids=[p.stem for p in VARIANTS])
def test_every_variant_scenario_loads_and_renders_both_sides(path):
    scenario = load_scenario(path)
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = scenario.profile.sample(rng).values
        context = {**values, "profile": values, "intent": "X", "intent_description": "Say hi.", "intents": [],
                   "target_words": 8, "turn": 0, "max_turns": 6, "scenario": scenario.name}
        user = scenario.user_template.render("system", context)
        assert values["backstory"] in user
        assert scenario.user_template.render("turn", context)
        assistant = {**{k: values[k] for k in scenario.profile.shared}, "scenario": scenario.name, "turn": 0, "max_turns": 6}
        assert scenario.assistant_template.render("system", assistant)


def test_the_campus_variant_samples_students_with_a_year_and_a_major_and_missions_only_from_20():
    scenario = load_scenario(REPO / "benchmarks" / "scenarios" / "chitchat-campus.yaml")
    rng = np.random.default_rng(1)
    draws = [scenario.profile.sample(rng).values for _ in range(2000)]
    students = [d for d in draws if d["occupation"] == "college student"]
    share = len(students) / len(draws)
    # 0.8 is the declared weight; the age constraint (students over 40 redrawn) moves it a little, so 5 SE.
    assert abs(share - 0.8) < 5 * math.sqrt(0.8 * 0.2 / len(draws)), share
    for d in draws:
        student = d["occupation"] == "college student"
        assert (d["year"] != "none") == student and (d["major"] != "none") == student, d
        assert ("at BYU in Provo" in d["backstory"]) == student, d["backstory"]
        assert d["mission"] == "none" or d["age"] >= 20, d
        assert ("church mission in" in d["backstory"]) == (d["mission"] != "none"), d["backstory"]
    years = {y: sum(d["year"] == y for d in students) / len(students) for y in ("freshman", "sophomore", "junior", "senior")}
    assert years["freshman"] > years["sophomore"] and years["junior"] > years["senior"], years


def test_word_share_counts_dialogues_that_use_a_whole_word():
    dialogue_share = load_benchmark("word_share").dialogue_share
    turns = pl.DataFrame({"dialogue_id": ["a", "a", "b", "c"], "text": ["I love BYU", "my JOB is fine", "jobs, jobs", "byu!"]})
    assert dialogue_share(turns, ["byu", "job", "mission"]) == {"byu": 2 / 3, "job": 1 / 3, "mission": 0.0}
