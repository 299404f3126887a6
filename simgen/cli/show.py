"""`simgen show RUN`: read dialogues of a run in the terminal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-n", "n", type=int, default=3, show_default=True, help="How many dialogues.")
@click.option("--dialogue", "-d", "ids", multiple=True, help="Show these dialogue ids (repeatable).")
@click.option("--profile/--no-profile", default=True, help="Print each dialogue's profile latent.")
def show(run: Path, n: int, ids: tuple[str, ...], profile: bool) -> None:
    """Print dialogues of RUN with their profile latent and each user turn's intent.

    \b
    Examples:
      simgen show outputs/demo
      simgen show outputs/demo -d d0000004
    """
    import polars as pl

    from simgen.generation.run import load_run

    r = load_run(run)
    turns = r.scan()
    wanted = list(ids) or turns.select(pl.col("dialogue_id").unique(maintain_order=True).head(n)).collect()["dialogue_id"].to_list()
    frame = turns.filter(pl.col("dialogue_id").is_in(wanted)).collect()
    width = 100
    for dialogue_id in wanted:
        rows = frame.filter(pl.col("dialogue_id") == dialogue_id).sort("turn")
        if rows.is_empty():
            click.echo(f"(no dialogue {dialogue_id!r} in {run})")
            continue
        click.echo(click.style(f"=== {dialogue_id}", bold=True) + f"  ({rows.height} turns, stopped: {rows['stop_reason'].drop_nulls().first()})")
        if profile:
            latent = rows["profile"][0]
            story = latent.pop("backstory", None)
            click.echo("  profile: " + "; ".join(f"{k}={', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in latent.items()))
            if story:
                click.echo(textwrap.fill(story, width, initial_indent="  backstory: ", subsequent_indent="    "))
        for t in rows.iter_rows(named=True):
            who = f"USER [{t['intent']}]" if t["role"] == "user" else "ASSISTANT"
            click.echo(textwrap.fill(t["text"] or "(empty)", width, initial_indent=f"  {who}: ", subsequent_indent="      "))
        click.echo()
