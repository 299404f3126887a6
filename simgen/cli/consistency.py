"""`simgen consistency` and `simgen judge-eval`: persona consistency of a run, and how good a judge is."""

from __future__ import annotations

import json
from pathlib import Path

import click

from simgen.cli import ray_config, ray_options

JUDGE_HELP = ("NAME[:ARG]: llm (embedded SmolLM2-135M-Instruct), llm:/path/to/causal-lm, nli:/path/to/nli-model, "
              "http:http://HOST:PORT/v1 (OpenAI-compatible server with logprobs).")


def judge_options(command):  # noqa: ANN001, ANN201
    """--judge, and the settings of the http judge (its model name and the variable holding its API key)."""
    command = click.option("--api-key-env", default=None, metavar="VAR",
                           help="http judge: the environment variable holding the server's API key [default: OPENAI_API_KEY].")(command)
    command = click.option("--judge-model", default=None, metavar="NAME",
                           help="http judge: the model name sent to the server (what its /v1/models lists) [default: 'default'].")(command)
    return click.option("--judge", "judge_spec", default="llm", show_default=True, help=JUDGE_HELP)(command)


def make_judge(spec: str, judge_model: str | None, api_key_env: str | None):  # noqa: ANN201
    """The judge of `spec`; --judge-model and --api-key-env belong to the http judge and are refused for others."""
    from simgen.consistency.judges import load_judge

    settings = {k: v for k, v in (("model", judge_model), ("api_key_env", api_key_env)) if v is not None}
    if settings and not spec.startswith("http:"):
        flags = " and ".join(f"--{k.replace('_', '-')}" for k in settings).replace("--model", "--judge-model")
        verb = "applies" if len(settings) == 1 else "apply"
        raise click.UsageError(f"{flags} {verb} only to the http judge (--judge http:URL); --judge is {spec!r}.")
    return load_judge(spec, **settings)


@click.command("consistency")
@click.argument("run", type=click.Path(path_type=Path))
@judge_options
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for this scoring's consistency.parquet, .json and .html; the run's own are left as they are "
                   "(exports read those). [default: RUN/consistency.parquet and RUN/reports]")
@click.option("--threshold", default=0.5, show_default=True, help="P(contradiction) at or above which a line or pair counts as a conflict.")
@click.option("--no-qa", is_flag=True, help="Skip the Q&A checkpoints (the slowest part).")
@click.option("--qa-every", default=1, show_default=True, help="Ask the profile questions after every k-th user line.")
@click.option("--no-axis", is_flag=True, help="Skip the persona axis.")
@click.option("--axis-layer", type=int, default=None, help="Decoder layer of the persona axis [default: the middle one].")
@click.option("--max-dialogues", default=0, show_default=True, help="Score the first N dialogues only (0 = all).")
@click.option("--max-user-lines", default=0, show_default=True,
              help="Score each dialogue's first N user lines only (0 = all). Long dialogues cost the square of their "
                   "length (line-to-line pairs, Q&A contexts); 30 keeps a 128-line dialogue's cost near a 30-line one's.")
@click.option("--l2l-window", default=0, show_default=True,
              help="Compare each user line with its K latest earlier user lines only (0 = every earlier one).")
@click.option("--chunk-dialogues", default=100, show_default=True,
              help="Dialogues read from the run and scored at a time; each finished chunk is saved, so a rerun after "
                   "a crash or Ctrl-C goes on from there. Lower it if memory is short (scores do not change).")
@click.option("--simulator-model", default="", metavar="MODEL",
              help="Read Q&A and the persona axis under this local model (a folder, a cached id, a `simgen tune` "
                   "folder, or embedded) instead of the run's user model: for a run written through a server, whose "
                   "weights are not here, or to tell the lines' share of a score from the model's. [default: the run's own]")
@click.option("--qa-skip", default="", metavar="NAMES",
              help="Profile variables Q&A does not ask about, comma-separated (e.g. topic: to compare with runs of a "
                   "profile without it).")
