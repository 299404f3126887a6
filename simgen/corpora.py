"""Read dialogue corpora into the canonical turns frame.

Every corpus simgen compares with, real or synthetic, becomes one polars frame with one row per
turn (the same contract as a run folder's `turns.parquet`):

    dialogue_id: str   # unique within the corpus
    turn:        int   # 0-based position within the dialogue, in order
    role:        str   # "user" | "assistant"
    text:        str
    ...                # optional label columns (e.g. `intent`, null where unlabelled) and any
                       # other columns, passed through untouched

Sources, tried in this order by `load_corpus(spec)`:
- a polars DataFrame already in the schema;
- a run folder (a directory holding `turns.parquet`; its `manifest.json` is read for metadata);
- a corpus folder (a directory without `turns.parquet` holding corpus files: every `.json`,
  `.jsonl` and `.parquet` in it, read as below and stacked; e.g. the IARD folder's two files);
- a file: `.parquet`, `.jsonl` (one JSON object per turn) or `.json` (a list of turn objects, or
  the IARD shape: a list of {conversation_id, conversation: [{participant USER|AGENT, utterance,
  dialogue_acts: [{intent, slot_values}]}]}, converted with role USER->user, AGENT->assistant,
  `intent` = the primary act (the first that is neither OTH nor END; OTH or END when alone) and
  `acts` = all act labels, comma-separated);
- a named corpus from `CORPORA` (`"name": "module:object"`, resolved lazily), e.g. `chitchat`.

Splits: every real corpus is split by dialogue, by a hash of its id (`split_of`): 80% `train` (what
fitting, exemplars and tuning may read), 10% `validation` (model selection), 10% `test` (only
benchmarks and reports read it). `load_corpus(spec, split="train")` keeps one split. The split of a
dialogue never depends on what else the corpus holds, so adding dialogues moves none.

What it leaves out: it does not download anything, guess roles from text, or clean text (it only
checks that text is present and valid UTF-8). Every user-fixable problem is a `DataError` whose
message names the file and says what to do; a folder that is not a readable run folder is a
`RunError`, as everywhere else a run folder is read.

This module is shared: the realism check reads its reference and synthetic corpora through it, and
whatever fits or tunes on real dialogues reads them here too.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from simgen.errors import DataError, RunError, unknown_name

REQUIRED_COLUMNS: tuple[str, ...] = ("dialogue_id", "turn", "role", "text")
ROLES: tuple[str, ...] = ("user", "assistant")
# label columns simgen knows how to use when present (others pass through unused)
LABEL_COLUMNS: tuple[str, ...] = ("intent",)

# corpus name -> "module:callable" returning a turns frame; resolved only when asked for
CORPORA: dict[str, str] = {
    "chitchat": "simgen.corpora:load_chitchat",
}

SPLITS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}  # split -> share of dialogues
CORPUS_SUFFIXES = (".json", ".jsonl", ".parquet")


def split_of(dialogue_id: str) -> str:
    """The fixed split of a dialogue: a sha256 of its id, mapped onto `SPLITS`' shares."""
    u = int.from_bytes(hashlib.sha256(f"simgen-split\0{dialogue_id}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in SPLITS.items():
        edge += share
        if u < edge:
            return name
    return name


SCHEMA_HELP = (
    "A corpus file has one row per turn with columns dialogue_id (str), turn (int, 0-based), "
    "role ('user' or 'assistant') and text (str), plus optional label columns such as intent."
)


@dataclass(frozen=True)
class Corpus:
    """A corpus read into the canonical frame, with where it came from."""

    name: str  # short display name: the corpus name, or the file/folder name
    source: str  # the path or registry name it was read from
    turns: pl.DataFrame = field(repr=False)  # one row per turn, sorted by (dialogue_id, turn)
    kind: str = "file"  # "file" | "run" | "named" | "frame"
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)  # a run's manifest.json
    total_dialogues: int | None = None  # dialogues in the source before sampling (None: not sampled)
    split: str | None = None  # the split kept (`SPLITS`), None = all dialogues

    @property
    def labels(self) -> tuple[str, ...]:
        """The known label columns that hold at least one value."""
        return tuple(
            c for c in LABEL_COLUMNS if c in self.turns.columns and self.turns[c].null_count() < self.turns.height
        )

    @property
    def n_dialogues(self) -> int:
        return self.turns["dialogue_id"].n_unique()


def load_corpus(spec: str | Path | pl.DataFrame | Corpus, *, name: str | None = None, max_dialogues: int = 0,
                seed: int = 0, columns: tuple[str, ...] | None = None, split: str | None = None) -> Corpus:
    """Read a corpus from a frame, a run folder, a file or a registered name (see module doc).

    max_dialogues: keep a seeded sample of at most this many dialogues (`sample_ids`); 0 keeps all.
    columns: keep only these of the optional columns (the required ones always stay); None keeps all.
    A run folder or a .parquet file is read lazily (a polars scan): only the kept columns of the
    sampled dialogues are loaded, so a sample of a run bigger than memory can be read.
    split: keep only the dialogues of this split (`split_of`), before sampling; None keeps all.
    """
    if split is not None and split not in SPLITS:
        raise DataError(unknown_name("split", str(split), SPLITS))
    if isinstance(spec, Corpus):
        if split is None or spec.split == split:
            return spec
        return _corpus(spec.turns.lazy(), spec.source, name=spec.name, kind=spec.kind, manifest=spec.manifest,
                       max_dialogues=max_dialogues, seed=seed, columns=columns, split=split)
    how = {"max_dialogues": max_dialogues, "seed": seed, "columns": columns, "split": split}
    if isinstance(spec, pl.DataFrame):
        return _corpus(spec.lazy(), "<frame>", name=name or "frame", kind="frame", **how)
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in CORPUS_SUFFIXES and p.is_file())
        if not (path / "turns.parquet").exists() and files:
            frames = [read_turns_file(p) for p in files]
            try:
                raw = pl.concat(frames, how="diagonal_relaxed")
            except Exception as e:
                raise DataError(f"{path}: its corpus files {[p.name for p in files]} do not stack into one table ({e}).") from e
            return _corpus(raw.lazy(), str(path), name=name or path.name, kind="file", **how)
        return _load_run(path, name, **how)
    if path.is_file():
        raw = _scan_parquet(path) if path.suffix.lower() == ".parquet" else read_turns_file(path).lazy()
        return _corpus(raw, str(path), name=name or path.name, kind="file", **how)
    text = str(spec)
    looks_like_path = any(s in text for s in ("/", "\\")) or path.suffix in (".json", ".jsonl", ".parquet")
    if not looks_like_path:
        if text not in CORPORA:
            raise DataError(
                unknown_name("corpus name", text, CORPORA)
                + " Or pass a path to a run folder or a .jsonl/.json/.parquet corpus file."
            )
        loader = _resolve(CORPORA[text])
        return _corpus(loader().lazy(), text, name=name or text, kind="named", **how)
    raise DataError(f"corpus file {text!r} does not exist. Check the path (relative paths start at {Path.cwd()}).")


