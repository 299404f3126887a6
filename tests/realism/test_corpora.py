"""simgen.corpora: every source reads into the same turns frame; bad input gives a DataError that
names the file and the fault."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from simgen.corpora import CORPORA, iard_to_turns, load_corpus, sample_ids
from simgen.errors import DataError

ROWS = [
    {"dialogue_id": "a", "turn": 1, "role": "assistant", "text": "hi there", "intent": None},
    {"dialogue_id": "a", "turn": 0, "role": "user", "text": "hello", "intent": "greet"},
    {"dialogue_id": "b", "turn": 0, "role": "USER", "text": "any films?", "intent": "ask"},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _check_canonical(df: pl.DataFrame) -> None:
    assert df.columns[:4] == ["dialogue_id", "turn", "role", "text"]
    assert df.schema["turn"] == pl.Int64 and df.schema["dialogue_id"] == pl.String
    assert set(df["role"]) <= {"user", "assistant"}
    assert df.select("dialogue_id", "turn").rows() == sorted(df.select("dialogue_id", "turn").rows())


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "frame"])
def test_formats_read_the_same(tmp_path: Path, fmt: str) -> None:
    if fmt == "jsonl":
        spec = _jsonl(tmp_path / "c.jsonl", ROWS)
    elif fmt == "json":
        spec = tmp_path / "c.json"
        spec.write_text(json.dumps(ROWS), encoding="utf-8")
    elif fmt == "parquet":
        spec = tmp_path / "c.parquet"
        pl.DataFrame(ROWS).write_parquet(spec)
    else:
        spec = pl.DataFrame(ROWS)
    c = load_corpus(spec)
    _check_canonical(c.turns)
    assert c.turns["text"].to_list() == ["hello", "hi there", "any films?"]
    assert c.labels == ("intent",)
    assert c.n_dialogues == 2


def test_run_folder_keeps_profile_struct_and_manifest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    df = pl.DataFrame(ROWS).with_columns(
        pl.struct(pl.lit(30).alias("age"), pl.lit("nurse").alias("job")).alias("profile"),
        pl.lit("x").alias("extra"),
    )
    df.write_parquet(run / "turns.parquet")
    (run / "manifest.json").write_text(json.dumps({"scenario": "movie-recommendation"}))
    c = load_corpus(run)
    assert c.kind == "run" and c.manifest["scenario"] == "movie-recommendation"
    assert c.turns.schema["profile"] == pl.Struct({"age": pl.Int32, "job": pl.String})
    assert "extra" in c.turns.columns


def test_a_sample_of_a_run_is_read_lazily(tmp_path: Path, make_corpus) -> None:  # noqa: ANN001
    """max_dialogues samples on the scan: the kept columns of the sampled dialogues, the same
    sample as drawing it from the whole corpus in memory, and the size it was drawn from."""
    run = tmp_path / "run"
    run.mkdir()
    full = make_corpus("plain", 60, seed=1, intents=True).with_columns(pl.lit("x" * 1000).alias("bulky"))
    full.write_parquet(run / "turns.parquet")
    c = load_corpus(run, max_dialogues=10, seed=3, columns=("intent",))
    assert c.total_dialogues == 60 and c.n_dialogues == 10
    assert c.turns.columns == ["dialogue_id", "turn", "role", "text", "intent"]
    want = sample_ids(full["dialogue_id"], 10, 3)
    assert sorted(c.turns["dialogue_id"].unique()) == sorted(want)
    assert c.turns.equals(load_corpus(full).turns.filter(pl.col("dialogue_id").is_in(want.implode())).select(c.turns.columns))
    assert load_corpus(run, max_dialogues=100).total_dialogues == 60 and load_corpus(run).total_dialogues is None
    assert sample_ids(full["dialogue_id"], 10, 4).sort().to_list() != want.sort().to_list()


def test_iard_shape_is_converted(tmp_path: Path) -> None:
    conv = [{"conversation_id": 7, "conversation": [
        {"participant": "AGENT", "utterance": "Hi, what do you like?", "dialogue_acts": [{"intent": "REQ", "slot_values": []}]},
        {"participant": "USER", "utterance": "Horror, mostly", "dialogue_acts": [
            {"intent": "PRO", "slot_values": []}, {"intent": "OTH", "slot_values": []}]},
        {"participant": "USER", "utterance": "bye", "dialogue_acts": []},
    ]}]
    path = tmp_path / "iard.json"
    path.write_text(json.dumps(conv))
    df = load_corpus(path).turns
    assert df["role"].to_list() == ["assistant", "user", "user"]
    assert df["intent"].to_list() == ["REQ", "PRO", None]
    assert df["dialogue_id"].unique().to_list() == ["7"]


def test_real_iard_files(iard: pl.DataFrame) -> None:
    _check_canonical(iard)
    assert iard["dialogue_id"].n_unique() == 336
    assert iard.height == 1103 + 3480
    user_intents = iard.filter(pl.col("role") == "user")["intent"]
    assert {"ACC", "REJ", "SEE"} <= set(user_intents.drop_nulls())


def test_chitchat_named_corpus() -> None:
    c = load_corpus("chitchat")
    _check_canonical(c.turns)
    assert c.kind == "named" and c.n_dialogues == 4018  # 7,168 chats, 3,150 with a single turn dropped
    first = c.turns.filter(pl.col("turn") == 0)
    assert set(first["role"]) == {"user"}
    assert "chitchat" in CORPORA
    # `topic`: the conversation starter the chat app showed, one per chat, on all of its turns
    per_chat = c.turns.group_by("dialogue_id").agg(pl.col("topic").n_unique().alias("n"), pl.col("topic").first())
    assert per_chat["n"].max() == 1
    assert per_chat["topic"].n_unique() == 35 and 0 < per_chat["topic"].null_count() < 0.05 * c.n_dialogues  # 34 starters, or none


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p / "missing.jsonl", "does not exist"),
        (lambda p: _jsonl(p / "c.jsonl", [{"dialogue_id": "a", "turn": 0, "role": "user"}]), "missing column 'text'"),
        (lambda p: _jsonl(p / "c.jsonl", []), "empty"),
        (lambda p: _jsonl(p / "c.jsonl", [{**ROWS[0], "role": "bot"}]), "'bot'"),
        (lambda p: _jsonl(p / "c.jsonl", [ROWS[1], ROWS[1]]), "more than once"),
        (lambda p: _jsonl(p / "c.jsonl", [{**ROWS[0], "text": None}]), "null"),
        (lambda p: _jsonl(p / "c.jsonl", [{**ROWS[0], "text": 5}]), "'text' holds Int64 values, not strings"),
        (lambda p: _jsonl(p / "c.jsonl", [{**ROWS[0], "text": False}]), "'text' holds Boolean values, not strings"),
        (lambda p: (p / "c.csv").write_text("x") and p / "c.csv", "unsupported file type"),
    ],
)
def test_bad_input_is_a_clear_data_error(tmp_path: Path, make, needle: str) -> None:  # noqa: ANN001
    path = make(tmp_path)
    with pytest.raises(DataError, match=needle) as err:
        load_corpus(path)
    assert str(path.name) in str(err.value) or needle == "does not exist"


def test_missing_column_names_the_file(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "refs.jsonl", [{"dialogue_id": "a", "turn": 0, "text": "x"}])
    with pytest.raises(DataError, match=r"refs\.jsonl is missing column 'role'"):
        load_corpus(path)


def test_non_utf8_text_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(ROWS[1]).encode().replace(b"hello", b"caf\xe9"))
    with pytest.raises(DataError, match="not UTF-8.*iconv"):
        load_corpus(path)


def test_unknown_name_suggests() -> None:
    with pytest.raises(DataError, match="Did you mean 'chitchat'"):
        load_corpus("chitchatt")


def test_iard_converter_rejects_unknown_participant() -> None:
    with pytest.raises(DataError, match="participant 'BOT'"):
        iard_to_turns([{"conversation_id": "1", "conversation": [{"participant": "BOT", "utterance": "x"}]}])


def test_a_damaged_run_folder_is_the_same_error_for_every_reader(tmp_path: Path) -> None:
    """`simgen realism` (corpora) and `simgen consistency`/exports (load_run) name a broken manifest with one error class."""
    from simgen.errors import RunError
    from simgen.generation.run import load_run

    run = tmp_path / "run"
    run.mkdir()
    pl.DataFrame({"dialogue_id": ["a"], "turn": [0], "role": ["user"], "text": ["hi"]}).write_parquet(run / "turns.parquet")
    (run / "manifest.json").write_text("{not json")
    for read in (load_corpus, load_run):
        with pytest.raises(RunError, match="manifest.json"):
            read(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    for read in (load_corpus, load_run):
        with pytest.raises(RunError, match="not a (simgen )?run folder") as err:
            read(empty)
        assert "empty" in str(err.value)
