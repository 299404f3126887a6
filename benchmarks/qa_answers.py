"""What a simulator *says* when asked about its persona, beside how `simgen consistency` grades it.

`simgen consistency`'s Q&A picks the most likely of 4 options (`simgen.consistency.qa`). This asks the
same questions in the same chats (each run's persona chat cut after a user line, the question as the
other side's next message) three ways, per profile variable:

    option likelihood   the Q&A check's answer: the most likely option (mean log-prob per token)
    persona block's lift the option whose log-prob the persona block raises most: the same chat against
                        itself without its system message (the persona), history and question kept
                        (a diagnostic: does the chat still carry the fact, whatever the model answers?)
    free answer         the simulator's own reply, drawn greedily with no repetition penalty (`--max-new-tokens`): right when it
                        names the true value as a whole word and none of the 3 other options does

and lists the most common free answers. Free answers are read for variables a reply can name
(`--attributes`; ranges such as an age group and list questions "which of these..." are left out).

    python benchmarks/qa_answers.py outputs/s65/m40-s2-untuned outputs/s65/m40-s2 --max-dialogues 40 --max-user-lines 6

Each run is answered by its own simulator, or every run by `--reader MODEL`. `--checkpoints last`
(the default) asks after each dialogue's last user line read, `all` after every one (slower: a free
answer is a decoding pass).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

import numpy as np

from simgen.config import SamplingConfig
from simgen.consistency.check import first_user_lines, run_models
from simgen.consistency.metrics import ConsistencyConfig, dialogues_from_turns
from simgen.consistency.qa import asked, option_probabilities
from simgen.generation.run import load_run

ATTRIBUTES = "name,age,occupation,favorite_movie,hometown,mood"


def names(text: str, value: str) -> bool:
    """`value` appears in `text` as whole words, case-insensitively ("31" in "i'm 31-year-old", not in "310")."""
    return re.search(r"(?<!\w)" + re.escape(value.lower()) + r"(?!\w)", text.lower()) is not None


def free_grade(reply: str, options: tuple[str, ...], answer: int) -> tuple[bool, bool]:
    """(names the true option and no other, names another option)."""
    other = any(names(reply, o) for j, o in enumerate(options) if j != answer)
    return names(reply, options[answer]) and not other, other


def read(path: str, args: argparse.Namespace) -> dict[str, dict]:
    """attribute -> {"asked", "likelihood", "lift", "free", "other", "replies": Counter}, and "all"."""
    run = load_run(path)
    config = ConsistencyConfig(axis=False, simulator_model=args.reader)
    scenario, simulator, why = run_models(run, None, config)
    if simulator is None:
        raise SystemExit(f"{path}: the answers need a simulator model ({why}); pass --reader MODEL.")
    dialogues = dialogues_from_turns(first_user_lines(run.scan().collect(), args.max_user_lines), checked=True)[:args.max_dialogues]
    wanted = {a.strip() for a in args.attributes.split(",") if a.strip()}
    questions = [(key, chat, q) for key, chat, q in asked(scenario, dialogues, run.max_turns, 1, config.qa_max_questions,
                                                          config.qa_options, config.seed) if q.attribute in wanted]
    if args.checkpoints == "last":
        last = {}
        for (dialogue, k), _, _ in questions:
            last[dialogue] = max(k, last.get(dialogue, k))
        questions = [x for x in questions if x[0][1] == last[x[0][0]]]
    if not questions:
        raise SystemExit(f"{path}: none of --attributes {args.attributes} is asked of this scenario's profiles.")
    if args.instruction:  # the question as the other side's line, then the instruction every line of the simulator's chats ends in
        values = {d.dialogue_id: d.profile.values for d in dialogues}
        questions = [(key, [*chat[:-1], {"role": "user", "content": f"{q.question}\n\n{args.instruction.format(**values[key[0]])}"}], q)
                     for key, chat, q in questions]
    with_block = option_probabilities(simulator, [(chat, q.options) for _, chat, q in questions], config.pass_tokens)
    without = option_probabilities(simulator, [([m for m in chat if m["role"] != "system"], q.options) for _, chat, q in questions],
                                   config.pass_tokens)
    # greedy, no repetition penalty: an HF-style penalty counts the prompt's tokens, the persona's facts among them
    sampling = SamplingConfig(temperature=0, max_new_tokens=args.max_new_tokens, trim=False, repetition_penalty=1.0)
    replies = []
    for start in range(0, len(questions), args.batch_size):
        chats = [chat for _, chat, _ in questions[start:start + args.batch_size]]
        replies += [g.text for g in simulator.generate(chats, sampling, [0] * len(chats))]
    table: dict[str, dict] = defaultdict(lambda: {"asked": 0, "likelihood": 0, "lift": 0, "free": 0, "other": 0, "replies": Counter()})
    for (_, _, q), p, p0, reply in zip(questions, with_block, without, replies):
        right, other = free_grade(reply, q.options, q.answer)
        lift = int(np.argmax(np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(p0, 1e-300))))
        for row in (table[q.attribute], table["all"]):
            row["asked"] += 1
            row["likelihood"] += int(np.argmax(p)) == q.answer
            row["lift"] += lift == q.answer
            row["free"] += right
            row["other"] += other
        table[q.attribute]["replies"][" ".join(reply.lower().split())[:40]] += 1
    return dict(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (`simgen generate --out`)")
    parser.add_argument("--max-dialogues", type=int, default=40, help="the first N dialogues of each run")
    parser.add_argument("--max-user-lines", type=int, default=6, help="each dialogue up to its N-th user line (0: whole)")
    parser.add_argument("--checkpoints", choices=("last", "all"), default="last", help="ask after the last user line read, or after every one")
    parser.add_argument("--attributes", default=ATTRIBUTES, help="profile variables to ask about, comma-separated (those the scenario has)")
    parser.add_argument("--reader", default="", metavar="MODEL", help="answer every run under this model [default: each run's own simulator]")
    parser.add_argument("--instruction", default="", metavar="TEXT",
                        help="append this to each question, profile variables in braces (\"Reply as {name}.\"): the question then "
                             "reads as the simulator's chats put the other side's lines, each followed by the template's turn instruction "
                             "[default: the question alone, as the Q&A check asks it]")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens of each free answer at most")
    parser.add_argument("--batch-size", type=int, default=16, help="free answers decoded at a time")
    args = parser.parse_args()
    for path in args.runs:
        table = read(path, args)
        print(f"\n{path} (answered by {args.reader or 'its own simulator'}; the question "
              f"{'then ' + repr(args.instruction) if args.instruction else 'alone'})\n")
        print("| variable | asked | option likelihood (the Q&A check) | persona block's lift | free answer right | free answer names another option | most common free answers |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for attribute, row in sorted(table.items(), key=lambda kv: kv[0] == "all"):
            n = row["asked"]
            common = "; ".join(f'"{text}" x{count}' for text, count in row["replies"].most_common(3))
            print(f"| {attribute} | {n} | {row['likelihood'] / n:.3f} | {row['lift'] / n:.3f} | {row['free'] / n:.3f} | {row['other'] / n:.3f} | {common} |")


if __name__ == "__main__":
    main()
