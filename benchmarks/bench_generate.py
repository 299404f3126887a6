"""Generation throughput: simgen's batched loop against the naive loop, same work, one process.

Both rows run the same simulator over the same dialogues (same scenario, seed, profiles, intents,
model, dtype, max_new_tokens, greedy decoding); only the backend differs:

- simgen: `TransformersBackend`, every active dialogue advances in one batched forward pass;
- no-reuse: simgen's batched decoding, but every turn re-encodes the whole chat (no KV reuse);
- naive:  what a user would write by hand, one `model.generate` call per dialogue per turn,
          re-encoding the whole history each time.

It prints dialogues/min, generated tokens/s and the ratio simgen/naive, and writes them to JSON.

    python benchmarks/bench_generate.py                      # defaults: 16 dialogues, batch 16, 4 turns
    python benchmarks/bench_generate.py -n 32 --batch-size 32 --json outputs/bench_generate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from simgen.backends import Backend
from simgen.backends.transformers import TransformersBackend
from simgen.config import SamplingConfig
from simgen.data import Chat, Generation
from simgen.scenario import load_scenario
from simgen.simulator import plan, simulate


class StatelessBackend(Backend):
    """simgen's batched decoding without keeping KV caches across turns (an ablation row)."""

    name = "stateless"

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner

    def generate(self, chats, sampling, seeds):  # noqa: ANN001, ANN201
        return self.inner.generate(chats, sampling, seeds)


class NaiveBackend(Backend):
    """One `model.generate` per chat: the hand-written loop simgen replaces."""

    name = "naive"

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int]) -> list[Generation]:
        out = []
        for chat in chats:
            ids = torch.tensor([self.inner.encode(chat)])
            with torch.inference_mode():
                full = self.inner.model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=sampling.max_new_tokens, do_sample=False,
                    eos_token_id=sorted(self.inner.stop_ids), pad_token_id=self.inner.pad_id,
                )
            new = [t for t in full[0, ids.shape[1]:].tolist() if t not in self.inner.stop_ids]
            stopped = len(new) < full.shape[1] - ids.shape[1] or len(new) < sampling.max_new_tokens
            out.append(Generation(self.inner.tokenizer.decode(new, skip_special_tokens=True), len(new), "stop" if stopped else "length"))
        return out


def measure(backend: Backend, scenario, n: int, batch_size: int, max_turns: int, user: SamplingConfig, assistant: SamplingConfig) -> dict:
    tokens = lines = 0
    start = time.perf_counter()
    texts = []
    for first in range(0, n, batch_size):
        jobs = [plan(scenario, 0, i, max_turns) for i in range(first, min(first + batch_size, n))]
        for d in simulate(jobs, scenario, backend, backend, user, assistant, 0, max_turns):
            tokens += sum(t.n_tokens for t in d.turns)
            lines += len(d.turns)
            texts.append([t.text for t in d.turns])
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "tokens": tokens, "lines": lines, "tokens_per_s": round(tokens / seconds, 1),
            "dialogues_per_min": round(n / seconds * 60, 2), "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="movie-recommendation")
    ap.add_argument("-n", type=int, default=16, help="dialogues (both rows)")
    ap.add_argument("--batch-size", type=int, default=16, help="simgen's batch size (the CLI default is 16)")
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48, help="per line, both sides")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("outputs/bench_generate.json"))
    args = ap.parse_args()

    scenario = load_scenario(args.scenario)
    backend = TransformersBackend(args.model, args.dtype)
    greedy = SamplingConfig(temperature=0, max_new_tokens=args.max_new_tokens, repetition_penalty=1.0)
    # warm-up: one short batch, so neither row pays for first-call allocation
    measure(backend, scenario, 2, 2, 1, SamplingConfig(temperature=0, max_new_tokens=4), SamplingConfig(temperature=0, max_new_tokens=4))

    rows = {"simgen": measure(backend, scenario, args.n, args.batch_size, args.max_turns, greedy, greedy)}
    rows["no-reuse"] = measure(StatelessBackend(backend), scenario, args.n, args.batch_size, args.max_turns, greedy, greedy)
    if not args.skip_naive:
        rows["naive"] = measure(NaiveBackend(backend), scenario, args.n, args.batch_size, args.max_turns, greedy, greedy)
    result = {
        "work": {"scenario": args.scenario, "dialogues": args.n, "batch_size": args.batch_size, "max_turns": args.max_turns,
                 "max_new_tokens": args.max_new_tokens, "decoding": "greedy", "model": backend.source.id,
                 "dtype": str(backend.model.dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
                 "machine": f"{platform.machine()} {platform.processor() or ''}".strip()},
        "rows": {k: {kk: vv for kk, vv in v.items() if kk != "texts"} for k, v in rows.items()},
    }
    result["ratio_simgen_over_no_reuse_tokens_per_s"] = round(rows["simgen"]["tokens_per_s"] / rows["no-reuse"]["tokens_per_s"], 2)
    print(f"{'row':8} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'dialogues/min':>14}")
    for name, r in result["rows"].items():
        print(f"{name:8} {r['seconds']:8.1f} {r['tokens']:7d} {r['tokens_per_s']:9.1f} {r['dialogues_per_min']:14.2f}")
    if "naive" in rows:
        result["ratio_simgen_over_naive_tokens_per_s"] = round(rows["simgen"]["tokens_per_s"] / rows["naive"]["tokens_per_s"], 2)
        same = sum(a == b for a, b in zip(rows["simgen"]["texts"], rows["naive"]["texts"]))
        result["identical_dialogues"] = f"{same}/{args.n}"
        result["ratio_simgen_over_naive_dialogues_per_min"] = round(rows["simgen"]["dialogues_per_min"] / rows["naive"]["dialogues_per_min"], 2)
        print(f"simgen/naive tokens/s: {result['ratio_simgen_over_naive_tokens_per_s']}x; "
              f"dialogues identical under greedy decoding: {same}/{args.n}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
