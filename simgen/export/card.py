"""Dataset cards: the README.md with YAML metadata that the Hub and `datasets.load_dataset` read.

    ---
    license: apache-2.0
    task_categories: [text-generation]
    size_categories: [n<1K]
    tags: [synthetic, simgen, ...]
    configs:                       # one per exported table; `load_dataset(DIR, NAME)` picks one
    - config_name: dialogues
      default: true
      data_files:
      - {split: train, path: data/dialogues/train-*-3f9a0c1d2b4e.parquet}   # the shards' content tag
    ---
    # title
    body (Markdown)

This module only renders text; the exporters decide what goes in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for `n` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((name for bound, name in bounds if n < bound), "n>1T")


def config_entry(name: str, folder: str, files: Mapping[str, Mapping[str, Any]], default: bool = False) -> dict[str, Any]:
    """A card's `configs` entry for the shards `write_splits` wrote (split -> {"tag", ...}), named by their content tag."""
    entry: dict[str, Any] = {"config_name": name}
    if default:
        entry["default"] = True
    entry["data_files"] = [{"split": s, "path": f"{folder}/{s}-*-{info['tag']}.parquet"} for s, info in files.items()]
    return entry


def render_card(metadata: Mapping[str, Any], title: str, body: str) -> str:
    header = yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True, width=120)
    return f"---\n{header}---\n\n# {title}\n\n{body.strip()}\n"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A Markdown table; `|` in cells is escaped."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)