@ray_options
def consistency(run: Path, judge_spec: str, judge_model: str | None, api_key_env: str | None, out: Path | None, threshold: float,
                no_qa: bool, qa_every: int, no_axis: bool, axis_layer: int | None, max_dialogues: int, max_user_lines: int,
                l2l_window: int, chunk_dialogues: int, simulator_model: str, qa_skip: str, ray_address: str | None, ray_workers: int, ray_cpus: float, ray_gpus: float, ray_retries: int) -> None:
    """Score the persona consistency of RUN, line by line and turn by turn.

    Writes RUN/consistency.parquet (one row per user line: prompt-to-line, line-to-line, Q&A,
    specificity, persona-axis projection; turns.parquet is never rewritten) and
    reports/consistency.json + .html (scores per dialogue and overall, drift curves, the judge used).
    With --out DIR all three go to DIR and the run's own are not touched.

    \b
    Examples:
      simgen consistency outputs/demo
      simgen consistency outputs/demo --judge llm:/models/qwen2.5-1.5b-instruct --no-qa
      simgen consistency outputs/demo --judge http:http://127.0.0.1:8080/v1 --out rep
      simgen consistency /shared/runs/big --ray auto --ray-workers 16       # chunks scored on a Ray cluster
      simgen consistency outputs/served --simulator-model embedded         # Q&A of a run a server wrote
    """
    from simgen.consistency.check import check_run
    from simgen.consistency.metrics import ConsistencyConfig
    from simgen.generation.run import load_run

    config = ConsistencyConfig(threshold=threshold, qa=not no_qa, qa_every=qa_every, axis=not no_axis,
                               axis_layer=axis_layer, max_dialogues=max_dialogues, max_user_lines=max_user_lines,
                               l2l_window=l2l_window, chunk_dialogues=chunk_dialogues, simulator_model=simulator_model,
                               qa_skip=tuple(n.strip() for n in qa_skip.split(",") if n.strip()))
    loaded = load_run(run)  # a bad run folder fails before any model loads
    report = check_run(loaded, make_judge(judge_spec, judge_model, api_key_env), out, config, progress=True,
                       ray=ray_config(ray_address, ray_workers, ray_cpus, ray_gpus, ray_retries))
    o = report["overall"]

    def show(key: str) -> str:
        v = o[key]
        return "n/a" if v["mean"] is None else f"{v['mean']:.3f}" + (f" ± {v['se']:.3f}" if v["se"] is not None else "")

    j = report["judge"]
    click.echo(f"judge: {j['judge']} {j.get('model', '')}".rstrip())
    click.echo(f"{o['dialogues']} dialogues, {o['lines']} user lines")
    for key in ("prompt_to_line", "line_to_line", "qa", "specificity"):
        click.echo(f"  {key:<15} {show(key)}")
    for key, why in report["not_computed"].items():
        click.echo(f"warning: {key} not computed: {why}", err=True)
    click.echo(f"wrote {report['sidecar']}, {report['paths']['json']} and {report['paths']['html']}")


@click.command("judge-eval")
@click.argument("labelled", type=click.Path(path_type=Path))
@judge_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the full result (per kind: accuracy, ROC-AUC, confusion; per item scores).")
@click.option("--threshold", default=0.5, show_default=True, help="P(contradiction) at or above which an item is predicted to contradict.")
def judge_eval(labelled: Path, judge_spec: str, judge_model: str | None, api_key_env: str | None, json_out: Path,
               threshold: float) -> None:
    """Measure a consistency judge on LABELLED.jsonl (hand-labelled items, e.g. ../shared/data/consistency/dev.jsonl).

    Prints accuracy, ROC-AUC and the confusion matrix per kind (prompt_to_line, line_to_line, qa)
    as a Markdown table and writes the whole result to --json.

    \b
    Example:
      simgen judge-eval ../shared/data/consistency/dev.jsonl --judge llm --json outputs/judge-eval.json
    """
    from simgen.consistency.evaluate import format_table
    from simgen.consistency.evaluate import judge_eval as run_eval
    from simgen.errors import DataError

    report = run_eval(labelled, make_judge(judge_spec, judge_model, api_key_env), threshold)
    try:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise DataError(f"--json {json_out}: cannot write it ({e.strerror}).") from None
    click.echo(format_table(report))
    click.echo(f"wrote {json_out}")
