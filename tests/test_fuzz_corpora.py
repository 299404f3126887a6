"""Fuzzing the reference-corpus loader: any file of any supported suffix, and any run folder,
either loads into the turns frame or raises a SimgenError with a message; never another
exception, never a hang (pytest-timeout fails a test that stalls)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simgen.corpora import REQUIRED_COLUMNS, load_corpus
from simgen.errors import SimgenError

SUFFIXES = (".jsonl", ".json", ".parquet", ".JSON", ".csv")
KEYS = (*REQUIRED_COLUMNS, "intent", "conversation_id", "conversation", "participant", "utterance", "dialogue_acts",
        "USER", "AGENT", "user", "assistant", "x")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.floats(allow_nan=False),
                         st.sampled_from(KEYS), st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(KEYS), kids, max_size=6)),
                           max_leaves=30)
# rows that often look like turns, so the checks after parsing are reached too
turn_rows = st.lists(st.fixed_dictionaries({}, optional={k: json_scalars for k in (*REQUIRED_COLUMNS, "intent")}), max_size=6)
# IARD-shaped conversations with holes and wrong types
iard = st.lists(st.fixed_dictionaries({}, optional={
    "conversation_id": json_scalars,
    "conversation": st.one_of(json_values, st.lists(st.fixed_dictionaries({}, optional={
        "participant": st.sampled_from(["USER", "AGENT", "BOT", 3]), "utterance": json_scalars,
        "dialogue_acts": st.one_of(json_values, st.lists(st.dictionaries(st.sampled_from(["intent", "x"]), json_scalars), max_size=2)),
    }), max_size=4)),
}), min_size=1, max_size=3)


def load(path: Path) -> None:
    """Load `path`; only a loaded corpus or a SimgenError with a message may come out."""
    try:
        corpus = load_corpus(path)
    except SimgenError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return
    t = corpus.turns
    assert t.height > 0 and set(REQUIRED_COLUMNS) <= set(t.columns)
    assert t.schema["turn"] == pl.Int64 and t["text"].null_count() == 0
    assert set(t["role"].unique()) <= {"user", "assistant"}


@pytest.fixture
def where(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.timeout(300)
@FUZZ
@given(st.sampled_from(SUFFIXES), st.binary(max_size=400))
def test_any_bytes_in_any_file(where, suffix, data):
    path = where / f"corpus{suffix}"
    path.write_bytes(data)
    load(path)


@pytest.mark.timeout(300)
@FUZZ
@given(st.one_of(json_values, turn_rows, iard))
def test_any_json_document(where, value):
    path = where / "corpus.json"
    path.write_text(json.dumps(value), encoding="utf-8")
    load(path)


@pytest.mark.timeout(300)
@FUZZ
@given(st.lists(st.one_of(json_values, turn_rows.map(lambda rows: rows[0] if rows else {})), max_size=6))
def test_any_json_lines(where, lines):
    path = where / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in lines), encoding="utf-8")
    load(path)


columns = st.dictionaries(
    st.sampled_from((*REQUIRED_COLUMNS, "intent", "profile")),
    st.one_of(
        st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=3, max_size=3),
        st.lists(st.one_of(st.none(), st.integers(-2**40, 2**40)), min_size=3, max_size=3),
        st.lists(st.one_of(st.none(), st.floats()), min_size=3, max_size=3),
        st.lists(st.one_of(st.none(), st.booleans()), min_size=3, max_size=3),
        st.lists(st.one_of(st.none(), st.binary(max_size=4)), min_size=3, max_size=3),
        st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=3, max_size=3),
        st.lists(st.sampled_from(["user", "assistant", "USER", "bot"]), min_size=3, max_size=3),
    ),
)


@pytest.mark.timeout(300)
@FUZZ
@given(columns, st.integers(0, 10_000), st.booleans())
def test_any_parquet_table_whole_or_cut(where, cols, cut, as_run_folder):
    buf = io.BytesIO()
    pl.DataFrame(cols).write_parquet(buf)
    data = buf.getvalue()
    if cut < len(data):  # a truncated file, as a crashed writer without atomic renames leaves
        data = data[:cut]
    if as_run_folder:
        (where / "turns.parquet").write_bytes(data)
        load(where)
    else:
        path = where / "corpus.parquet"
        path.write_bytes(data)
        load(path)


@pytest.mark.timeout(300)
@FUZZ
@given(st.binary(max_size=200))
def test_run_folder_with_any_manifest(where, manifest):
    pl.DataFrame({"dialogue_id": ["a", "a"], "turn": [0, 1], "role": ["user", "assistant"], "text": ["hi", "hello"]}).write_parquet(where / "turns.parquet")
    (where / "manifest.json").write_bytes(manifest)
    load(where)
