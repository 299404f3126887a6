"""Generation throughput: simgen against what users would otherwise run, same work, one script.

Every row runs simgen's simulator over the same dialogues (same scenario, seed, profiles, intents,
max_new_tokens, greedy decoding, the embedded SmolLM2-135M-Instruct), and every dialogue runs
exactly `--max-turns` user turns and as many assistant turns: the stop rules are off (a 135M model
under greedy decoding soon repeats itself, and each row would otherwise stop different dialogues
at different turns) and terminal intents are left out of the paths. Only what produces the lines
differs:

- simgen:    `TransformersBackend`, every active dialogue advances in one batched forward pass and
             keeps its KV cache across turns (a turn prefills only its new tokens);
- naive:     the loop a user writes by hand: one `model.generate` per dialogue per turn, re-encoding
             the whole history each time. It handles one dialogue at a time, so its rate does not
             depend on how many there are: it runs the first `--naive-dialogues` of them;
- llama.cpp: llama.cpp's server (the xllamacpp wheel, in-process) on the same model's GGUF, with as
             many parallel slots as simgen's batch size, fed concurrent requests by simgen's
             OpenAI-compatible backend (one request per dialogue per turn, `cache_prompt` on);
- bound:     the compute bound: the best matmul FLOP/s this machine reaches in simgen's dtype,
             divided by 2 x parameters (FLOPs per generated token). Attention, sampling and
             Python are not counted, so no real row can reach it.

It prints tokens/s and dialogues/min per row and the ratios simgen/naive, simgen/llama.cpp and
simgen/bound, and writes them to JSON. `--ablations no-reuse,dynamic-cache` adds simgen with one
optimisation taken out (KV reuse, the growing cache); `--profile FILE` times decode steps at several context lengths under torch.profiler (where a
step's time goes, beside what the weight matmuls alone would take at the measured peak);
`--rss 64,256` reports the peak RSS of simgen with that many concurrent dialogues (one child
process each).

    python benchmarks/bench_generate.py                       # the issue's work: 64 dialogues x 6 turns x 48 tokens
    python benchmarks/bench_generate.py -n 16 --max-turns 2 --skip llama.cpp    # a quick look

`--workload default` measures what users run instead (#15's default workload): `simgen generate
--scenario S -n 256 --batch-size 64 --seed 3` as shipped (the scenario's simulator, length targets,
stop rules, redraws, guards, sampling), timed in a child process from its start to its exit, model
load included, with its peak RSS. Beside it, on the same dialogues (same seed, so the same profiles,
intents and length targets):

- naive:     the same settings with every line one `model.generate` on the re-encoded history
             (sampling as the side's settings, stopped where simgen stops the line), on the first
             `--naive-dialogues` dialogues; model load not timed;
- llama.cpp: `simgen generate --backend openai` against llama.cpp's server (`--batch-size` slots, in
             this process) on the model simgen's row runs: for a scenario that ships a tuned
             simulator, that simulator as a GGUF (`simgen.backends.llamacpp.tuned_gguf`: its merged
             matrices in Q8_0, the rest of the embedded GGUF as it is), sampled as simgen samples a
             tuned side (temperature 1, no penalty); a server gives neither the logits the length
             floor (`hold`) weighs nor the simulator's index the copy guard reads, so this row runs
             without both: its lines may end short of their targets;
- bound:     stored tokens/s and (prefilled + fed tokens)/s of the simgen row against the compute bound.

Tokens are those of the stored lines, both sides, counted with one tokenizer for every row, so
tokens drawn and thrown away (redraws, text past a line's end) count against the row that drew
them. `--ablations bf16` adds simgen with `--dtype bfloat16`, `--ablations calls` simgen with
`--schedule calls` (the schedule before line scheduling), `--ablations index` simgen with
`--order index` (a refilling stream's dialogues started in index order, not longest first),
`--ablations unfused` simgen with `SIMGEN_FUSE=0` (each layer's projections one by one and its
element-wise work in torch ops, as before `lines.fuse_projections` and the glue kernels),
`--ablations sdpa` simgen with `SIMGEN_KERNELS=0` (the decoding rows' attention through torch's SDPA,
not simgen's compiled kernel: `simgen.backends.kernels`), `--ablations torch-pick` simgen with
`SIMGEN_PICK_KERNEL=0` (each next token drawn by torch's ops, not the compiled sampler), `--refill K` simgen with `--refill K` (1:
each shard alone, the default before 2026-12-04).

    python benchmarks/bench_generate.py --workload default                # both scenarios, n 256, batch 64
    python benchmarks/bench_generate.py --workload default --scenario chitchat -n 64 --naive-dialogues 4 --ablations bf16
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import polars as pl
import torch

from simgen.backends import Backend, Session, end_bias
from simgen.backends.transformers import TransformersBackend, growing_cache_class
from simgen.config import GenerateConfig, SamplingConfig
from simgen.data import Generation
from simgen.scenario import load_scenario
from simgen.generation.plan import DialogueJob, plan
from simgen.generation.simulator import simulate


class StatelessBackend(Backend):
    """simgen's batched decoding without keeping KV caches across turns (an ablation row)."""

    name = "stateless"

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner

    def generate(self, chats, sampling, seeds):  # noqa: ANN001, ANN201
        return self.inner.generate(chats, sampling, seeds)

    def encode(self, chat):  # noqa: ANN001, ANN201
        return self.inner.encode(chat)


