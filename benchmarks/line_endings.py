"""How a run's user lines end: cut mid-sentence or not, their length, and how its dialogues stopped.

A line "ends mid-sentence" when `simgen.generation.simulator.trim_to_sentence` would cut it (no
sentence end at its end). Used to measure `--trim` (#13):

    simgen generate --scenario movie-recommendation -n 20 --out outputs/demo
    simgen generate --scenario movie-recommendation -n 20 --trim --out outputs/demo-trim
    python benchmarks/line_endings.py outputs/demo outputs/demo-trim
"""

from __future__ import annotations

import sys

import polars as pl

from simgen.generation.run import load_run
from simgen.generation.simulator import trim_to_sentence


def main(paths: list[str]) -> None:
    print("| run | user lines ending mid-sentence | finish reasons | median words / user line | turns / dialogue | stop reasons | tokens/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        run = load_run(path)
        users = run.turns.filter(pl.col("role") == "user")
        mid = sum(1 for text in users["text"] if text and trim_to_sentence(text) != text)
        words = users["text"].str.split(" ").list.len().median()
        finish = dict(users["finish_reason"].value_counts().sort("finish_reason").iter_rows())
        stops = dict(run.dialogues()["stop_reason"].value_counts().sort("stop_reason").iter_rows())
        per_dialogue = run.turns.height / run.dialogues().height
        print(f"| {path} | {mid} / {users.height} ({100 * mid / users.height:.0f}%) | {finish} | {words:g} | {per_dialogue:.2f} | {stops} | "
              f"{run.manifest['timings'].get('tokens_per_s')} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["outputs/demo"])
