"""`simgen tune` (simgen/tune.py) on the tiny model and real dialogues: examples, training, the
folder it writes, loading it through --model, and bad input."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from simgen.cli import cli
from simgen.corpora import split_of
from simgen.data import frame_to_dialogues
from simgen.errors import DataError, ModelError
from simgen.models import resolve_model
from simgen.scenario import load_scenario
from simgen.tune import (TuneConfig, complement_variables, dialogue_key, examples, matched_profile, mentions, persona_weighted,
                         read_splits, stated_values, wordiness_values)

FAST = ["--max-steps", "4", "--batch-size", "4", "--max-dialogues", "8", "--learning-rate", "0.005", "--save-every", "2",
        "--max-length", "384", "-q"]


@pytest.fixture(scope="module")
def tuned(tiny_model_dir, tmp_path_factory, iard_dir) -> Path:
    out = tmp_path_factory.mktemp("tune") / "movie"
    result = CliRunner().invoke(cli, ["tune", "movie-recommendation", "--corpus", str(iard_dir), "--out", str(out),
                                      "--model", str(tiny_model_dir), *FAST])
    assert result.exit_code == 0, result.output
    return out


def test_the_loss_falls_and_the_card_says_what_was_trained(tuned):
    card = json.loads((tuned / "simgen_tune.json").read_text())
    assert card["train_loss"]["last"] < card["train_loss"]["first"]
    assert card["validation_loss"] < card["base_validation_loss"]
    assert card["steps"] == 4 and card["method"] == "lora" and (tuned / "adapter_model.safetensors").is_file()
    assert card["resumed_from_step"] is None and card["seconds"] == card["seconds_this_run"] > 0
    assert card["corpus"]["dialogues"] == {"train": 8, "validation": 2} and len(card["corpus"]["examples_sha256"]) == 64
    assert card["corpus"]["train_examples_per_epoch"] == card["corpus"]["examples"]["train"]  # --persona-weight 1 repeats nothing
    assert 0 < card["corpus"]["train_lines_stating_persona"] < card["corpus"]["examples"]["train"]
    assert not (tuned / "checkpoints").exists() and "test split was never read" in (tuned / "README.md").read_text()


def test_the_folder_carries_an_index_of_its_training_lines_for_the_copy_guard(tuned, tiny_model_dir, iard_dir):
    from types import SimpleNamespace

    from simgen.copies import CopyIndex
    from simgen.corpora import load_corpus
    from simgen.generation.pipeline import trained_lines

    index = CopyIndex.load(tuned / "trained_lines.npz")
    train = load_corpus(iard_dir, split="train", max_dialogues=8, seed=0).turns.filter(pl.col("role") == "user")
    long = [t for t in train["text"].to_list() if len(t.split()) >= 6]
    assert long and all(index.copies(t) for t in long)  # every user line it learned is refused ...
    test_lines = load_corpus(iard_dir, split="test").turns.filter(pl.col("role") == "user")["text"].to_list()
    assert index.rate(test_lines, min_words=4) < 0.1  # ... and lines it never saw mostly are not
    # `simgen generate` finds it through the backend's model: a tuned folder's, not a plain model's
    assert trained_lines(SimpleNamespace(source=SimpleNamespace(id=str(tuned)))) is not None
    assert trained_lines(SimpleNamespace(source=SimpleNamespace(id=str(tiny_model_dir)))) is None
    assert trained_lines(SimpleNamespace()) is None  # a server or your own function
    from simgen.backends.steering import CappedBackend, PersonaAxis

    inner = SimpleNamespace(scorer=True, name="transformers", batched=True, seeded=True, source=SimpleNamespace(id=str(tuned)))
    capped = CappedBackend(inner, layer=0, threshold=0.0, axis=PersonaAxis(0, (1.0,), 0.0, 1.0, 1, 1))
    assert trained_lines(capped) is not None  # under --persona-cap the guard still reads the tuned folder's index


def test_the_folder_generates_through_model_and_the_manifest_names_it(tuned, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["generate", "-n", "2", "--max-turns", "2", "--model", str(tuned), "--dtype", "float32",
                                      "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"]["user"]["model"]["id"] == str(tuned)
    assert pl.read_parquet(out / "turns.parquet").height >= 2


def _on_another_base(tuned: Path, folder: Path) -> Path:
    """A copy of the tuned folder whose card says it was trained on another base model."""
    folder.mkdir()
    for f in tuned.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    card = json.loads((folder / "simgen_tune.json").read_text())
    card["base_model"]["fingerprint"] = "0" * 64
    (folder / "simgen_tune.json").write_text(json.dumps(card))
    return folder


def test_an_adapter_on_another_base_is_refused_before_anything_generates(tuned, tmp_path):
    moved = _on_another_base(tuned, tmp_path / "adapter")
    with pytest.raises(ModelError, match="a different model"):
        resolve_model(str(moved))
    result = CliRunner().invoke(cli, ["generate", "-n", "1", "--model", str(moved), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code != 0 and "a different model" in result.output and not (tmp_path / "r" / "turns.parquet").exists()


def test_examples_are_the_simulators_own_chats_from_the_train_split_only(iard_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    scenario = load_scenario("movie-recommendation")
    splits = read_splits(iard_dir, max_dialogues=6)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = examples(scenario, splits["train"], tok, 4096, 0, 6)
    assert rows and {split_of(r["dialogue_id"]) for r in rows} == {"train"}
    first = next(r for r in rows if r["user_turn"] == 0)
    assert first["prompt"][0]["role"] == "system" and "You are" in first["prompt"][0]["content"]
    assert first["prompt"][-1]["role"] == "user" and first["completion"][0]["role"] == "assistant"
    # a tight token budget drops the oldest exchanges but keeps the persona and the instruction
    short = examples(scenario, splits["train"], tok, 400, 0, 6)
    late = max(short, key=lambda r: r["user_turn"])
    assert late["prompt"][0] == next(r for r in rows if r["dialogue_id"] == late["dialogue_id"])["prompt"][0]


def test_a_corpus_without_act_labels_trains_on_the_intents_its_scenarios_label_rules_give(tiny_model_dir):
    """chitchat-dataset has no act labels: each user line's chat says the intent chitchat's `label_rules` give
    it, the instruction `simgen generate` sends for that intent (not an empty one)."""
    from transformers import AutoTokenizer

    from simgen.corpora import Corpus

    scenario = load_scenario("chitchat")
    lines = ["hey there!", "hi", "where are you from?", "Utah. I work nights at a diner and it wears me out.", "nice", "ok bye"]
    turns = pl.DataFrame({"dialogue_id": ["c1"] * 6, "turn": list(range(6)), "role": ["user", "assistant"] * 3, "text": lines})
    rows = examples(scenario, Corpus("c", "c", turns), AutoTokenizer.from_pretrained(tiny_model_dir), 4096, 0, 6)
    said = {r["completion"][0]["content"]: r["prompt"][-1]["content"] for r in rows if r["role"] == "user"}
    for line, intent in (("hey there!", "GREET"), ("where are you from?", "ASK"), ("nice", "BYE")):
        assert scenario.intents.get(intent).description in said[line], (line, intent)


def test_mentions_count_plainly_stated_values_and_negated_ones_for_complement_variables():
    from simgen.data import ProfileLatent

    p = ProfileLatent({"name": "Sam", "age": 34, "liked_genres": ["comedy", "science fiction"], "disliked_genres": ["musical"],
                       "favorite_movie": "The Matrix", "patience": 0.4})
    complements = frozenset({"disliked_genres"})
    assert mentions(p, "I love comedies and science fiction films", complements) == 2  # "comedies" begins with comedy's stem
    assert mentions(p, "I don't really like musicals", complements) == 1  # a disliked value counts where it is negated...
    assert mentions(p, "Musicals are great", complements) == 0  # ...not where it is said plainly
    assert mentions(p, "I'm not into comedy at all", complements) == 0  # and a liked one the other way round
    assert mentions(p, "Science is fun", complements) == 0  # every content word of the value must be there
    assert mentions(p, "The Matrix! And I'm 34.", complements) == 2
    assert mentions(p, "patience 0.4", complements) == 0  # float traits are not stated facts
    assert mentions(p, "I like musicals", frozenset()) == 1  # without complements every value counts when plain


def test_profile_matching_picks_the_persona_the_real_lines_agree_with():
    from simgen import rng

    scenario = load_scenario("movie-recommendation")
    complements = complement_variables(scenario)
    assert complements == {"disliked_genres"}
    text = "Hi! I'm looking for a good horror movie tonight. I don't like musicals at all."
    plain = scenario.profile.sample(rng.generator(0, 7, rng.PROFILE))
    assert matched_profile(scenario, 0, 7, text, 1) == plain  # k = 1 is the sample tuning always used
    best = matched_profile(scenario, 0, 7, text, 32)
    candidates = [scenario.profile.sample(rng.generator(0, 7, rng.PROFILE, j)) for j in range(32)]
    assert candidates[0] == plain and mentions(best, text, complements) == max(mentions(c, text, complements) for c in candidates)
    assert mentions(best, text, complements) >= 1 and mentions(plain, text, complements) == 0
    assert matched_profile(scenario, 0, 7, text, 32) == best  # seeded: the same dialogue gets the same persona
    assert "horror" in matched_profile(scenario, 0, 7, "Any good horror movies?", 32)["liked_genres"]
    assert "musical" in matched_profile(scenario, 0, 7, "Something tonight, but I can't stand musicals.", 32)["disliked_genres"]


def test_what_a_real_person_states_about_themselves_sets_their_training_persona(tiny_model_dir):
    """chitchat's `stated` patterns read the persona off the person's own lines: "I'm from Provo" makes the
    training persona's hometown Provo (a value the profile space never samples), the hobbies they say they
    love become its hobbies, an age out of the variable's range or a stop word is no value, and
    `--ignore-stated` keeps the sampled persona."""
    from transformers import AutoTokenizer

    from simgen.corpora import Corpus

    scenario = load_scenario("chitchat")
    assert stated_values(scenario, ["hi!", "I'm originally from Provo, how about you?", "i love hiking and i really enjoy playing board games.",
                                    "my name is Casey", "i'm 19.", "i also love hiking"]) == {
        "hometown": "Provo", "hobbies": ["hiking", "playing board games"], "name": "Casey", "age": 19}
    assert stated_values(scenario, ["i'm 99.", "i'm from there", "i like being outside", "where are you from?"]) == {}
    assert stated_values(scenario, ["I like cooking", "i love hiking", "i enjoy running", "i like painting"])["hobbies"] == [
        "cooking", "hiking", "running"]  # at most the variable's largest k (3)

    lines = ["hey there!", "hi, where are you from?", "I'm from Provo. i love hiking", "nice", "ok bye", "bye"]
    turns = pl.DataFrame({"dialogue_id": ["c1"] * 6, "turn": list(range(6)), "role": ["user", "assistant"] * 3, "text": lines})
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [r for r in examples(scenario, Corpus("c", "c", turns), tok, 4096, 0, 6) if r["role"] == "user"]
    assert all("from Provo" in r["prompt"][0]["content"] and "hiking" in r["prompt"][0]["content"] for r in rows)
    assert all(r["stated"] == ["hobbies", "hometown"] for r in rows)
    assert [r["states_persona"] for r in rows] == [False, True, False]
    sampled = [r for r in examples(scenario, Corpus("c", "c", turns), tok, 4096, 0, 6, stated=False) if r["role"] == "user"]
    assert not any("Provo" in r["prompt"][0]["content"] for r in sampled) and all(r["stated"] == [] for r in sampled)


def test_a_corpus_column_a_variable_takes_its_values_from_sets_each_real_dialogues_value(tiny_model_dir):
    """The chitchat-topic variant's `topic` comes from the corpus's `topic` column (the conversation starter
    the chat app showed): every user line of a real chat is trained under that chat's own topic, not the
    one the profile sample drew; a chat without one, or a corpus without the column, keeps the sampled topic."""
    from transformers import AutoTokenizer

    from simgen.corpora import Corpus
    from simgen.tune import corpus_values

    scenario = load_scenario(Path(__file__).parents[1] / "benchmarks" / "scenarios" / "chitchat-topic.yaml")
    drawn = {d: matched_profile(scenario, 0, dialogue_key(d), "", 1)["topic"] for d in ("c1", "c2")}
    own = next(t for t in [v for v in scenario.profile.variables if v.name == "topic"][0].values_from.values if t not in drawn.values())
    lines = ["hey there!", "hi", "unicorns would be cool", "true", "ok bye", "bye"]
    turns = pl.DataFrame({"dialogue_id": ["c1"] * 6 + ["c2"] * 6, "turn": list(range(6)) * 2, "role": ["user", "assistant"] * 6,
                          "text": lines * 2, "topic": [None, own, None, None, None, None] + [None] * 5 + [" "]})
    assert corpus_values(scenario, turns) == {"c1": {"topic": own}}
    assert corpus_values(scenario, turns.drop("topic")) == {}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def topics(frame: pl.DataFrame) -> dict[str, set[str]]:
        rows = [r for r in examples(scenario, Corpus("c", "c", frame), tok, 4096, 0, 6) if r["role"] == "user"]
        assert len(rows) == 6
        return {d: {t for t in (own, *drawn.values()) for r in rows if r["dialogue_id"] == d and f'"{t}"' in r["prompt"][0]["content"]}
                for d in ("c1", "c2")}

    assert topics(turns) == {"c1": {own}, "c2": {drawn["c2"]}}
    assert topics(turns.drop("topic")) == {"c1": {drawn["c1"]}, "c2": {drawn["c2"]}}


def test_a_shared_variable_sets_the_assistant_sides_prompt_from_the_corpus_too(tiny_model_dir):
    """With `topic` shared (chitchat-topic-shared), the other side's training prompts hold the chat's own
    starter as well: both people of a real chat were shown it."""
    from transformers import AutoTokenizer

    from simgen.corpora import Corpus

    scenario = load_scenario(Path(__file__).parents[1] / "benchmarks" / "scenarios" / "chitchat-topic-shared.yaml")
    topics = [v for v in scenario.profile.variables if v.name == "topic"][0].values_from.values
    turns = pl.DataFrame({"dialogue_id": ["c1"] * 4 + ["c2"] * 4, "turn": list(range(4)) * 2, "role": ["user", "assistant"] * 4,
                          "text": ["hey", "hi!", "fun topic", "bye"] * 2, "topic": [topics[0]] * 4 + [topics[1]] * 4})
    rows = examples(scenario, Corpus("c", "c", turns), AutoTokenizer.from_pretrained(tiny_model_dir), 4096, 0, 6, roles="both")
    for r in rows:
        own = topics[0] if r["dialogue_id"] == "c1" else topics[1]
        assert f'"{own}"' in r["prompt"][0]["content"], r
    assert {r["role"] for r in rows} == {"user", "assistant"}


def test_matched_examples_give_personas_that_the_dialogues_user_lines_mention(iard_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    scenario = load_scenario("movie-recommendation")
    splits = read_splits(iard_dir, max_dialogues=40)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    from simgen.data import ProfileLatent

    complements = complement_variables(scenario)
    genres = next(v for v in scenario.profile.variables if v.name == "liked_genres").base.values
    users = splits["train"].turns.filter(pl.col("role") == "user").group_by("dialogue_id").agg(pl.col("text").str.join(" "))
    # the genres each dialogue's user lines say they like
    liked = {d: [g for g in genres if mentions(ProfileLatent({"liked_genres": [g]}), text, complements)] for d, text in users.iter_rows()}

    def agreeing(k: int) -> float:  # share of dialogues whose persona block states a genre its user lines like
        rows = [r for r in examples(scenario, splits["train"], tok, 4096, 0, 14, profile_match=k) if r["user_turn"] == 0]
        hits = [any(g in r["prompt"][0]["content"] for g in liked[r["dialogue_id"]]) for r in rows]
        return sum(hits) / len(hits)

    assert agreeing(16) > agreeing(1) + 0.3


def test_wordiness_sets_the_variable_from_each_real_dialogues_own_words_at_the_variables_shares(iard_dir, tiny_model_dir):
    """`--wordiness verbosity`: each train dialogue's persona says the verbosity its user showed (the
    tersest 35% terse, the next 45% casual, the wordiest 20% chatty, the profile space's shares),
    and the prompt the simulator learns from says so; without it the value is sampled and tells
    nothing about the lines."""
    from transformers import AutoTokenizer

    from simgen.errors import ConfigError
    from simgen.lengths import words

    scenario = load_scenario("movie-recommendation")
    splits = read_splits(iard_dir)
    dialogues = list(frame_to_dialogues(splits["train"].turns))
    earned = wordiness_values(scenario, "verbosity", dialogues)
    share = {v: sum(e == v for e in earned.values()) / len(earned) for v in ("terse", "casual", "chatty")}
    assert share == pytest.approx({"terse": 0.35, "casual": 0.45, "chatty": 0.2}, abs=0.01)
    mean_words = {d.dialogue_id: np.mean([words(t.text) for t in d.turns if t.role == "user" and t.text.strip()])
                  for d in dialogues if d.dialogue_id in earned}
    by_value = {v: np.mean([mean_words[k] for k, e in earned.items() if e == v]) for v in ("terse", "casual", "chatty")}
    assert by_value["terse"] < by_value["casual"] < by_value["chatty"] and by_value["chatty"] > 2 * by_value["terse"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    few = read_splits(iard_dir, max_dialogues=30)["train"]
    rows = [r for r in examples(scenario, few, tok, 4096, 0, 14, wordiness="verbosity") if r["user_turn"] == 0]
    phrase = {"terse": "in one short sentence", "casual": "in one or two short sentences", "chatty": "in two or three friendly sentences"}
    mine = wordiness_values(scenario, "verbosity", list(frame_to_dialogues(few.turns)))
    assert rows and all(phrase[mine[r["dialogue_id"]]] in r["prompt"][0]["content"] for r in rows)
    for bad, match in (("verbositty", "Did you mean 'verbosity'"), ("age", "not an unconditional categorical")):
        with pytest.raises(ConfigError, match=match):
            wordiness_values(scenario, bad, dialogues)


def test_persona_weight_repeats_the_user_lines_that_state_their_persona(iard_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    scenario = load_scenario("movie-recommendation")
    splits = read_splits(iard_dir, max_dialogues=40)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = examples(scenario, splits["train"], tok, 4096, 0, 14, roles="both", profile_match=32)
    complements = complement_variables(scenario)
    texts = splits["train"].turns.group_by("dialogue_id").agg(pl.col("text").filter(pl.col("role") == "user").str.join(" "))
    persona = {d: matched_profile(scenario, 0, dialogue_key(d), text, 32) for d, text in texts.iter_rows()}
    for r in rows:  # the flag is the line's own mentions of its dialogue's persona, and only user lines carry it
        assert r["states_persona"] == (r["role"] == "user" and mentions(persona[r["dialogue_id"]], r["completion"][0]["content"], complements) > 0)
    stating = [r for r in rows if r["states_persona"]]
    assert 0.05 < len(stating) / sum(r["role"] == "user" for r in rows) < 0.6  # real seekers often say what they like
    assert persona_weighted(rows, 1) == rows
    tripled = persona_weighted(rows, 3)
    assert len(tripled) == len(rows) + 2 * len(stating)
    assert all(sum(x is r for x in tripled) == (3 if r["states_persona"] else 1) for r in rows)


ANSWERS = Path(__file__).resolve().parents[1] / "profiles" / "movie-recommendation.answers.yaml"


def test_answers_add_lines_in_which_the_user_answers_a_question_from_its_persona(iard_dir, tiny_model_dir):
    """`--answers FILE`: beside a train user line, at the file's share, a row whose chat has the other side ask
    one of the file's questions in place of its last line, under the file's intent, and whose line states the
    persona's own value; the real rows are unchanged, and the same seed draws the same rows."""
    from transformers import AutoTokenizer

    from simgen.tune import read_answers

    scenario, tok = load_scenario("movie-recommendation"), AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = read_answers(ANSWERS, scenario)
    splits = read_splits(iard_dir, max_dialogues=60)
    plain = examples(scenario, splits["train"], tok, 4096, 0, 14, profile_match=32)
    rows = examples(scenario, splits["train"], tok, 4096, 0, 14, profile_match=32, answers=answers)
    assert [r for r in rows if r["answers"] is None] == plain
    assert rows == examples(scenario, splits["train"], tok, 4096, 0, 14, profile_match=32, answers=answers)
    added = [r for r in rows if r["answers"]]
    n, p = len(plain), answers.share
    assert abs(len(added) - n * p) < 4 * (n * p * (1 - p)) ** 0.5, (len(added), n)  # each line's chance is the share
    assert {r["answers"] for r in added} == {name for name, _, _ in answers.variables}
    questions = {name: asked for name, asked, _ in answers.variables}
    instruction = scenario.intents.get("ANS").description
    declared = {v.name: [str(x) for d in v.distributions for x in d.values] for v in scenario.profile.variables if v.type == "categorical"}
    for r in added:
        persona, said = r["prompt"][0]["content"], r["completion"][0]["content"]
        question, _, rest = r["prompt"][-1]["content"].partition("\n\n")
        assert question in questions[r["answers"]] and instruction in rest
        assert r["prompt"][-2]["role"] in ("system", "assistant")  # the question replaced the other side's line, it did not join it
        twin = next(x for x in plain if x["dialogue_id"] == r["dialogue_id"] and x["user_turn"] == r["user_turn"])
        assert r["prompt"][:-1] == twin["prompt"][:-1] and r["prompt"][0] == twin["prompt"][0]
        if r["answers"] == "age":  # the number said is the persona's age ("... is 46 and works as ...")
            assert f" is {re.search(r'[0-9]+', said).group()} and " in persona
        elif r["answers"] in ("name", "occupation", "favorite_movie"):  # the value said is the persona's, and no other declared one
            named = {v for v in declared[r["answers"]] if re.search(rf"\b{re.escape(v)}\b", said, re.IGNORECASE)}
            assert len(named) == 1 and next(iter(named)).lower() in persona.lower(), (said, persona)
    assert all(r["answers"] is None for r in examples(scenario, splits["validation"], tok, 4096, 0, 14, profile_match=32))