def sample_ids(ids: pl.Series, n: int, seed: int) -> pl.Series:
    """A seeded sample of at most `n` of the distinct `ids` (all of them when n is 0 or covers them)."""
    ids = ids.unique().sort()
    return ids if not n or len(ids) <= n else ids.sample(n, seed=seed, shuffle=True)


def _corpus(raw: pl.LazyFrame, where: str, *, name: str, kind: str, max_dialogues: int, seed: int,
            columns: tuple[str, ...] | None, split: str | None = None, manifest: dict[str, Any] | None = None,
            source: str | None = None) -> Corpus:
    """Project, sample and validate a lazily read corpus; errors name `where` (the file)."""
    source = source or where
    try:
        schema = raw.collect_schema()
    except Exception as e:  # polars raises several error types for unreadable files
        raise DataError(f"{where} is not a readable table ({type(e).__name__}: {e}).") from e
    if columns is not None:
        raw = raw.select([c for c in schema if c in REQUIRED_COLUMNS or c in columns])
    if split is not None and "dialogue_id" in schema:
        ids = _collect(raw.select(pl.col("dialogue_id").cast(pl.String).unique()), where).to_series()
        keep = ids.filter(ids.map_elements(split_of, return_dtype=pl.String) == split)
        raw = raw.filter(pl.col("dialogue_id").cast(pl.String).is_in(keep.implode()))
    total = None
    if max_dialogues and "dialogue_id" in schema:
        ids = _collect(raw.select(pl.col("dialogue_id").cast(pl.String).unique()), where).to_series()
        keep = sample_ids(ids, max_dialogues, seed)
        total = len(ids)
        if len(keep) < total:
            raw = raw.filter(pl.col("dialogue_id").cast(pl.String).is_in(keep.implode()))
    turns = validate_turns(_collect(raw, where), where)
    return Corpus(name=name, source=source, turns=turns, kind=kind, manifest=manifest or {}, total_dialogues=total,
                  split=split)


