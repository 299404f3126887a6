"""Where a default run's time goes (#15, "the tail"): every decoding call simgen makes, timed, with
the number of rows it decodes.

It runs `simgen generate`'s default workload (the scenario's shipped simulator, lengths, redraws,
copy guard, sampling as shipped) through the pipeline's own `simulate_stream`, with each side's
backend wrapped so that every `generate` and `redraw` call of its session is timed. A call decodes
`rows` dialogues for `steps` tokens (its longest line); its cost per step is seconds / steps.

It prints, per side and kind of call, the time spent at each batch occupancy (rows / batch size),
so the cost of a static batch is in one table: the dialogues that finish early leave their slots
empty until the slowest one of the batch is done, and each redraw is a pass of a few rows. Then the
share of row-steps that drew a token (inside a call, a row whose line has ended is fed pads until
the longest line is done), and the cost of one decoding step against the rows it carries: what
continuous batching (#15) would fill.

    python benchmarks/bench_tail.py --scenario movie-recommendation -n 40 --batch-size 20
    python benchmarks/bench_tail.py --scenario chitchat -n 64 --batch-size 64 --json outputs/tail-chitchat.json

`--ablate` first runs the same dialogues as they ran before #15's changes (top-p sorting the whole
vocabulary, every row of a call fed until its longest line ends, redraws in passes of their own,
each shard alone), then adds one change at a time: top-p among the most likely tokens, finished
rows parked out of a call's batch, lines drawn again inside the call that drew them, a batch that
refills (`--refill`), all in one process, and prints each row's speed against the first and
whether it wrote the same turns.

    python benchmarks/bench_tail.py --scenario movie-recommendation -n 48 --batch-size 16 --ablate
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from dataclasses import replace
from typing import Any

import polars as pl

from simgen.backends import Backend, Session
from simgen.config import GenerateConfig, SamplingConfig
from simgen.data import Chat, Generation
from simgen.generation import pipeline
from simgen.scenario import load_scenario

BUCKETS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))  # occupancy (rows / batch size), upper bound included


class TimedSession(Session):
    def __init__(self, inner: Session, side: str, calls: list[dict]) -> None:
        self.inner, self.side, self.calls = inner, side, calls
        self.draws_again = getattr(inner, "draws_again", False)

    def _timed(self, kind: str, method: Any, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int],
               keys: Sequence[Hashable], until: Any, hold: Any = None, again: Any = None) -> list[Generation]:
        stats = getattr(getattr(self.inner, "b", None), "stats", None)  # a KVSession's backend counts the rows it feeds
        before, t = stats["decoded_rows"] if stats else None, time.perf_counter()
        drawn = [0] * len(chats)  # tokens of a row's earlier draws in this call (lines drawn again in it: `again`)
        restarts = [0] * len(chats)  # each costs the row a step fed a pad

        def counted(i: int, g: Generation) -> int | None:
            seed = again(i, g)
            if seed is not None:
                drawn[i] += g.n_tokens
                restarts[i] += 1
            return seed

        gens = method(chats, sampling, seeds, keys, until, hold, **({"again": counted} if again else {}))
        steps = max((g.n_tokens + d + r for g, d, r in zip(gens, drawn, restarts)), default=0)
        self.calls.append({"side": self.side, "kind": kind, "rows": len(chats), "seconds": time.perf_counter() - t,
                           "steps": steps, "tokens": sum(g.n_tokens for g in gens) + sum(drawn), "redrawn": sum(restarts),
                           # row-steps fed: the prefill's draw for every row, then each decoding step's rows
                           "fed": len(chats) + stats["decoded_rows"] - before if stats else len(chats) * steps})
        return gens

    def generate(self, chats, sampling, seeds, keys, until=None, hold=None, again=None):  # noqa: ANN001, ANN201
        return self._timed("generate", self.inner.generate, chats, sampling, seeds, keys, until, hold, again)

    def redraw(self, chats, sampling, seeds, keys, until=None, hold=None):  # noqa: ANN001, ANN201
        return self._timed("redraw", self.inner.redraw, chats, sampling, seeds, keys, until, hold)

    def close(self) -> None:
        self.inner.close()


class TimedBackend(Backend):
    """`inner`, with every call of its sessions timed into `calls` under `side`."""

    def __init__(self, inner: Backend, side: str, calls: list[dict]) -> None:
        self.inner, self.side, self.calls = inner, side, calls
        self.name, self.batched, self.seeded = inner.name, inner.batched, inner.seeded
        self.source = getattr(inner, "source", None)  # the copy guard finds the tuned folder's index through it

    def generate(self, chats, sampling, seeds):  # noqa: ANN001, ANN201
        return self.inner.generate(chats, sampling, seeds)

    def session(self) -> Session:
        return TimedSession(self.inner.session(), self.side, self.calls)

    def encode(self, chat):  # noqa: ANN001, ANN201
        """The inner model's token ids of `chat` (what a tuned side's `context` budget counts)."""
        return self.inner.encode(chat)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def occupancy_table(calls: list[dict], batch_size: int) -> list[dict]:
    """Seconds and calls per (side, kind, occupancy bucket), with each row's share of all decoding time."""
    total = sum(c["seconds"] for c in calls) or 1.0
    rows: dict[tuple, dict] = defaultdict(lambda: {"calls": 0, "seconds": 0.0, "tokens": 0})
    for c in calls:
        share = c["rows"] / batch_size
        lo, hi = next(b for b in BUCKETS if b[0] < share <= b[1])
        r = rows[(c["side"], c["kind"], f"{int(100 * lo)}-{int(100 * hi)}%")]
        r["calls"] += 1
        r["seconds"] += c["seconds"]
        r["tokens"] += c["tokens"]
    return [{"side": k[0], "kind": k[1], "occupancy": k[2], **v, "share": v["seconds"] / total} for k, v in sorted(rows.items())]


