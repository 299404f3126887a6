"""Run folders: how a `simgen generate` run is written, resumed and read back.

    RUN/
      manifest.json          what produced the run, what is done, counts, timings
      shards/part-00000.parquet ...   one per finished batch, while the run is in progress
      turns.parquet          all turns, in dialogue order (written when the run completes)
      reports/               what checks write (never turns.parquet)

Every file is written to a temporary name and renamed into place, so a crash leaves either the
old file or the new one, never half of one. The manifest lists finished shards; resuming skips
them. When the last shard lands, the shards are merged (streamed, not loaded) into
`turns.parquet`, the manifest is marked complete, and only then are the shards removed. So a kill
at any moment leaves one of these states, each of which `simgen generate --resume` finishes:

    no manifest yet            nothing to resume: rerun the original command (the folder is reused)
    running / interrupted      finished shards are kept; the rest are generated
    all shards, merge pending  the shards are merged again (no model is loaded)
    complete, shards left      the leftover shards are removed

Shard files are named from their integer index, never from manifest text. Ctrl-C is held while a
shard and its manifest entry are written, so they land together. This module does not generate or
check anything.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from simgen.data import OPTIONAL_COLUMNS, TURN_COLUMNS
from simgen.errors import RunError
from simgen.files import atomic_write_json, atomic_write_parquet, now

MANIFEST = "manifest.json"
TURNS = "turns.parquet"
SHARDS = "shards"
FORMAT_VERSION = 1
# what a run killed before its manifest landed can leave behind (reused as an empty folder)
LEFTOVERS = frozenset({".write-test", f".{MANIFEST}.tmp"})


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("simgen", "torch", "transformers", "polars", "numpy", "jinja2", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise `KeyboardInterrupt`.

    Only the main thread can take signals; elsewhere the block runs as is. A process that ignores
    SIGINT (started with `nohup`, or with `&` from a script) keeps ignoring it.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def holds_no_run(out: Path) -> bool:
    """True when `out` holds nothing but what a run killed before its manifest landed leaves."""
    return all(p.name in LEFTOVERS for p in out.iterdir())


def prepare_out_dir(out: Path) -> None:
    """Create `out` for a new run; refuse one that already holds files (nothing is overwritten)."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: exists and is not a folder; choose another path.")
    if out.is_dir() and not holds_no_run(out):
        if (out / MANIFEST).is_file():
            raise RunError(f"--out {out}: already holds a run. Resume it with `simgen generate --resume {out}`, or choose another --out.")
        raise RunError(f"--out {out}: the folder is not empty; choose an empty or new folder so nothing in it is overwritten.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in LEFTOVERS:
            (out / leftover).unlink(missing_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"--out {out}: cannot write there ({e.strerror}); choose a folder you can write to.") from None


def shard_name(shard: int) -> str:
    """`part-00007.parquet`: shard files are named from their index only."""
    return f"part-{int(shard):05d}.parquet"


def check_manifest(manifest: Any, path: Path) -> None:
    """Raise RunError, naming the field, unless `manifest` (read from `path`) has what a resume reads."""

    def bad(field: str, want: str, got: Any) -> RunError:
        return RunError(f"{path}: {field} is {got!r}, expected {want}. The manifest was edited or damaged; restore it, "
                        "or start a new run (the finished shards cannot be matched to dialogues without it).")

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(manifest, dict):
        raise bad("the manifest", "a JSON object", type(manifest).__name__)
    for key in ("config", "scenario", "progress"):
        if not isinstance(manifest.get(key), dict):
            raise bad(key, "an object", manifest.get(key))
    for side in ("user", "assistant"):
        if not isinstance(manifest["config"].get(side), dict):
            raise bad(f"config.{side}", "an object of sampling settings", manifest["config"].get(side))
    scenario = manifest["scenario"]
    legacy = "fingerprint" not in scenario and "sha256" in scenario  # written before the fingerprint
    for key in ("path", "sha256" if legacy else "fingerprint"):
        if not isinstance(scenario.get(key), str):
            raise bad(f"scenario.{key}", "a string", scenario.get(key))
    files = scenario.get("files")
    if not legacy and not (isinstance(files, dict) and all(isinstance(f, dict) and isinstance(f.get("sha256"), str) for f in files.values())):
        raise bad("scenario.files", "an object of {path, sha256} per file", files)
    progress = manifest["progress"]
    for key in ("batch_size", "n_shards"):
        if not integer(progress.get(key)) or progress[key] <= 0:
            raise bad(f"progress.{key}", "a positive integer", progress.get(key))
    if not isinstance(progress.get("shards"), list):
        raise bad("progress.shards", "a list", progress.get("shards"))
    size = progress["batch_size"]
    for i, entry in enumerate(progress["shards"]):
        where = f"progress.shards[{i}]"
        if not isinstance(entry, dict):
            raise bad(where, "an object", entry)
        shard = entry.get("shard")
        if not integer(shard) or not 0 <= shard < progress["n_shards"]:
            raise bad(f"{where}.shard", f"an integer from 0 to {progress['n_shards'] - 1}", shard)
        span = entry.get("dialogues")
        if not (isinstance(span, list) and len(span) == 2 and all(map(integer, span))
                and span[0] == shard * size and span[0] <= span[1] < span[0] + size):
            raise bad(f"{where}.dialogues", f"[first, last] of shard {shard} (first = {shard * size})", span)
        for key in ("tokens", "seconds"):
            if not isinstance(entry.get(key), (int, float)) or isinstance(entry.get(key), bool):
                raise bad(f"{where}.{key}", "a number", entry.get(key))
    shards = [e["shard"] for e in progress["shards"]]
    if len(set(shards)) != len(shards):
        raise bad("progress.shards", "each shard listed once", sorted(shards))


class RunWriter:
    """Writes finished batches as shards and keeps the manifest in step with them.

    A shard the manifest lists but whose file is gone (a run finished, then resumed after the
    cleanup was cut short, or a hand-edited folder) is dropped from the list and made again.
    """

    def __init__(self, out: Path, manifest: dict[str, Any]) -> None:
        self.out = out
        self.manifest = manifest
        (out / SHARDS).mkdir(exist_ok=True)
        progress = manifest["progress"]
        progress["shards"] = [s for s in progress["shards"] if self.shard_path(s["shard"]).is_file()]
        progress["dialogues_done"] = _dialogues(progress["shards"])

    def shard_path(self, shard: int) -> Path:
        return self.out / SHARDS / shard_name(shard)

    @property
    def done_shards(self) -> set[int]:
        return {s["shard"] for s in self.manifest["progress"]["shards"]}

    def write_shard(self, shard: int, frame: pl.DataFrame, first: int, last: int, tokens: int, seconds: float) -> None:
        """Write one shard, then list it in the manifest; Ctrl-C waits until both are on disk."""
        with deferred_interrupt():
            self.record(write_shard_file(self.out, shard, frame, first, last, tokens, seconds))

    def record(self, entry: dict[str, Any]) -> None:
        """List a shard whose file is on disk (`write_shard_file`'s entry) in the manifest."""
        if not (self.out / entry["file"]).is_file():
            raise RunError(f"shard {entry['shard']} was reported written, but {self.out / entry['file']} is not there: "
                           "the run folder must be one folder that the writer and this process both see.")
        progress = self.manifest["progress"]
        with deferred_interrupt():
            progress["shards"] = sorted([*(s for s in progress["shards"] if s["shard"] != entry["shard"]), entry],
                                        key=lambda s: s["shard"])
            progress["dialogues_done"] = _dialogues(progress["shards"])
            self.save()

    def save(self) -> None:
        atomic_write_json(self.out / MANIFEST, self.manifest)

    def finish(self, timings: dict[str, Any]) -> None:
        """Merge the shards into turns.parquet (streamed), fill in the counts, mark the run complete,
        then remove the shards. Safe to repeat after a crash at any line: the shards stay until
        the manifest says complete."""
        shards = [self.shard_path(s["shard"]) for s in self.manifest["progress"]["shards"]]
        tmp = self.out / f".{TURNS}.tmp"
        # a run resumed across the simgen version that added a column (`redraws`, say) has shards with
        # and without it: read them under the union of their schemas, the missing column as null
        schema: dict[str, pl.DataType] = {}
        for path in shards:
            schema.update(pl.read_parquet_schema(path))
        pl.scan_parquet(shards, schema=schema, missing_columns="insert").sink_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, self.out / TURNS)
        turns = pl.scan_parquet(self.out / TURNS)
        stats = turns.select(
            pl.col("dialogue_id").n_unique().alias("dialogues"),
            pl.len().alias("turns"),
            (pl.col("role") == "user").sum().alias("user_turns"),
            pl.col("n_tokens").sum().alias("tokens"),
        ).collect().row(0, named=True)
        reasons = turns.filter(pl.col("stop_reason").is_not_null()).select("stop_reason").collect()["stop_reason"].to_list()
        self.manifest["counts"] = {**{k: int(v) for k, v in stats.items()}, "stop_reasons": _count(reasons),
                                   "failed": sum(1 for r in reasons if r.startswith("generation_error"))}
        self.manifest["timings"] = {**self.manifest.get("timings", {}), **timings}
        self.manifest["status"] = "complete"
        self.manifest["finished"] = now()
        self.save()
        remove_leftovers(self.out)


