"""`simgen tune`: fine-tune the user simulator on a scenario's real dialogues."""

from __future__ import annotations

from pathlib import Path

import click

from simgen.cli.generate import config_options
from simgen.tune import TuneConfig


@click.command("tune")
@click.argument("scenario")
@click.option("--corpus", "-c", required=True,
              help="The real dialogues: a corpus file (.jsonl/.json/.parquet), a folder of them (e.g. ../shared/data/iard) or a "
                   "registered name (chitchat). Only its train split trains and its validation split validates; its test split is never read.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="The folder to write (an adapter or a model, with its card).")
@click.option("--model", "-m", default=None, help="The base model (default: the embedded SmolLM2-135M-Instruct).")
@config_options(TuneConfig)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def tune(scenario: str, corpus: str, out: Path, model: str | None, quiet: bool, **settings: object) -> None:
    """Fine-tune the user simulator of SCENARIO (and with --roles both, its assistant) on real dialogues, so it writes like the people in them.

    Each real user line becomes one example: the chat `simgen generate` would have sent before it
    (same templates, roles flipped; intent and length from the corpus, the profile sampled), with
    the loss on the line alone. LoRA through peft by default; TRL's SFTTrainer; CPU is fine for the
    embedded 135M model. Rerun the same command after an interruption: it resumes from OUT/checkpoints.

    \b
    Examples:
      simgen tune movie-recommendation --corpus ../shared/data/iard --out tuned/movie
      simgen tune chitchat --corpus chitchat --out tuned/chitchat --max-steps 200
      simgen generate --scenario movie-recommendation --model tuned/movie -n 20
    """
    from simgen.tune import tune as run_tune

    card = run_tune(scenario, corpus, out, model=model, config=TuneConfig(**settings), progress=not quiet,
                    log=lambda m: click.echo(m, err=True))
    loss, answers = card["train_loss"], card["corpus"].get("answers")
    lines = card["corpus"]["examples"]["train"] - (answers["train_examples"] if answers else 0)
    click.echo(f"tuned {card['scenario']['name']} ({card['roles']} side{'s' if card['roles'] == 'both' else ''}) on {lines} real lines"
               + (f" and {answers['train_examples']} answers ({answers['path']})" if answers else "") + f" in {card['steps']} steps "
               f"({card['seconds']:.0f} s): train loss {loss['first']:.3f} -> {loss['last']:.3f}, validation loss "
               f"{card['base_validation_loss']:.3f} (base)"
               + (f", {card['init']['validation_loss_here']:.3f} (--init)" if card.get("init") else "")
               + f" -> {card['validation_loss']:.3f}")
    flag = "--assistant-model" if card["roles"] == "assistant" else "--model"
    click.echo(f"  {out}   (use it: simgen generate --scenario {scenario} {flag} {out})")