def step_costs(calls: list[dict]) -> list[dict]:
    """Mean seconds per decoding step (and per row-step) of the calls that carried each number of rows."""
    by_rows: dict[int, list[dict]] = defaultdict(list)
    for c in calls:
        if c["steps"]:
            by_rows[c["rows"]].append(c)
    out = []
    for rows, cs in sorted(by_rows.items()):
        seconds, steps = sum(c["seconds"] for c in cs), sum(c["steps"] for c in cs)
        out.append({"rows": rows, "calls": len(cs), "seconds_per_step": seconds / steps, "seconds_per_row_step": seconds / steps / rows})
    return out


def idle_rows(calls: list[dict], batch_size: int) -> dict:
    """How much of the decoding drew nothing: the share of row-steps fed to the model that drew a
    token (a row whose line has ended is fed pads until it is parked or the call's longest line is
    done), and the seconds the drawn tokens alone would take at the full batch's cost per row-step."""
    row_steps = sum(c["fed"] for c in calls)
    drawn = sum(c["tokens"] for c in calls)
    full = [c for c in calls if c["rows"] == batch_size and c["steps"]]
    per = sum(c["seconds"] for c in full) / sum(c["rows"] * c["steps"] for c in full) if full else None
    return {"row_steps": row_steps, "tokens_drawn": drawn, "drawn_share": drawn / row_steps if row_steps else None,
            "seconds_per_row_step_full": per, "drawn_at_full_cost_seconds": drawn * per if per else None}


def profile_run(config: GenerateConfig) -> tuple[list, list[dict], int, float]:
    """Run `config` shard by shard as `simgen generate` would, with every decoding call timed:
    (the shards' turn frames, the calls, stored tokens, seconds)."""
    sc = load_scenario(config.scenario)
    config = pipeline.settle(config, sc)  # max turns, the shipped simulator and penalties, as `simgen generate` sets them
    user, assistant, built = pipeline._backends(config, None, {})
    calls: list[dict] = []
    timed = {"user": TimedBackend(user, "user", calls), "assistant": TimedBackend(assistant, "assistant", calls)}
    shards: dict[int, tuple] = {}
    t = time.perf_counter()
    try:
        for stream in pipeline.streams(config):
            pipeline.simulate_stream(stream, config, sc, timed["user"], timed["assistant"],
                                     lambda shard, frame, first, last, tokens, seconds: shards.update({shard: (frame, tokens)}))
    finally:
        for b in built:
            b.close()
    frames = [shards[k][0] for k in sorted(shards)]
    return frames, calls, sum(tokens for _, tokens in shards.values()), time.perf_counter() - t


