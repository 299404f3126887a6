"""Sim-to-real benchmark (#13): how far each generation lever moves simgen's own realism checks,
measured against the held-out `test` split of the scenario's real corpus (never fitted, tuned or
shown to the simulator).

Rows, same scenario, seed and dialogues (profiles and intents are drawn from (seed, i) alone):
- baseline: no length latent, no trimming (the generator before #13's first levers);
- lengths:  the defaults: each user turn's target length drawn from the scenario's length model
            (fitted on the train split), lines cut at the sentence end nearest it, capped lines
            trimmed or ending their dialogue.
- tuned:    the defaults with `--simulator`'s `simgen tune` folder as the model of the side(s) its
            card says it learned (the embedded model for the other), as `simgen generate` uses a
            scenario's `simulator:`; skipped when `--simulator` is not given.
- redraws:  tuned, and lines that would give the dialogue away (a goodbye before the closing turn,
            a closing turn that does not close, empty, unfinished or degenerate lines) drawn again
            up to `GenerateConfig.redraws` times. The rows above keep every first draw (`--redraws 0`).
- unpenalised: redraws, with no repetition penalty (1.0 where every row above has 1.15): the default
            before the copy guard. The penalty counted every token of the chat, prompt
            included, so it pushed the simulator off the words people repeat ("movie", "seen",
            "good") and onto rarer ones; the redraws now catch the loops it was there to stop.
- guarded:  unpenalised, and a line of 4+ words that near-copies a line the simulator was trained on
            drawn again too (`--copy-guard`, the index in its folder): the default until the intent guard.
- unscaled: guarded, with both sides sampled at temperature 1 (the rows above and `intent`: user 0.8,
            assistant 0.7): the tuned model's own distribution, not its likelier lines
            (`--temperature 1`; alone it gives up intent adherence for realism, README "Sim-to-real").
- intent:   guarded, and a user line that does not read like its turn's intent (the scenario's intent
            guard, a classifier fitted on the train split) drawn again too (`--intent-guard`).
- intent-unscaled: intent, at temperature 1 on both sides (a side a `simgen tune` folder writes samples
            at 1 unless told otherwise): the `simgen generate` default for the shipped simulator
            until `opening` and `realism-guard` below.
            Every row above lets a line end before its target (the target only cuts).
- reach:    intent-unscaled, and a user line may not end before its target (`--reach-target`: the
            backend masks the end-of-turn tokens until the line has its target's words). Off by default.
- answers:  reach, and each assistant line gets a target too, from the length model's `assistant` row
            where it has one (`--assistant-lengths`; chitchat's other stranger). Off by default.
- nudge:    intent-unscaled, and a line is not cut at its target: past it, the end-of-turn logits
            rise by 1 per word (`--end-nudge 1`), the model ends the line where it would end one,
            and the line is kept as written (people's lines end without . ! ? more often than not).
- whole-history: intent-unscaled, with each tuned side prompted with the whole dialogue so far
            (`--context 0`), the default before the context budget: every other row prompts a tuned
            side with as much history as its examples held in training (`context`, its card's max
            length less the side's max new tokens; rows generated before that change had the whole history).
- floor:    intent-unscaled, and a user line may not end before half its target (`--length-floor 0.5`);
            past that the model ends it where it would, or the target cuts it as usual. Off by default.
- opening:  intent-unscaled, and the assistant opens a dialogue as often as the real corpus's do (the
            length model's `first_word`; `--opening`). Every row above opens on the user's line.
- realism-guard: opening, and a line that reads more like the simulator's than three real lines in
            four is drawn again too (the scenario's realism guards; `--realism-guard`): today's
            `simgen generate` default.
- dialogue-guard: realism-guard, and a finished dialogue that reads more like the simulator's than
            three real dialogues in four is written again once, same latents, the take more like
            people's kept (the scenario's dialogue guard; `--dialogue-redraws 1`). Off by default.

Columns: user-turn and dialogue-level ensemble AUC [95% CI], words-per-line JSD, user-lines-per-
dialogue JSD, MAUVE-style score, intent adherence / its ceiling (accuracy), closing endings
(synthetic vs real), the share of user lines cut mid-sentence by the token cap, the share of user
lines that near-copy a real train-split line (equal after normalising, or word 4-gram overlap >= 0.8),
generation tokens/s (as the run's manifest records it), the share of lines (both sides) that say
goodbye before their side's last line (the realism report's `midway_goodbyes`, real beside it)
and the share of lines that took a redraw. With `--consistency`: `simgen
consistency`'s prompt-to-line consistency, Q&A accuracy and specificity of each row (the embedded judge, Q&A
answered by the row's own simulator; the persona axis off; each dialogue's first 30 user lines,
`--consistency-lines`), so a row that buys realism by saying nothing about its persona shows it.

Each row's run goes to OUT/<scenario file's stem>-<row>[-<simulator folder>]-n<N>-seed<SEED> (a
scenario given as a path too: a candidate's folder measured beside the shipped one). Run again, the
benchmark reuses a finished row there, and refuses one written with other scenario files or models.

    python benchmarks/bench_sim2real.py --scenario movie-recommendation --reference ../shared/data/iard -n 40
    python benchmarks/bench_sim2real.py --scenario chitchat --reference chitchat -n 40 --json outputs/sim2real-chitchat.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl

import simgen
from simgen.config import GenerateConfig
from simgen.copies import CopyIndex
from simgen.corpora import load_corpus
from simgen.errors import RunError
from simgen.generation.simulator import trim_to_sentence
from simgen.models import tuned_sides
from simgen.realism import RealismConfig, compare
from simgen.scenario import load_scenario

PENALTY = 1.15  # the repetition penalty every row before `unpenalised` ran with (the default until then)
TEMPERATURE = {"user": 0.8, "assistant": 0.7}  # the untuned model's defaults, which every row but the `unscaled` ones samples with
ROWS = {"baseline": {"lengths": False, "trim": False, "penalty": PENALTY}, "lengths": {"lengths": True, "trim": True, "penalty": PENALTY},
        "tuned": {"lengths": True, "trim": True, "tuned": True, "penalty": PENALTY},
        "redraws": {"lengths": True, "trim": True, "tuned": True, "redraws": GenerateConfig.redraws, "penalty": PENALTY},
        "unpenalised": {"lengths": True, "trim": True, "tuned": True, "redraws": GenerateConfig.redraws, "penalty": 1.0},
        "guarded": {"lengths": True, "trim": True, "tuned": True, "redraws": GenerateConfig.redraws, "penalty": 1.0, "copy_guard": True},
        "unscaled": {"lengths": True, "trim": True, "tuned": True, "redraws": GenerateConfig.redraws, "penalty": 1.0, "copy_guard": True,
                     "temperature": {"user": 1.0, "assistant": 1.0}},
        "intent": {"lengths": True, "trim": True, "tuned": True, "redraws": GenerateConfig.redraws, "penalty": 1.0, "copy_guard": True,
                   "intent_guard": True},
        "intent-unscaled": {"lengths": True, "trim": True, "tuned": True, "redraws": GenerateConfig.redraws, "penalty": 1.0,
                            "copy_guard": True, "intent_guard": True, "temperature": {"user": 1.0, "assistant": 1.0}}}
ROWS["reach"] = ROWS["intent-unscaled"] | {"reach": True}  # the levers measured on top of the default
ROWS["answers"] = ROWS["reach"] | {"assistant_lengths": True}
ROWS["nudge"] = ROWS["intent-unscaled"] | {"end_nudge": 1.0}
ROWS["floor"] = ROWS["intent-unscaled"] | {"length_floor": 0.5}
ROWS["whole-history"] = ROWS["intent-unscaled"] | {"context": 0}  # the default before the tuned sides' context budget
ROWS["min-p"] = ROWS["intent-unscaled"] | {"min_p": 0.05}  # lost on chitchat's train split (README)
ROWS["full-nucleus"] = ROWS["intent-unscaled"] | {"top_p": 1.0}  # the fitted distribution, untruncated; a tie there
ROWS["opening"] = ROWS["intent-unscaled"] | {"opening": True}  # the assistant opens as often as in the real corpus
ROWS["realism-guard"] = ROWS["opening"] | {"realism_guard": True}  # and lines that read like the simulator's are drawn again
ROWS["dialogue-guard"] = ROWS["realism-guard"] | {"dialogue_redraws": 1}  # and dialogues that read like the simulator's are written again


def copy_rate(lines: list[str], real: list[str] | CopyIndex, min_words: int = 0) -> float:
    """Share of `lines` (of >= `min_words` words) that near-copy a real line (`simgen.copies`: equal
    after normalising, or >= 80% of their word 4-grams in one real line).

    People repeat each other's short lines ("Hi!", "Thanks, bye!"), so the table also gives the rate among
    lines of >= 4 words (`min_words=4`) and the same rates for the real test lines against the train lines."""
    index = real if isinstance(real, CopyIndex) else CopyIndex.from_lines(real)
    return index.rate(lines, min_words=min_words)


def consistency(run: simgen.Run, lines: int = 0) -> dict:
    """Prompt-to-line consistency and Q&A accuracy of `run`, each dialogue scored on its first `lines` user
    lines (0: all); reused from RUN/reports/sim2real-consistency[-firstN] if there."""
    from simgen.consistency import ConsistencyConfig, check_run

    out = run.path / "reports" / ("sim2real-consistency" + (f"-first{lines}" if lines else ""))
    done = out / "consistency.json"
    config = ConsistencyConfig(axis=False, max_user_lines=lines)
    report = json.loads(done.read_text()) if done.is_file() else check_run(run, out=out, config=config, progress=True)
    overall = report["overall"]
    return {k: overall.get(k) for k in ("prompt_to_line", "qa", "specificity")}


def measure(name: str, run: simgen.Run, reference: pl.DataFrame, train_index: CopyIndex, cfg: RealismConfig) -> dict:
    users = run.turns.filter(pl.col("role") == "user")
    capped = sum(1 for text, why in users.select("text", "finish_reason").iter_rows()
                 if why == "length" and text and trim_to_sentence(text) != text)
    report = compare(run.path, reference, run.path / "reports" / "sim2real", config=cfg)
    disc = report["discriminators"]["ensemble"]
    adherence = report["intent_adherence"] or {}
    return {
        "row": name,
        "user_turn_auc": disc["user_turn"]["auc"], "user_turn_ci": disc["user_turn"]["ci"],
        "dialogue_auc": disc["dialogue"]["auc"], "dialogue_ci": disc["dialogue"]["ci"],
        "dialogue_from_user_auc": disc["dialogue_from_user_turns"]["auc"],
        "words_jsd": report["shape"]["words_per_user_line"]["jsd"],
        "lines_per_dialogue_jsd": report["shape"]["user_lines_per_dialogue"]["jsd"],
        "median_words": report["shape"]["words_per_user_line"]["synthetic"].get("median"),
        "mauve": (report.get("mauve") or {}).get("mauve"),
        "adherence": (adherence.get("synthetic") or {}).get("accuracy"),
        "adherence_ceiling": (adherence.get("ceiling") or {}).get("accuracy"),
        "closing_endings": report["shape"]["closing_endings"],
        "cut_mid_sentence": capped / max(users.height, 1),
        "copy_rate": copy_rate(users["text"].to_list(), train_index),
        "copy_rate_4w": copy_rate(users["text"].to_list(), train_index, min_words=4),
        "tokens_per_s": run.manifest["timings"].get("tokens_per_s"),
        "midway_goodbyes": report["shape"]["midway_goodbyes"],
        "redrawn": float((run.turns["redraws"].fill_null(0) > 0).mean()) if "redraws" in run.turns.columns else 0.0,
        "user_lines": users.height, "dialogues": run.dialogues().height,
    }


def row_folder(root: Path, scenario: str, row: str, tag: str, n: int, seed: int) -> Path:
    """Where a row's run goes: inside `root`, named by the scenario's file stem, so a scenario given as
    a path (even an absolute one) writes there too and not beside its YAML."""
    return root / f"{Path(scenario).stem}-{row}{tag}-n{n}-seed{seed}"


def _model(name: str | None) -> str | None:
    """A model as `GenerateConfig` names it, comparable across working folders (a folder: its absolute path)."""
    return str(Path(name).resolve()) if name and Path(name).exists() else name


def finished_row(out: Path, config: GenerateConfig) -> simgen.Run | None:
    """The finished run in `out` if it is this row's, None when there is none (the row is generated).
    SystemExit naming the folder when it holds a finished run of other scenario files (another
    scenario of the same name, or its files changed since) or other models: reusing it would report
    the wrong run under this row's name."""
    try:
        run = simgen.load_run(out)
    except RunError:
        return None
    recorded = run.manifest.get("scenario", {}).get("fingerprint")
    current = load_scenario(config.scenario).fingerprint
    if recorded != current:
        sys.exit(f"{out}: holds a finished row written with other scenario files than {config.scenario!r} has now (fingerprint "
                 f"{str(recorded)[:12]} against {current[:12]}: another scenario of the same name, or its files changed since). "
                 "Pass another --out, or delete the folder to measure the row again.")
    written = run.manifest.get("config", {})
    for key in ("model", "assistant_model"):
        if _model(written.get(key)) != _model(getattr(config, key)):
            sys.exit(f"{out}: holds a finished row written with {key} {written.get(key)!r}, not {getattr(config, key)!r}. Pass "
                     "another --out, or delete the folder to measure the row again.")
    return run