def dialogue_values(turns: pl.DataFrame, column: str) -> pl.DataFrame:
    """(dialogue_id, value): each dialogue's label in `column` of a turns frame, its first non-null value as a
    string; dialogues with none, or whose first is blank, are left out. What a dialogue-level column (a
    chat's `topic`) says, read by `profiles.values_from` and `simgen tune` alike."""
    firsts = turns.group_by("dialogue_id", maintain_order=True).agg(pl.col(column).drop_nulls().first().cast(pl.String).alias("value"))
    return firsts.filter(pl.col("value").is_not_null() & (pl.col("value").str.strip_chars() != ""))


def _resolve(target: str) -> Callable[[], pl.DataFrame]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _load_run(folder: Path, name: str | None, **how: Any) -> Corpus:
    # a folder is a run folder: what is wrong with one is a RunError here as in simgen.generation.run.load_run
    parquet = folder / "turns.parquet"
    if not parquet.is_file():
        raise RunError(
            f"folder {str(folder)!r} has no turns.parquet, so it is not a run folder. "
            "Point at a run folder written by `simgen generate` or at a corpus file."
        )
    manifest: dict[str, Any] = {}
    mpath = folder / "manifest.json"
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{mpath} is not valid UTF-8 JSON ({e}); fix or delete it.") from e
        if not isinstance(manifest, dict):
            raise RunError(f"{mpath} holds a JSON {type(manifest).__name__}, not an object; fix or delete it.")
    return _corpus(_scan_parquet(parquet), str(parquet), name=name or folder.name, kind="run", manifest=manifest,
                   source=str(folder), **how)


