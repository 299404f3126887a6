"""`simgen export hub` and `simgen export rl`: a run as a Hub dataset folder, or as TRL training data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from simgen.cli.consistency import JUDGE_HELP


def split_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--to, --overwrite and the split/dedup flags every export takes."""
    for option in reversed([
        click.option("--to", "to", type=click.Path(path_type=Path), required=True, help="Output folder (new or empty; see --overwrite)."),
        click.option("--overwrite", is_flag=True, help="Replace a non-empty --to (never a run folder)."),
        click.option("--splits", default="0.9,0.05,0.05", show_default=True, help="train,validation,test fractions; split by dialogue."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split assignment (and of dpo's candidate sampling)."),
        click.option("--dedup/--no-dedup", default=True, show_default=True, help="Drop exact and near-duplicate dialogues before splitting."),
        click.option("--near-dup-threshold", type=float, default=0.85, show_default=True,
                     help="Jaccard similarity of word 3-gram shingles at or above which two dialogues are near duplicates."),
    ]):
        f = option(f)
    return f


def _split_config(splits: str, seed: int, dedup: bool, near_dup_threshold: float) -> Any:
    from simgen.export.splits import SplitConfig, parse_splits

    return SplitConfig(fractions=parse_splits(splits), seed=seed, dedup=dedup, near_dup_threshold=near_dup_threshold)


def _echo_selection(counts: dict[str, Any]) -> None:
    click.echo(f"dialogues: {counts['kept']} kept of {counts['dialogues']} "
               f"(dropped {counts['exact_duplicates']} exact and {counts['near_duplicates']} near duplicates); "
               f"splits: " + ", ".join(f"{k} {v}" for k, v in counts["splits"].items()))


@click.group("export")
def export() -> None:
    """Write a run for someone else: a Hugging Face dataset folder, or TRL training data.

    \b
    Examples:
      simgen export hub outputs/demo --to outputs/demo-hub
      simgen export hub outputs/demo --to outputs/demo-hub --repo-id my-org/movie-dialogues --push
      simgen export rl outputs/demo --format sft --to outputs/demo-sft
      simgen export rl outputs/demo --format dpo --to outputs/demo-dpo --candidates 4 --margin 0.05
    """


@export.command("hub")
@click.argument("run", type=click.Path(path_type=Path))
@split_options
@click.option("--repo-id", default=None, help="ORG/NAME of the dataset repo (named in the card; needed for --push).")
@click.option("--push", is_flag=True, help="Upload the folder with huggingface_hub (token: $HF_TOKEN or `hf auth login`).")
@click.option("--public", is_flag=True, help="Create the repo public (default: private).")
@click.option("--license", "license_", default=None, help="License id for the card [default: apache-2.0 for the embedded model, else other].")
def hub(run: Path, to: Path, overwrite: bool, splits: str, seed: int, dedup: bool, near_dup_threshold: float,
        repo_id: str | None, push: bool, public: bool, license_: str | None) -> None:
    """Write RUN as a folder that `datasets.load_dataset(TO)` loads, and optionally push it.

    TO holds parquet shards for three configs (dialogues with `messages`, turns, profiles), a
    dataset card (README.md), recipe.json (scenario, templates, model, seed, hashes) and the run's
    realism/consistency reports when it has them.

    \b
    Examples:
      simgen export hub outputs/demo --to outputs/demo-hub
      simgen export hub outputs/demo --to outputs/demo-hub --repo-id my-org/movie-dialogues --push
    """
    from simgen.errors import ConfigError
    from simgen.export.hub import export_hub, push as push_folder, validate_repo_id

    if push and repo_id is None:
        raise ConfigError("--push needs --repo-id ORG/NAME: the dataset repo to upload to.")
    if repo_id is not None:
        validate_repo_id(repo_id)  # before any work
    summary = export_hub(run, to, split=_split_config(splits, seed, dedup, near_dup_threshold), overwrite=overwrite,
                         repo_id=repo_id, license=license_)
    _echo_selection(summary["selection"])
    for name, files in summary["configs"].items():
        click.echo(f"  {name}: " + ", ".join(f"{s} {v['rows']} rows" for s, v in files.items()))
    if summary["reports"]:
        click.echo(f"  reports: {', '.join(summary['reports'])}")
    click.echo(f"wrote {to}   (load it: datasets.load_dataset({str(to)!r}))")
    if push:
        url = push_folder(to, repo_id, private=not public)
        click.echo(f"pushed to {url} ({'public' if public else 'private'})")


@export.command("rl")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, help="sft | prompt | dpo | rewards (TRL's dataset formats).")  # = export.rl.FORMATS, tested
@split_options
@click.option("--policy", default="user", show_default=True, help="The side being trained: user (the simulator, roles flipped) or assistant.")
@click.option("--judge", "judge_spec", default=None, help="dpo/rewards: " + JUDGE_HELP + " [default: llm]")
@click.option("--specificity-weight", type=float, default=0.0, show_default=True, help="dpo/rewards: reward bonus for stating profile facts (capped at 3).")
@click.option("--model", "-m", default=None, help="dpo: model that samples the candidates [default: the run's model].")
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float32"]), default="auto", show_default=True, help="dpo: the candidate model's dtype.")
@click.option("--candidates", "-n", type=int, default=4, show_default=True, help="dpo: candidate lines per user turn.")
@click.option("--margin", type=float, default=0.05, show_default=True, help="dpo: keep a pair when best - worst reward >= this.")
@click.option("--temperature", type=float, default=None, help="dpo: sampling temperature [default: the run's user side's, 1.0 if greedy].")
@click.option("--max-prompts", type=int, default=0, show_default=True, help="dpo: sample for the first N user turns only (0 = all).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="dpo: chats per generate call.")
def rl(run: Path, fmt: str, to: Path, overwrite: bool, splits: str, seed: int, dedup: bool, near_dup_threshold: float,
       policy: str, judge_spec: str | None, specificity_weight: float, model: str | None, dtype: str, candidates: int,
       margin: float, temperature: float | None, max_prompts: int, batch_size: int) -> None:
    """Write RUN as TRL training data: sft, prompt (GRPO/RLOO/PPO), dpo or per-turn rewards.

    \b
    sft      {"messages"}: one conversation per dialogue, from the --policy side
    prompt   {"prompt", "profile", "history"}: conversation prefixes; make_reward scores completions
    dpo      {"prompt", "chosen", "rejected", "margin"}: N sampled lines ranked by the consistency reward
    rewards  {"prompt", "completion", "reward", "done"}: per user line (RUN/consistency.parquet, or the judge)

    \b
    Examples:
      simgen export rl outputs/demo --format sft --policy assistant --to outputs/demo-sft
      simgen export rl outputs/demo --format prompt --to outputs/demo-prompts
      simgen export rl outputs/demo --format dpo --to outputs/demo-dpo --candidates 4 --margin 0.05
      simgen export rl outputs/demo --format rewards --to outputs/demo-rewards
    """
    from simgen.export.rl import RLConfig, export_rl

    config = RLConfig(format=fmt, policy=policy, judge=judge_spec, specificity_weight=specificity_weight, model=model, dtype=dtype,
                      candidates=candidates, margin=margin, temperature=temperature, max_prompts=max_prompts, batch_size=batch_size)
    summary = export_rl(run, to, config=config, split=_split_config(splits, seed, dedup, near_dup_threshold), overwrite=overwrite)
    _echo_selection(summary["selection"]["counts"])
    click.echo(f"  {fmt}: " + ", ".join(f"{s} {v['rows']} rows" for s, v in summary["files"].items()))
    skipped = {k: v for k, v in summary["skipped"].items() if v}
    if skipped:
        click.echo("  skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    if summary.get("rewards"):
        j = summary["rewards"]["judge"]
        click.echo(f"  rewards from {summary['rewards']['source']} (judge {j.get('judge')} {j.get('model', '')})".rstrip())
    click.echo(f"wrote {to}   (load it: datasets.load_dataset({str(to)!r}))")