def test_a_bad_answers_file_is_a_config_error_that_names_it(tmp_path, tiny_model_dir, iard_dir):
    from simgen.errors import ConfigError
    from simgen.tune import read_answers, tune

    scenario = load_scenario("movie-recommendation")
    ok = "share: 0.1\nvariables:\n  age: {asked: ['your age?'], answers: ['{{ value }}']}\n"
    cases = {
        "share: 0.1\nvariables:\n  agee: {asked: [a], answers: [b]}\n": "variables.agee: not a profile variable .*Did you mean 'age'",
        "share: 0.1\nvariables:\n  patience: {asked: [a], answers: [b]}\n": "variables.patience: a float variable is a trait",
        "share: 0\nvariables:\n  age: {asked: [a], answers: [b]}\n": "share: expected a number in \\(0, 1\\]",
        ok + "intent: ANSWER\n": "intent: 'ANSWER' is not an intent of scenario 'movie-recommendation'",
        "share: 0.1\nvariables:\n  age: {asked: [], answers: [b]}\n": "variables.age.asked: expected a non-empty list",
        "share: 0.1\nvariables:\n  age: {asked: [a], answers: ['{{ valeu }}']}\n": "variables.age.answers\\[0\\]: line 1: undefined variable 'valeu'. Did you mean 'value'",
        "share: 0.1\nvariables:\n  age: {asked: [a], answers: ['{% if %}']}\n": "variables.age.answers\\[0\\]: template syntax error on line 1",
        ok + "shares: 1\n": "unknown field 'shares'",
        "share: [0.1\n": "line 2, column 1: malformed YAML",
    }
    for i, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=f"--answers {re.escape(str(bad))}: {message}"):
            read_answers(bad, scenario)
    with pytest.raises(ConfigError, match="no such file"):
        read_answers(tmp_path / "none.yaml", scenario)
    bad = tmp_path / "bad0.yaml"  # tune reads it before the model loads or the corpus is read
    with pytest.raises(ConfigError, match="agee"):
        tune("movie-recommendation", tmp_path / "no-corpus", tmp_path / "t", model=str(tmp_path / "no-model"), config=TuneConfig(answers=str(bad)))
    good = tmp_path / "good.yaml"
    good.write_text(ok.replace("0.1", "1"))
    result = CliRunner().invoke(cli, ["tune", "movie-recommendation", "--corpus", str(iard_dir), "--out", str(tmp_path / "t"), "--model",
                                      str(tiny_model_dir), "--max-steps", "1", "--batch-size", "4", "--max-dialogues", "8", "--save-every", "1",
                                      "--max-length", "384", "--answers", str(good), "-q"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "t" / "simgen_tune.json").read_text())
    a = card["corpus"]["answers"]
    assert f"on {card['corpus']['lines']['train']['user']} real lines and {a['train_examples']} answers ({good}) in 1 steps" in result.output
    assert f"- answers: {a['train_examples']} train examples in which the user answers a question about its persona (age {a['train_examples']}), from {good}" in (tmp_path / "t" / "README.md").read_text()
    assert a["path"] == str(good) and a["share"] == 1 and a["by_variable"] == {"age": a["train_examples"]}
    real = card["corpus"]["lines"]["train"]["user"]  # the card counts real lines; the answers beside them apart
    assert a["train_examples"] == real and card["corpus"]["examples"]["train"] == 2 * real  # one beside every real user line
    assert card["corpus"]["examples"]["validation"] == card["corpus"]["lines"]["validation"]["user"]  # validation: real lines only


