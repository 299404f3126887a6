"""The realism check as a `simgen.checks.Check`: `compare` on a run folder, its report in RUN/reports/."""

from __future__ import annotations

from typing import Any, ClassVar

from simgen.checks import Check


class RealismCheck(Check):
    name = "realism"
    reads: ClassVar[tuple[str, ...]] = ("dialogue_id", "turn", "role", "text")  # and `intent`, when present
    reports = ("realism.json", "realism.html")

    def run(self, run: Any, reference: Any = "chitchat", config: Any = None, **options: Any) -> dict[str, Any]:
        from simgen.realism.report import compare

        self.validate(run.scan(), str(run.path))
        return compare(run.path, reference, config=config, **options)
