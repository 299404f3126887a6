"""`simgen consistency` before and after packed scoring: time per stage, end to end, and the scores' agreement.

The same run folder is scored by two versions of simgen, each in a fresh subprocess on a copy of
the run (the embedded SmolLM2-135M as judge and simulator, the defaults: Q&A and the axis on):

    before  the code at --before (a git revision, checked out into a temporary worktree; default: the
            commit before packed scoring), on the first --before-dialogues dialogues (it is slow)
    after   this checkout: on the same first dialogues (for the scores' agreement), then on the whole
            run (the end-to-end time a user sees, model loading included)

Each stage (judge, Q&A, axis) is timed by wrapping the functions `score_dialogues` calls, the same
way for both versions, and reported per dialogue. The scores are compared line by line on the
shared dialogues: prompt-to-line and line-to-line contradiction probabilities, Q&A answers, and the
persona-axis projections.

    make demo   # or any run of the embedded model
    python benchmarks/bench_consistency.py --run outputs/demo --json outputs/bench_consistency.json
    python benchmarks/bench_consistency.py --run outputs/demo --no-before --pass-tokens 256,512,1024
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "0a19608"  # the last commit that scored each line, question and option on its own


def worker(run: str, dialogues: int, pass_tokens: int | None) -> None:
    """Score RUN (a copy) with whatever `simgen` is importable; print one JSON line of timings."""
    start = time.perf_counter()
    import simgen
    from simgen.consistency import axis, check, qa
    from simgen.consistency.metrics import ConsistencyConfig

    stages = {"judge": 0.0, "qa": 0.0, "axis": 0.0}

    def timed(name, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN202
            clock = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] += time.perf_counter() - clock
        return wrapper

    check.score_lines = timed("judge", check.score_lines)
    qa.qa_scores = timed("qa", qa.qa_scores)
    axis.line_activations = timed("axis", axis.line_activations)
    settings = {"max_dialogues": dialogues}
    if pass_tokens:
        settings["pass_tokens"] = pass_tokens
    report = check.check_run(run, None, config=ConsistencyConfig(**settings))
    print(json.dumps({"simgen": str(Path(simgen.__file__).parent), "seconds": time.perf_counter() - start, "stages": stages,
                      "dialogues": report["overall"]["dialogues"], "lines": report["overall"]["lines"],
                      "overall": {k: v["mean"] for k, v in report["overall"].items() if isinstance(v, dict)}}))


def score(tree: Path, run: Path, dialogues: int, pass_tokens: int | None = None) -> tuple[dict, "object"]:
    """Run the worker on a copy of `run` with simgen imported from `tree`; (timings, the sidecar frame)."""
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="bench-consistency-") as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("consistency.parquet", "consistency.parts", "reports"))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(copy), "--dialogues", str(dialogues)]
        if pass_tokens:
            command += ["--pass-tokens", str(pass_tokens)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the scoring subprocess ({tree}) failed:\n{done.stderr[-3000:]}")
        timings = json.loads(done.stdout.strip().splitlines()[-1])
        if Path(timings["simgen"]).resolve() != (tree / "simgen").resolve():
            raise SystemExit(f"the subprocess imported simgen from {timings['simgen']}, not {tree}")
        return timings, pl.read_parquet(copy / "consistency.parquet")


def dtype_probe() -> dict:
    """GFLOP/s of one SmolLM2-135M-sized GEMM ((2048 x 576) @ (576 x 1536), the MLP's shape) in fp32 and bf16.

    The judge and the simulator score in fp32 on a CPU without native bf16 (AVX512-BF16 or AMX),
    where torch runs a bf16 GEMM more than a hundred times slower; this probe shows which case a
    machine is in.
    """
    import torch

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, w = torch.randn(2048, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
        a @ w
        repeats, clock = 0, time.perf_counter()
        while repeats < 3 or time.perf_counter() - clock < 1.0:
            a @ w
            repeats += 1
        seconds = (time.perf_counter() - clock) / repeats
        out[str(dtype).removeprefix("torch.")] = 2 * 2048 * 576 * 1536 / seconds / 1e9
    return out


def agreement(before, after) -> dict:  # noqa: ANN001
    """How far apart two sidecars' scores are, on the lines both scored."""
    import polars as pl

    joined = before.join(after, on=["dialogue_id", "turn"], suffix="_after")
    out = {"lines": joined.height}
    for column in ("p2l_contradiction", "l2l_max_contradiction", "l2l_expected_conflicts", "persona_projection"):
        diff = (pl.col(column) - pl.col(f"{column}_after")).abs()
        out[f"max_abs_diff_{column}"] = joined.select(diff.max()).item()
    asked = joined.filter(pl.col("qa_asked") > 0)
    out["qa_lines"] = asked.height
    out["qa_same_correct"] = asked.filter(pl.col("qa_correct") == pl.col("qa_correct_after")).height
    out["qa_correct_before"] = int(asked["qa_correct"].sum())
    out["qa_correct_after"] = int(asked["qa_correct_after"].sum())
    return out


def per_dialogue(t: dict) -> dict:
    n = t["dialogues"]
    stages = {k: v / n for k, v in t["stages"].items()}
    return {**stages, "all stages": sum(stages.values()), "end to end": t["seconds"] / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "outputs" / "demo", help="a run of the embedded model (make demo)")
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' code")
    ap.add_argument("--before-dialogues", type=int, default=3, help="dialogues both versions score (the old code takes ~90 s each)")
    ap.add_argument("--no-before", action="store_true", help="only time this checkout")
    ap.add_argument("--pass-tokens", default="", help="comma-separated pass sizes to compare on the whole run (default: the default)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dialogues", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.dialogues, int(args.pass_tokens) if args.pass_tokens else None)
        return
    if not (args.run / "manifest.json").is_file():
        raise SystemExit(f"{args.run} is not a run folder; make one with `make demo` (20 dialogues) or `simgen generate ... --out DIR`.")
    results: dict = {"run": str(args.run), "cpu_threads": os.cpu_count(), "gemm_gflops": dtype_probe()}
    if not args.no_before:
        with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), args.before],
                           check=True, capture_output=True)
            try:
                before, before_lines = score(tree, args.run, args.before_dialogues)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)
        after, after_lines = score(ROOT, args.run, args.before_dialogues)
        results["before"] = {"revision": args.before, **before, "per_dialogue": per_dialogue(before)}
        results["after_same_dialogues"] = {**after, "per_dialogue": per_dialogue(after)}
        results["agreement"] = agreement(before_lines, after_lines)
    sizes = [int(v) for v in args.pass_tokens.split(",") if v] or [None]
    results["after_whole_run"] = {}
    for size in sizes:
        whole, _ = score(ROOT, args.run, 0, size)
        results["after_whole_run"][str(size or "default")] = {**whole, "per_dialogue": per_dialogue(whole)}

    print(f"run: {args.run}; GEMM GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in results["gemm_gflops"].items()))
    header = f"{'seconds per dialogue':<22}" + "".join(f"{k:>12}" for k in ("judge", "qa", "axis", "all stages", "end to end"))
    print(header)
    rows = []
    if "before" in results:
        rows += [(f"before ({args.before})", results["before"]), ("after, same dialogues", results["after_same_dialogues"])]
    rows += [(f"after, whole run [{k}]", v) for k, v in results["after_whole_run"].items()]
    for name, r in rows:
        print(f"{name:<22}" + "".join(f"{r['per_dialogue'][k]:>12.2f}" for k in ("judge", "qa", "axis", "all stages", "end to end"))
              + f"   ({r['dialogues']} dialogues, {r['seconds']:.0f} s)")
    if "before" in results:
        b, a = results["before"]["per_dialogue"], results["after_same_dialogues"]["per_dialogue"]
        results["speedup"] = {k: b[k] / a[k] for k in b if a[k] > 0}
        print("speed-up:", ", ".join(f"{k} {v:.1f}x" for k, v in results["speedup"].items()))
        print("agreement:", json.dumps(results["agreement"]))
    for k, v in results["after_whole_run"].items():
        thousand = v["per_dialogue"]["all stages"] * 1000 / 3600
        print(f"[{k}] {v['dialogues']} dialogues in {v['seconds']:.0f} s end to end; 1,000 dialogues at this rate: {thousand:.2f} h")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
