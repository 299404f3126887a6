"""Checks: measurements over a run. A check reads turns.parquet (never rewrites it) and writes a
sidecar (numbers per line) and reports; exports pick up whatever a run has.

    class MyCheck(Check):
        name = "mycheck"
        reads = ("dialogue_id", "turn", "role", "text")      # columns it needs; checked before it runs
        sidecar = "mycheck.parquet"                           # RUN/<file>, one row per scored line, or None
        reports = ("mycheck.json", "mycheck.html")            # files under RUN/reports/
        def run(self, run, **options) -> dict: ...           # the report

A new check is its package plus one line in `REGISTRY` (and a command in `simgen.cli` if it has
one). `simgen export hub` copies every registered check's reports that a run has and attaches every
sidecar: per turn as a struct column named after the check, per dialogue through `summary`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import polars as pl

from simgen.errors import DataError
from simgen.lazy import resolve

# check name -> "module:class"
REGISTRY: dict[str, str] = {
    "realism": "simgen.realism.check:RealismCheck",
    "consistency": "simgen.consistency.check:ConsistencyCheck",
    "human": "simgen.rating.check:HumanCheck",
}
SIDECAR_KEYS = ("dialogue_id", "turn")  # every sidecar's rows are keyed by these turns.parquet columns


class Check(ABC):
    """A measurement over a run; subclasses declare what they read and write (see the module doc)."""

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]]
    sidecar: ClassVar[str | None] = None
    reports: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, run: Any, **options: Any) -> dict[str, Any]:
        """Check `run` (a `Run`), write the sidecar and reports, and return the report."""

    @classmethod
    def validate(cls, scan: pl.LazyFrame, where: str) -> None:
        """Raise `DataError` naming the first column of `reads` that the turns lack."""
        schema = scan.collect_schema()
        missing = [c for c in cls.reads if c not in schema]
        if missing:
            raise DataError(f"{where}: the turns have no {missing[0]!r} column, which the {cls.name} check reads "
                            f"({', '.join(cls.reads)}); pass a simgen run folder or turns.parquet's columns.")

    @classmethod
    def summary(cls, sidecar: pl.LazyFrame) -> pl.LazyFrame | None:
        """One row per dialogue (`dialogue_id` + numbers) from the sidecar's rows, or None when it has none."""
        return None


def check_class(name: str) -> type[Check]:
    """The check registered as `name`; an unknown name lists the known ones."""
    return resolve(REGISTRY, name, "check", DataError)


def registered() -> Iterator[type[Check]]:
    """Every registered check class, in registry order."""
    for name in REGISTRY:
        yield check_class(name)