def shared_prefix(config: GenerateConfig, tokenizer: Any, n: int = 16) -> dict[str, Any]:
    """What prefix sharing (#15) could save: the first user-side prompt of `n` dialogues in tokens, and
    how many leading tokens all of them share; the assistant side's system prompt (the first dialogue's: the
    same for all unless the scenario shares a profile variable with it)."""
    from simgen.generation.chats import assistant_system, user_message, user_system
    from simgen.generation.plan import plan
    from simgen.models import chat_token_ids

    sc = load_scenario(config.scenario)
    config = pipeline.settle(config, sc)
    prompts, jobs = [], []
    for i in range(n):
        job = plan(sc, config.seed, i, config.max_turns, config.lengths)
        jobs.append(job)
        chat = [user_system(sc, job, config.max_turns), user_message(sc, job, 0, config.max_turns, None)]
        prompts.append(chat_token_ids(tokenizer, chat, add_generation_prompt=True))
    shared = 0
    while all(len(p) > shared and p[shared] == prompts[0][shared] for p in prompts):
        shared += 1
    system = chat_token_ids(tokenizer, [assistant_system(sc, jobs[0].profile, config.max_turns)], add_generation_prompt=False)
    return {"user_prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))], "user_shared_prefix": shared,
            "assistant_system_tokens": len(system)}


ABLATION = ("before", "top-p", "parking", "in-call", "refill", "pick-kernel")