def full_length(job: DialogueJob, scenario, max_turns: int) -> DialogueJob:
    """The job with its intent path stretched to `max_turns` user turns, terminal intents left out."""
    path = [i for i in job.intents if not scenario.intents.get(i).terminal] or [scenario.intents.intents[0].name]
    return replace(job, intents=tuple(itertools.islice(itertools.cycle(path), max_turns)))


def measure(backend: Backend, scenario, n: int, batch_size: int, max_turns: int, sampling: SamplingConfig) -> dict:
    """Every dialogue runs exactly `max_turns` user turns (no early stops), so all rows do the same turns."""
    tokens = lines = 0
    start = time.perf_counter()
    texts = []
    for first in range(0, n, batch_size):
        jobs = [full_length(plan(scenario, 0, i, max_turns), scenario, max_turns) for i in range(first, min(first + batch_size, n))]
        for d in simulate(jobs, scenario, backend, backend, sampling, sampling, 0, max_turns, early_stop=False):
            tokens += sum(t.n_tokens for t in d.turns)
            lines += len(d.turns)
            texts.append([t.text for t in d.turns])
    seconds = time.perf_counter() - start
    print(f"  {backend.name}: {n} dialogues, {tokens} tokens in {seconds:.1f} s", flush=True)
    return {"dialogues": n, "seconds": round(seconds, 2), "tokens": tokens, "lines": lines,
            "tokens_per_s": round(tokens / seconds, 1), "dialogues_per_min": round(n / seconds * 60, 2), "texts": texts}


def matmul_flops(dtype: torch.dtype, seconds: float = 2.0) -> dict:
    """The best FLOP/s of `a @ b` over a few shapes: square ones, and the model's own decode GEMMs."""
    best: dict = {"flops_per_s": 0.0}
    for m, k, n in ((2048, 2048, 2048), (1024, 1024, 1024), (64, 576, 1536), (256, 576, 1536), (64, 576, 49152)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # warm-up
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            a @ b
            reps += 1
        rate = 2 * m * k * n * reps / (time.perf_counter() - start)
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "shape": f"{m}x{k} @ {k}x{n}"}
    return best


def llamacpp_row(scenario, n: int, batch_size: int, max_turns: int, sampling: SamplingConfig, threads: int) -> dict:
    from simgen.backends.openai import OpenAIBackend
    from simgen.backends.llamacpp import serve_gguf

    ctx = 4096 if max_turns > 3 else 2048
    with serve_gguf(parallel=batch_size, ctx_per_slot=ctx, threads=threads) as url:
        backend = OpenAIBackend(url, "smollm2", concurrency=batch_size, timeout=600)
        measure(backend, scenario, 2, 2, 1, SamplingConfig(temperature=0, max_new_tokens=4))  # warm-up
        row = measure(backend, scenario, n, batch_size, max_turns, sampling)
        backend.close()
    row["slots"], row["threads"] = batch_size, threads
    return row


