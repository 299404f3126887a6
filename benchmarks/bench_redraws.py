"""What redraws cost: the same dialogues with no redraws, with each redraw drawn in a pass of its
own (a call of the rows at fault: how simgen drew them until 2026-12-03), with each redraw drawn
inside the call that drew the line (the row starts over beside the rows still writing: what
`simgen generate` does now), and with all of a line's redraws drawn in one call (the alternative),
in one process.

One model (the scenario's shipped simulator on both sides, as `simgen generate` uses it; --model to
pick another), the same planned dialogues and seeds. Every way keeps the first redraw that passes, so
they would keep the same lines if a row's logits did not depend on the batch around it; in fp32 on
this CPU they do slightly, so the script says whether the runs wrote the same dialogues. It
reports wall time, stored tokens per second and the time per stored line, tokens/s as a ratio to
the run without redraws.

    python benchmarks/bench_redraws.py -n 16 --json outputs/bench_redraws.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from simgen.backends.transformers import KVSession, TransformersBackend
from simgen.config import GenerateConfig
from simgen.generation.pipeline import settle
from simgen.generation import simulator
from simgen.generation.plan import plan
from simgen.scenario import load_scenario


def all_at_once(session, backend, active, chats, sampling, seed_of, targets, until, misfit_of, redraws, hold=None):  # noqa: ANN001, ANN201
    """The alternative to `simulator._draw`: redraws 1..R of every bad line in one call, the first that passes kept."""
    keys = [s.job.index for s in active]
    gens = session.generate(chats, sampling, [seed_of(s, 0) for s in active], keys, until, hold)
    tokens = sum(g.n_tokens for g in gens)
    lines = [(g, *simulator.finished_line(g, sampling, t), 0) for g, t in zip(gens, targets)]
    bad = [i for i, (g, text, finish, _) in enumerate(lines) if redraws and not g.error and misfit_of(i, text, finish)]
    if not bad:
        return lines, tokens
    draws = [(i, n) for i in bad for n in range(1, redraws + 1)]
    again = session.redraw([chats[i] for i, _ in draws], sampling, [seed_of(active[i], n) for i, n in draws],
                           [keys[i] for i, _ in draws], [until[i] for i, _ in draws] if until else None,
                           [hold[i] for i, _ in draws] if hold else None)
    tokens += sum(g.n_tokens for g in again)
    for j, i in enumerate(bad):
        candidates = [(g, *simulator.finished_line(g, sampling, targets[i])) for g in again[j * redraws:(j + 1) * redraws]]
        n = next((n for n, (g, text, finish) in enumerate(candidates, 1) if g.error or not misfit_of(i, text, finish)), redraws)
        lines[i] = (*candidates[n - 1], n)
    return lines, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=16, help="dialogues (one batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", default="movie-recommendation")
    ap.add_argument("--model", default=None, help="default: the scenario's shipped simulator (else the embedded model)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    sc = load_scenario(args.scenario)
    model = args.model or (sc.sides()["user"] if sc.simulators else None)
    # each side's penalty and temperature as `simgen generate` sets them for this model
    cfg = settle(GenerateConfig(scenario=args.scenario, model=model, assistant_model=model), sc)
    backend = TransformersBackend(model, dtype=cfg.dtype)
    max_turns = sc.max_turns or 6
    jobs = [plan(sc, args.seed, i, max_turns) for i in range(args.n)]
    one_at_a_time, in_call = simulator._draw, KVSession.draws_again
    rows, texts = [], {}
    for name, redraws, draw, inside in (("no redraws", 0, one_at_a_time, True),
                                        ("redraws one at a time, each in a pass of its own", cfg.redraws, one_at_a_time, False),
                                        ("redraws one at a time, inside the line's call (simgen)", cfg.redraws, one_at_a_time, True),
                                        ("redraws all at once", cfg.redraws, all_at_once, False)):
        simulator._draw, KVSession.draws_again = draw, inside
        try:
            t = time.perf_counter()
            dialogues = simulator.simulate(jobs, sc, backend, backend, cfg.user, cfg.assistant, args.seed, max_turns, redraws=redraws)
            seconds = time.perf_counter() - t
        finally:
            simulator._draw, KVSession.draws_again = one_at_a_time, in_call
        turns = [t for d in dialogues for t in d.turns]
        texts[name] = [[t.text for t in d.turns] for d in dialogues]
        tokens = sum(t.n_tokens for t in turns)
        rows.append({"run": name, "seconds": round(seconds, 1), "lines": len(turns), "stored_tokens": tokens,
                     "tokens_per_s": round(tokens / seconds, 1), "s_per_line": round(seconds / len(turns), 2),
                     "redrawn": sum(1 for t in turns if t.redraws)})
        print(json.dumps(rows[-1]), flush=True)
    written = list(texts.values())[1:]
    same = all(t == written[0] for t in written)
    base = rows[0]
    print(f"\n{args.scenario}, {args.n} dialogues, seed {args.seed}, max {max_turns} user turns, redraws {cfg.redraws}; "
          f"the three ways of redrawing wrote the same dialogues: {same}\n")
    print("| run | seconds | lines | lines redrawn | stored tokens/s | s per line | tokens/s vs no redraws |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {r['seconds']} | {r['lines']} | {r['redrawn']} | {r['tokens_per_s']} | {r['s_per_line']} "
              f"| {r['tokens_per_s'] / base['tokens_per_s']:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "same_dialogues": same}, indent=2))


if __name__ == "__main__":
    main()