def read_turns_file(path: Path) -> pl.DataFrame:
    """Read a corpus file into a raw frame (not yet validated)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix in (".jsonl", ".json"):
        raw = _read_utf8(path)
        if suffix == ".jsonl":
            rows = []
            for i, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {i}: not valid JSON ({e.msg}). {SCHEMA_HELP}") from e
            return _rows_to_frame(rows, path)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}). {SCHEMA_HELP}") from e
        if isinstance(data, list) and data and isinstance(data[0], dict) and "conversation" in data[0]:
            return iard_to_turns(data, source=str(path))
        if isinstance(data, list):
            return _rows_to_frame(data, path)
        raise DataError(f"{path}: expected a JSON list of turn objects or IARD conversations. {SCHEMA_HELP}")
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet. {SCHEMA_HELP}")


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not UTF-8 text (bad byte 0x{data[e.start]:02x} at line {line}, byte {e.start}). "
            "Re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.jsonl > out.jsonl`."
        ) from e


def _read_parquet(path: Path) -> pl.DataFrame:
    return _collect(_scan_parquet(path), str(path))


def _scan_parquet(path: Path) -> pl.LazyFrame:
    try:
        return pl.scan_parquet(path)
    except Exception as e:  # polars raises several error types for unreadable files
        raise DataError(f"{path} is not a readable parquet file ({type(e).__name__}: {e}).") from e


def _collect(frame: pl.LazyFrame, source: str) -> pl.DataFrame:
    try:
        return frame.collect()
    except DataError:
        raise
    except Exception as e:  # a cut or corrupt file shows up only when read; polars raises several types
        raise DataError(f"{source} is not a readable table ({type(e).__name__}: {e}).") from e


def _rows_to_frame(rows: list[Any], path: Path) -> pl.DataFrame:
    if not rows:
        raise DataError(f"{path} holds no turns: the corpus is empty. {SCHEMA_HELP}")
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: every row must be a JSON object (one per turn). {SCHEMA_HELP}")
    try:
        return pl.from_dicts(rows, infer_schema_length=None)
    except Exception as e:
        raise DataError(f"{path}: rows do not form a table ({e}). {SCHEMA_HELP}") from e


def validate_turns(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check a raw frame against the turns schema and return it canonical and sorted.

    Raises `DataError` naming the missing column, bad role values, empty or null text, duplicate
    (dialogue_id, turn) pairs, or non-UTF-8 text (a binary column), with the source it came from.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source} is missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(it has {', '.join(map(repr, df.columns)) or 'no columns'}). {SCHEMA_HELP}"
        )
    if df.height == 0:
        raise DataError(f"{source} holds no turns: the corpus is empty.")
    if not isinstance(df.schema["text"], (pl.String, pl.Binary, pl.Null, pl.Categorical, pl.Enum)):
        raise DataError(f"{source}: column 'text' holds {df.schema['text']} values, not strings; every turn's text must "
                        f"be a string (quote numbers and booleans in JSON). {SCHEMA_HELP}")
    if df.schema["text"] == pl.Binary:
        try:
            df = df.with_columns(pl.col("text").cast(pl.String))
        except Exception as e:
            raise DataError(f"{source}: column 'text' is not UTF-8. Re-encode the text as UTF-8.") from e
    try:
        df = df.with_columns(
            pl.col("dialogue_id").cast(pl.String),
            pl.col("turn").cast(pl.Int64),
            pl.col("role").cast(pl.String).str.to_lowercase(),
            pl.col("text").cast(pl.String),
        )
    except Exception as e:
        raise DataError(f"{source}: a column has the wrong type ({e}). {SCHEMA_HELP}") from e
    bad_roles = sorted(set(df["role"].drop_nulls().unique().to_list()) - set(ROLES))
    if bad_roles or df["role"].null_count():
        shown = bad_roles[:5] + (["null"] if df["role"].null_count() else [])
        raise DataError(f"{source}: column 'role' has values {shown}; only 'user' and 'assistant' are allowed.")
    for col in ("dialogue_id", "turn", "text"):
        nulls = df[col].null_count()
        if nulls:
            raise DataError(f"{source}: column {col!r} has {nulls} null value(s); every turn needs one.")
    dup = df.group_by("dialogue_id", "turn").len().filter(pl.col("len") > 1)
    if dup.height:
        first = dup.row(0, named=True)
        raise DataError(
            f"{source}: {dup.height} (dialogue_id, turn) pair(s) appear more than once, e.g. "
            f"dialogue {first['dialogue_id']!r} turn {first['turn']}. Number the turns of each dialogue 0, 1, 2, ..."
        )
    return df.sort("dialogue_id", "turn")


def iard_to_turns(conversations: list[Any], source: str = "<iard>") -> pl.DataFrame:
    """Convert the IARD JSON shape to the turns frame: `intent` is the primary act (`primary_act`),
    `acts` every act label in annotation order, comma-separated."""
    role_of = {"USER": "user", "AGENT": "assistant"}
    rows: list[dict[str, Any]] = []
    for n, c in enumerate(conversations):
        if not isinstance(c, dict):
            raise DataError(f"{source}: conversation {n} is a {type(c).__name__}; expected an object with conversation_id and conversation.")
        missing = [k for k in ("conversation_id", "conversation") if k not in c]
        if missing:
            raise DataError(f"{source}: an IARD conversation lacks the key {missing[0]!r}.")
        cid = str(c["conversation_id"])
        if not isinstance(c["conversation"], list):
            raise DataError(f"{source}: conversation {cid!r}: 'conversation' must be a list of utterance objects.")
        for i, u in enumerate(c["conversation"]):
            where = f"{source}: conversation {cid!r}, utterance {i}"
            if not isinstance(u, dict) or "participant" not in u or "utterance" not in u:
                raise DataError(f"{where}: expected an object with 'participant' (USER or AGENT) and 'utterance'.")
            participant = u["participant"]
            if not isinstance(participant, str) or participant not in role_of:
                raise DataError(f"{where} has participant {participant!r}; expected USER or AGENT.")
            if not isinstance(u["utterance"], str):
                raise DataError(f"{where}: 'utterance' must be a string, got {type(u['utterance']).__name__}.")
            acts = u.get("dialogue_acts") or []
            first = acts[0] if isinstance(acts, list) and acts else None
            if acts and not (isinstance(first, dict) and isinstance(first.get("intent"), (str, type(None)))):
                raise DataError(f"{where}: 'dialogue_acts' must be a list of objects with a string 'intent'.")
            labels = [a.get("intent") for a in acts if isinstance(a, dict) and isinstance(a.get("intent"), str)]
            rows.append({"dialogue_id": cid, "turn": i, "role": role_of[participant], "text": u["utterance"],
                         "intent": primary_act(labels), "acts": ",".join(labels) or None})
    if not rows:
        raise DataError(f"{source} holds no turns: the corpus is empty.")
    schema = {"dialogue_id": pl.String, "turn": pl.Int64, "role": pl.String, "text": pl.String, "intent": pl.String,
              "acts": pl.String}
    return pl.DataFrame(rows, schema=schema)


CLOSING_ACTS = frozenset({"OTH", "END"})  # IARD acts that carry no request: small talk, thanks, goodbye


def primary_act(acts: list[str]) -> str | None:
    """The act a line is mainly about: the first that is neither OTH nor END ("Hi! Any comedies?" is
    (OTH, IQU): IQU); the first act when it has nothing else; None when unlabelled."""
    return next((a for a in acts if a not in CLOSING_ACTS), acts[0] if acts else None)


def load_chitchat(min_turns: int = 2) -> pl.DataFrame:
    """chitchat-dataset (7,168 human-human chats, MIT) as turns.

    A turn is one run of consecutive messages by the same sender, joined by a space. The first
    sender is `user`, the other `assistant` (both are people). Chats with fewer than `min_turns`
    turns (one person talking to nobody: 3,150 of them) are dropped. `topic` is the conversation
    starter the chat app showed both people ("What if the world was made of peanut butter?"; 34 of
    them), on every turn of the chat; null for the few chats without one.
    """
    import chitchat_dataset

    rows: dict[str, list[Any]] = {"dialogue_id": [], "turn": [], "role": [], "text": [], "topic": []}
    for cid, chat in chitchat_dataset.Dataset().items():
        groups = chat["messages"]
        if len(groups) < min_turns:
            continue
        first = groups[0][0]["sender"]
        topic = " ".join(str(chat.get("prompt") or "").split()) or None
        for i, group in enumerate(groups):
            rows["dialogue_id"].append(cid)
            rows["turn"].append(i)
            rows["role"].append("user" if group[0]["sender"] == first else "assistant")
            rows["text"].append(" ".join(m["text"] for m in group))
            rows["topic"].append(topic)
    return pl.DataFrame(rows, schema={"dialogue_id": pl.String, "turn": pl.Int64, "role": pl.String, "text": pl.String,
                                      "topic": pl.String})