def profile_decode(backend: TransformersBackend, batch: int, contexts: Sequence[int], flops_per_s: float, path: Path) -> list[dict]:
    """Where a decode step's time goes: `batch` rows with `context` cached tokens each, a few steps
    under torch.profiler, beside what the weight matmuls alone would take at the measured peak."""
    from torch.profiler import ProfilerActivity, profile

    model, params = backend.model, sum(p.numel() for p in backend.model.parameters())
    vocab, out, tables = model.config.vocab_size, [], []
    for context in contexts:
        cache = growing_cache_class()()
        ids = torch.randint(0, vocab, (batch, context))
        with torch.inference_mode():
            start = time.perf_counter()
            model(input_ids=ids, use_cache=True, logits_to_keep=1, **{backend.cache_kwarg: cache})
            prefill = time.perf_counter() - start
            step_ids = torch.randint(0, vocab, (batch, 1))
            mask = torch.ones((batch, context + 1), dtype=torch.long)
            model(input_ids=step_ids, attention_mask=mask, use_cache=True, **{backend.cache_kwarg: cache})  # warm-up step
            steps = 4
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                for k in range(steps):
                    mask = torch.ones((batch, context + 2 + k), dtype=torch.long)
                    model(input_ids=step_ids, attention_mask=mask, use_cache=True, **{backend.cache_kwarg: cache})
                step = (time.perf_counter() - start) / steps
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) or 1
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
        row = {"context": context, "batch": batch, "step_ms": round(step * 1000, 1), "tokens_per_s": round(batch / step, 1),
               "weight_matmul_ms_at_peak": round(2 * params * batch / flops_per_s * 1000, 1),
               "prefill_tokens_per_s": round(batch * context / prefill, 1),
               "top_ops_self_cpu_share": {e.key: round(e.self_cpu_time_total / total, 3) for e in top}}
        out.append(row)
        tables.append(f"# batch {batch}, {context} cached tokens per row: {row['step_ms']} ms per decode step\n"
                      + events.table(sort_by="self_cpu_time_total", row_limit=12))
        print(f"  decode step, batch {batch}, context {context}: {row['step_ms']} ms ({row['tokens_per_s']} tokens/s; "
              f"weight matmuls at peak: {row['weight_matmul_ms_at_peak']} ms); top ops: "
              + ", ".join(f"{k} {v:.0%}" for k, v in list(row["top_ops_self_cpu_share"].items())[:4]), flush=True)
    path.write_text("\n\n".join(tables) + "\n")
    return out


def rss_child(args) -> None:  # noqa: ANN001
    """One simgen run with `-n` dialogues in one batch; print peak RSS as JSON (run as a child)."""
    scenario = load_scenario(args.scenario)
    backend = TransformersBackend(args.model, args.dtype)
    sampling = SamplingConfig(temperature=0, max_new_tokens=args.max_new_tokens, repetition_penalty=1.0)
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = measure(backend, scenario, args.n, args.n, args.max_turns, sampling)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"concurrent_dialogues": args.n, "peak_rss_mib": round(peak), "rss_after_load_mib": round(after_load),
                      "tokens_per_s": row["tokens_per_s"], "seconds": row["seconds"]}))


def rss_rows(args, sizes: list[int]) -> list[dict]:  # noqa: ANN001
    out = []
    for size in sizes:
        cmd = [sys.executable, __file__, "--rss-child", "-n", str(size), "--max-turns", str(args.max_turns),
               "--max-new-tokens", str(args.max_new_tokens), "--dtype", args.dtype, "--scenario", args.scenario]
        if args.model:
            cmd += ["--model", args.model]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"rss: {out[-1]}")
    return out


# --- the default workload (#15): `simgen generate` as users run it, end to end ------------------------------------

CHILD = """
import atexit, json, sys
import simgen.backends.transformers as tb
built = []
init = tb.TransformersBackend.__init__
def counted(self, *a, **k):
    init(self, *a, **k)
    built.append(self)
tb.TransformersBackend.__init__ = counted
path = sys.argv.pop(1)
atexit.register(lambda: open(path, "w").write(json.dumps([b.stats for b in built])))
from simgen.cli import main
main()
"""