def _fmt(value: object) -> str:
    if isinstance(value, dict):  # a metric with its interval
        value = value.get("mean", value.get("value"))
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="movie-recommendation")
    parser.add_argument("--reference", default="../shared/data/iard", help="the scenario's real corpus (its test split is used)")
    parser.add_argument("-n", type=int, default=200, help="dialogues per row (the issue asks for >= 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {list(ROWS)}")
    parser.add_argument("--out", type=Path, default=Path("outputs/sim2real"))
    parser.add_argument("--simulator", type=Path, help="a `simgen tune` folder for the tuned rows (the side(s) its card learned)")
    parser.add_argument("--assistant-simulator", type=Path, help="a `simgen tune` folder for the tuned rows' assistant side instead")
    parser.add_argument("--consistency", action="store_true", help="also score prompt-to-line consistency and Q&A (slower)")
    parser.add_argument("--consistency-lines", type=int, default=30,
                        help="with --consistency: score each dialogue's first N user lines (0 = all). The check's cost grows "
                             "with the square of a dialogue's length, and chitchat's run to 128 user lines; the untuned "
                             "baseline's are six")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    test = load_corpus(args.reference, split="test").turns
    train_index = CopyIndex.from_lines(load_corpus(args.reference, split="train").turns.filter(pl.col("role") == "user")["text"].to_list())
    cfg = RealismConfig(n_boot=300, n_perm=200)
    test_lines = test.filter(pl.col("role") == "user")["text"].to_list()
    real_copies = (copy_rate(test_lines, train_index), copy_rate(test_lines, train_index, min_words=4))
    results = []
    for name in args.rows.split(","):
        settings = ROWS[name]
        if settings.get("tuned") and args.simulator is None:
            print(f"row {name}: skipped (no --simulator)", file=sys.stderr)
            continue
        # the tuned simulator writes the side(s) its card says it learned, as `simgen generate` uses a scenario's
        user_model, assistant_model = tuned_sides(args.simulator) if settings.get("tuned") else ("embedded", None)
        if settings.get("tuned") and args.assistant_simulator is not None:
            assistant_model = str(args.assistant_simulator)
        base = GenerateConfig(scenario=args.scenario, n=args.n, seed=args.seed, batch_size=args.batch_size,
                              lengths=settings["lengths"], model=user_model, assistant_model=assistant_model,
                              redraws=settings.get("redraws", 0), copy_guard=settings.get("copy_guard", False),
                              intent_guard=settings.get("intent_guard", False), assistant_lengths=settings.get("assistant_lengths", False),
                              opening=settings.get("opening", False), realism_guard=settings.get("realism_guard", False),
                              dialogue_redraws=settings.get("dialogue_redraws", 0))
        sides = {"trim": settings["trim"], "repetition_penalty": settings["penalty"], "reach_target": settings.get("reach", False),
                 "end_nudge": settings.get("end_nudge", 0.0), "length_floor": settings.get("length_floor", 0.0),
                 "context": settings.get("context")}  # None: resolved per side as `simgen generate` does
        sides |= {k: settings[k] for k in ("top_p", "min_p") if k in settings}
        heat = settings.get("temperature", TEMPERATURE)
        config = replace(base, **{side: replace(getattr(base, side), **sides, temperature=heat[side]) for side in ("user", "assistant")})
        tag = f"-{args.simulator.name}" if settings.get("tuned") else ""
        tag += f"-a{args.assistant_simulator.name}" if settings.get("tuned") and args.assistant_simulator is not None else ""
        out = row_folder(args.out, args.scenario, name, tag, args.n, args.seed)
        run = finished_row(out, config)  # a finished row is reused
        if run is None:
            run = simgen.generate(config=config, out=out)
        results.append(measure(name, run, test, train_index, cfg))
        if args.consistency:
            results[-1] |= consistency(run, args.consistency_lines)
        print(json.dumps(results[-1]), file=sys.stderr)

    print(f"\n{args.scenario}: {args.n} dialogues per row, seed {args.seed}; real: {args.reference} test split "
          f"({test['dialogue_id'].n_unique()} dialogues)\n")
    print("| row | user-turn AUC [CI] | dialogue AUC [CI] | dialogue AUC, user lines alone | words JSD | lines/dialogue JSD | median words | MAUVE | adherence / ceiling "
          "| closing endings syn / real | cut mid-sentence | copy rate (>= 4 words) | tokens/s | goodbyes midway syn / real | lines redrawn |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        ut, dl = r["user_turn_ci"], r["dialogue_ci"]
        adh = f"{r['adherence']:.2f} / {r['adherence_ceiling']:.2f}" if r["adherence"] is not None else "-"
        mauve = f"{r['mauve']:.3f}" if r["mauve"] is not None else "-"
        ends = r["closing_endings"]
        print(f"| {r['row']} | {r['user_turn_auc']:.3f} [{ut[0]:.2f}-{ut[1]:.2f}] | {r['dialogue_auc']:.3f} [{dl[0]:.2f}-{dl[1]:.2f}] "
              f"| {r['dialogue_from_user_auc']:.3f} | {r['words_jsd']:.3f} | {r['lines_per_dialogue_jsd']:.3f} | {r['median_words']:g} | {mauve} | {adh} "
              f"| {ends['synthetic']:.2f} / {ends['reference']:.2f} | {100 * r['cut_mid_sentence']:.1f}% "
              f"| {100 * r['copy_rate']:.1f}% ({100 * r['copy_rate_4w']:.1f}%) "
              f"| {r['tokens_per_s']} | {100 * r['midway_goodbyes']['synthetic']:.1f}% / {100 * r['midway_goodbyes']['reference']:.1f}% | {100 * r['redrawn']:.1f}% |")
    if args.consistency:
        print("\n| row | prompt-to-line consistency | Q&A accuracy | specificity |\n| --- | --- | --- | --- |")
        for r in results:
            print(f"| {r['row']} | {_fmt(r.get('prompt_to_line'))} | {_fmt(r.get('qa'))} | {_fmt(r.get('specificity'))} |")
    print(f"\nreal test-split user lines near-copying a train line (people repeat short lines too): "
          f"{100 * real_copies[0]:.1f}% ({100 * real_copies[1]:.1f}% of those with >= 4 words)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
