"""Does activation capping on the persona axis raise prompt-to-line consistency? Same dialogues, with and without.

One process, one model (the embedded SmolLM2-135M-Instruct unless --model), one scenario, the same
planned dialogues (profiles, intents, per-turn seeds); only the user side's generate calls differ:

1. baseline: `simgen.generation.simulator.simulate` as `simgen generate` runs it;
2. the persona axis is fitted on the baseline's lines (layer --layer, default the middle one):
   direction = mean(assistant lines) - mean(persona lines) in the residual stream;
3. capped: the same simulation with the user side as `CappedBackend(backend, layer, threshold, axis)`,
   the cap around every user generate call (the assistant side is never capped), for each threshold in --thresholds
   (`midpoint` = halfway between the persona and assistant means; `persona` = the persona mean;
   or numbers).

Each condition is scored by the same judge (prompt-to-line, line-to-line, specificity) and its user
lines are projected on the baseline axis (read without the cap). Reported per condition: means over
dialogues with standard errors, and the paired per-dialogue difference to the baseline. The axis is
fitted in-sample (on the baseline of the same dialogues), which favours the cap if anything.

    python benchmarks/bench_persona_cap.py                       # 16 dialogues x 4 user turns
    python benchmarks/bench_persona_cap.py -n 32 --thresholds midpoint,persona --json outputs/bench_persona_cap.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from simgen.backends import Backend
from simgen.backends.transformers import TransformersBackend
from simgen.config import SamplingConfig
from simgen.backends.steering import CappedBackend, PersonaAxis
from simgen.consistency.axis import default_layer, fit_axis, line_activations
from simgen.consistency.check import score_dialogues
from simgen.consistency.judges import load_judge
from simgen.consistency.metrics import ConsistencyConfig, dialogues_from_turns
from simgen.data import dialogues_to_frame
from simgen.scenario import load_scenario
from simgen.generation.plan import plan
from simgen.generation.simulator import simulate


def _mean_se(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    return {"mean": float(v.mean()) if len(v) else None, "se": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None, "n": int(len(v))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=16, help="dialogues")
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", default="movie-recommendation")
    ap.add_argument("--model", default=None, help="local causal LM folder; default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--layer", type=int, default=None, help="decoder layer of the axis and the cap [default: the middle one]")
    ap.add_argument("--thresholds", default="midpoint,persona", help="comma-separated: midpoint, persona, or numbers")
    ap.add_argument("--judge", default="llm", help="judge spec (default: the embedded SmolLM2, float32)")
    ap.add_argument("--json", type=Path, default=Path("outputs/bench_persona_cap.json"))
    args = ap.parse_args()

    started = time.perf_counter()
    scenario = load_scenario(args.scenario)
    backend = TransformersBackend(args.model)
    judge = load_judge(args.judge)
    user_sampling = SamplingConfig(temperature=0.8, max_new_tokens=48)
    assistant_sampling = SamplingConfig(temperature=0.7, max_new_tokens=96)
    jobs = [plan(scenario, args.seed, i, args.max_turns) for i in range(args.n)]
    layer = args.layer if args.layer is not None else default_layer(backend)

    def run(user_backend: Backend) -> pl.DataFrame:
        t = time.perf_counter()
        dialogues = simulate(jobs, scenario, user_backend, backend, user_sampling, assistant_sampling, args.seed, args.max_turns)
        print(f"  generated in {time.perf_counter() - t:.0f}s", flush=True)
        return dialogues_to_frame(dialogues, scenario.profile.polars_schema())

    def measure(name: str, frame: pl.DataFrame, axis: PersonaAxis | None, threshold: float | None) -> dict:
        scored = score_dialogues(frame, judge, config=ConsistencyConfig(qa=False, axis=False))
        per = {d["dialogue_id"]: d for d in scored.report["dialogues"]}
        _, persona, assistant = line_activations(backend, scenario, dialogues_from_turns(frame), args.max_turns, layer)
        proj = axis.project(persona) if axis is not None else None
        stops = frame.filter(pl.col("stop_reason").is_not_null())["stop_reason"].str.split(":").list.first().value_counts()
        return {
            "condition": name, "threshold": threshold, "per_dialogue": per,
            "user_lines": int((frame["role"] == "user").sum()),
            "prompt_to_line": _mean_se([d["prompt_to_line"] for d in per.values()]),
            "prompt_to_line_thresholded": _mean_se([d["prompt_to_line_thresholded"] for d in per.values()]),
            "line_to_line": _mean_se([d["line_to_line"] for d in per.values()]),
            "specificity": _mean_se([d["specificity"] for d in per.values()]),
            "projection": _mean_se(list(map(float, proj))) if proj is not None else None,
            "stop_reasons": dict(zip(stops["stop_reason"].to_list(), stops["count"].to_list())),
            "_persona": persona, "_assistant": assistant,
        }

    print(f"baseline: {args.n} dialogues x {args.max_turns} user turns", flush=True)
    base_frame = run(backend)
    base = measure("baseline", base_frame, None, None)
    axis = fit_axis(base["_persona"], base["_assistant"], layer, backend.source.fingerprint)
    base["projection"] = _mean_se(list(map(float, axis.project(base["_persona"]))))
    print(f"axis at layer {layer}: persona mean {axis.persona_mean:.3f}, assistant mean {axis.assistant_mean:.3f}", flush=True)

    rows = [base]
    for spec in (s.strip() for s in args.thresholds.split(",") if s.strip()):
        threshold = axis.midpoint if spec == "midpoint" else axis.persona_mean if spec == "persona" else float(spec)
        print(f"capped at {spec} = {threshold:.3f}", flush=True)
        row = measure(f"cap {spec} ({threshold:.2f})", run(CappedBackend(backend, layer, threshold, axis)), axis, threshold)
        rows.append(row)
    for row in rows[1:]:
        diffs = [row["per_dialogue"][d]["prompt_to_line"] - base["per_dialogue"][d]["prompt_to_line"]
                 for d in base["per_dialogue"] if d in row["per_dialogue"]]
        row["prompt_to_line_paired_diff"] = _mean_se(diffs)

    def fmt(v: dict | None) -> str:
        if not v or v["mean"] is None:
            return "n/a"
        return f"{v['mean']:.4f} ± {v['se']:.4f}" if v["se"] is not None else f"{v['mean']:.4f}"

    print(f"\njudge: {judge.describe().get('judge')} {judge.describe().get('model', '')}; n = {args.n} dialogues, layer {layer}")
    print("| condition | user lines | prompt-to-line | paired diff vs baseline | line-to-line | specificity | projection |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['condition']} | {r['user_lines']} | {fmt(r['prompt_to_line'])} | {fmt(r.get('prompt_to_line_paired_diff'))} | "
              f"{fmt(r['line_to_line'])} | {fmt(r['specificity'])} | {fmt(r['projection'])} |")
    out = {"n": args.n, "max_turns": args.max_turns, "seed": args.seed, "scenario": args.scenario, "layer": layer,
           "model": backend.describe(), "judge": judge.describe(), "axis": {k: v for k, v in axis.to_dict().items() if k != "direction"},
           "seconds": round(time.perf_counter() - started, 1),
           "conditions": [{k: v for k, v in r.items() if not k.startswith("_") and k != "per_dialogue"} for r in rows]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json} ({out['seconds']}s)")


if __name__ == "__main__":
    main()