def write_shard_file(out: Path, shard: int, frame: pl.DataFrame, first: int, last: int, tokens: int,
                     seconds: float) -> dict[str, Any]:
    """Write one shard's file atomically (a crash leaves it whole or absent) and return its manifest entry."""
    stop = frame.filter(pl.col("stop_reason").is_not_null())["stop_reason"].to_list()
    entry = {"shard": shard, "file": f"{SHARDS}/{shard_name(shard)}", "dialogues": [first, last], "rows": frame.height,
             "tokens": tokens, "seconds": round(seconds, 3), "stop_reasons": _count(stop)}
    atomic_write_parquet(out / SHARDS / shard_name(shard), frame)
    return entry


def remove_leftovers(out: Path) -> None:
    """Remove what a complete run no longer needs: its shards and temporary files."""
    shutil.rmtree(out / SHARDS, ignore_errors=True)
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _dialogues(shards: list[dict[str, Any]]) -> int:
    return sum(s["dialogues"][1] - s["dialogues"][0] + 1 for s in shards)


def _count(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        key = v.split(":")[0] if v.startswith("generation_error") else v
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Run:
    """A finished run folder. `turns` loads the turns frame; `scan()` reads it lazily."""

    path: Path

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.path / TURNS)

    @cached_property
    def max_turns(self) -> int:
        """The user-turn horizon the run's chats were rendered with, which rebuilding a chat needs:
        the manifest's `config.max_turns` (every run simgen writes records it), else, for a folder
        written another way, the most user turns any of its dialogues has."""
        recorded = (self.manifest.get("config") or {}).get("max_turns")
        return int(recorded) if recorded else most_user_turns(self.scan())

    @cached_property
    def turns(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / TURNS)

    def dialogues(self) -> pl.DataFrame:
        """One row per dialogue: id, profile, intents, number of turns, stop reason."""
        return (
            self.scan()
            .group_by("dialogue_id", maintain_order=True)
            .agg(
                pl.col("profile").first(),
                pl.col("intent").drop_nulls().alias("intents"),
                pl.len().alias("n_turns"),
                pl.col("stop_reason").drop_nulls().first(),
            )
            .collect()
        )

    def __repr__(self) -> str:
        counts = self.manifest.get("counts", {})
        return f"Run({str(self.path)!r}, dialogues={counts.get('dialogues')}, turns={counts.get('turns')})"