def test_examples_fit_the_token_budget_by_dropping_whole_old_exchanges(iard_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    from simgen.models import chat_token_ids

    scenario = load_scenario("movie-recommendation")
    splits = read_splits(iard_dir, max_dialogues=6)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    full = {(r["dialogue_id"], r["user_turn"]): r for r in examples(scenario, splits["train"], tok, 4096, 0, 6)}
    short = examples(scenario, splits["train"], tok, 300, 0, 6)
    assert short and all(len(chat_token_ids(tok, r["prompt"] + r["completion"])) <= 300 for r in short)
    cut = [r for r in short if len(r["prompt"]) < len(full[r["dialogue_id"], r["user_turn"]]["prompt"])]
    assert cut, "a 300-token budget must drop old exchanges of late turns"
    for r in cut:  # what is kept is the system message and the newest messages, in order, roles alternating
        whole = full[r["dialogue_id"], r["user_turn"]]["prompt"]
        assert r["prompt"][0] == whole[0] and r["prompt"][1:] == whole[len(whole) - len(r["prompt"]) + 1:]
        assert [m["role"] for m in r["prompt"][1:]] == ["user", "assistant"] * ((len(r["prompt"]) - 2) // 2) + ["user"]
        # and only as many exchanges go as must: one more kept would not fit
        longer = [whole[0], *whole[len(whole) - len(r["prompt"]) - 1:]]
        assert len(chat_token_ids(tok, longer + r["completion"])) > 300


def test_roles_both_adds_the_assistant_sides_real_lines_with_its_own_chat(iard_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    from simgen.generation.chats import assistant_system

    scenario = load_scenario("movie-recommendation")
    splits = read_splits(iard_dir, max_dialogues=6)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    users = examples(scenario, splits["train"], tok, 4096, 0, 6)
    both = examples(scenario, splits["train"], tok, 4096, 0, 6, roles="both")
    only = examples(scenario, splits["train"], tok, 4096, 0, 6, roles="assistant")
    assert {r["role"] for r in users} == {"user"} and {r["role"] for r in only} == {"assistant"}
    assert [r for r in both if r["role"] == "user"] == users and [r for r in both if r["role"] == "assistant"] == only
    real = splits["train"].turns.filter(pl.col("role") == "assistant")
    assert len(only) == real.filter(pl.col("text").str.strip_chars() != "").height
    first = only[0]
    anyone = scenario.profile.sample(np.random.default_rng(0))  # movie-recommendation shares no variable with the assistant
    assert first["prompt"][0] == assistant_system(scenario, anyone, 6) and first["prompt"][-1]["role"] == "user"
    assert first["completion"][0]["content"] in real["text"].to_list()
    with pytest.raises(Exception, match="roles must be one of user, assistant, both"):
        TuneConfig(roles="critic")


def test_bad_corpora_are_data_errors_that_name_the_file(tmp_path):
    only_assistant = tmp_path / "a.jsonl"
    only_assistant.write_text("\n".join(json.dumps({"dialogue_id": f"c{i}", "turn": 0, "role": "assistant", "text": "hi"}) for i in range(20)))
    with pytest.raises(DataError, match=r"a\.jsonl.*no user lines"):
        read_splits(only_assistant)
    weird = tmp_path / "b.csv"
    weird.write_text("x,y\n")
    with pytest.raises(DataError, match=r"b\.csv"):
        read_splits(weird)
    tiny = tmp_path / "c.jsonl"
    tiny.write_text(json.dumps({"dialogue_id": "only", "turn": 0, "role": "user", "text": "hi"}))
    with pytest.raises(DataError, match=r"c\.jsonl.*tuning needs at least"):
        read_splits(tiny)


def test_the_training_loss_and_its_gradients_are_trls_own(iard_dir, tiny_model_dir, tmp_path):
    """simgen tune's trainer projects only the completion's positions through the LM head (TRL's fused head
    scores every position off CUDA); the loss and every gradient must be those of TRL's compute_loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from simgen.tune import _completion_trainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = examples(load_scenario("movie-recommendation"), read_splits(iard_dir, max_dialogues=4)["train"], tok, 384, 0, 6, "both")
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows[:6]])
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, completion_only_loss=True, max_length=None, report_to=[],
                     use_cpu=True, bf16=False)  # TRL defaults to bf16 autocast; float32 compares exactly
    losses, grads = [], []
    for cls in (SFTTrainer, _completion_trainer(SFTTrainer)):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        trainer = cls(model=model, args=args, train_dataset=data, processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        completion = int((batch["labels"][:, 1:] != -100).sum())
        assert 0 < completion < batch["labels"].numel() // 2  # the prompt is most of the batch and is masked out
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=torch.tensor(completion))
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, rtol=1e-4, atol=1e-6), name


def test_auto_precision_is_mixed_only_where_bf16_arithmetic_is_native(monkeypatch):
    import simgen.models
    from simgen.tune import training_precision

    for native, expected in ((True, "mixed"), (False, "float32")):
        monkeypatch.setattr(simgen.models, "native_bf16_cpu", lambda native=native: native)
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        assert training_precision("auto") == expected
    assert training_precision("bfloat16") == "bfloat16" and training_precision("float32") == "float32"


def test_init_goes_on_training_from_an_adapter_with_its_own_rank(tuned, tiny_model_dir, iard_dir, tmp_path):
    """--init starts from a tuned folder's adapter: on the same validation examples it scores what that
    folder's card says it ended on (the weights were loaded), its rank wins over --lora-r, and the new
    card names where it started."""
    out = tmp_path / "more"
    result = CliRunner().invoke(cli, ["tune", "movie-recommendation", "--corpus", str(iard_dir), "--out", str(out), "--model",
                                      str(tiny_model_dir), *FAST, "--init", str(tuned), "--lora-r", "4"])
    assert result.exit_code == 0, result.output
    first, card = (json.loads((folder / "simgen_tune.json").read_text()) for folder in (tuned, out))
    assert card["init"]["path"] == str(tuned) and card["init"]["steps"] == 4 and len(card["init"]["fingerprint"]) == 64
    assert card["init"]["validation_loss_here"] == pytest.approx(first["validation_loss"], rel=1e-4)
    assert card["base_validation_loss"] == pytest.approx(first["base_validation_loss"], rel=1e-4)
    assert card["init"]["validation_loss_here"] < card["base_validation_loss"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == json.loads((tuned / "adapter_config.json").read_text())["r"] != 4
    assert "went on from the adapter" in (out / "README.md").read_text() and "(--init)" in result.output
    resolve_model(str(out))  # it loads through --model like any tuned folder


def test_a_bad_init_is_refused_before_the_model_loads(tuned, tiny_model_dir, iard_dir, tmp_path):
    from simgen.errors import ConfigError

    other = _on_another_base(tuned, tmp_path / "other-base")
    (tmp_path / "empty").mkdir()
    for init, error in ((other, "not on the base model here"), (tmp_path / "empty", "not a readable tuning card")):
        out = tmp_path / f"out-{init.name}"
        result = CliRunner().invoke(cli, ["tune", "movie-recommendation", "--corpus", str(iard_dir), "--out", str(out), "--model",
                                          str(tiny_model_dir), *FAST, "--init", str(init)])
        assert result.exit_code != 0 and error in result.output and str(init) in result.output and not out.exists()
    with pytest.raises(ConfigError, match="--method full"):
        TuneConfig(method="full", init=str(tuned))


def test_lora_modules_trains_only_the_named_layers_and_a_name_the_model_lacks_is_refused(tiny_model_dir, iard_dir, tmp_path):
    """--lora-modules without q_proj,k_proj: the adapter holds weights for the named layers only, and the
    merged model's query and key projections are the base model's to the bit while its value projections
    moved. A name the model has no linear layer of fails with nothing written, naming it and the names
    the model has."""
    import torch
    from transformers import AutoModelForCausalLM

    named = ["v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    out = tmp_path / "no-qk"
    result = CliRunner().invoke(cli, ["tune", "movie-recommendation", "--corpus", str(iard_dir), "--out", str(out), "--model",
                                      str(tiny_model_dir), *FAST, "--lora-modules", ",".join(named)])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads((out / "adapter_config.json").read_text())["target_modules"]) == sorted(named)
    assert json.loads((out / "simgen_tune.json").read_text())["settings"]["lora_modules"] == ",".join(named)
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        trained = {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in f.keys()}
    assert trained == set(named)
    base, merged = (AutoModelForCausalLM.from_pretrained(p).model.layers[0].self_attn for p in (tiny_model_dir, resolve_model(str(out)).path))
    assert torch.equal(base.q_proj.weight, merged.q_proj.weight) and torch.equal(base.k_proj.weight, merged.k_proj.weight)
    assert not torch.equal(base.v_proj.weight, merged.v_proj.weight)

    bad = tmp_path / "bad"
    result = CliRunner().invoke(cli, ["tune", "movie-recommendation", "--corpus", str(iard_dir), "--out", str(bad), "--model",
                                      str(tiny_model_dir), *FAST, "--lora-modules", "v_proj,qkv_proj"])
    assert result.exit_code != 0 and "'qkv_proj' is no linear layer" in result.output and "q_proj" in result.output
    assert not bad.exists()


def test_saving_an_adapter_asks_the_hub_nothing(tiny_model_dir, tmp_path, monkeypatch):
    """peft's save_pretrained asks the Hub whether the base model's config.json exists when the base's
    name is not a local folder (the embedded model is named by its id). `simgen tune` saves checkpoints
    and its folder inside `hub_lookups_off`, which stops the call; the same save outside it makes it."""
    import peft.utils.other
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from simgen.models import hub_lookups_off

    asked = []
    monkeypatch.setattr(peft.utils.other, "file_exists", lambda repo, name, **kw: asked.append((repo, name)))  # None: "cannot tell"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base.name_or_path = base.config.name_or_path = "SmolLM2-135M-Instruct"  # what the embedded model is called
    lm = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    with hub_lookups_off():
        lm.save_pretrained(tmp_path / "inside")
    assert asked == [] and "HF_HUB_OFFLINE" not in __import__("os").environ  # restored
    lm.save_pretrained(tmp_path / "outside")  # the peer: peft on its own asks
    assert asked == [("SmolLM2-135M-Instruct", "config.json")]


def test_bad_settings_are_config_errors():
    from simgen.errors import ConfigError

    with pytest.raises(ConfigError, match="method"):
        TuneConfig(method="qlora")
    with pytest.raises(ConfigError, match="batch_size"):
        TuneConfig(batch_size=0)
    with pytest.raises(ConfigError, match="dtype"):
        TuneConfig(dtype="float16")
    with pytest.raises(ConfigError, match="persona_weight"):
        TuneConfig(persona_weight=0)
    with pytest.raises(ConfigError, match="lora_modules"):
        TuneConfig(lora_modules=" , ")
    with pytest.raises(ConfigError, match="--method full"):
        TuneConfig(method="full", lora_modules="v_proj")


def _movie_scenario_without_simulator(tmp_path: Path) -> tuple[Path, str]:
    """A copy of the shipped movie-recommendation scenario's folder in `tmp_path`, and its YAML text
    without the `simulator:` line (each test names its own)."""
    import shutil

    from simgen.scenario import builtin_dir

    folder = tmp_path / "sc"
    folder.mkdir()
    for name in ("movie-recommendation.intents.yaml", "movie-recommendation.lengths.yaml", "movie-recommendation.intent-guard.npz",
                 "movie-recommendation.realism-guard.user.npz", "movie-recommendation.realism-guard.assistant.npz",
                 "movie-recommendation.dialogue-guard.npz"):
        shutil.copyfile(builtin_dir("profiles") / name, folder / name)
    shipped = (builtin_dir("profiles") / "movie-recommendation.yaml").read_text().splitlines()
    return folder, "\n".join(line for line in shipped if not line.startswith("simulator:")) + "\n"


def test_a_scenario_that_ships_a_simulator_uses_it_unless_model_is_given(tuned, tiny_model_dir, tmp_path):
    import shutil

    import simgen
    from simgen.config import SamplingConfig
    from simgen.errors import ConfigError

    folder, text = _movie_scenario_without_simulator(tmp_path)
    (folder / "movie-recommendation.yaml").write_text(text + f"simulator: {tuned}\n")
    run = simgen.generate(scenario=folder / "movie-recommendation.yaml", n=2, max_turns=1, assistant_model=str(tiny_model_dir),
                          dtype="float32", out=tmp_path / "r", progress=False)
    assert run.manifest["config"]["model"] == str(tuned) and run.manifest["scenario"]["simulator"] == str(tuned)
    penalty = lambda r: {side: r.manifest["config"][side]["repetition_penalty"] for side in ("user", "assistant")}  # noqa: E731
    assert penalty(run) == {"user": 1.0, "assistant": 1.15}  # the tuned side samples without the untuned model's penalty
    plain = simgen.generate(scenario=folder / "movie-recommendation.yaml", n=2, max_turns=1, model=str(tiny_model_dir),
                            dtype="float32", out=tmp_path / "p", progress=False)
    assert plain.manifest["config"]["model"] == str(tiny_model_dir) and penalty(plain) == {"user": 1.15, "assistant": 1.15}
    chosen = simgen.generate(scenario=folder / "movie-recommendation.yaml", n=1, max_turns=1, assistant_model=str(tiny_model_dir),
                             user=SamplingConfig(max_new_tokens=8, repetition_penalty=1.3), dtype="float32", out=tmp_path / "c", progress=False)
    assert penalty(chosen) == {"user": 1.3, "assistant": 1.15}  # a penalty the caller set is kept
    # a tuned side is prompted with as much history as it learned from: its card's max length (384) less the side's max new tokens
    context = lambda r: {side: r.manifest["config"][side]["context"] for side in ("user", "assistant")}  # noqa: E731
    assert context(run) == {"user": 384 - 48, "assistant": 0} and context(plain) == {"user": 0, "assistant": 0}
    assert context(chosen) == {"user": 384 - 8, "assistant": 0}
    kept = simgen.generate(scenario=folder / "movie-recommendation.yaml", n=1, max_turns=1, assistant_model=str(tiny_model_dir),
                           user=SamplingConfig(max_new_tokens=8, context=0), dtype="float32", out=tmp_path / "k", progress=False)
    assert context(kept) == {"user": 0, "assistant": 0}  # ... unless the caller set one
    # a simulator tuned on both sides writes both; the scenario's max_turns caps a run that does not set one
    both = tmp_path / "both"
    shutil.copytree(tuned, both)
    card = json.loads((both / "simgen_tune.json").read_text())
    (both / "simgen_tune.json").write_text(json.dumps({**card, "roles": "both"}))
    (folder / "movie-recommendation.yaml").write_text(text.replace("max_turns: 14", "max_turns: 2") + f"simulator: {both}\n")
    run = simgen.generate(scenario=folder / "movie-recommendation.yaml", n=2, dtype="float32", out=tmp_path / "b", progress=False)
    assert run.manifest["config"]["model"] == run.manifest["config"]["assistant_model"] == str(both)
    assert penalty(run) == {"user": 1.0, "assistant": 1.0} and context(run) == {"user": 384 - 48, "assistant": 384 - 96}
    assert run.manifest["config"]["max_turns"] == 2 and run.turns.filter(pl.col("role") == "user").height <= 4
    (folder / "movie-recommendation.yaml").write_text(text + "simulator: nowhere\n")
    with pytest.raises(ConfigError, match="simulator: .*nowhere.*simgen tune"):
        simgen.generate(scenario=folder / "movie-recommendation.yaml", n=1, out=tmp_path / "x", progress=False)


def test_a_scenario_names_a_simulator_per_side(tuned, tmp_path):
    """`simulator: {user: A, assistant: B}`: each side's folder writes that side (the manifest says
    which), the run takes the call schedule (two models cannot share one batch), and a folder named
    for a side it did not learn, or a side that does not exist, is a ConfigError naming the key."""
    import shutil

    import simgen
    from simgen.errors import ConfigError
    from simgen.scenario import load_scenario

    folder, text = _movie_scenario_without_simulator(tmp_path)
    answers = tmp_path / "answers"  # the same adapter, carded as an assistant-side simulator
    shutil.copytree(tuned, answers)
    card = json.loads((answers / "simgen_tune.json").read_text())
    (answers / "simgen_tune.json").write_text(json.dumps({**card, "roles": "assistant"}))
    scenario = folder / "movie-recommendation.yaml"
    scenario.write_text(text + f"simulator:\n  user: {tuned}\n  assistant: {answers}\n")
    sc = load_scenario(scenario)
    assert sc.sides() == {"user": str(tuned), "assistant": str(answers)} and sc.simulator == tuned
    run = simgen.generate(scenario=scenario, n=2, max_turns=1, dtype="float32", out=tmp_path / "r", progress=False)
    config = run.manifest["config"]
    assert (config["model"], config["assistant_model"]) == (str(tuned), str(answers))
    assert run.manifest["backend"]["assistant"]["model"]["id"] == str(answers)
    assert run.manifest["scenario"]["simulator"] == {"user": str(tuned), "assistant": str(answers)}
    assert config["schedule"] == "calls" and config["assistant"]["repetition_penalty"] == 1.0  # a tuned side samples as one
    scenario.write_text(text + f"simulator:\n  assistant: {answers}\n")  # one side named: the other is the plain model
    assert load_scenario(scenario).sides() == {"user": "embedded", "assistant": str(answers)}
    scenario.write_text(text + f"simulator:\n  assistant: {tuned}\n")  # `tuned` learned the user side only
    with pytest.raises(ConfigError, match=r"simulator: assistant: .* did not learn the assistant side.*--roles assistant"):
        load_scenario(scenario)
    scenario.write_text(text + f"simulator:\n  recommender: {answers}\n")
    with pytest.raises(ConfigError, match=r"simulator: expected .* mapping of side \(user, assistant\)"):
        load_scenario(scenario)


def test_an_interrupted_tune_resumes_from_its_checkpoint(tiny_model_dir, iard_dir, tmp_path, monkeypatch):
    from trl import SFTTrainer

    from simgen.tune import tune

    real, calls = SFTTrainer.training_step, {"n": 0}

    def interrupted(self, *args, **kwargs):  # Ctrl-C during the third step, after the checkpoint of step 2
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", interrupted)
    out, cfg = tmp_path / "t", TuneConfig(max_steps=4, batch_size=4, max_dialogues=8, save_every=2, max_length=384, learning_rate=5e-3)
    with pytest.raises(KeyboardInterrupt):
        tune("movie-recommendation", iard_dir, out, model=str(tiny_model_dir), config=cfg, progress=False)
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "simgen_tune.json").exists()
    first = json.loads((out / "checkpoints" / "checkpoint-2" / "simgen_seconds.json").read_text())
    assert first["step"] == 2 and first["seconds"] > 0
    monkeypatch.undo()
    said: list[str] = []
    card = tune("movie-recommendation", iard_dir, out, model=str(tiny_model_dir), config=cfg, progress=False, log=said.append)
    assert any("resuming" in m for m in said) and card["steps"] == 4 and (out / "simgen_tune.json").is_file()
    # the card's time is the whole training's: the interrupted run's first two steps plus this run's two
    assert card["resumed_from_step"] == 2 and card["seconds"] == pytest.approx(first["seconds"] + card["seconds_this_run"], abs=0.1)
    assert "resumed from step 2" in (out / "README.md").read_text()


def test_a_packed_simulator_is_bf16_names_its_base_and_generates_like_the_original(tuned, tiny_model_dir, tmp_path):
    """scripts/pack_simulator.py, as run to ship profiles/<scenario>.simulator/."""
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    packed = tmp_path / "packed"
    script = Path(__file__).resolve().parents[1] / "scripts" / "pack_simulator.py"
    subprocess.run([sys.executable, str(script), str(tuned), str(packed)], check=True, capture_output=True, timeout=120)
    original, small = load_file(tuned / "adapter_model.safetensors"), load_file(packed / "adapter_model.safetensors")
    assert original.keys() == small.keys() and all(t.dtype == torch.bfloat16 for t in small.values())
    assert all(torch.allclose(small[k].float(), original[k], rtol=2 ** -8, atol=0) for k in original)
    config = json.loads((packed / "adapter_config.json").read_text())
    card = json.loads((packed / "simgen_tune.json").read_text())
    assert config["base_model_name_or_path"] == card["base_model"]["id"] and card["packed"]["dtype"] == "bfloat16"
    # merged into the base, the packed adapter moves each weight matrix as the original does, to bf16 rounding
    base = load_file(tiny_model_dir / "model.safetensors")
    merged = {name: load_file(resolve_model(str(folder)).path / "model.safetensors") for name, folder in (("o", tuned), ("p", packed))}
    moved = [k for k in base if not torch.equal(merged["o"][k], base[k])]
    assert moved
    for k in moved:
        delta = merged["o"][k] - base[k]
        assert (merged["p"][k] - merged["o"][k]).norm() <= 0.01 * delta.norm(), k
    result = CliRunner().invoke(cli, ["generate", "-n", "2", "--max-turns", "2", "--model", str(packed), "--dtype", "float32",
                                      "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output


def test_a_blend_of_two_simulators_merges_to_the_weighted_sum_of_their_weight_changes(tuned, tiny_model_dir, tmp_path):
    """scripts/blend_simulators.py (WiSE-FT between two tuned simulators): merged into the base, the blend
    moves each weight matrix by (1 - w) x A's change + w x B's; its copy index holds both; mismatches are refused."""
    import shutil
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file, save_file

    from simgen.copies import CopyIndex

    other = tmp_path / "other"  # a second adapter of the same base: A's tensors, perturbed, and its own training lines
    shutil.copytree(tuned, other)
    g = torch.Generator().manual_seed(0)
    tensors = {k: v + 0.05 * v.abs().mean() * torch.randn(v.shape, generator=g) for k, v in load_file(tuned / "adapter_model.safetensors").items()}
    save_file(tensors, other / "adapter_model.safetensors")
    CopyIndex.from_lines(["a line only the second simulator ever learned"]).save(other / "trained_lines.npz")
    script = Path(__file__).resolve().parents[1] / "scripts" / "blend_simulators.py"
    blended, w = tmp_path / "blend", 0.3
    subprocess.run([sys.executable, str(script), str(tuned), str(other), str(blended), "--weight", str(w)], check=True, capture_output=True,
                   timeout=120)
    card = json.loads((blended / "simgen_tune.json").read_text())
    assert card["blend"]["weights"] == {str(tuned): 0.7, str(other): 0.3} and card["blend"]["rank"] == 2 * card["settings"]["lora_r"]
    assert card["blend"]["cards"][str(tuned)] == json.loads((tuned / "simgen_tune.json").read_text())  # how to train each again
    base = load_file(tiny_model_dir / "model.safetensors")
    merged = {name: load_file(resolve_model(str(folder)).path / "model.safetensors") for name, folder in (("a", tuned), ("b", other), ("ab", blended))}
    moved = [k for k in base if not torch.equal(merged["a"][k], base[k])]
    assert moved
    for k in moved:
        want = base[k] + (1 - w) * (merged["a"][k] - base[k]) + w * (merged["b"][k] - base[k])
        assert (merged["ab"][k] - want).norm() <= 0.01 * (want - base[k]).norm(), k
    index = CopyIndex.load(blended / "trained_lines.npz")
    assert index.copies("a line only the second simulator ever learned")
    assert len(index.exact) == len(CopyIndex.load(tuned / "trained_lines.npz").exact) + 1
    # sides that differ are refused, naming what differs; nothing is written
    card_b = json.loads((other / "simgen_tune.json").read_text())
    (other / "simgen_tune.json").write_text(json.dumps({**card_b, "roles": "assistant"}))
    bad = subprocess.run([sys.executable, str(script), str(tuned), str(other), str(tmp_path / "bad"), "--weight", "0.5"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "differ in roles" in bad.stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name, corpus", [("movie-recommendation", "iard_dir"), ("chitchat", "chitchat")])
def test_each_shipped_scenario_ships_a_simulator_tuned_on_its_own_train_split(name, corpus, request):
    """The default `simgen generate` of both shipped scenarios runs a simulator that `simgen tune` made
    from that scenario's real corpus, on the embedded base, for both sides; its copy index holds train
    lines and no line found only in the test split."""
    from simgen.copies import COPY_INDEX, CopyIndex
    from simgen.corpora import load_corpus
    from simgen.models import tuned_sides

    folder = load_scenario(name).simulator
    card = json.loads((folder / "simgen_tune.json").read_text())
    assert card["scenario"]["name"] == name and card["roles"] == "both" and card["method"] == "lora"
    assert card["base_model"]["fingerprint"] == resolve_model(None).fingerprint
    assert card["validation_loss"] < card["base_validation_loss"]
    assert tuned_sides(folder) == (str(folder), str(folder))
    source = request.getfixturevalue(corpus) if corpus == "iard_dir" else corpus  # IARD from ../shared; chitchat from PyPI
    # each split's lines hashed as the copy index hashes them
    lines = {s: set(CopyIndex.from_lines(load_corpus(source, split=s).turns["text"].to_list()).exact.tolist()) for s in ("train", "test")}
    index = set(CopyIndex.load(folder / COPY_INDEX).exact.tolist())
    test_only = lines["test"] - lines["train"]
    assert len(index) > 1000 and index <= lines["train"] and len(test_only) > 100 and not index & test_only


def _first_token_logprobs(url: str, chat: list[dict], k: int = 5) -> dict[str, float]:
    """The server's top-k log-probabilities for the first token of its answer to `chat` (asked as the http judge asks)."""
    from simgen.consistency.judges import OpenAIJudge

    top = OpenAIJudge(url, model="m")._top_logprobs(chat)
    return dict(sorted(top.items(), key=lambda item: -item[1])[:k])


@pytest.mark.slow
def test_llamacpp_serves_the_tuned_simulator_that_simgen_serves():
    """`tuned_gguf` (what the throughput benchmark's llama.cpp row serves for a scenario with a simulator):
    llama.cpp on it gives the merged model's next-token distribution, not the untuned model's."""
    pytest.importorskip("xllamacpp")
    import torch

    from simgen.backends.llamacpp import serve_gguf, tuned_gguf
    from simgen.models import chat_token_ids, load_causal_lm

    folder = load_scenario("movie-recommendation").simulator
    chat = [{"role": "system", "content": "You are a person looking for a movie to watch tonight. Write your next message to the recommender."},
            {"role": "user", "content": "Hi! What kind of movies do you like?"}]
    model, tokenizer = load_causal_lm(resolve_model(str(folder)), dtype="float32")
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([chat_token_ids(tokenizer, chat, add_generation_prompt=True)])).logits[0, -1], -1)
    merged = {tokenizer.decode([int(i)]): float(logprobs[i]) for i in logprobs.topk(5).indices}
    served = {}
    for name, path in (("tuned", tuned_gguf(folder)), ("untuned", None)):
        with serve_gguf(path, parallel=1, ctx_per_slot=1024, threads=2) as url:
            served[name] = _first_token_logprobs(url, chat)
    assert served["tuned"].keys() == merged.keys()
    assert all(abs(served["tuned"][t] - merged[t]) < 0.3 for t in merged)  # Q8_0 rounding of the merged weights
    assert len(served["untuned"].keys() - merged.keys()) >= 2  # the check can fail: the untuned model ranks other tokens
    path = tuned_gguf(folder)
    written = path.stat().st_mtime_ns
    assert tuned_gguf(folder) == path and path.stat().st_mtime_ns == written  # cached, not rewritten