class _Until:
    """A `model.generate` stopping criterion from a session's `until` test (one chat per call)."""

    def __init__(self, tokenizer, test, start: int) -> None:  # noqa: ANN001
        self.tokenizer, self.test, self.start, self.held = tokenizer, test, start, False

    def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001, ANN003, ANN204
        self.held = bool(self.test(self.tokenizer.decode(input_ids[0, self.start:], skip_special_tokens=True)))
        return torch.tensor([self.held], device=input_ids.device)


class _Hold:
    """A `model.generate` logits processor from a session's `hold` test: its `end_bias` added to the
    end-of-turn tokens' logits (-inf while the line may not end yet), as simgen's session adds it."""

    def __init__(self, tokenizer, test, start: int, stop_ids) -> None:  # noqa: ANN001
        self.tokenizer, self.test, self.start, self.stop = tokenizer, test, start, sorted(stop_ids)

    def __call__(self, input_ids, scores):  # noqa: ANN001, ANN204
        if bias := end_bias(self.test(self.tokenizer.decode(input_ids[0, self.start:], skip_special_tokens=True))):
            scores[:, self.stop] += bias
        return scores


class NaiveSession(Session):
    """The hand-written loop under the default workload: one `model.generate` per chat, the whole
    history re-encoded, sampling as the side's settings say (temperature, top-p, repetition
    penalty), the line stopped where simgen stops it (its `until` test, as a stopping criterion)
    and held where simgen holds it (its `hold` test, as a logits processor)."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner

    def generate(self, chats, sampling, seeds, keys, until=None, hold=None):  # noqa: ANN001, ANN201
        from transformers import LogitsProcessorList, StoppingCriteriaList

        b, out = self.inner, []
        for row, (chat, seed) in enumerate(zip(chats, seeds)):
            ids = torch.tensor([b.encode(chat)])
            test = until[row] if until else None
            criteria = [_Until(b.tokenizer, test, ids.shape[1])] if test is not None else []
            floor = hold[row] if hold else None
            processors = [_Hold(b.tokenizer, floor, ids.shape[1], b.stop_ids)] if floor is not None else []
            torch.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
            kw = ({"do_sample": False} if sampling.greedy else
                  {"do_sample": True, "temperature": sampling.heat, "top_p": sampling.top_p, "top_k": 0,
                   **({"min_p": sampling.min_p} if sampling.min_p else {})})
            with torch.inference_mode():
                full = b.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=sampling.max_new_tokens,
                                        repetition_penalty=sampling.penalty, eos_token_id=sorted(b.stop_ids), pad_token_id=b.pad_id,
                                        stopping_criteria=StoppingCriteriaList(criteria),
                                        logits_processor=LogitsProcessorList(processors), **kw)
            drawn = full[0, ids.shape[1]:].tolist()
            new = [t for t in drawn if t not in b.stop_ids]
            finish = ("until" if criteria and criteria[0].held else "stop" if len(new) < len(drawn) else
                      "length" if len(new) >= sampling.max_new_tokens else "stop")
            out.append(Generation(b.tokenizer.decode(new, skip_special_tokens=True), len(new), finish))
        return out


class NaiveBackend(Backend):
    name, batched, seeded = "naive", False, True

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner, self.source = inner, inner.source  # the copy guard finds a tuned folder's index through `source`

    def generate(self, chats, sampling, seeds):  # noqa: ANN001, ANN201
        return NaiveSession(self.inner).generate(chats, sampling, seeds, list(range(len(chats))))

    def session(self) -> Session:
        return NaiveSession(self.inner)

    def encode(self, chat):  # noqa: ANN001, ANN201
        """The inner model's token ids of `chat`: a tuned side's `context` budget counts them, so the
        naive loop prompts with the same window simgen does."""
        return self.inner.encode(chat)


def stored_tokens(frames: Sequence[pl.DataFrame], tokenizer) -> int:  # noqa: ANN001
    """Tokens of the stored lines, both sides, counted with one tokenizer for every row."""
    texts = [t for f in frames for t in f["text"].to_list()]
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def cli_row(argv: list[str], out: Path, tokenizer, env: dict | None = None) -> dict:  # noqa: ANN001
    """`simgen generate ARGV --out OUT` in a child process, timed from its start to its exit (model
    load included); its peak RSS, the stored tokens, and the decoding work its local models did."""
    stats, log = out.with_suffix(".stats.json"), out.with_suffix(".log")
    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own run folder, from an earlier run
    cmd = [sys.executable, "-c", CHILD, str(stats), "generate", *argv, "--out", str(out), "--quiet"]
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"simgen generate failed ({' '.join(argv)}); its output is in {log}")
    frame = pl.read_parquet(out / "turns.parquet")
    tokens = stored_tokens([frame], tokenizer)
    work = json.loads(stats.read_text()) if stats.is_file() else []
    n = frame["dialogue_id"].n_unique()
    row = {"dialogues": n, "seconds": round(seconds, 2), "tokens": tokens, "lines": frame.height,
           "tokens_per_s": round(tokens / seconds, 1), "dialogues_per_min": round(n / seconds * 60, 2),
           "peak_rss_mib": round(usage.ru_maxrss / 1024), "run": str(out)}
    if work:
        row["prefilled_tokens"] = sum(w["prefill_tokens"] for w in work)
        row["fed_row_steps"] = sum(w["decoded_rows"] for w in work)
    return row


def naive_default_row(scenario_name: str, n: int, seed: int, tokenizer) -> dict:  # noqa: ANN001
    """The naive loop on the first `n` dialogues of the same run: `simgen generate`'s settings (the
    shipped simulator, lengths, redraws, guards, sampling) with every line one `model.generate`.
    Model loading is not timed (it would only lower the naive rate)."""
    from simgen.generation import pipeline

    sc = load_scenario(scenario_name)
    cfg = pipeline.settle(GenerateConfig(scenario=scenario_name, n=n, seed=seed, batch_size=n), sc)
    user, assistant, _ = pipeline._backends(cfg, None, {})  # the models `simgen generate` loads for these settings
    naive_user, naive_assistant = NaiveBackend(user), NaiveBackend(assistant)
    frames: list[pl.DataFrame] = []
    start = time.perf_counter()
    pipeline.simulate_stream([0], cfg, sc, naive_user, naive_assistant, lambda shard, frame, *rest: frames.append(frame))
    seconds = time.perf_counter() - start
    tokens = stored_tokens(frames, tokenizer)
    return {"dialogues": n, "seconds": round(seconds, 2), "tokens": tokens, "lines": sum(f.height for f in frames),
            "tokens_per_s": round(tokens / seconds, 1), "dialogues_per_min": round(n / seconds * 60, 2)}


def default_workload(args) -> None:  # noqa: ANN001
    """Rows per scenario: simgen (and `--refill` rows), the naive loop, llama.cpp through `--backend openai`."""
    from transformers import AutoTokenizer

    from simgen.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    work_dir = args.json.with_suffix("")
    work_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"work": {"mode": "default workload", "dialogues": args.n, "batch_size": args.batch_size, "seed": args.seed,
                             "cpus": os.cpu_count(), "torch": torch.__version__,
                             "machine": f"{platform.machine()} {platform.processor() or ''}".strip()},
                    "scenarios": {}}
    params = None
    for name in args.scenario.split(","):
        base = ["--scenario", name, "-n", str(args.n), "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
        rows: dict = {}
        print(f"{name}: simgen generate {' '.join(base)}", flush=True)
        rows["simgen"] = cli_row(base, work_dir / f"{name}-simgen", tokenizer)
        if "calls" in args.ablations:  # the schedule before lines: one decoding call per side and turn
            print(f"{name}: simgen, --schedule calls", flush=True)
            rows["simgen --schedule calls"] = cli_row([*base, "--schedule", "calls"], work_dir / f"{name}-calls", tokenizer)
        if "bf16" in args.ablations:  # what `--dtype auto` chose before it checked for bf16 arithmetic
            print(f"{name}: simgen, --dtype bfloat16", flush=True)
            rows["simgen --dtype bfloat16"] = cli_row([*base, "--dtype", "bfloat16"], work_dir / f"{name}-bf16", tokenizer)
        if "index" in args.ablations:  # the order streams started their dialogues in before longest-first
            print(f"{name}: simgen, --order index", flush=True)
            rows["simgen --order index"] = cli_row([*base, "--order", "index"], work_dir / f"{name}-index", tokenizer)
        if "sdpa" in args.ablations:  # decoding rows through torch's SDPA, as before simgen's decode attention kernel
            print(f"{name}: simgen, SIMGEN_KERNELS=0", flush=True)
            rows["simgen, SDPA (SIMGEN_KERNELS=0)"] = cli_row(base, work_dir / f"{name}-sdpa", tokenizer, env={**os.environ, "SIMGEN_KERNELS": "0"})
        if "torch-pick" in args.ablations:  # next tokens drawn by torch's top-k tiers, as before the compiled sampler
            print(f"{name}: simgen, SIMGEN_PICK_KERNEL=0", flush=True)
            rows["simgen, torch's sampler (SIMGEN_PICK_KERNEL=0)"] = cli_row(base, work_dir / f"{name}-torch-pick", tokenizer,
                                                                            env={**os.environ, "SIMGEN_PICK_KERNEL": "0"})
        if "unfused" in args.ablations:  # the modules one by one around the attention kernel, as before fused projections and the glue kernels
            print(f"{name}: simgen, SIMGEN_FUSE=0", flush=True)
            rows["simgen, unfused (SIMGEN_FUSE=0)"] = cli_row(base, work_dir / f"{name}-unfused", tokenizer, env={**os.environ, "SIMGEN_FUSE": "0"})
        for refill in args.refill:
            print(f"{name}: simgen, --refill {refill}", flush=True)
            rows[f"simgen --refill {refill}"] = cli_row([*base, "--refill", str(refill)], work_dir / f"{name}-refill{refill}", tokenizer)
        if "naive" not in args.skip:
            k = min(args.naive_dialogues, args.n)
            print(f"{name}: the naive loop, the first {k} dialogues", flush=True)
            rows["naive"] = naive_default_row(name, k, args.seed, tokenizer)
        if "llama.cpp" not in args.skip:
            from simgen.backends.llamacpp import serve_gguf, tuned_gguf

            # the model simgen's row runs: the scenario's tuned simulator (as a GGUF), sampled as simgen samples a tuned side;
            # one server serves one model, so where each side has its own simulator the user side's writes both
            sc = load_scenario(name)
            simulator = sc.simulator
            if len(set(sc.simulators.values())) > 1:
                print(f"{name}: llama.cpp serves one model: the user side's simulator writes both sides in its row", flush=True)
            gguf, sampling = (tuned_gguf(simulator), ["--temperature", "1", "--repetition-penalty", "1"]) if simulator else (None, [])
            print(f"{name}: llama.cpp server on {gguf or 'the embedded GGUF'}, {args.batch_size} slots, through --backend openai", flush=True)
            with serve_gguf(gguf, parallel=args.batch_size, ctx_per_slot=4096, threads=args.llamacpp_threads) as url:
                rows["llama.cpp"] = cli_row([*base, "--backend", "openai", "--base-url", url, "--model", "smollm2", *sampling,
                                             "--concurrency", str(args.batch_size), "--request-timeout", "1200"],
                                            work_dir / f"{name}-llamacpp", tokenizer)
                del rows["llama.cpp"]["peak_rss_mib"]  # the server is in this process; the client's figure would count its pages
        ratios = {f"simgen/{peer}": round(rows["simgen"]["tokens_per_s"] / rows[peer]["tokens_per_s"], 2)
                  for peer in ("naive", "llama.cpp") if peer in rows}
        if "bound" not in args.skip and "prefilled_tokens" in rows["simgen"]:
            if params is None:  # the embedded model (the tuned simulator is the same architecture)
                backend = TransformersBackend(None, args.dtype)
                params = sum(p.numel() for p in backend.model.parameters())
                bound = matmul_flops(backend.model.dtype)["flops_per_s"] / (2 * params)
                del backend
            s = rows["simgen"]
            rows["bound"] = {"tokens_per_s": round(bound, 1)}
            ratios["simgen/bound, stored tokens"] = round(s["tokens_per_s"] / bound, 3)
            ratios["simgen/bound, prefilled + fed tokens"] = round((s["prefilled_tokens"] + s["fed_row_steps"]) / s["seconds"] / bound, 3)
        result["scenarios"][name] = {"rows": rows, "ratios": ratios}
        print(f"\n{name}: {args.n} dialogues, batch {args.batch_size}, seed {args.seed}, default sampling and stop rules")
        print(f"{'row':22} {'dialogues':>9} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'dialogues/min':>14} {'peak RSS MiB':>13}")
        for row_name, r in rows.items():
            if row_name == "bound":
                print(f"{row_name:22} {'':>9} {'':>8} {'':>7} {r['tokens_per_s']:9.1f}")
            else:
                print(f"{row_name:22} {r['dialogues']:9d} {r['seconds']:8.1f} {r['tokens']:7d} {r['tokens_per_s']:9.1f} "
                      f"{r['dialogues_per_min']:14.2f} {r.get('peak_rss_mib', ''):>13}")
        print("  ".join(f"{k}: {v}x" for k, v in ratios.items()), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["fixed", "default"], default="fixed",
                    help="fixed: every dialogue runs --max-turns turns, greedy, stop rules off (the rows above); "
                         "default: `simgen generate` as shipped, end to end (#15's default workload)")
    ap.add_argument("--scenario", default=None,
                    help="default: movie-recommendation (fixed), chitchat,movie-recommendation (default workload; comma-separated)")
    ap.add_argument("-n", type=int, default=None, help="dialogues (every row); default 64 (fixed), 256 (default workload)")
    ap.add_argument("--seed", type=int, default=3, help="default workload: the runs' seed")
    ap.add_argument("--refill", type=lambda v: [int(x) for x in v.split(",")], default=[],
                    help="default workload: also run simgen with --refill K for each K (comma-separated)")
    ap.add_argument("--batch-size", type=int, default=64, help="simgen's batch size = llama.cpp's parallel slots")
    ap.add_argument("--max-turns", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=48, help="per line, both sides")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--naive-dialogues", type=int, default=8, help="the naive row runs the first N dialogues (it does one at a time)")
    ap.add_argument("--llamacpp-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip", action="append", default=[], choices=["naive", "llama.cpp", "bound"], help="leave a row out")
    ap.add_argument("--ablations", type=lambda v: v.split(","), default=[],
                    help="comma-separated: no-reuse (re-encode every turn), dynamic-cache (transformers' DynamicCache); "
                         "default workload: bf16 (simgen with --dtype bfloat16), calls (simgen with --schedule calls), "
                         "index (simgen with --order index), sdpa (simgen with SIMGEN_KERNELS=0: SDPA for the decoding rows), "
                         "unfused (simgen with SIMGEN_FUSE=0: each projection and element-wise op through torch, as before the glue kernels), "
                         "torch-pick (simgen with SIMGEN_PICK_KERNEL=0: next tokens drawn by torch's ops, not the compiled sampler)")
    ap.add_argument("--profile", type=Path, default=None, help="profile decode steps at 128-1536 cached tokens; write the op tables here")
    ap.add_argument("--rss", default=None, help="comma-separated concurrent-dialogue counts for peak RSS, e.g. 64,256")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None,
                    help="default: outputs/bench_generate.json (fixed), outputs/bench_generate_default.json (default workload; "
                         "its run folders go beside it)")
    args = ap.parse_args()
    default = args.workload == "default"
    args.scenario = args.scenario or ("chitchat,movie-recommendation" if default else "movie-recommendation")
    args.n = args.n or (256 if default else 64)
    args.json = args.json or Path("outputs/bench_generate_default.json" if default else "outputs/bench_generate.json")
    if args.rss_child:
        return rss_child(args)
    if default:
        return default_workload(args)

    scenario = load_scenario(args.scenario)
    backend = TransformersBackend(args.model, args.dtype)
    dtype = backend.model.dtype
    greedy = SamplingConfig(temperature=0, max_new_tokens=args.max_new_tokens, repetition_penalty=1.0)
    measure(backend, scenario, 2, 2, 1, SamplingConfig(temperature=0, max_new_tokens=4))  # warm-up

    backend.stats.update(prefill_tokens=0, decode_steps=0, decoded_rows=0)
    rows = {"simgen": measure(backend, scenario, args.n, args.batch_size, args.max_turns, greedy)}
    rows["simgen"].update(prefilled_tokens=backend.stats["prefill_tokens"], decode_steps=backend.stats["decode_steps"],
                          mean_rows_per_step=round(backend.stats["decoded_rows"] / max(backend.stats["decode_steps"], 1), 1))
    if "naive" not in args.skip:
        k = min(args.naive_dialogues, args.n)
        rows["naive"] = measure(NaiveBackend(backend), scenario, k, k, args.max_turns, greedy)
    if "llama.cpp" not in args.skip:
        rows["llama.cpp"] = llamacpp_row(scenario, args.n, args.batch_size, args.max_turns, greedy, args.llamacpp_threads)
    if "no-reuse" in args.ablations:
        rows["simgen, no KV reuse"] = measure(StatelessBackend(backend), scenario, args.n, args.batch_size, args.max_turns, greedy)
    if "dynamic-cache" in args.ablations:
        import simgen.backends.transformers as tb
        from transformers import DynamicCache

        growing, tb.growing_cache_class = tb.growing_cache_class, lambda: DynamicCache
        try:
            rows["simgen, DynamicCache"] = measure(backend, scenario, args.n, args.batch_size, args.max_turns, greedy)
        finally:
            tb.growing_cache_class = growing
    params = sum(p.numel() for p in backend.model.parameters())
    if "bound" not in args.skip:
        mm = matmul_flops(dtype)
        bound = mm["flops_per_s"] / (2 * params)
        rows["bound"] = {"tokens_per_s": round(bound, 1), "matmul_gflops": round(mm["flops_per_s"] / 1e9, 1), "best_shape": mm["shape"]}

    result = {
        "work": {"scenario": args.scenario, "dialogues": args.n, "batch_size": args.batch_size, "max_turns": args.max_turns,
                 "max_new_tokens": args.max_new_tokens, "decoding": "greedy", "model": backend.source.id, "parameters": params,
                 "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                 "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__},
        "rows": {k: {kk: vv for kk, vv in v.items() if kk != "texts"} for k, v in rows.items()},
        "ratios": {},
    }
    simgen_rate = rows["simgen"]["tokens_per_s"]
    for peer in ("naive", "llama.cpp", "bound"):
        if peer in rows:
            result["ratios"][f"simgen/{peer}"] = round(simgen_rate / rows[peer]["tokens_per_s"], 3)
    if "naive" in rows:
        k = rows["naive"]["dialogues"]
        same = sum(a == b for a, b in zip(rows["simgen"]["texts"][:k], rows["naive"]["texts"]))
        result["naive_dialogues_identical_to_simgen"] = f"{same}/{k}"

    print(f"\n{args.n} dialogues x {args.max_turns} turns x {args.max_new_tokens} new tokens, greedy, "
          f"{result['work']['dtype']}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'row':22} {'dialogues':>9} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'dialogues/min':>14}")
    for name, r in result["rows"].items():
        if name == "bound":
            print(f"{name:22} {'':>9} {'':>8} {'':>7} {r['tokens_per_s']:9.1f} {'':>14}  ({r['matmul_gflops']} GFLOP/s, {r['best_shape']})")
        else:
            print(f"{name:22} {r['dialogues']:9d} {r['seconds']:8.1f} {r['tokens']:7d} {r['tokens_per_s']:9.1f} {r['dialogues_per_min']:14.2f}")
    print("  ".join(f"{k}: {v}x" for k, v in result["ratios"].items()))
    if "naive_dialogues_identical_to_simgen" in result:
        print(f"naive dialogues identical to simgen's under greedy decoding: {result['naive_dialogues_identical_to_simgen']}")
    if args.profile:
        peak = rows["bound"]["matmul_gflops"] * 1e9 if "bound" in rows else matmul_flops(dtype)["flops_per_s"]
        result["profile"] = profile_decode(backend, args.batch_size, (128, 512, 1024, 1536), peak, args.profile)
    if args.rss:
        result["rss"] = rss_rows(args, [int(x) for x in args.rss.split(",")])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
