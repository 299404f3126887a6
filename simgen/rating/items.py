"""The item set of a human rating: which dialogues people see, cut how, in which order.

An item set is a seeded sample of n/2 dialogues of a run and n/2 of a real corpus (by default its
held-out `test` split), saved once as RUN/rating/items.json so every rater and every restart sees
the same items. Nothing shown gives the source away but the dialogue itself:

- every line is shown as its role ("user" / "assistant") and its text, whitespace collapsed the
  same way on both sides; no ids, intents, profiles or stop reasons;
- both sides are cut to the same number of user turns (`max_user_turns`; by default the smaller of
  the two sides' 75th percentiles of user lines per dialogue), each item ending after the
  assistant's reply to its last kept user turn, so length gives away little. The report says how
  many items of each side were cut.

Each rater sees all items in an order of their own, seeded by (seed, rater name).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simgen.errors import DataError, RunError
from simgen.files import atomic_write_json, now

FOLDER = "rating"  # RUN/rating/
ITEMS = "items.json"
ANSWERS = "answers.jsonl"
VERSION = 1
SOURCES = ("synthetic", "real")
# the settings an item set is made from; a restart that passes none of them reuses the saved ones
SETTINGS = ("reference", "reference_split", "n", "seed", "max_user_turns")
DEFAULTS: dict[str, Any] = {"reference_split": "test", "n": 40, "seed": 0, "max_user_turns": None}


@dataclass(frozen=True)
class Item:
    item: str  # internal id ("i007"): in the files, never on the page
    source: str  # "synthetic" | "real"
    dialogue_id: str
    turns: tuple[tuple[str, str], ...]  # (role, text), as shown
    cut: bool  # the dialogue had more user turns than `max_user_turns`

    @property
    def synthetic(self) -> int:
        return int(self.source == "synthetic")


@dataclass(frozen=True)
class ItemSet:
    """A saved item set (RUN/rating/items.json)."""

    folder: Path  # RUN/rating
    items_id: str  # a hash of the settings and the items: what every answer row is tied to
    settings: dict[str, Any]
    items: tuple[Item, ...]
    max_user_turns: int

    @property
    def answers_path(self) -> Path:
        return self.folder / ANSWERS

    def order(self, rater: str) -> list[int]:
        """The item indices in `rater`'s order: a permutation seeded by (seed, rater)."""
        key = int.from_bytes(hashlib.sha256(f"simgen-rate\0{rater}".encode()).digest()[:8], "big")
        return np.random.default_rng([int(self.settings["seed"]), key]).permutation(len(self.items)).tolist()

    def item(self, item_id: str) -> Item:
        return next(i for i in self.items if i.item == item_id)

    def cut_summary(self) -> dict[str, Any]:
        return {"max_user_turns": self.max_user_turns,
                **{f"{s}_cut": sum(i.cut for i in self.items if i.source == s) for s in SOURCES},
                **{f"{s}_items": sum(i.source == s for i in self.items) for s in SOURCES}}


def shown_text(text: str | None) -> str:
    """A line as the page shows it: whitespace runs (newlines included) collapsed, ends stripped."""
    return " ".join((text or "").split())


def cut_dialogue(rows: list[tuple[str, str]], max_user_turns: int) -> tuple[tuple[tuple[str, str], ...], bool]:
    """The first `max_user_turns` user turns with everything before them and the reply after the last."""
    out: list[tuple[str, str]] = []
    users = 0
    for role, text in rows:
        if role == "user":
            if users == max_user_turns:
                return tuple(out), True
            users += 1
        out.append((role, shown_text(text)))
    return tuple(out), False


def dialogues_of(turns: pl.DataFrame) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for did, role, text in turns.sort("dialogue_id", "turn").select("dialogue_id", "role", "text").iter_rows():
        out.setdefault(str(did), []).append((role, text or ""))
    return out


def usable(turns: pl.DataFrame) -> pl.DataFrame:
    """Dialogues with a user turn; a run's dialogues that a backend error ended are left out (not the simulator's doing)."""
    keep = turns.group_by("dialogue_id").agg(
        (pl.col("role") == "user").any().alias("has_user"),
        (pl.col("stop_reason").str.starts_with("generation_error").any() if "stop_reason" in turns.columns
         else pl.lit(False)).alias("failed"),
    ).filter(pl.col("has_user") & ~pl.col("failed").fill_null(False))["dialogue_id"]
    return turns.filter(pl.col("dialogue_id").is_in(keep.implode()))


def _user_lines_q75(dialogues: dict[str, list[tuple[str, str]]]) -> int:
    counts = [sum(r == "user" for r, _ in rows) for rows in dialogues.values()]
    return max(1, math.ceil(float(np.quantile(counts, 0.75))))


