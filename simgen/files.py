"""Files every stage writes the same way: atomic writes, reports, and simgen's cache folder.

    atomic_write_bytes / _json / _parquet   write to a temporary name, fsync, rename: a crash
                                            leaves the old file or the new one, never half of one
    write_report(folder, name, report, html)   reports/<name>.json and <name>.html, both atomic
    cache_root()                            $SIMGEN_CACHE, else $XDG_CACHE_HOME/simgen, else ~/.cache/simgen

This module knows nothing about runs, checks or models; they call it.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from simgen.errors import RunError


def now() -> str:
    """The current UTC time, ISO 8601 to the second: what manifests and reports record."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cache_root() -> Path:
    """simgen's cache folder (converted models, embeddings): `SIMGEN_CACHE`, else `$XDG_CACHE_HOME/simgen`."""
    if os.environ.get("SIMGEN_CACHE"):
        return Path(os.environ["SIMGEN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "simgen"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=_json_default) + "\n").encode())


def atomic_write_parquet(path: Path, frame: pl.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_report(folder: Path, name: str, report: dict[str, Any], html: str) -> dict[str, Path]:
    """Write `folder/<name>.json` and `folder/<name>.html` (created), each atomically; return their paths.

    An unwritable folder is a `RunError` that names it.
    """
    paths = {"json": folder / f"{name}.json", "html": folder / f"{name}.html"}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths["json"], report)
        atomic_write_bytes(paths["html"], html.encode("utf-8"))
    except OSError as e:
        raise RunError(f"could not write the {name} report to {folder}: {e.strerror}. Choose another --out.") from e
    return paths


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays as numbers and lists, sets as lists, anything else (paths) as its str."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)