def ablation(config: GenerateConfig, keep: Sequence[str] = ABLATION) -> list[dict]:
    """Time `config`'s run as before #15's changes (top-p sorting the whole vocabulary, no parking,
    redraws in passes of their own, each shard alone, torch's sampler), then adding one change at a
    time (the rows named in `keep`); print a table."""
    import simgen.backends.transformers as tb

    shipped = (tb.NUCLEUS_FIRST, tb.COMPACT_AT, tb.KVSession.draws_again, tb.PICK_KERNEL)
    everything = 1 << 30  # the whole vocabulary sorted, as before
    plan = {"before": ("before: full-vocabulary top-p, no parking, redraws in passes, each shard alone", everything, 0.0, False, 1, False),
            "top-p": ("+ top-p among the 256 most likely tokens", shipped[0], 0.0, False, 1, False),
            "parking": ("+ parking finished rows", shipped[0], shipped[1], False, 1, False),
            "in-call": ("+ redraws inside the call that drew the line", shipped[0], shipped[1], True, 1, False),
            "refill": (f"+ refilling (--refill {config.refill})", shipped[0], shipped[1], True, config.refill, False),
            "pick-kernel": ("+ the compiled sampler: shipped", shipped[0], shipped[1], True, config.refill, shipped[3])}
    rows = []
    for name, first, park, in_call, refill, kernel in (plan[k] for k in ABLATION if k in keep):
        tb.NUCLEUS_FIRST, tb.COMPACT_AT, tb.KVSession.draws_again, tb.PICK_KERNEL = first, park, in_call, kernel
        try:
            frames, calls, tokens, wall = profile_run(replace(config, refill=refill))
        finally:
            tb.NUCLEUS_FIRST, tb.COMPACT_AT, tb.KVSession.draws_again, tb.PICK_KERNEL = shipped
        idle = idle_rows(calls, config.batch_size)
        rows.append({"row": name, "seconds": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
                     "drawn_share": idle["drawn_share"], "redraw_calls": sum(c["kind"] == "redraw" for c in calls),
                     "redrawn": sum(c["rows"] if c["kind"] == "redraw" else c.get("redrawn", 0) for c in calls),
                     "frame": pl.concat(frames)})
    print(f"\n{config.scenario}: {config.n} dialogues, batch {config.batch_size}, seed {config.seed}\n")
    print("| row | seconds | stored tokens | tokens/s | speed-up | row-steps that drew a token | same turns as the row above |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, r in enumerate(rows):
        same = "" if n == 0 else r["frame"].equals(rows[n - 1]["frame"])
        print(f"| {r['row']} | {r['seconds']:.0f} | {r['tokens']} | {r['tokens_per_s']:.1f} | "
              f"{r['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x | {100 * r['drawn_share']:.0f}% | {same} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="movie-recommendation")
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--model", default=None, help="default: the scenario's shipped simulator, as `simgen generate` uses it")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--refill", type=int, default=None, help="default: simgen generate's; with --ablate, the last row's (default 4)")
    parser.add_argument("--ablate", action="store_true", help="run as before #15, with parking, then as shipped, and compare")
    parser.add_argument("--rows", default=",".join(ABLATION), help=f"with --ablate, which rows (of {','.join(ABLATION)})")
    parser.add_argument("--prefix", action="store_true", help="only print the prompt prefix the dialogues share (no run)")
    args = parser.parse_args(argv)
    if args.prefix:
        from transformers import AutoTokenizer

        from simgen.models import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model).path, local_files_only=True)
        print(json.dumps(shared_prefix(GenerateConfig(scenario=args.scenario, seed=args.seed), tokenizer)))
        return 0

    refill = args.refill or (4 if args.ablate else GenerateConfig.refill)
    config = GenerateConfig(scenario=args.scenario, n=args.n, seed=args.seed, batch_size=args.batch_size, model=args.model, refill=refill)
    if args.ablate:
        rows = ablation(config, [r.strip() for r in args.rows.split(",")])
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "frame"} for r in rows], indent=1))
        return 0
    frames, calls, tokens, wall = profile_run(config)
    decoding = sum(c["seconds"] for c in calls)
    table, steps = occupancy_table(calls, args.batch_size), step_costs(calls)
    print(f"\n{args.scenario}: {args.n} dialogues, batch {args.batch_size}, seed {args.seed}: {wall:.0f} s, "
          f"{tokens} stored tokens ({tokens / wall:.1f}/s); decoding calls {decoding:.0f} s ({100 * decoding / wall:.0f}% of it)\n")
    print("| side | call | occupancy | calls | seconds | share of decoding | tokens drawn |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        print(f"| {r['side']} | {r['kind']} | {r['occupancy']} | {r['calls']} | {r['seconds']:.0f} | {100 * r['share']:.1f}% | {r['tokens']} |")
    low = sum(r["share"] for r in table if r["occupancy"] in ("0-25%", "25-50%"))
    redraw = sum(r["share"] for r in table if r["kind"] == "redraw")
    print(f"\nat most half the batch: {100 * low:.0f}% of decoding time; redraws: {100 * redraw:.0f}%")
    idle = idle_rows(calls, args.batch_size)
    if idle["drawn_at_full_cost_seconds"] is not None:
        print(f"row-steps that drew a token: {100 * idle['drawn_share']:.0f}% ({idle['tokens_drawn']} of {idle['row_steps']}); "
              f"the drawn tokens alone at the full batch's {idle['seconds_per_row_step_full']:.4f} s per row-step: "
              f"{idle['drawn_at_full_cost_seconds']:.0f} s of the {decoding:.0f} s ({decoding / idle['drawn_at_full_cost_seconds']:.1f}x)")
    print()
    print("| rows | calls | seconds per step | seconds per row-step |")
    print("| --- | --- | --- | --- |")
    for s in steps:
        print(f"| {s['rows']} | {s['calls']} | {s['seconds_per_step']:.3f} | {s['seconds_per_row_step']:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"scenario": args.scenario, "n": args.n, "batch_size": args.batch_size, "seed": args.seed,
                                         "wall_seconds": wall, "tokens": tokens, "decoding_seconds": decoding,
                                         "occupancy": table, "step_costs": steps, "idle_rows": idle_rows(calls, args.batch_size),
                                         "calls": calls}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
