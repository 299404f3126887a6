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
    from simgen.generation.chats import assistant_system, user_message, user_system
    from simgen.generation.plan import plan

    scenario = load_scenario(path)
    for i in range(5):
        job = plan(scenario, 0, i, 6)
        assert job.profile.values["backstory"] in user_system(scenario, job, 6)["content"]
        assert user_message(scenario, job, 0, 6, None)["content"]
        assert assistant_system(scenario, job.profile, 6)["content"]


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
