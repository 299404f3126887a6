"""Q&A accuracy per profile variable, for run folders, each answered by its own simulator.

`simgen consistency` reports one Q&A accuracy per dialogue. This splits the same questions and answers
(`simgen.consistency.qa.qa_by_attribute`: the default 8 questions at every user line, 4 options,
chance 0.25) by the variable asked, to see which facts a simulator keeps and which it loses:

    python benchmarks/qa_by_attribute.py outputs/dev/movie-300 outputs/dev/movie-900 --max-dialogues 20

`--max-user-lines N` reads each dialogue up to its N-th user line, as `simgen consistency --max-user-lines`
does, so runs whose dialogues differ in length are compared on the same lines.
"""

from __future__ import annotations

import argparse

from simgen.consistency.check import first_user_lines, run_models
from simgen.consistency.metrics import ConsistencyConfig, dialogues_from_turns
from simgen.consistency.qa import qa_by_attribute
from simgen.generation.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders of one scenario (`simgen generate --out`)")
    parser.add_argument("--max-dialogues", type=int, default=20, help="the first N dialogues of each run")
    parser.add_argument("--max-user-lines", type=int, default=0, help="each dialogue up to its N-th user line (0: whole)")
    args = parser.parse_args()
    config = ConsistencyConfig(axis=False)
    table: dict[str, dict[str, tuple[int, int]]] = {}
    for path in args.runs:
        run = load_run(path)
        scenario, simulator, why = run_models(run, None, config)
        if simulator is None:
            raise SystemExit(f"{path}: Q&A needs the run's simulator ({why}).")
        dialogues = dialogues_from_turns(first_user_lines(run.scan().collect(), args.max_user_lines), checked=True)[:args.max_dialogues]
        table[path] = qa_by_attribute(simulator, scenario, dialogues, (run.manifest.get("config") or {}).get("max_turns"),
                                      config.qa_every, config.qa_max_questions, config.qa_options, config.seed, config.pass_tokens)
    attributes = list(dict.fromkeys(a for row in table.values() for a in row))
    print("| run | " + " | ".join(attributes) + " | all |")
    print("| --- " * (len(attributes) + 2) + "|")
    for path, row in table.items():
        cells = [f"{row[a][1] / row[a][0]:.3f}" if a in row else "" for a in attributes]
        asked, correct = sum(n for n, _ in row.values()), sum(c for _, c in row.values())
        print(f"| {path} | " + " | ".join(cells) + f" | {correct / asked:.3f} ({asked} asked) |")


if __name__ == "__main__":
    main()
