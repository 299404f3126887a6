"""RUN/rating/answers.jsonl: one row per answer, appended, flushed and fsynced before the page moves on.

A row: items_id (the item set it answers), rater, position (in the rater's order), item, choice
("real" | "simulated"), confidence (1-4), note, seconds (on the page, or null), at (UTC).
Killing the server loses at most an answer whose write had not finished: a torn last line is cut
off when the file is opened again (and said so). Rows of another item set, or a line that is not an
answer, are an error that names the line; the file is then left as it is.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from simgen.errors import DataError, RunError
from simgen.files import now
from simgen.rating.items import ItemSet

CHOICES = ("real", "simulated")
CONFIDENCE = (1, 2, 3, 4)  # 1 = a guess, 4 = sure
MAX_NOTE = 500  # characters kept of a giveaway note
FIELDS = ("items_id", "rater", "position", "item", "choice", "confidence", "note", "seconds", "at")


def read_answers(items: ItemSet, *, repair: bool = False) -> list[dict[str, Any]]:
    """The answers of `items`, checked. repair=True cuts a torn last line off the file (a crash mid-write)."""
    path = items.answers_path
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        if not repair:
            data = data[:keep]
        else:
            print(f"warning: {path} ended in a torn line (a write cut off by a crash); it was dropped, "
                  f"{len(data) - keep} bytes.", file=sys.stderr)
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
            data = data[:keep]
    rows = []
    seen: set[tuple[str, int]] = set()
    ids = {it.item for it in items.items}
    for no, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not JSON ({e.msg}); fix or delete that line.") from e
        if not isinstance(row, dict) or any(f not in row for f in FIELDS[:6]):
            raise DataError(f"{where} is not an answer row (it needs {', '.join(FIELDS[:6])}); fix or delete that line.")
        if row["items_id"] != items.items_id:
            raise RunError(f"{where} answers item set {row['items_id']!r}, not this run's {items.items_id!r} "
                           f"({items.folder / 'items.json'}): the answers file comes from another run or rating. "
                           f"Move {items.folder} aside to start a new rating; nothing was changed.")
        if row["item"] not in ids or row["choice"] not in CHOICES or row["confidence"] not in CONFIDENCE:
            raise DataError(f"{where}: item {row['item']!r}, choice {row['choice']!r} or confidence "
                            f"{row['confidence']!r} is not one this rating knows; fix or delete that line.")
        key = (row["rater"], row["position"])
        if key in seen:
            continue  # the same answer twice (not written by simgen, which refuses it): the first counts
        seen.add(key)
        rows.append(row)
    return rows


class Answers:
    """The answers file of an item set, open for appending; safe across the server's threads."""

    def __init__(self, items: ItemSet) -> None:
        self.items = items
        self.rows = read_answers(items, repair=True)
        self._lock = threading.Lock()
        self._done: dict[str, set[int]] = {}
        for r in self.rows:
            self._done.setdefault(r["rater"], set()).add(int(r["position"]))

    def next_position(self, rater: str) -> int:
        """The first position of `rater`'s order not yet answered (== len(items) when all are)."""
        done = self._done.get(rater, set())
        return next(p for p in range(len(self.items.items) + 1) if p not in done)

    def answered(self) -> dict[str, int]:
        return {r: len(p) for r, p in sorted(self._done.items())}

    def add(self, rater: str, position: int, choice: str, confidence: int, note: str = "",
            seconds: float | None = None) -> bool:
        """Append one answer; False (nothing written) when that position is not the rater's next one."""
        if choice not in CHOICES or confidence not in CONFIDENCE:
            raise ValueError(f"choice {choice!r} / confidence {confidence!r}")
        with self._lock:
            if position != self.next_position(rater) or position >= len(self.items.items):
                return False
            item = self.items.items[self.items.order(rater)[position]].item
            row = {"items_id": self.items.items_id, "rater": rater, "position": position, "item": item,
                   "choice": choice, "confidence": confidence, "note": note.strip()[:MAX_NOTE],
                   "seconds": None if seconds is None else round(float(seconds), 2), "at": now()}
            line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
            with open(self.items.answers_path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self.rows.append(row)
            self._done.setdefault(rater, set()).add(position)
            return True