def test_only_simulators_tuned_on_the_embedded_model_become_a_gguf(tuned, tiny_model_dir):
    from simgen.backends.llamacpp import tuned_gguf
    from simgen.errors import ConfigError

    with pytest.raises(ModelError, match="tuned on the embedded model"):
        tuned_gguf(tuned)  # tuned on the tiny test model
    with pytest.raises(ConfigError, match="not a `simgen tune` folder"):
        tuned_gguf(tiny_model_dir)


def _tiny_run(tiny_model_dir: Path, out: Path, scenario: str, n: int = 4) -> Path:
    result = CliRunner().invoke(cli, ["generate", "--scenario", scenario, "-n", str(n), "--max-turns", "3", "--model", str(tiny_model_dir),
                                      "--redraws", "0", "--dialogue-redraws", "0", "--user-max-new-tokens", "12",
                                      "--assistant-max-new-tokens", "12", "--dtype", "float32", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_rehearsal_trains_on_a_generated_runs_lines_with_the_chats_its_simulator_saw(tiny_model_dir, iard_dir, tmp_path):
    """`--rehearse RUN`: the run's user lines (all, or with `persona` those that state their persona)
    become train rows whose prompt is the chat simgen rebuilds for the line, mixed in at
    `rehearse_share` of the train split; the log, card and README say from which run and how many. A run of another scenario, a missing run
    and a run without a persona line are errors that name the folder."""
    from transformers import AutoTokenizer

    from simgen.errors import ConfigError, RunError
    from simgen.export.rl import Chats
    from simgen.generation.run import load_run
    from simgen.tune import rehearsal, rehearsal_mix, tune

    scenario, tok = load_scenario("movie-recommendation"), AutoTokenizer.from_pretrained(tiny_model_dir)
    run = _tiny_run(tiny_model_dir, tmp_path / "run", "movie-recommendation", n=8)
    with pytest.raises(DataError, match=f"--rehearse {run}: none of its .* user lines states its persona"):
        rehearsal(scenario, run, tok, 4096, lines="persona")  # the random tiny model's lines state nothing
    usable, _ = rehearsal(scenario, run, tok, 4096)  # every usable line (the default)
    assert usable and not any(r["states_persona"] for r in usable)
    # the simulator of one dialogue says what its persona likes, once
    target = usable[0]
    dialogue_id = target["dialogue_id"].split("/", 1)[1]
    turns = pl.read_parquet(run / "turns.parquet")
    mine = turns.filter((pl.col("dialogue_id") == dialogue_id) & (pl.col("role") == "user")).sort("turn").row(target["user_turn"], named=True)
    genre = mine["profile"]["liked_genres"][0]
    turns = turns.with_columns(pl.when((pl.col("dialogue_id") == dialogue_id) & (pl.col("turn") == mine["turn"]))
                               .then(pl.lit(f"anything {genre} would be great")).otherwise(pl.col("text")).alias("text"))
    turns.write_parquet(run / "turns.parquet")
    rows, summary = rehearsal(scenario, run, tok, 4096, lines="persona")
    d = next(d for d in frame_to_dialogues(load_run(run).turns.sort("dialogue_id", "turn")) if d.dialogue_id == dialogue_id)
    max_turns = json.loads((run / "manifest.json").read_text())["config"]["max_turns"]
    assert [r["completion"][0]["content"] for r in rows] == [f"anything {genre} would be great"]
    assert rows[0]["prompt"] == Chats(scenario, max_turns).user_prefix(d, target["user_turn"]) == target["prompt"]
    assert rows[0]["dialogue_id"] == f"run/{dialogue_id}" and rows[0]["states_persona"]
    assert summary["rows"] == 1 and summary["user_lines"] == len(usable) and summary["run"] == str(run)
    every, _ = rehearsal(scenario, run, tok, 4096, lines="all")
    assert len(every) == len(usable) and sum(r["states_persona"] for r in every) == 1

    mix = rehearsal_mix(every, 100, 0.2, seed=0)  # 25 rehearsal rows beside 100 real ones: 20% of the train split
    assert len(mix) == 25 and mix == rehearsal_mix(every, 100, 0.2, seed=0) and rehearsal_mix(every, 100, 0.0, 0) == []
    counts = Counter(id(r) for r in mix)
    assert set(counts) == {id(r) for r in every} and max(counts.values()) - min(counts.values()) <= 1

    cfg = TuneConfig(max_steps=2, batch_size=4, max_dialogues=8, save_every=2, max_length=384, rehearse=str(run))
    said: list[str] = []
    card = tune("movie-recommendation", iard_dir, tmp_path / "t", model=str(tiny_model_dir), config=cfg, progress=False, log=said.append)
    r = card["corpus"]["rehearsal"]
    assert f"rehearsal: {len(every)} lines of {run} fill {r['train_examples']} of" in " ".join(said)  # and how often each repeats
    real = card["corpus"]["examples"]["train"]
    assert r["run"] == str(run) and r["rows"] == len(every) and r["train_examples"] == round(0.2 / 0.8 * real)
    assert card["corpus"]["train_examples_per_epoch"] == real + r["train_examples"]
    assert f"{r['train_examples']} train examples from {len(every)} generated user lines (all) of the run {run}" in (tmp_path / "t" / "README.md").read_text()

    chitchat = _tiny_run(tiny_model_dir, tmp_path / "chitchat-run", "chitchat", n=2)
    with pytest.raises(ConfigError, match=f"--rehearse {chitchat}: a run of scenario 'chitchat', not 'movie-recommendation'"):
        rehearsal(scenario, chitchat, tok, 4096, lines="all")
    with pytest.raises(ConfigError, match="a run of scenario 'chitchat'"):  # before the model (here: none) or the corpus is read
        tune("movie-recommendation", tmp_path / "no-corpus", tmp_path / "t3", model=str(tmp_path / "no-model"), config=TuneConfig(rehearse=str(chitchat)))
    with pytest.raises(RunError, match="no such run folder"):
        tune("movie-recommendation", iard_dir, tmp_path / "t2", model=str(tiny_model_dir), config=TuneConfig(rehearse=str(tmp_path / "nope")))
    for bad in ({"rehearse_lines": "some"}, {"rehearse_share": 1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TuneConfig(**bad)
