"""scripts/fit_intents.py: an intent model fitted on a corpus's labelled (or rule-labelled) train lines,
and the chitchat model it wrote to profiles/ (chitchat-dataset ships on PyPI, so this always runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simgen.errors import DataError
from simgen.intents import load_intent_model
from simgen.scenario import load_scenario
from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "fit_intents.py"
fit_intents = load_script("fit_intents")

MODEL = load_intent_model({
    "intents": {"ASK": "ask", "TELL": "tell", "HUM": "never labelled", "BYE": {"description": "bye", "terminal": True}},
    "start": {"ASK": 1.0},
    "transitions": {"ASK": {"BYE": 1}, "TELL": {"BYE": 1}, "HUM": {"BYE": 1}},
    "modifiers": [{"when": "x > 1", "scale": {"HUM": 2.0}}, {"when": "x < 1", "scale": {"BYE": 2.0, "HUM": 3.0}, "from": ["HUM", "TELL"]},
                  {"when": "x == 1", "scale": {"BYE": 2.0}, "from": ["HUM"]}],
    "label_rules": [{"intent": "BYE", "when": "last"}, {"intent": "ASK", "when": "question"}, {"intent": "TELL"}],
}, "m.yaml", ("x",))


def test_start_and_transitions_are_the_smoothed_counts_and_unused_intents_are_left_out():
    seqs = [["ASK", "TELL", "BYE"], ["ASK", "ASK", "BYE"], ["TELL", "BYE"], ["ASK", None, "BYE"]]
    raw, counts = fit_intents.fit(MODEL, seqs, alpha=0.5)
    assert list(raw["intents"]) == ["ASK", "TELL", "BYE"] and counts["dropped"] == ["HUM"]
    assert raw["start"] == {"ASK": 0.75, "TELL": 0.25}
    # ASK -> ASK 1, TELL 1, BYE 1 (the None breaks "ASK, None, BYE"): +0.5 each over 3 targets
    assert raw["transitions"]["ASK"] == {"ASK": 0.3334, "TELL": 0.3333, "BYE": 0.3333}  # the residue: the first of the ties
    assert raw["transitions"]["TELL"] == {"ASK": 0.1429, "TELL": 0.1429, "BYE": 0.7142}  # (0.5, 0.5, 2 + 0.5) / 3.5
    assert "BYE" not in raw["transitions"]
    # the ones about HUM alone (as a target, or as their only row) go with HUM; the others lose it
    assert raw["modifiers"] == [{"when": "x < 1", "scale": {"BYE": 2.0}, "from": ["TELL"]}]
    refit = load_intent_model(raw, "refit.yaml", ("x",))  # what it writes loads, rules included
    assert refit.label_rules == MODEL.label_rules and refit.names == ("ASK", "TELL", "BYE")


def test_a_corpus_with_no_terminal_line_is_a_clear_error():
    with pytest.raises(DataError, match=r"no train line is labelled with a terminal intent \(BYE\); add a label rule"):
        fit_intents.fit(MODEL, [["ASK", "TELL"]], alpha=0.1)


def test_the_committed_chitchat_intent_model_is_what_the_script_fits(tmp_path):
    out = tmp_path / "chitchat.intents.yaml"
    subprocess.run([sys.executable, str(SCRIPT), "--scenario", "chitchat", "--corpus", "chitchat", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    committed = REPO / "profiles" / "chitchat.intents.yaml"
    assert out.read_text() == committed.read_text()
    model = load_scenario("chitchat").intents
    assert model.label_rules and model.names == ("GREET", "ASK", "SHARE", "REACT", "BYE")
