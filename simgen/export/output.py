"""Export folders: checked before any work, built aside, and moved into place in one rename.

    check_target(to, overwrite, run)   refuse a non-empty --to (unless overwrite), a file, the run itself
    staged(to, overwrite)              a context manager: a temporary sibling folder to write into;
                                       on success it replaces --to, on error it is removed
    write_splits(frame, folder, ...)   one lazy frame -> `{split}-00000-of-0000N-{tag}.parquet` shards

Shard names end in a tag of their content (the first 12 hex digits of a sha256 over the split's
shards), and cards name the shards by that tag. `datasets` caches a local folder under its name and
the card's file patterns, not under the files themselves: without the tag, a second export to a
folder of the same name would load the first export's rows from the cache.

A crash or an error leaves --to as it was (absent, empty, or the previous export); nothing is
written outside --to except the temporary sibling, which becomes --to. This module knows nothing
about runs beyond refusing to overwrite one.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from simgen.errors import RunError

MAX_SHARD_ROWS = 250_000  # rows per parquet shard: a few hundred MB of dialogue text at most


def check_target(to: Path, overwrite: bool, run: Path | None = None) -> None:
    """Refuse an output folder that would lose data; call before any work is done."""
    if to.exists() and not to.is_dir():
        raise RunError(f"--to {to}: exists and is not a folder; choose a folder path.")
    if run is not None and to.exists() and (to.resolve() == run.resolve() or run.resolve().is_relative_to(to.resolve())):
        raise RunError(f"--to {to}: that folder holds the run {run}; choose another --to.")
    if to.is_dir() and any(to.iterdir()):
        if (to / "manifest.json").is_file() and (to / "turns.parquet").exists():
            raise RunError(f"--to {to}: that folder holds a simgen run; an export never replaces a run. Choose another --to.")
        if not overwrite:
            raise RunError(f"--to {to}: the folder is not empty; choose a new or empty folder, or pass --overwrite to replace it.")
    parent = to.resolve().parent
    if not os.access(parent if parent.exists() else parent.parent, os.W_OK):
        raise RunError(f"--to {to}: cannot write to {parent}; choose a folder you can write to.")


@contextmanager
def staged(to: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `to`; move it into place when the block succeeds."""
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}.partial-", dir=to.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if to.exists():
        if any(to.iterdir()) and not overwrite:  # something appeared while we worked
            shutil.rmtree(tmp, ignore_errors=True)
            raise RunError(f"--to {to}: the folder filled up while the export ran; nothing was replaced.")
        old = Path(tempfile.mkdtemp(prefix=f".{to.name}.old-", dir=to.parent))
        os.replace(to, old / "previous")
    os.replace(tmp, to)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_splits(frame: pl.LazyFrame, folder: Path, splits: tuple[str, ...], max_rows: int = MAX_SHARD_ROWS) -> dict[str, dict[str, Any]]:
    """Write each split of `frame` (which has a `split` column, dropped here) as parquet shards.

    Returns split -> {"rows", "shards", "tag"} for the splits that have rows; empty splits get no file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    counts = dict(frame.group_by("split").len().collect().iter_rows())
    out: dict[str, dict[str, int]] = {}
    for split in splits:
        rows = int(counts.get(split, 0))
        if not rows:
            continue
        part = frame.filter(pl.col("split") == split).drop("split")
        n = math.ceil(rows / max_rows)
        digest = hashlib.sha256()
        written = []
        for k in range(n):
            path = folder / f".{split}-{k:05d}-of-{n:05d}.parquet.partial"
            part.slice(k * max_rows, max_rows).sink_parquet(path, compression="zstd", statistics=True)
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            written.append(path)
        tag = digest.hexdigest()[:12]
        for k, path in enumerate(written):
            path.rename(folder / f"{split}-{k:05d}-of-{n:05d}-{tag}.parquet")
        out[split] = {"rows": rows, "shards": n, "tag": tag}
    return out