def most_user_turns(scan: pl.LazyFrame) -> int:
    """The most user turns any dialogue in `scan` has (at least 1): the horizon of turns that do not
    record the one they were written with."""
    longest = (scan.filter(pl.col("role") == "user").group_by("dialogue_id").len()
               .select(pl.col("len").max()).collect(engine="streaming").item())
    return max(1, int(longest or 0))


def dialogue_spans(scan: pl.LazyFrame) -> pl.DataFrame:
    """Each dialogue's rows in the file, sorted by dialogue_id: dialogue_id, start, rows, contiguous.

    A run's turns.parquet keeps each dialogue's rows together and in dialogue order, so a chunk of
    dialogues is one row range, read with a slice (the parquet reader skips the rest); any other
    frame is read with a filter on the chunk's ids.
    """
    spans = (scan.select("dialogue_id").with_row_index("row").group_by("dialogue_id")
             .agg(pl.col("row").min().alias("start"), pl.len().alias("rows"), pl.col("row").max().alias("end"))
             .sort("dialogue_id").collect(engine="streaming"))
    together = (spans["end"] - spans["start"] + 1 == spans["rows"]).all()
    in_order = (spans["start"].shift(-1) == spans["end"] + 1).drop_nulls().all()
    return spans.select("dialogue_id", "start", "rows").with_columns(pl.lit(bool(together and in_order)).alias("contiguous"))


def read_dialogues(scan: pl.LazyFrame, spans: pl.DataFrame) -> pl.DataFrame:
    """The rows of the dialogues in `spans` (rows of `dialogue_spans`): one row range when they are
    consecutive in the file, else a filter on their ids."""
    if spans.height and spans["contiguous"][0] and (spans["start"].shift(-1) == spans["start"] + spans["rows"]).drop_nulls().all():
        return scan.slice(spans["start"][0], int(spans["rows"].sum())).collect()
    return scan.filter(pl.col("dialogue_id").is_in(spans["dialogue_id"].implode())).collect(engine="streaming")


def load_run(path: str | os.PathLike[str]) -> Run:
    """Open a complete run folder; a missing or unfinished one is a `RunError` that says what to do."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder.")
    if not (path / MANIFEST).is_file():
        raise RunError(f"{path}: no {MANIFEST}, so this is not a simgen run folder.")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except ValueError as e:
        raise RunError(f"{path / MANIFEST}: not valid JSON ({e}).") from None
    if manifest.get("status") != "complete" or not (path / TURNS).is_file():
        raise RunError(f"{path}: the run is not complete ({manifest.get('status', 'unknown')}). Finish it with `simgen generate --resume {path}`.")
    schema = pl.read_parquet_schema(path / TURNS)
    missing = [c for c in TURN_COLUMNS if c not in schema and c not in OPTIONAL_COLUMNS]
    if missing:
        raise RunError(f"{path / TURNS}: missing column {missing[0]!r}; the file does not follow the turns schema.")
    return Run(path)
