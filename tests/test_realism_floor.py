"""benchmarks/realism_floor.py: IARD's train split scored as a simulator's run against a held-out split.

The train and the test split are dialogues of one collection, split by dialogue: line by line the
checks must not tell them apart (the user-turn ensemble near 0.5), and the floor names the sizes it
compared. A floor far above 0.5 would mean the split or the checks leak, and the sim-to-real rows
above it could not be read.
"""

from __future__ import annotations

from tests.conftest import load_benchmark


def test_the_floor_of_iards_test_split_is_near_chance_line_by_line(iard_dir, tmp_path):
    bench = load_benchmark("realism_floor")
    [row] = bench.floors(str(iard_dir), ["test"], tmp_path)
    assert row["split"] == "test" and row["dialogues"] == {"train": 265, "test": 37}
    assert abs(row["user_turn_auc"] - 0.5) <= 0.07 and row["user_turn_ci"][0] <= 0.5 <= row["user_turn_ci"][1]
    assert 0.0 <= row["dialogue_ci"][0] <= row["dialogue_auc"] <= row["dialogue_ci"][1] <= 1.0
    assert set(row) >= {f"{m}_dialogue_auc" for m in bench.MEMBERS}
    assert (tmp_path / "floor-test" / "report.json").is_file()  # the whole realism report, for reading it further
