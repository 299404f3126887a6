"""The human rating as a `simgen.checks.Check`: its report in RUN/reports/human.*, so exports carry it."""

from __future__ import annotations

from typing import Any, ClassVar

from simgen.checks import Check


class HumanCheck(Check):
    name = "human"
    reads: ClassVar[tuple[str, ...]] = ("dialogue_id", "turn", "role", "text")
    reports = ("human.json", "human.html")

    def run(self, run: Any, *, machine: bool = True, discriminators: tuple[str, ...] | None = None,
            n_boot: int = 1000, **options: Any) -> dict[str, Any]:
        """Report the answers given so far on the run's rating (RUN/rating/); `RunError` when it has none."""
        from simgen.errors import RunError
        from simgen.rating.answers import read_answers
        from simgen.rating.items import FOLDER, read_items
        from simgen.rating.report import DISCRIMINATORS, build_report, machine_scores, write_report

        self.validate(run.scan(), str(run.path))
        items = read_items(run.path)
        if items is None:
            raise RunError(f"{run.path} has no rating ({run.path / FOLDER} is missing): start one with "
                           f"`simgen rate {run.path} --reference REF`, and report once people have answered.")
        rows = read_answers(items)
        scores = machine_scores(items, run.path, discriminators=discriminators or DISCRIMINATORS, n_boot=n_boot) if machine else None
        report = build_report(items, rows, scores, n_boot=n_boot, seed=int(items.settings["seed"]))
        report["paths"] = {k: str(v) for k, v in write_report(run.path, report).items()}
        return report