def _items_id(settings: dict[str, Any], items: list[dict[str, Any]]) -> str:
    blob = json.dumps({"settings": settings, "items": items}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_items(run_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The items.json document for `settings` (see `SETTINGS`); raises `DataError` when a side is too small."""
    from simgen.corpora import load_corpus, sample_ids

    n, seed, split = int(settings["n"]), int(settings["seed"]), settings["reference_split"]
    if n < 4 or n % 2:
        raise DataError(f"--n {n}: ask for an even number of items, at least 4 (half from the run, half real).")
    half = n // 2
    syn = usable(load_corpus(run_path).turns)
    ref_corpus = load_corpus(settings["reference"], split=None if split == "all" else split)
    ref = usable(ref_corpus.turns)
    sides = {}
    for source, frame, where, fix in (
        ("synthetic", syn, f"the run {run_path}", f"generate at least {half} dialogues, or ask for --n {2 * frame_n(syn)}"),
        ("real", ref, f"the reference {ref_corpus.source}" + (f" (its {split!r} split)" if split != "all" else ""),
         f"pass --n {2 * frame_n(ref)} or less"
         + (", or --reference-split all (but the held-out test split is the fair comparison)" if split != "all" else "")),
    ):
        have = frame_n(frame)
        if have < half:
            raise DataError(f"{where} has {have} usable dialogues (with a user turn), fewer than the {half} that --n {n} "
                            f"needs from it: {fix}.")
        ids = set(sample_ids(frame["dialogue_id"].cast(pl.String), half, seed).to_list())
        sides[source] = {k: v for k, v in dialogues_of(frame.with_columns(pl.col("dialogue_id").cast(pl.String))).items() if k in ids}
    k = settings["max_user_turns"]
    if k is None:
        k = min(_user_lines_q75(d) for d in sides.values())
    elif int(k) < 1:
        raise DataError(f"--max-user-turns {k}: show at least 1 user turn per dialogue.")
    k = int(k)
    raw = []
    for source in SOURCES:
        for did, rows in sorted(sides[source].items()):
            turns, was_cut = cut_dialogue(rows, k)
            raw.append({"source": source, "dialogue_id": did, "turns": [list(t) for t in turns], "cut": was_cut})
    rng = np.random.default_rng(seed)
    raw = [raw[i] for i in rng.permutation(len(raw))]  # item numbers say nothing about the source
    items = [{"item": f"i{j:03d}", **r} for j, r in enumerate(raw)]
    return {"version": VERSION, "items_id": _items_id(settings, items), "created": now(), "settings": settings,
            "max_user_turns": k, "items": items}


def frame_n(frame: pl.DataFrame) -> int:
    return frame["dialogue_id"].n_unique()


def _load(doc: dict[str, Any], folder: Path) -> ItemSet:
    items = tuple(Item(d["item"], d["source"], d["dialogue_id"], tuple((r, t) for r, t in d["turns"]), bool(d["cut"]))
                  for d in doc["items"])
    return ItemSet(folder, doc["items_id"], doc["settings"], items, int(doc["max_user_turns"]))


def read_items(run_path: Path) -> ItemSet | None:
    """The saved item set of a run, or None when it has none; a damaged file is a `RunError`."""
    path = Path(run_path) / FOLDER / ITEMS
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, this simgen reads {VERSION}")
        return _load(doc, path.parent)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not a simgen item set ({e}). Move RUN/{FOLDER} aside to start a new rating.") from e


def _verify(items: ItemSet, run: Any) -> None:
    """The run's dialogues must still read as the synthetic items show them (else the set is another run's).

    Reads only the rated dialogues' lines (a scan), so a restart costs the same on a run of any size.
    """
    ids = [it.dialogue_id for it in items.items if it.source == "synthetic"]
    syn = dialogues_of(run.scan().filter(pl.col("dialogue_id").is_in(ids)).select("dialogue_id", "turn", "role", "text").collect())
    run_path = run.path
    for it in items.items:
        if it.source != "synthetic":
            continue
        rows = syn.get(it.dialogue_id)
        if rows is None or cut_dialogue(rows, items.max_user_turns)[0] != it.turns:
            raise RunError(
                f"{items.folder / ITEMS} was made from other dialogues than {run_path}'s (item {it.item}, dialogue "
                f"{it.dialogue_id!r}, differs): it belongs to another run. Move {items.folder} aside to start a new "
                "rating of this run; nothing was changed.")


def prepare_items(run_path: str | Path, **given: Any) -> ItemSet:
    """The run's item set: the saved one when `given` settings agree with it, else a new one.

    given: any of `SETTINGS`; None or absent means "as saved" (or the default for a new set).
    A saved set that answers already refer to is never replaced: other settings are then a
    `RunError` that says how to go on.
    """
    from simgen.generation.run import load_run

    run = load_run(run_path)  # a missing or unfinished run folder fails here, before anything is written
    given = {k: v for k, v in given.items() if v is not None}
    unknown = set(given) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown item-set settings: {sorted(unknown)}")
    if "reference" in given:  # a path is kept absolute, so a restart from another folder finds it
        ref = Path(given["reference"]).expanduser()
        given["reference"] = str(ref.resolve()) if ref.exists() else str(given["reference"])
    saved = read_items(run.path)
    if saved is not None:
        differs = {k: (saved.settings.get(k), v) for k, v in given.items() if saved.settings.get(k) != v}
        if not differs:
            _verify(saved, run)
            return saved
        if saved.answers_path.is_file() and saved.answers_path.stat().st_size > 0:
            what = ", ".join(f"{k} {old!r} (you passed {new!r})" for k, (old, new) in differs.items())
            raise RunError(
                f"{saved.folder} holds answers for an item set made with {what}. Rerun with the saved settings (or "
                f"without those flags) to go on rating it, or move {saved.folder} aside to start a new rating; "
                "nothing was changed.")
    settings = {**DEFAULTS, **(saved.settings if saved else {}), **given}
    if "reference" not in settings:
        raise DataError(f"{run.path} has no rating yet: pass --reference, a real corpus to mix in (a file, a folder "
                        "or a registered name such as chitchat).")
    doc = build_items(run.path, {k: settings[k] for k in SETTINGS})
    folder = run.path / FOLDER
    try:
        folder.mkdir(exist_ok=True)
        atomic_write_json(folder / ITEMS, doc)
    except OSError as e:
        raise RunError(f"could not write {folder / ITEMS}: {e.strerror}.") from e
    return _load(doc, folder)
